//! Dashboard benchmarks (`cargo bench --bench dashboard [-- NAME]`); figures in
//! docs/benchmarks.md. Each runs the release binary as `pipewatch serve --bind 127.0.0.1:0` in a
//! fresh project folder and talks to it over loopback, like the dashboard page does. The server
//! is started, polled and reached exactly as the tests do it: this file includes the tests'
//! harness (`tests/it/support/server.rs` and `http.rs`).
//!
//! - latency: one writer appends an event line (and flushes) every 5 ms for 10 s; one client on
//!   `/ws/events` and one on `/ws/events/{run_id}` record when each line arrives. The line
//!   carries the writer's clock (`t_ns`, top level and in `data`: readers drop unknown top-level
//!   keys, `data` is kept). p50 / p99 / max of append → delivery.
//! - ingest: 1,000 files × 1,000 events. (a) "rebuild": the files are there before the server
//!   starts with no index; the index is rebuilt from them before the server answers (this path
//!   does not publish). (b) "tailer": the server starts on an empty folder, then the files are
//!   renamed into it from a sibling folder; timed until `/api/health` `events_ingested` reaches
//!   1,000,000 (every event committed to the index and published on the bus).
//! - idle: 35,040 finished runs (a year of 15-minute runs, 3–40 lines each); once the server
//!   sees them all, its CPU time over 30 s, its RSS, and `/api/runs` first-page latency.
//! - fanout: 200 clients on `/ws/events`; a writer appends 10,000 events/s for 10 s across 4
//!   run files; every client must get every event exactly once; p99 append → delivery.
//!
//! - load: 1,000 clients on `/ws/events`, the API at 500 requests/s for 60 s, and a writer
//!   appending 50 events/s meanwhile; every client must get every event, the API must not
//!   stall, the server's memory must stay flat (`PW_LOAD_CLIENTS`, `PW_LOAD_RATE`,
//!   `PW_LOAD_SECS` change the figures).
//!
//! - cluster (`dashboard/cluster.rs`): ten hosts' runners through a three-node NATS JetStream
//!   cluster to two dashboards: events/s and append → browser socket p99 at each.
//!
//! The streams cases (`dashboard/streams.rs`: gap, fanout-run, burst, latency1) run their
//! WebSocket clients in a process of their own (`dashboard/client.rs`: this binary again, with
//! `PW_BENCH_CLIENT` set) and print the server's CPU time per delivery and its peak RSS beside
//! each latency; paint (`dashboard/paint.rs`) measures append → painted in headless Chromium.
//!
//! The cases above them run clients and writers in this process, on the same machine as the
//! server: on a small machine they compete with it for the CPU (the figures say how much CPU
//! each side used). Writers stamp the wall clock (`now_ns`) so that a client in another process
//! can subtract it from its own.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

#[path = "../tests/it/support/http.rs"]
mod http;
#[allow(dead_code)] // the benches use part of the tests' server harness
#[path = "../tests/it/support/server.rs"]
mod server;
#[allow(dead_code)] // the bench needs only `chromium`
#[path = "../tests/it/support/tools.rs"]
mod tools;

#[allow(dead_code)] // the cluster case needs only part of the tests' NATS harness
#[path = "../tests/it/support/nats.rs"]
mod nats;

#[path = "dashboard/client.rs"]
mod client;
#[path = "dashboard/cluster.rs"]
mod cluster;
#[path = "dashboard/paint.rs"]
mod paint;
#[path = "dashboard/streams.rs"]
mod streams;

use http::Ws;
use server::Server;

const CONFIG: &str = "[pipeline]\nname = \"bench\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";

// ---------------------------------------------------------------------------------------------
// Clock, histogram
// ---------------------------------------------------------------------------------------------

/// The clock of writers and clients: wall-clock nanoseconds since the Unix epoch, so that a
/// client in another process (or a browser) can subtract a writer's stamp from its own.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Log-linear histogram of microseconds (relative error < 0.2%), cheap enough for 20 M samples.
#[derive(Clone)]
struct Hist {
    counts: Vec<u32>,
    n: u64,
    max_us: u64,
}

impl Hist {
    const LINEAR: u64 = 1024;
    const SUB: u64 = 512;

