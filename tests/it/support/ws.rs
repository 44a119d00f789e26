//! Reading the live event streams as a client does: the WebSocket ones (`/ws/events`,
//! `/ws/events/{run_id}`, opened with [`super::http::ws_connect`] or [`super::Server::ws`]) frame
//! by frame, and the Server-Sent Events one (`/api/runs/{run_id}/events/stream`, the page's
//! fallback carrying the same events) from a raw socket. Every wait has a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(unix)]
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use super::http::{Ws, dechunk, find, parse_head};

/// The deadline of every wait for an event.
const LONG: Duration = Duration::from_secs(60);

/// What one read of a socket gave.
pub enum Next {
    Event(Value),
    /// Closed, with the close code if the server sent one.
    Closed(Option<u16>),
    /// Nothing within the read timeout (or a control frame).
    Idle,
}

pub fn next(ws: &mut Ws) -> Next {
    match ws.read() {
        Ok(Message::Text(t)) => Next::Event(
            serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("frame {t:?}: {e}")),
        ),
        Ok(Message::Close(f)) => Next::Closed(f.map(|f| u16::from(f.code))),
        Ok(_) => Next::Idle,
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Next::Idle
        }
        Err(_) => Next::Closed(None),
    }
}

/// Reads events until `done(all so far)`; panics if the socket closes first, or after a minute.
pub fn read_until(ws: &mut Ws, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + LONG;
    let mut got = Vec::new();
    while !done(&got) {
        match next(ws) {
            Next::Event(e) => got.push(e),
            Next::Closed(code) => panic!("socket closed ({code:?}) waiting for {what}"),
            Next::Idle => {}
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; got {} events",
            got.len()
        );
    }
    got
}

/// Reads whatever arrives until the socket closes; the close code.
pub fn drain_until_closed(ws: &mut Ws, into: &mut Vec<Value>) -> Option<u16> {
    let deadline = Instant::now() + LONG;
    loop {
        match next(ws) {
            Next::Event(e) => into.push(e),
            Next::Closed(code) => return code,
            Next::Idle => {}
        }
        assert!(Instant::now() < deadline, "socket never closed");
    }
}

/// Reads until the socket closes or nothing has come for `quiet`: what a client of a server
/// that was killed still receives. (A socket of a killed server under Wine is never closed:
/// the quiet ends it there.)
pub fn drain_until_quiet(ws: &mut Ws, into: &mut Vec<Value>, quiet: Duration) {
    let deadline = Instant::now() + LONG;
    let mut last = Instant::now();
    loop {
        match next(ws) {
            Next::Event(e) => {
                into.push(e);
                last = Instant::now();
            }
            Next::Closed(_) => return,
            Next::Idle if last.elapsed() >= quiet => return,
            Next::Idle => {}
        }
        assert!(
            Instant::now() < deadline,
            "events kept coming from a stopped server"
        );
    }
}

/// Reads for `d` (or until the socket closes): what arrived.
pub fn read_for(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let end = Instant::now() + d;
    let mut got = Vec::new();
    while Instant::now() < end {
        match next(ws) {
            Next::Event(e) => got.push(e),
            Next::Closed(_) => break,
            Next::Idle => {}
        }
    }
    got
}

/// A client that reads its socket all along, on a thread of its own, as a browser does,
/// while the test does something else; [`Reading::until`] then waits for what it wants.
/// (A client that stops reading while a lot is sent to it can find the connection stalled
/// for tens of seconds once it reads again: the kernel backs off retransmitting what its
/// full receive buffer dropped.) Used by tests whose stages are POSIX shell scripts.
#[cfg(unix)]
pub struct Reading {
    got: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<Option<u16>>>,
}

/// Starts reading `ws` on a thread.
#[cfg(unix)]
pub fn keep_reading(mut ws: Ws) -> Reading {
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::spawn({
        let (got, stop) = (got.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                match next(&mut ws) {
                    Next::Event(e) => got.lock().unwrap().push(e),
                    Next::Closed(code) => return Some(code),
                    Next::Idle => {}
                }
            }
            None
        }
    });
    Reading { got, stop, thread }
}

#[cfg(unix)]
impl Reading {
    /// What it got so far.
    pub fn so_far(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done(all so far)`; panics if the socket closes first, or after a minute.
    pub fn until(self, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + LONG;
        loop {
            if done(&self.got.lock().unwrap()) {
                break;
            }
            if self.thread.is_finished() {
                let code = self.thread.join().unwrap();
                panic!("socket closed ({code:?}) waiting for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} events",
                self.got.lock().unwrap().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// Server-Sent Events read from a raw socket: (id, data) pairs.
pub struct Sse {
    s: TcpStream,
    raw: Vec<u8>,
    body_start: usize,
    chunked: bool,
}

impl Sse {
    /// Opens the stream at `path` with `headers`; asserts a `200` `text/event-stream`.
    pub fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut sse = Sse {
            s,
            raw: Vec::new(),
            body_start: 0,
            chunked: false,
        };
        let deadline = Instant::now() + LONG;
        let end = loop {
            if let Some(end) = find(&sse.raw, b"\r\n\r\n") {
                break end;
            }
            sse.fill();
            assert!(Instant::now() < deadline, "no SSE response head");
        };
        let (status, headers) = parse_head(&sse.raw[..end]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&sse.raw));
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        sse.chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        sse.body_start = end + 4;
        sse
    }

    fn fill(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        match self.s.read(&mut buf) {
            Ok(0) => panic!("SSE stream closed"),
            Ok(n) => self.raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("SSE read: {e}"),
        }
    }

    /// Every complete event so far.
    pub fn events(&self) -> Vec<(u64, Value)> {
        let body = &self.raw[self.body_start..];
        let text = if self.chunked {
            dechunk(body).0
        } else {
            body.to_vec()
        };
        let text = String::from_utf8_lossy(&text).replace("\r\n", "\n");
        let mut out = Vec::new();
        let blocks: Vec<&str> = text.split("\n\n").collect();
        // The last piece may be incomplete.
        for block in &blocks[..blocks.len() - 1] {
            let mut id = None;
            let mut data = String::new();
            for l in block.lines() {
                if let Some(v) = l.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>().expect("numeric id"));
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if let Some(id) = id {
                out.push((id, serde_json::from_str(&data).expect("JSON data")));
            }
        }
        out
    }

    /// Reads until `done(every event so far)`; their ids. Panics after a minute.
    pub fn wait(&mut self, what: &str, mut done: impl FnMut(&[(u64, Value)]) -> bool) -> Vec<u64> {
        let deadline = Instant::now() + LONG;
        loop {
            let ev = self.events();
            if done(&ev) {
                return ev.iter().map(|(id, _)| *id).collect();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.fill();
        }
    }
}

/// `(run_id, seq)` of an event.
pub fn key(e: &Value) -> (String, u64) {
    (
        e["run_id"].as_str().expect("run_id").to_string(),
        e["seq"].as_u64().expect("seq"),
    )
}

/// The all-runs cursor of an event of `/ws/events`.
pub fn cursor(e: &Value) -> u64 {
    e["cursor"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cursor in {e}"))
}
