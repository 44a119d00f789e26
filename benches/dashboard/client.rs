//! The WebSocket clients of the streams cases, in a process of their own: this bench binary
//! started again with `PW_BENCH_CLIENT=1` and the arguments [`Spec`] builds. Keeping them out
//! of the bench process means the server's CPU time is its own and the clients are scheduled
//! like any other program reading the dashboard.
//!
//! The process connects `clients` sockets to one path (one thread each), reads until each has
//! `want` distinct events (by `run_id` and `seq`) or until its stdin closes (the bench's way of
//! saying "stop"), and prints one JSON line: what arrived, duplicates, close codes, and the
//! append → delivery histogram of the events that carry the writer's wall clock (`data.t_ns`).
//!
//! With `reconnect`, a socket the server closes is opened again at once: with `?since=CURSOR`
//! once frames carry a `cursor` (resuming where it stopped), else on the bare path (and what was
//! published meanwhile is counted as lost).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, Ws};
use crate::{Hist, cpu_seconds, int_field, keys, now_ns, str_field};

/// Set in the environment of the client process.
pub const MODE_ENV: &str = "PW_BENCH_CLIENT";

/// What a client process does.
pub struct Spec {
    pub port: u16,
    /// The path to open, without a query (`/ws/events`, `/ws/events/{run_id}`).
    pub path: String,
    pub clients: usize,
    /// Distinct events each socket reads before it is done.
    pub want: u64,
    /// Open a socket again when the server closes it.
    pub reconnect: bool,
}

/// A client process while it runs.
pub struct Clients {
    child: Child,
    report: mpsc::Receiver<Value>,
}

impl Clients {
    /// Starts the client process; returns once every socket is open.
    pub fn start(spec: &Spec) -> Clients {
        let exe = std::env::current_exe().expect("the bench binary");
        let mut child = Command::new(exe)
            .env(MODE_ENV, "1")
            .args([
                "--port".to_string(),
                spec.port.to_string(),
                "--path".into(),
                spec.path.clone(),
                "--clients".into(),
                spec.clients.to_string(),
                "--want".into(),
                spec.want.to_string(),
            ])
            .args(spec.reconnect.then_some("--reconnect"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client process");
        let out = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready) = mpsc::channel();
        let (tx, report) = mpsc::channel();
        // Its first line says the sockets are open, its last is the report.
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&l) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = ready_tx.send(());
                } else {
                    let _ = tx.send(v);
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(120))
            .expect("the client process opens its sockets");
        Clients { child, report }
    }

    /// Whether every socket has all it wants (the process then reports and exits).
    pub fn done(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits up to `within` for the sockets to be done, then tells the process to stop; its
    /// report.
    pub fn finish(mut self, within: Duration) -> Report {
        let deadline = Instant::now() + within;
        while !self.done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.child.stdin.take());
        let v = self
            .report
            .recv_timeout(Duration::from_secs(30))
            .expect("the client process's report");
        let _ = self.child.wait();
        Report(v)
    }
}

/// The client process's JSON report.
pub struct Report(pub Value);

impl Report {
    pub fn u(&self, key: &str) -> u64 {
        self.0[key].as_u64().unwrap_or(0)
    }

    pub fn f(&self, key: &str) -> f64 {
        self.0[key].as_f64().unwrap_or(f64::NAN)
    }

    /// Distinct events of the runs whose id starts with `group` and a `-`.
    pub fn group(&self, group: &str) -> u64 {
        self.0["groups"][group].as_u64().unwrap_or(0)
    }

    /// Close codes (and read errors) the server ended sockets with, and how often.
    pub fn closes(&self) -> String {
        let c = &self.0["closes"];
        if c.as_object().is_none_or(|m| m.is_empty()) {
            "none".into()
        } else {
            c.to_string()
        }
    }

    /// How many times the server closed a socket with this code.
    pub fn closes_with(&self, code: u16) -> u64 {
        self.0["closes"][code.to_string()].as_u64().unwrap_or(0)
    }