    fn new() -> Hist {
        Hist {
            counts: vec![0; (Self::LINEAR + 40 * Self::SUB) as usize],
            n: 0,
            max_us: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < Self::LINEAR {
            return us as usize;
        }
        let e = 63 - u64::from(us.leading_zeros()); // >= 10
        let sub = (us >> (e - 9)) & (Self::SUB - 1);
        (Self::LINEAR + (e - 10) * Self::SUB + sub) as usize
    }

    /// The lower bound of a bucket, in µs.
    fn value(b: usize) -> u64 {
        let b = b as u64;
        if b < Self::LINEAR {
            return b;
        }
        let e = (b - Self::LINEAR) / Self::SUB + 10;
        let sub = (b - Self::LINEAR) % Self::SUB;
        (1 << e) | (sub << (e - 9))
    }

    fn record_ns(&mut self, ns: u64) {
        let us = ns / 1000;
        let b = Self::bucket(us).min(self.counts.len() - 1);
        self.counts[b] += 1;
        self.n += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += *b;
        }
        self.n += o.n;
        self.max_us = self.max_us.max(o.max_us);
    }

    /// The `q` quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let rank = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Self::value(b).min(self.max_us) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.max_us as f64 / 1000.0
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The server's folder and process
// ---------------------------------------------------------------------------------------------

/// A project folder with the bench configuration; removed when dropped.
fn project() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pw-dash-")
        .tempdir()
        .expect("tempdir");
    fs::write(dir.path().join("pipewatch.toml"), CONFIG).expect("config");
    dir
}

fn events_dir(project: &Path) -> PathBuf {
    project.join("logs/events")
}

