//! The real binary as the tests and the dashboard benchmark start it — the only place that
//! does.
//!
//! [`pipewatch`] is its command line in a folder, with nothing inherited from the caller's
//! environment that would change what it does (a token, a log level, colours). [`Server`] is
//! `pipewatch serve` in a project folder: on a free port unless told otherwise (`--bind
//! 127.0.0.1:0`, the port read back from the address line it prints first), ready once it
//! answers `/api/health`. Its stdout and stderr are drained for its whole life (a full pipe
//! would block its logging); stderr is kept, for a test to read, and printed when a test
//! panics while the server is in scope (so no panic message here repeats it). It can be
//! stopped (SIGTERM and a clean exit), killed (`kill -9`) and started again in the same
//! folder. Its own requests (readiness, polling) share one keep-alive connection.
//!
//! `benches/dashboard.rs` includes this file (with `#[path]`, next to `http.rs`): the first
//! `impl Server` block is what both use, the second the tests alone.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use pipewatch::sync::MutexExt;
use serde_json::Value;

use super::http::{self, Client, Resp, Ws};

pub const BIN: &str = env!("CARGO_BIN_EXE_pipewatch");

/// How long `pipewatch serve` may take to print its address.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(60);
/// How long it may then take to answer `/api/health`: it answers once its index is open, which
/// means rebuilt from every run file when there is none (a million events, in the benchmark).
const READY_WITHIN: Duration = Duration::from_secs(300);
/// How long it may take to exit once stopped.
const EXIT_WITHIN: Duration = Duration::from_secs(60);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// `pipewatch` in `dir`, as every test runs it: no `PIPEWATCH_TOKEN` or `PIPEWATCH_LOG` from
/// the caller's environment, no colours, nothing on stdin.
pub fn pipewatch(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("PIPEWATCH_TOKEN")
        .env_remove("PIPEWATCH_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// Waits for a child with a deadline, killing it if it overstays.
pub fn wait_child(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pipewatch did not exit within {within:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// How to start `pipewatch serve`.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--bind`: by default `127.0.0.1:0`, a free port; `None` leaves the project's
    /// `[server] bind`. A token is set in the project's configuration (`[server] token`, what
    /// the tests check), or as `PIPEWATCH_TOKEN` in `env`.
    pub bind: Option<String>,
    /// Environment variables for the server (a `PATH` with stand-in tools, `PIPEWATCH_LOG`).
    pub env: Vec<(String, OsString)>,
    /// More arguments after `serve`.
    pub args: Vec<String>,
    /// How long it may take to answer `/api/health` once it printed its address: a test that
    /// checks start-up does not hang gives less than the default.
    pub ready_within: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            bind: Some("127.0.0.1:0".to_string()),
            env: Vec::new(),
            args: Vec::new(),
            ready_within: READY_WITHIN,
        }
    }
}

/// `pipewatch serve` in a project folder; killed when dropped.
pub struct Server {
    /// The port it listens on (another one after a restart, unless bound to a fixed address).
    pub port: u16,
    dir: PathBuf,
    options: Options,
    child: Option<Child>,
    /// Everything it wrote on stderr, across restarts, each line after `[N]`, N its start.
    log: Arc<Mutex<String>>,
    /// Set once the current process's stderr has closed: its lines are all in `log`.
    log_closed: Arc<AtomicBool>,
    starts: u32,
    /// The keep-alive connection of the harness's own requests.
    client: Mutex<Client>,
}

impl Server {
    /// `pipewatch serve --bind 127.0.0.1:0` in `dir`, once it answers.
    pub fn start(dir: impl AsRef<Path>) -> Server {
        Server::start_with(dir, Options::default())
    }

    pub fn start_with(dir: impl AsRef<Path>, options: Options) -> Server {
        let mut s = Server {
            port: 0,
            dir: dir.as_ref().to_path_buf(),
            options,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            log_closed: Arc::new(AtomicBool::new(true)),
            starts: 0,
            client: Mutex::new(Client::new(0, http::TIMEOUT)),
        };
        s.spawn();
        s
    }

    /// Starts it (again: after [`Server::stop`] or [`Server::kill9`]) with the same options,
    /// and waits until it answers.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "pipewatch serve is already running");
        let mut cmd = pipewatch(&self.dir);
        cmd.arg("serve");
        if let Some(bind) = &self.options.bind {
            cmd.args(["--bind", bind]);
        }
        let mut child = cmd
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pipewatch serve");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let err = child.stderr.take().expect("piped stderr");
        let (log, closed, start) = (
            self.log.clone(),
            Arc::new(AtomicBool::new(false)),
            self.starts,
        );
        self.log_closed = closed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock_anyway().push_str(&format!("[{start}] {line}\n"));
            }
            closed.store(true, Ordering::SeqCst);
        });
        self.child = Some(child);
        self.starts += 1;

        let first = match lines.recv_timeout(ANNOUNCED_WITHIN) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it is exiting.
                let st = wait_child(self.running(), Duration::from_secs(5));
                self.await_stderr();
                panic!("pipewatch serve exited ({st}) before printing its address");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("pipewatch serve printed no address within {ANNOUNCED_WITHIN:?}")
            }
        };
        self.port = first
            .strip_prefix("pipewatch dashboard: http://")
            .and_then(|rest| rest.trim_end_matches('/').parse::<SocketAddr>().ok())
            .map(|addr| addr.port())
            .unwrap_or_else(|| panic!("unexpected first stdout line {first:?}"));
        *self.client.lock_anyway() = Client::new(self.port, http::TIMEOUT);

        // The address is printed before the index is open: wait until it answers.
        let ready_within = self.options.ready_within;
        let deadline = Instant::now() + ready_within;
        while !self.try_get("/api/health").is_ok_and(|r| r.status == 200) {
            if let Some(st) = self.running().try_wait().expect("try_wait") {
                self.await_stderr();
                panic!("pipewatch serve exited ({st}) before answering /api/health");
            }
            assert!(
                Instant::now() < deadline,
                "pipewatch serve on port {} did not answer /api/health within {ready_within:?}",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    fn running(&mut self) -> &mut Child {
        self.child.as_mut().expect("pipewatch serve is running")
    }

    // Used on Unix only: `stop` signals it, `rss` and the benchmark read /proc.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("pipewatch serve is running")
            .id()
    }

    /// What it wrote on stderr so far, across restarts.
    pub fn stderr(&self) -> String {
        self.log.lock_anyway().clone()
    }

    /// Once the process has exited: until the last of its stderr is in the log (bounded, in
    /// case a child of its holds the pipe open).
    fn await_stderr(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_closed.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then waits for a clean exit (exit status 0).
    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
            let mut child = self.child.take().expect("pipewatch serve is running");
            let st = wait_child(&mut child, EXIT_WITHIN);
            self.await_stderr();
            assert!(st.success(), "serve exited with {st} on SIGTERM");
        }
        #[cfg(not(unix))]
        {
            // No SIGTERM to send: it is ended at once (what a stop means to the tests that
            // run here: the next start must find its files and index usable).
            let mut child = self.child.take().expect("pipewatch serve is running");
            let _ = child.kill();
            wait_child(&mut child, EXIT_WITHIN);
            self.await_stderr();
        }
    }

    /// `GET path` on the harness's keep-alive connection; an error if nothing answers.
    pub fn try_get(&self, path: &str) -> io::Result<Resp> {
        self.client.lock_anyway().get(path)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: no answer ({e})"))
    }

    /// `GET path`, asserting 200, as JSON.
    pub fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    pub fn health(&self) -> Value {
        self.json("/api/health")
    }

    /// A series of `/metrics` without labels (`pipewatch_bus_cursor`); panics when it is not
    /// there.
    pub fn metric(&self, name: &str) -> u64 {
        let m = self.get("/metrics").body;
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{m}"))
    }

    /// The JSON document at `path` once it answers 200 and `cond` holds; panics after `within`.
    pub fn wait_json(
        &self,
        path: &str,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut last = Value::Null;
        loop {
            if let Ok(r) = self.try_get(path)
                && r.status == 200
            {
                last = r.json();
                if cond(&last) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what} (GET {path}); last {last}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// A WebSocket on `path` (see [`http::ws_connect`]).
    pub fn ws(&self, path: &str) -> Ws {
        http::ws_connect(self.port, path, &[]).unwrap_or_else(|e| panic!("upgrade {path}: {e}"))
    }
}

// The tests' part: the dashboard benchmark, which includes this file, neither restarts nor
// kills its servers and sends no request of its own making. (No `cfg` tells the two apart:
// cargo builds a `harness = false` bench with `--cfg test` too.)
#[allow(dead_code)]
impl Server {
    /// Its resident memory, in bytes (Linux: `VmRSS` of `/proc/PID/status`).
    #[cfg(target_os = "linux")]
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status of pipewatch serve");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Every event of a run from `/api/runs/{id}/events`, page after page, following each
    /// page's `Link: <...>; rel="next"` as a client does.
    pub fn all_events(&self, id: &str) -> Vec<Value> {
        let mut path = format!("/api/runs/{id}/events");
        let mut all = Vec::new();
        loop {
            let r = self.get(&path);
            assert_eq!(r.status, 200, "GET {path}: {}", r.body);
            all.extend(r.json().as_array().cloned().unwrap_or_default());
            let Some(link) = r.header("link") else {
                return all;
            };
            let next = link
                .strip_prefix('<')
                .and_then(|l| l.split_once(">; rel=\"next\""))
                .map(|(url, _)| url.to_string());
            path =
                next.unwrap_or_else(|| panic!("GET {path}: a Link that is not rel=next: {link}"));
        }
    }

    /// `http://127.0.0.1:PORT`, the address to open in a browser.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("pipewatch serve is running");
        child.kill().expect("kill -9");
        let _ = child.wait();
        self.await_stderr();
    }

    /// Stops it and starts it again (on a new port, unless bound to a fixed one).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// One request exactly as given, on a connection of its own.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http::request(self.port, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path` on a thread and a connection of their own: the answer (or the error) comes
    /// on the receiver, so a test can bound how long it waits for a server that may hang.
    pub fn spawn_get(&self, path: &str) -> mpsc::Receiver<io::Result<Resp>> {
        let (tx, rx) = mpsc::channel();
        let (port, path) = (self.port, path.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(http::request(port, "GET", &path, &[], b""));
        });
        rx
    }

    /// `GET path`, failing the test if no answer comes `within`: a hung server fails the test
    /// instead of hanging the suite (and is killed when the `Server` is dropped).
    pub fn get_within(&self, path: &str, within: Duration) -> Resp {
        match self.spawn_get(path).recv_timeout(within) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("GET {path}: no answer ({e})"),
            Err(_) => panic!("GET {path}: no answer within {within:?}: the server hangs"),
        }
    }

    pub fn post_json(&self, path: &str, body: &str) -> Resp {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// `/api/runs/{id}` once it exists and `cond` holds; panics after `within`.
    pub fn wait_run(&self, id: &str, within: Duration, cond: impl FnMut(&Value) -> bool) -> Value {
        self.wait_json(
            &format!("/api/runs/{id}"),
            &format!("run {id}"),
            within,
            cond,
        )
    }

    /// The runs `/api/runs` lists (up to 1000).
    pub fn runs(&self) -> Vec<Value> {
        match self.json("/api/runs?limit=1000") {
            Value::Array(v) => v,
            other => panic!("GET /api/runs: {other}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- pipewatch serve stderr ---\n{}", self.stderr());
        }
    }
}
