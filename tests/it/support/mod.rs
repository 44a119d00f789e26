//! The one harness of the integration tests: every test starts `pipewatch` and talks to it
//! through these, and `benches/dashboard.rs` shares `server.rs` and `http.rs`. A new test adds
//! a case with them, not a harness of its own.
//!
//! - here: a temporary project around the real binary ([`Project`]), run files and journals,
//!   waiting for a condition with a deadline ([`wait_until`]; nothing sleeps for readiness),
//!   the one seeded random generator ([`Rng`]);
//! - `server.rs`: the binary's command line, and `pipewatch serve` on a free port — started,
//!   polled, stopped, killed, restarted ([`Server`]);
//! - `http.rs`: the HTTP client (one request, or a keep-alive connection) and the WebSocket
//!   upgrade;
//! - `ws.rs`: reading the live streams (WebSocket frames, Server-Sent Events);
//! - `nats.rs`: real `nats-server` processes with JetStream (one, or a cluster of three),
//!   killed and restarted, and the engine read back with the official client;
//! - `tools.rs`: tools a machine may lack (a loud skip, or a failure in CI), stand-in tools.

pub mod http;
pub mod nats;
pub mod server;
pub mod tools;
pub mod ws;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use http::{Refused, Resp, Ws, ws_connect};
pub use server::{BIN, Options, Server, wait_child};
#[cfg(unix)]
pub use ws::keep_reading;
pub use ws::{Next, Sse, drain_until_closed, drain_until_quiet, next, read_for, read_until};

/// A temporary project folder; removed when dropped.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A project whose config is `[pipeline] name = "p"` plus `extra` (stages and more).
    pub fn with_config(extra: &str) -> Project {
        let p = Project::new();
        p.write_config(&format!("[pipeline]\nname = \"p\"\n{extra}"));
        p
    }

    /// A workspace: `[workspace] pipelines = ["pipelines/*.toml"]` then `shared` (its
    /// `[server]`, `[scheduler]`, ...) in `pipewatch.toml`, and for each `(name, schedule)` a
    /// file `pipelines/NAME.toml` whose one stage, `a`, prints `hi`.
    pub fn workspace(shared: &str, pipelines: &[(&str, &str)]) -> Project {
        let p = Project::new();
        p.write_config(&format!(
            "[workspace]\npipelines = [\"pipelines/*.toml\"]\n{shared}"
        ));
        let dir = p.path().join("pipelines");
        std::fs::create_dir_all(&dir).expect("pipelines folder");
        for (name, schedule) in pipelines {
            std::fs::write(
                dir.join(format!("{name}.toml")),
                format!(
                    "[pipeline]\nname = \"{name}\"\nschedule = \"{schedule}\"\n\
                     [[stages]]\nname = \"a\"\nrun = \"echo hi\"\n"
                ),
            )
            .expect("pipeline file");
        }
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path().join("pipewatch.toml"), text).expect("write config");
    }

    /// `pipewatch ARGS` in the project (see [`server::pipewatch`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = server::pipewatch(self.path());
        c.args(args);
        c
    }

    /// Runs `pipewatch ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run pipewatch")
    }

    /// Starts `pipewatch ARGS` in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pipewatch")
    }

    /// In the platform's form, as pipewatch shows it.
    pub fn events_dir(&self) -> PathBuf {
        self.path().join("logs").join("events")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join(".pipewatch")
    }

    /// Journal files, oldest run first.
    pub fn journals(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.events_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The only journal; panics if there is not exactly one.
    pub fn journal(&self) -> Vec<Value> {
        let j = self.journals();
        assert_eq!(j.len(), 1, "expected one run file, found {j:?}");
        read_events(&j[0])
    }
}

impl AsRef<Path> for Project {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

/// Stage commands for the platform shell (`sh -c` on Unix, `cmd /d /s /c` on Windows), for
/// the tests whose subject is not the shell; each fits in a TOML literal string (`'''…'''`).
/// `echo hi` needs no entry: both shells print `hi`.
pub mod stage {
    /// The command for this platform's shell: `unix` for `sh -c`, `windows` for
    /// `cmd /d /s /c` (the whole string after `/c`, as `src/runner/process.rs` passes it).
    pub fn sh(unix: &str, windows: &str) -> String {
        if cfg!(windows) { windows } else { unix }.to_string()
    }

    /// Waits `secs` seconds, then succeeds. cmd.exe has no sleep of its own (`timeout` wants a
    /// console): `ping -n N` on the loopback address waits a second between its N echoes.
    pub fn sleep(secs: u32) -> String {
        sh(
            &format!("sleep {secs}"),
            &format!("ping -n {} 127.0.0.1 >nul", secs + 1),
        )
    }

    /// Succeeds, printing nothing.
    #[cfg(unix)]
    pub const OK: &str = "true";
    #[cfg(windows)]
    pub const OK: &str = "exit 0";