/// Fields `ns` (numbered from 1, as `proc(5)` does) of a process's `/proc/<pid>/stat`, read
/// at one moment, as numbers (0 where one is not).
fn stat_fields<const N: usize>(pid: u32, ns: [usize; N]) -> [u64; N] {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (field 2, in parentheses, may hold spaces): field 3 on.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    ns.map(|n| fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// (utime + stime) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let [utime, stime] = stat_fields(pid, [14, 15]);
    (utime + stime) as f64 / clk_tck()
}

/// The minor page faults of a process so far (each a page of memory touched for the first time,
/// or again after the allocator gave it back).
fn minor_faults(pid: u32) -> u64 {
    let [minflt] = stat_fields(pid, [10]);
    minflt
}

fn clk_tck() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/PID/status` field in MiB (VmRSS, VmHWM).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// Event lines
// ---------------------------------------------------------------------------------------------

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event line as pipewatch writes it (with `\n`).
#[allow(clippy::too_many_arguments)]
fn line(
    out: &mut String,
    seq: u64,
    run_id: &str,
    stage: &str,
    event: &str,
    timestamp: &str,
    msg: &str,
    data: &str,
) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        r#"{{"seq":{seq},"run_id":"{run_id}","pipeline":"bench","stage":"{stage}","event":"{event}","level":"info","timestamp":"{timestamp}","source":"cli","msg":"{msg}","data":{data}}}"#
    );
}

/// A live event as `pipewatch run` writes it, carrying the writer's clock in `data`: the
/// server publishes such a line as it is.
fn runner_line(seq: u64, run_id: &str, t_ns: u64) -> String {
    format!(
        "{{\"seq\":{seq},\"run_id\":\"{run_id}\",\"pipeline\":\"bench\",\"stage\":\"a\",\"event\":\"log\",\"level\":\"info\",\"timestamp\":\"{}\",\"source\":\"cli\",\"msg\":\"processed batch {seq} (1200 rows)\",\"data\":{{\"stream\":\"stdout\",\"t_ns\":{t_ns}}}}}\n",
        ts(Utc::now())
    )
}

/// A live event carrying the writer's clock, at top level (as asked) and in `data` (kept by
/// the server; unknown top-level keys are not, so the server encodes such a line again).
fn timed_line(seq: u64, run_id: &str, t_ns: u64) -> String {
    format!(
        "{{\"seq\":{seq},\"run_id\":\"{run_id}\",\"pipeline\":\"bench\",\"stage\":\"a\",\"event\":\"log\",\"level\":\"info\",\"timestamp\":\"{}\",\"msg\":\"processed batch {seq} (1200 rows)\",\"t_ns\":{t_ns},\"data\":{{\"stream\":\"stdout\",\"t_ns\":{t_ns}}}}}\n",
        ts(Utc::now())
    )
}

/// A finished run of `n` (>= 3) lines starting at `start`.
fn finished_run(run_id: &str, start: DateTime<Utc>, n: u64) -> String {
    let mut out = String::with_capacity(n as usize * 240);
    let at = |ms: u64| ts(start + chrono::Duration::milliseconds(ms as i64));
    line(
        &mut out,
        0,
        run_id,
        "pipeline",
        "start",
        &at(0),
        "run of bench started (1 stages, source cli)",
        r#"{"stages":["a"],"pid":4242}"#,
    );
    let mut seq = 1;
    if n > 3 {
        line(
            &mut out,
            seq,
            run_id,
            "a",
            "start",
            &at(1),
            "stage a started",
            r#"{"attempt":1}"#,
        );
        seq += 1;
    }
    while seq < n - 2 {
        let msg = format!("processed batch {seq} of {n}: 1200 rows, 0 rejected");
        line(
            &mut out,
            seq,
            run_id,
            "a",
            "log",
            &at(seq),
            &msg,
            r#"{"stream":"stdout"}"#,
        );
        seq += 1;
    }
    line(
        &mut out,
        seq,
        run_id,
        "a",
        "success",
        &at(seq),
        "stage a succeeded",
        &format!(r#"{{"attempt":1,"exit_code":0,"duration_ms":{seq}}}"#),
    );
    seq += 1;
    line(
        &mut out,
        seq,
        run_id,
        "pipeline",
        "success",
        &at(seq),
        "run of bench succeeded",
        &format!(r#"{{"duration_ms":{seq}}}"#),
    );
    out
}

fn file_name(run_id: &str) -> String {
    format!("pipeline_{run_id}.jsonl")
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients
// ---------------------------------------------------------------------------------------------

/// A client on `path`: the harness's socket, its reads polled every 200 ms rather than the
/// tests' 50 ms (a thousand idle clients then cost the machine little).
fn ws_connect(server: &Server, path: &str) -> Ws {
    let ws = server.ws(path);
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    ws
}

/// What the clients look for in a frame, each searcher built once rather than for every
/// frame: a client reads hundreds of thousands of frames a second in some cases, on the
/// server's machine.
mod keys {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;

    pub type Key = LazyLock<Finder<'static>>;

    pub static CURSOR: Key = LazyLock::new(|| Finder::new(b"\"cursor\":"));
    pub static T_NS: Key = LazyLock::new(|| Finder::new(b"\"t_ns\":"));
    /// A stage's printed line `t_ns=<stamp>` (the cluster case).
    pub static T_NS_PRINTED: Key = LazyLock::new(|| Finder::new(b"t_ns="));
    pub static RUN_ID: Key = LazyLock::new(|| Finder::new(b"\"run_id\":\""));
    pub static SEQ: Key = LazyLock::new(|| Finder::new(b"\"seq\":"));
    pub static DATA: Key = LazyLock::new(|| Finder::new(b"\"data\":"));
}

/// The integer after `key` in `text` (the first occurrence).
fn int_field(text: &[u8], key: &keys::Key) -> Option<u64> {
    let at = key.find(text)? + key.needle().len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The string after `key` (which ends with its opening quote) in `text`.
fn str_field<'a>(text: &'a [u8], key: &keys::Key) -> Option<&'a [u8]> {
    let at = key.find(text)? + key.needle().len();
    let end = memchr::memchr(b'"', &text[at..])?;
    Some(&text[at..at + end])
}

/// What one client saw.
struct Seen {
    hist: Hist,
    received: u64,
    timed: u64,
    duplicates: u64,
    /// Whether the top-level `t_ns` came through (else only `data.t_ns`).
    top_level_t_ns: bool,
    close: Option<String>,
    /// When the stream ended (`now_ns`), if the server ended it.
    closed_at: Option<u64>,
    per_run: HashMap<Vec<u8>, Vec<bool>>,
}

/// Reads messages until `want` timed events arrived, the server closed, or `stop` is set.
fn receive(mut ws: Ws, want: u64, stop: &AtomicBool) -> Seen {
    let mut seen = Seen {
        hist: Hist::new(),
        received: 0,
        timed: 0,
        duplicates: 0,
        top_level_t_ns: false,
        close: None,
        closed_at: None,
        per_run: HashMap::new(),
    };
    while seen.timed < want && !stop.load(Ordering::Relaxed) {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                seen.close.get_or_insert_with(|| format!("error: {e}"));
                seen.closed_at = Some(now_ns());
                break;
            }
        };
        let at = now_ns();
        match msg {
            tungstenite::Message::Text(t) => {
                let b = t.as_bytes();
                seen.received += 1;
                let Some(t_ns) = int_field(b, &keys::T_NS) else {
                    continue;
                };
                // Serialized field order puts a top-level t_ns before "data"; ours is dropped.
                if let (Some(a), Some(d)) = (keys::T_NS.find(b), keys::DATA.find(b))
                    && a < d
                {
                    seen.top_level_t_ns = true;
                }
                seen.timed += 1;
                seen.hist.record_ns(at.saturating_sub(t_ns));
                if let (Some(run), Some(seq)) =
                    (str_field(b, &keys::RUN_ID), int_field(b, &keys::SEQ))
                {
                    let bits = seen.per_run.entry(run.to_vec()).or_default();
                    let seq = seq as usize;
                    if bits.len() <= seq {
                        bits.resize(seq + 1, false);
                    }
                    if bits[seq] {
                        seen.duplicates += 1;
                    }
                    bits[seq] = true;
                }
            }
            tungstenite::Message::Close(c) => {
                seen.close = Some(match c {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason),
                    None => "close".into(),
                });
                seen.closed_at = Some(now_ns());
                break;
            }
            _ => {}
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    seen
}

/// Appends `total` timed events at `rate`/s spread round-robin over `files`, each line its own
/// `write` (no buffering). Returns when done.
/// Appends `total` lines made by `line` (seq, run id, the wall clock in ns) at `rate` per
/// second, round robin over `run_ids`, each in its own `write`.
fn write_paced(
    dir: &Path,
    run_ids: &[String],
    first_seq: u64,
    total: u64,
    rate: u64,
    line: fn(u64, &str, u64) -> String,
) {
    let mut files: Vec<File> = run_ids
        .iter()
        .map(|id| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(file_name(id)))
                .expect("open run file")
        })
        .collect();
    let mut seqs = vec![first_seq; files.len()];
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let k = (i as usize) % files.len();
        let l = line(seqs[k], &run_ids[k], now_ns());
        files[k].write_all(l.as_bytes()).expect("append");
        files[k].flush().expect("flush");
        seqs[k] += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. latency
// ---------------------------------------------------------------------------------------------

fn latency() {
    const RATE: u64 = 200;
    const TOTAL: u64 = 2_000; // 10 s
    let dir = project();
    let server = Server::start(dir.path());
    let events = events_dir(dir.path());
    let run_id = format!("latency-{}", std::process::id());
    // The run's first line, so that the per-run stream has a file to open.
    let mut first = String::new();
    line(
        &mut first,
        0,
        &run_id,
        "pipeline",
        "start",
        &ts(Utc::now()),
        "run of bench started",
        r#"{"stages":["a"]}"#,
    );
    fs::write(events.join(file_name(&run_id)), first).expect("first line");
    server.wait_json(
        "/api/health",
        "the first line",
        Duration::from_secs(10),
        |h| h["events_ingested"].as_u64() >= Some(1),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for path in ["/ws/events".to_string(), format!("/ws/events/{run_id}")] {
        let ws = ws_connect(&server, &path);
        let stop = stop.clone();
        clients.push((path, std::thread::spawn(move || receive(ws, TOTAL, &stop))));
    }
    server.wait_json("/api/health", "2 clients", Duration::from_secs(10), |h| {
        h["websocket_clients"].as_u64() >= Some(2)
    });
    std::thread::sleep(Duration::from_millis(200)); // the followers subscribe

    let cpu0 = cpu_seconds(server.pid());
    let w0 = Instant::now();
    write_paced(
        &events,
        std::slice::from_ref(&run_id),
        1,
        TOTAL,
        RATE,
        timed_line,
    );
    let wrote = w0.elapsed();
    // Give stragglers 5 s, then stop the clients.
    let deadline = Instant::now() + Duration::from_secs(5);
    while clients.iter().any(|(_, h)| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let cpu = cpu_seconds(server.pid()) - cpu0;
    for (path, h) in clients {
        let seen = h.join().expect("client");
        println!(
            "latency {path}: {TOTAL} events at {RATE}/s: append -> delivery {} (target p99 < 20 ms); received {}/{TOTAL}{}",
            seen.hist.summary(),
            seen.timed,
            if seen.top_level_t_ns {
                ""
            } else {
                "; top-level t_ns not passed through (read from data.t_ns)"
            },
        );
    }
    println!(
        "latency: server CPU {:.1}% of one core while writing ({:.1} s)",
        cpu / wrote.as_secs_f64() * 100.0,
        wrote.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. ingest
// ---------------------------------------------------------------------------------------------

const INGEST_FILES: u64 = 1_000;
const INGEST_LINES: u64 = 1_000;

/// Writes `files` finished runs of `lines` lines into `dir`; returns the bytes written.
fn generate(dir: &Path, files: u64, lines_of: impl Fn(u64) -> u64, spacing_min: i64) -> u64 {
    fs::create_dir_all(dir).expect("mkdir");
    let base = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let mut bytes = 0;
    for i in 0..files {
        let start = base + chrono::Duration::minutes(i as i64 * spacing_min);
        let run_id = format!("{}-{:06x}", start.format("%Y%m%dT%H%M%SZ"), i & 0xff_ffff);
        let text = finished_run(&run_id, start, lines_of(i));
        bytes += text.len() as u64;
        let mut f = BufWriter::new(File::create(dir.join(file_name(&run_id))).expect("create"));
        f.write_all(text.as_bytes()).expect("write");
        f.flush().expect("flush");
    }
    bytes
}

fn ingest() {
    let dir = project();
    let staging = dir.path().join("logs/staging");
    let events = events_dir(dir.path());
    let g = Instant::now();
    let bytes = generate(&staging, INGEST_FILES, |_| INGEST_LINES, 15);
    let total = INGEST_FILES * INGEST_LINES;
    eprintln!(
        "ingest: generated {INGEST_FILES} files x {INGEST_LINES} events ({:.0} MB, {:.0} B/event) in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / total as f64,
        g.elapsed().as_secs_f64()
    );

    // Start-up cost on an empty folder, subtracted from the rebuild figure.
    let empty_startup = {
        let _ = fs::remove_dir_all(dir.path().join(".pipewatch"));
        let t0 = Instant::now();
        let _s = Server::start(dir.path());
        t0.elapsed()
    };

    // (a) rebuild: the files are in place, no index.
    {
        let _ = fs::remove_dir_all(dir.path().join(".pipewatch"));
        let _ = fs::remove_dir_all(&events);
        fs::rename(&staging, &events).expect("move the files in");
        let t0 = Instant::now();
        let mut s = Server::start(dir.path());
        let took = t0.elapsed();
        let net = took.saturating_sub(empty_startup);
        // The tailer then finds every file at its checkpoint: nothing more is read.
        std::thread::sleep(Duration::from_secs(1));
        let h = s.health();
        let runs = s.json("/api/runs?limit=1000");
        let listed = runs
            .as_array()
            .or_else(|| runs["runs"].as_array())
            .map_or(0, Vec::len);
        println!(
            "ingest (rebuild at start, no publish): {total} events from {INGEST_FILES} files ready in {:.0} ms ({:.0} ms of it start-up) = {:.0} events/s (target >= 300,000); runs listed {listed}, events_ingested after {}",
            took.as_secs_f64() * 1000.0,
            empty_startup.as_secs_f64() * 1000.0,
            total as f64 / net.as_secs_f64(),
            h["events_ingested"]
        );
        s.stop();
        fs::rename(&events, &staging).expect("move the files back");
    }

    // (b) tailer: the server runs on an empty folder; the files are renamed in at once.
    {
        let _ = fs::remove_dir_all(dir.path().join(".pipewatch"));
        fs::create_dir_all(&events).expect("events dir");
        let s = Server::start(dir.path());
        s.wait_json("/api/health", "the watch", Duration::from_secs(10), |h| {
            h["tailer"]["watching"].as_bool() == Some(true)
        });
        let names: Vec<_> = fs::read_dir(&staging)
            .expect("staging")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        let cpu0 = cpu_seconds(s.pid());
        let t = Instant::now();
        for n in &names {
            fs::rename(staging.join(n), events.join(n)).expect("rename");
        }
        let moved = t.elapsed();
        // Progress every second, to see whether the rate holds.
        let mut marks = Vec::new();
        let mut next_mark = Duration::from_secs(1);
        let h = loop {
            let h = s.health();
            let n = h["events_ingested"].as_u64().unwrap_or(0);
            if t.elapsed() >= next_mark {
                marks.push(n);
                next_mark += Duration::from_secs(1);
            }
            if n >= total {
                break h;
            }
            if t.elapsed() > Duration::from_secs(110) {
                println!(
                    "ingest (tailer): timed out at {n}/{total} events after 110 s; health {h}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t.elapsed();
        let cpu = cpu_seconds(s.pid()) - cpu0;
        println!(
            "ingest (tailer: files renamed into a watched folder): {total} events committed and published in {:.0} ms = {:.0} events/s (target >= 300,000); renames took {:.0} ms; server CPU {:.1} s ({:.0}% of one core), peak RSS {:.0} MiB",
            took.as_secs_f64() * 1000.0,
            total as f64 / took.as_secs_f64(),
            moved.as_secs_f64() * 1000.0,
            cpu,
            cpu / took.as_secs_f64() * 100.0,
            status_mib(s.pid(), "VmHWM"),
        );
        eprintln!(
            "ingest (tailer): events_ingested at each second: {marks:?}; malformed {} files_watched {}",
            h["malformed_lines"], h["files_watched"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. idle
// ---------------------------------------------------------------------------------------------

const IDLE_FILES: u64 = 35_040; // a year of runs every 15 minutes

fn idle() {
    let dir = project();
    let events = events_dir(dir.path());
    let g = Instant::now();
    // 3 to 40 lines, spread evenly and deterministically.
    let bytes = generate(&events, IDLE_FILES, |i| 3 + (i * 7919 + 13) % 38, 15);
    eprintln!(
        "idle: generated {IDLE_FILES} finished runs ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        g.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let s = Server::start(dir.path());
    let ready = t0.elapsed();
    let h = s.wait_json(
        "/api/health",
        "every file watched",
        Duration::from_secs(60),
        |h| h["files_watched"].as_u64() >= Some(IDLE_FILES),
    );
    let all_seen = t0.elapsed();
    // Let the first full scan finish, then measure a quiet server (no requests meanwhile).
    std::thread::sleep(Duration::from_secs(3));
    let pid = s.pid();
    let scans0 = s.health()["tailer"]["scans"].as_u64().unwrap_or(0);
    let c0 = cpu_seconds(pid);
    let w = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let cpu = cpu_seconds(pid) - c0;
    let span = w.elapsed().as_secs_f64();
    let rss = status_mib(pid, "VmRSS");
    let hwm = status_mib(pid, "VmHWM");
    let scans = s.health()["tailer"]["scans"].as_u64().unwrap_or(0) - scans0;

    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..50 {
        let t = Instant::now();
        let r = s.get("/api/runs");
        times.push(t.elapsed());
        assert_eq!(r.status, 200, "GET /api/runs: {}", r.body);
        let v = r.json();
        listed = v
            .as_array()
            .or_else(|| v["runs"].as_array())
            .map_or(0, Vec::len);
    }
    times.sort();
    println!(
        "idle: {IDLE_FILES} finished runs: server ready in {:.1} s, all files watched after {:.1} s (files_watched {})",
        ready.as_secs_f64(),
        all_seen.as_secs_f64(),
        h["files_watched"]
    );
    println!(
        "idle: CPU {:.2}% of one core over {span:.0} s ({scans} scans) (target < 1%)",
        cpu / span * 100.0
    );
    println!("idle: RSS {rss:.1} MiB (peak {hwm:.1} MiB) (target < 64 MiB)");
    println!(
        "idle: /api/runs first page ({listed} runs): median {:.2} ms, max {:.2} ms over 50 requests (target < 50 ms)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
}

// ---------------------------------------------------------------------------------------------
// 4. fan-out
// ---------------------------------------------------------------------------------------------

/// `PW_FANOUT_CLIENTS` / `PW_FANOUT_RATE` override the defaults (to find what a machine
/// sustains); the figure in the docs uses the defaults.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fanout() {
    let n_clients = env_or("PW_FANOUT_CLIENTS", 200) as usize;
    let rate = env_or("PW_FANOUT_RATE", 10_000);
    let total = rate * 10; // 10 s
    const FILES: usize = 4;
    let dir = project();
    let server = Server::start(dir.path());
    let events = events_dir(dir.path());
    let run_ids: Vec<String> = (0..FILES)
        .map(|i| format!("fanout-{}-{i}", std::process::id()))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..n_clients {
        let ws = ws_connect(&server, "/ws/events");
        let stop = stop.clone();
        connected.fetch_add(1, Ordering::Relaxed);
        clients.push(
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || receive(ws, total, &stop))
                .expect("client thread"),
        );
    }
    server.wait_json(
        "/api/health",
        "every client",
        Duration::from_secs(30),
        |h| h["websocket_clients"].as_u64() >= Some(n_clients as u64),
    );
    std::thread::sleep(Duration::from_millis(300));

    let me = std::process::id();
    let (s_cpu0, b_cpu0) = (cpu_seconds(server.pid()), cpu_seconds(me));
    let w0 = Instant::now();
    let w0_ns = now_ns();
    write_paced(&events, &run_ids, 0, total, rate, timed_line);
    let wrote = w0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained = w0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (s_cpu, b_cpu) = (cpu_seconds(server.pid()) - s_cpu0, cpu_seconds(me) - b_cpu0);
    let h = server.health();

    let mut all = Hist::new();
    let mut complete = 0;
    let mut delivered = 0u64;
    let mut dups = 0u64;
    let mut closes: HashMap<String, usize> = HashMap::new();
    let mut top_level = true;
    let mut closed_s: Vec<f64> = Vec::new();
    for c in clients {
        let seen = c.join().expect("client");
        all.merge(&seen.hist);
        delivered += seen.timed;
        dups += seen.duplicates;
        top_level &= seen.top_level_t_ns;
        let got_all = seen.per_run.len() == FILES
            && seen.per_run.values().all(|b| b.iter().all(|x| *x))
            && seen.per_run.values().map(|b| b.len() as u64).sum::<u64>() == total;
        if got_all && seen.duplicates == 0 {
            complete += 1;
        }
        if let Some(c) = seen.close {
            *closes.entry(c).or_default() += 1;
        }
        if let Some(t) = seen.closed_at {
            closed_s.push(t.saturating_sub(w0_ns) as f64 / 1e9);
        }
        let _ = seen.received;
    }
    println!(
        "fanout: {n_clients} clients x {total} events ({rate}/s over {FILES} files, written in {:.1} s): {complete}/{n_clients} clients got every event exactly once; {delivered}/{} deliveries, {dups} duplicates (target: all, none)",
        wrote.as_secs_f64(),
        n_clients as u64 * total
    );
    println!(
        "fanout: append -> delivery {} (target p99 < 100 ms); clients done {:.1} s after the writer started",
        all.summary(),
        drained.as_secs_f64()
    );
    println!(
        "fanout: CPU over {:.1} s: server {:.0}% of one core, this bench (writer + {n_clients} clients) {:.0}%; streams ended by the server {closes:?}, events_ingested {}{}",
        drained.as_secs_f64(),
        s_cpu / drained.as_secs_f64() * 100.0,
        b_cpu / drained.as_secs_f64() * 100.0,
        h["events_ingested"],
        if top_level {
            ""
        } else {
            "; top-level t_ns not passed through (read from data.t_ns)"
        },
    );
    if !closed_s.is_empty() {
        closed_s.sort_by(f64::total_cmp);
        println!(
            "fanout: {} streams ended by the server, {:.2} s to {:.2} s after the writer started",
            closed_s.len(),
            closed_s[0],
            closed_s[closed_s.len() - 1]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. load
// ---------------------------------------------------------------------------------------------

/// 1,000 clients on `/ws/events`, the API under a steady request rate for a while, and a writer
/// appending events meanwhile: every client gets every event, API latency stays low, and the
/// server's memory stays flat.
fn load() {
    let n_clients = env_or("PW_LOAD_CLIENTS", 1000) as usize;
    let api_rate = env_or("PW_LOAD_RATE", 500);
    let secs = env_or("PW_LOAD_SECS", 60);
    const EVENT_RATE: u64 = 50;
    const FILES: usize = 4;
    let dir = project();
    let events = events_dir(dir.path());
    // Some history for the API to page through.
    fs::create_dir_all(&events).expect("events dir");
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    generate(&events, 2000, |i| 3 + i % 20, 15);
    let _ = start;
    let server = Server::start(dir.path());
    let run_ids: Vec<String> = (0..FILES)
        .map(|i| format!("load-{}-{i}", std::process::id()))
        .collect();
    let total = EVENT_RATE * secs;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..n_clients {
        let ws = ws_connect(&server, "/ws/events");
        let stop = stop.clone();
        clients.push(
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || receive(ws, total, &stop))
                .expect("client thread"),
        );
    }
    server.wait_json(
        "/api/health",
        "every client",
        Duration::from_secs(60),
        |h| h["websocket_clients"].as_u64() >= Some(n_clients as u64),
    );
    let rss0 = status_mib(server.pid(), "VmRSS");

    // The API load: a few threads on keep-alive connections, paced to `api_rate` in total.
    let port = server.port;
    let api_threads = 16u64;
    let api: Vec<_> = (0..api_threads)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = http::Client::new(port, Duration::from_secs(10));
                let paths = [
                    "/api/runs?limit=50",
                    "/api/health",
                    "/api/runs?status=success&limit=20",
                    "/metrics",
                ];
                let mut hist = Hist::new();
                let (mut ok, mut errors) = (0u64, 0u64);
                let per = api_rate / api_threads;
                let begin = Instant::now();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = begin + Duration::from_nanos(i * 1_000_000_000 / per.max(1));
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let path = paths[((i + t) % paths.len() as u64) as usize];
                    let t_req = Instant::now();
                    match client.get(path) {
                        Ok(r) if (200..300).contains(&r.status) => ok += 1,
                        _ => errors += 1,
                    }
                    hist.record_ns(t_req.elapsed().as_nanos() as u64);
                    i += 1;
                }
                (hist, ok, errors)
            })
        })
        .collect();

    // Memory, sampled every second while the load runs.
    let pid = server.pid();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0f64;
            let mut last = 0f64;
            while !stop.load(Ordering::Relaxed) {
                last = status_mib(pid, "VmRSS");
                max = max.max(last);
                std::thread::sleep(Duration::from_secs(1));
            }
            (max, last)
        })
    };

    let cpu0 = cpu_seconds(pid);
    let w0 = Instant::now();
    write_paced(&events, &run_ids, 0, total, EVENT_RATE, timed_line);
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = w0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let cpu = cpu_seconds(pid) - cpu0;
    let (rss_max, rss_end) = sampler.join().expect("sampler");

    let mut api_hist = Hist::new();
    let (mut ok, mut errors) = (0u64, 0u64);
    for t in api {
        let (h, o, e) = t.join().expect("api thread");
        api_hist.merge(&h);
        ok += o;
        errors += e;
    }
    let mut complete = 0;
    let mut dups = 0u64;
    for c in clients {
        let seen = c.join().expect("client");
        dups += seen.duplicates;
        let got_all = seen
            .per_run
            .values()
            .map(|b| b.iter().filter(|x| **x).count() as u64)
            .sum::<u64>()
            == total;
        if got_all && seen.duplicates == 0 {
            complete += 1;
        }
    }
    println!(
        "load: {n_clients} clients on /ws/events for {:.0} s while {EVENT_RATE} events/s were written: {complete}/{n_clients} got every event exactly once, {dups} duplicates",
        elapsed.as_secs_f64()
    );
    println!(
        "load: API at {api_rate} requests/s: {ok} answered, {errors} errors; latency {} (nothing may stall)",
        api_hist.summary()
    );
    println!(
        "load: server RSS {rss0:.1} MiB before, {rss_max:.1} MiB at most, {rss_end:.1} MiB at the end; CPU {:.0}% of one core",
        cpu / elapsed.as_secs_f64() * 100.0
    );
}

fn main() {
    if std::env::var_os(client::MODE_ENV).is_some() {
        client::run();
        return;
    }
    if std::env::var_os(cluster::STAGE_ENV).is_some() {
        cluster::stage();
        return;
    }
    // `cargo bench` passes --bench; a filter argument picks one benchmark.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("latency") {
        latency();
    }
    if want("ingest") {
        ingest();
    }
    if want("idle") {
        idle();
    }
    if want("fanout") {
        fanout();
    }
    if want("load") {
        load();
    }
    if want("gap") {
        streams::gap();
    }
    if want("fanout-run") {
        streams::fanout_run();
    }
    if want("burst") {
        streams::burst();
    }
    if want("latency1") {
        streams::latency1();
    }
    if want("paint") {
        paint::paint();
    }
    if want("cluster") {
        cluster::cluster();
    }
}

/// A free port on 127.0.0.1 (for the NATS servers of the cluster case).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
