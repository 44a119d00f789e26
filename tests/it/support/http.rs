//! The one HTTP client of the tests and the dashboard benchmark, written on a plain
//! `TcpStream`: what a test sends is exactly what reaches the server (odd paths, missing or
//! repeated headers, a body the server refuses before reading it), and a response is read by
//! its length, by its chunks, or to the end of the connection.
//!
//! - [`request`]: one request on a connection of its own (`Connection: close`); a `Host`,
//!   `Content-Length` or `Transfer-Encoding` among its headers replaces the one it would add.
//! - [`Client`]: one keep-alive connection for many requests (polling, the benchmark's load).
//! - [`ws_connect`]: the upgrade to a WebSocket (blocking `tungstenite`); `ws.rs` reads the
//!   streams.
//!
//! `benches/dashboard.rs` includes this file too (with `#[path]`): it uses `expect`, never
//! `unwrap`, and everything in it but [`Resp::assert_error`] serves both.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use tungstenite::client::IntoClientRequest;

/// How long one read may block: generous, for a debug build on a busy machine.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A response: its status, its headers as sent, its body (as UTF-8, lossily).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (with the status and body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.body))
    }

    /// `{"error": "..."}` with a non-empty message, as every API error is.
    // The benchmark, which includes this file, asserts no errors (and no `cfg` tells the two
    // apart: cargo builds a `harness = false` bench with `--cfg test` too).
    #[allow(dead_code)]
    pub fn assert_error(&self) {
        let v = self.json();
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "status {} without an error message: {}",
            self.status,
            self.body
        );
    }
}

/// One request to the server on `port`, on a connection of its own (`Connection: close`
/// unless `headers` has a `Connection` header).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Resp> {
    let mut stream = connect(port, TIMEOUT)?;
    let close = !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"));
    exchange(&mut stream, port, method, path, headers, body, close).map(|(resp, _)| resp)
}

/// A keep-alive connection to the server on `port`, for many `GET`s in a row. When the server
/// has closed it meanwhile (an idle connection, or one after an error), the request is sent
/// once more on a new connection; a request that timed out is not.
pub struct Client {
    port: u16,
    timeout: Duration,
    conn: Option<TcpStream>,
}

impl Client {
    pub fn new(port: u16, timeout: Duration) -> Client {
        Client {
            port,
            timeout,
            conn: None,
        }
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        if let Some(mut stream) = self.conn.take() {
            match exchange(&mut stream, self.port, "GET", path, &[], b"", false) {
                Ok((resp, reusable)) => {
                    if reusable {
                        self.conn = Some(stream);
                    }
                    return Ok(resp);
                }
                Err(e) if timed_out(&e) => return Err(e),
                Err(_) => {} // closed by the server: once more, on a new connection
            }
        }
        let mut stream = connect(self.port, self.timeout)?;
        let (resp, reusable) = exchange(&mut stream, self.port, "GET", path, &[], b"", false)?;
        if reusable {
            self.conn = Some(stream);
        }
        Ok(resp)
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends one request and reads its response; `true` with it if the connection can carry
/// another request (the body was delimited and the server did not say `close`).
fn exchange(
    stream: &mut TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> io::Result<(Resp, bool)> {
    let given = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !given("host") {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    // A test that declares the body's length or framing itself sends it as it says.
    if (!body.is_empty() || method == "POST")
        && !given("content-length")
        && !given("transfer-encoding")
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    // The server may answer (413) before reading the whole body and close: not an error.
    let _ = stream.write_all(body);

    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let (status, headers, body_start) = loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let (status, headers) = parse_head(&raw[..end]);
            break (status, headers, end + 4);
        }
        match stream.read(&mut buf)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{method} {path}: connection closed before the response head: {:?}",
                        String::from_utf8_lossy(&raw)
                    ),
                ));
            }
            n => raw.extend_from_slice(&buf[..n]),
        }
    };
    let mut resp = Resp {
        status,
        headers,
        body: String::new(),
    };
    let length = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let (body, delimited) = loop {
        let have = &raw[body_start..];
        if status == 101 || status == 204 || status == 304 || method == "HEAD" {
            break (Vec::new(), true);
        }
        if let Some(n) = length
            && have.len() >= n
        {
            break (have[..n].to_vec(), true);
        }
        if chunked {
            let (decoded, done) = dechunk(have);
            if done {
                break (decoded, true);
            }
        }
        match stream.read(&mut buf)? {
            0 => break (have.to_vec(), false),
            n => raw.extend_from_slice(&buf[..n]),
        }
    };
    resp.body = String::from_utf8_lossy(&body).into_owned();
    let reusable = delimited
        && !resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    Ok((resp, reusable))
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status and headers of a response head (without its blank line).
pub fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// Decodes as much of a chunked body as is there; `true` once the last chunk was seen.
pub fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&raw[pos..], b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&raw[pos..pos + eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return (out, true);
        }
        let start = pos + eol + 2;
        if raw.len() < start + size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&raw[start..start + size]);
        pos = start + size + 2;
    }
}

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// Why an upgrade to a WebSocket did not happen.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The server answered with this status instead of `101`.
    Status(u16),
    /// Nothing listens on the port, or the handshake broke off.
    Failed(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Status(s) => write!(f, "refused with status {s}"),
            Refused::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// Upgrades `path` on the server at `port` to a WebSocket, with `headers` (an `Origin`, an
/// `Authorization`). Reads on the socket then time out after 50 ms, so that a reader can poll
/// for an event with a deadline of its own.
pub fn ws_connect(port: u16, path: &str, headers: &[(&'static str, &str)]) -> Result<Ws, Refused> {
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .map_err(|e| Refused::Failed(e.to_string()))?;
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, v.parse().expect("a valid header value"));
    }
    let stream = connect(port, TIMEOUT).map_err(|e| Refused::Failed(e.to_string()))?;
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => {
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(|e| Refused::Failed(e.to_string()))?;
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(Refused::Status(r.status().as_u16()))
        }
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}