    /// Waits for a file `go` in the working folder (at most a minute), then succeeds.
    #[cfg(unix)]
    pub const GATE: &str =
        "i=0; while [ ! -f go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done";
    /// `ping -n 2` on the loopback address is cmd's one-second pause; once `go` is there,
    /// the remaining turns do nothing.
    #[cfg(windows)]
    pub const GATE: &str = "for /l %i in (1,1,60) do @if not exist go ping -n 2 127.0.0.1 >nul";

    /// Prints the working folder.
    #[cfg(unix)]
    pub const PWD: &str = "pwd";
    #[cfg(windows)]
    pub const PWD: &str = "cd";
}

/// A stage that does nothing (a dashboard needs a valid configuration).
#[cfg(unix)]
pub const QUICK: &str = "[[stages]]\nname = \"a\"\nrun = \"true\"\n";
#[cfg(windows)]
pub const QUICK: &str = "[[stages]]\nname = \"a\"\nrun = \"exit 0\"\n";

/// The run file of `id` in the project's events folder.
pub fn run_path(p: &Project, id: &str) -> PathBuf {
    p.events_dir().join(format!("pipeline_{id}.jsonl"))
}

/// One event in the original format (as other tools write it): the five required keys, no
/// `seq`.
pub fn line(id: &str, stage: &str, event: &str, ts: &str, msg: &str) -> String {
    let mut l = json!({"run_id": id, "stage": stage, "event": event, "timestamp": ts, "msg": msg})
        .to_string();
    l.push('\n');
    l
}

/// Appends and flushes, as a run writer does (creating the folder and the file).
pub fn append(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
}

pub fn count_lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// Every line of a journal, parsed; asserts each is a complete JSON line.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// The `seq` of each event.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Whether an event with this `seq` is among `events`.
pub fn has_seq(events: &[Value], seq: u64) -> bool {
    events.iter().any(|e| e["seq"] == seq)
}

/// A command's stdout as JSON (the test fails, showing it, if it is not).
pub fn json_out(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

pub fn ev<'a>(events: &'a [Value], stage: &str, event: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["stage"] == stage && e["event"] == event)
        .collect()
}

/// The `msg` of every log line of `stage` on `stream`, in order.
pub fn logs(events: &[Value], stage: &str, stream: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["stage"] == stage && e["event"] == "log" && e["data"]["stream"] == stream)
        .map(|e| e["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The run-level terminal event.
pub fn run_end(events: &[Value]) -> &Value {
    let last = events.last().expect("events");
    assert_eq!(
        last["stage"], "pipeline",
        "last event is not run-level: {last}"
    );
    last
}

/// The `name` of each pipeline in a list of them (`/api/pipelines`, `pipewatch pipelines
/// --json`).
pub fn pipeline_names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|all| all.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default()
}

/// The check `name` of `pipewatch doctor --json`'s answer; panics when it has none.
pub fn doctor_check<'a>(checks: &'a Value, name: &str) -> &'a Value {
    checks
        .as_array()
        .and_then(|all| all.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {checks}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deletes a folder and all it holds, as a user would while the dashboard runs.
///
/// A folder that another process is listing at that instant may refuse: Wine's
/// `FindFirstFileExW` (what `std::fs::read_dir` calls, and so the tailer's scan) opens the
/// folder without `FILE_SHARE_DELETE`, so the deletion fails with a sharing violation (32)
/// for as long as the listing lasts. Like Explorer, this tries again, for up to 5 s.
pub fn remove_folder(path: &Path) {
    const SHARING_VIOLATION: i32 = 32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return,
            Err(e)
                if cfg!(windows)
                    && e.raw_os_error() == Some(SHARING_VIOLATION)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the tests run under Wine (which keeps its own programs in the Windows folder; no
/// Windows has `winecfg.exe`). A test that Wine cannot run calls this first and returns,
/// saying why, when it is true: see docs/windows.md for the list.
pub fn under_wine(test: &str, why: &str) -> bool {
    let wine = cfg!(windows) && Path::new(r"C:\windows\system32\winecfg.exe").exists();
    if wine {
        eprintln!("SKIPPED under Wine {test}: {why}");
    }
    wine
}

/// A free loopback port (taken, then released for whoever binds it next: the configured
/// address of a dashboard, a chromedriver).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[cfg(unix)]
pub fn pid_alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still counts, so also look at /proc where present.
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => exists,
    }
}

/// The tests' one random generator (xorshift64). A test seeds it with [`Rng::seeded`], which
/// prints the seed: `PIPEWATCH_TEST_SEED=N` replays it.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock, or from `PIPEWATCH_TEST_SEED`; the seed is printed.
    pub fn seeded(test: &str) -> Rng {
        let seed = std::env::var("PIPEWATCH_TEST_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (replay with PIPEWATCH_TEST_SEED={seed})");
        Rng::with_seed(seed)
    }

    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    /// A duration between `from` and `to` milliseconds.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}