    pub fn latency(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.f("p50_ms"),
            self.f("p99_ms"),
            self.f("max_ms")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The client process
// ---------------------------------------------------------------------------------------------

/// What one socket saw.
#[derive(Default)]
struct Seen {
    frames: u64,
    distinct: u64,
    duplicates: u64,
    timed: u64,
    hist: Option<Hist>,
    per_run: HashMap<Vec<u8>, Vec<bool>>,
    groups: HashMap<String, u64>,
    closes: HashMap<String, u64>,
    reconnects: u64,
    cursor: Option<u64>,
    first_ns: u64,
    last_ns: u64,
}

impl Seen {
    fn frame(&mut self, b: &[u8], at: u64) {
        self.frames += 1;
        if self.first_ns == 0 {
            self.first_ns = at;
        }
        self.last_ns = at;
        if let Some(c) = int_field(b, &keys::CURSOR) {
            self.cursor = Some(c);
        }
        // A writer's stamp in `data`, or a stage's printed line `t_ns=<stamp>` (the cluster
        // case).
        if let Some(t_ns) = int_field(b, &keys::T_NS).or_else(|| int_field(b, &keys::T_NS_PRINTED))
        {
            self.timed += 1;
            self.hist
                .get_or_insert_with(Hist::new)
                .record_ns(at.saturating_sub(t_ns));
        }
        let (Some(run), Some(seq)) = (str_field(b, &keys::RUN_ID), int_field(b, &keys::SEQ)) else {
            return;
        };
        // Looked up by reference: a run's key is allocated once, not once a frame.
        if !self.per_run.contains_key(run) {
            self.per_run.insert(run.to_vec(), Vec::new());
        }
        let Some(bits) = self.per_run.get_mut(run) else {
            return;
        };
        let seq = seq as usize;
        if bits.len() <= seq {
            bits.resize(seq + 1, false);
        }
        if bits[seq] {
            self.duplicates += 1;
            return;
        }
        bits[seq] = true;
        self.distinct += 1;
        let group = String::from_utf8_lossy(run.split(|c| *c == b'-').next().unwrap_or(run));
        match self.groups.get_mut(&*group) {
            Some(n) => *n += 1,
            None => {
                self.groups.insert(group.into_owned(), 1);
            }
        }
    }
}

fn connect(port: u16, path: &str) -> Ws {
    let ws = http::ws_connect(port, path, &[]).unwrap_or_else(|e| panic!("upgrade {path}: {e}"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    ws
}

/// Reads one socket until it has `want` distinct events or `stop` is set.
fn read(mut ws: Ws, spec: &Spec, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while seen.distinct < spec.want && !stop.load(Ordering::Relaxed) {
        let ended = match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                seen.frame(t.as_bytes(), now_ns());
                None
            }
            Ok(tungstenite::Message::Close(c)) => {
                Some(c.map_or("close".into(), |f| u16::from(f.code).to_string()))
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => Some(format!("error: {e}")),
        };
        let Some(why) = ended else { continue };
        *seen.closes.entry(why).or_default() += 1;
        if !spec.reconnect {
            return seen;
        }
        let path = match seen.cursor {
            Some(c) => format!("{}?since={c}", spec.path),
            None => spec.path.clone(),
        };
        seen.reconnects += 1;
        ws = connect(spec.port, &path);
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    seen
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The client process's `main`.
pub fn run() {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str| -> u64 {
        arg(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("client process: {name} N"))
    };
    let spec = Arc::new(Spec {
        port: num("--port") as u16,
        path: arg(&args, "--path").expect("client process: --path P"),
        clients: num("--clients") as usize,
        want: num("--want"),
        reconnect: args.iter().any(|a| a == "--reconnect"),
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        // The bench closes our stdin to say "stop".
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let sockets: Vec<Ws> = (0..spec.clients)
        .map(|_| connect(spec.port, &spec.path))
        .collect();
    let threads: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            let (spec, stop) = (spec.clone(), stop.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || read(ws, &spec, &stop))
                .expect("client thread")
        })
        .collect();
    println!("{}", json!({ "ready": spec.clients }));
    let _ = std::io::stdout().flush();

    let mut hist = Hist::new();
    let (mut frames, mut distinct, mut duplicates, mut timed, mut reconnects) = (0, 0, 0, 0, 0);
    let (mut complete, mut first_ns, mut last_ns) = (0, u64::MAX, 0);
    let mut groups: HashMap<String, u64> = HashMap::new();
    let mut closes: HashMap<String, u64> = HashMap::new();
    let mut cursor = false;
    for t in threads {
        let s = t.join().expect("client thread");
        if let Some(h) = &s.hist {
            hist.merge(h);
        }
        frames += s.frames;
        distinct += s.distinct;
        duplicates += s.duplicates;
        timed += s.timed;
        reconnects += s.reconnects;
        complete += u64::from(s.distinct >= spec.want && s.duplicates == 0);
        if s.frames > 0 {
            first_ns = first_ns.min(s.first_ns);
            last_ns = last_ns.max(s.last_ns);
        }
        cursor |= s.cursor.is_some();
        for (g, n) in s.groups {
            *groups.entry(g).or_default() += n;
        }
        for (c, n) in s.closes {
            *closes.entry(c).or_default() += n;
        }
    }
    println!(
        "{}",
        json!({
            "clients": spec.clients, "complete": complete, "frames": frames,
            "distinct": distinct, "duplicates": duplicates, "timed": timed,
            "reconnects": reconnects, "cursor": cursor, "groups": groups, "closes": closes,
            "first_ns": if frames > 0 { first_ns } else { 0 }, "last_ns": last_ns,
            "p50_ms": hist.quantile_ms(0.50), "p99_ms": hist.quantile_ms(0.99),
            "max_ms": hist.max_us as f64 / 1000.0,
            "cpu_s": cpu_seconds(std::process::id()),
        })
    );
}
