//! A small builder around the real binary: a temp project folder, a config, and helpers to
//! run commands and read the journals they write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipewatch");

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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path().join("pipewatch.toml"), text).expect("write config");
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.path())
            .env_remove("PIPEWATCH_TOKEN")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
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

    pub fn events_dir(&self) -> PathBuf {
        self.path().join("logs/events")
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

/// Every line of a journal, parsed; asserts each is a complete JSON line.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a deadline, killing it if it overstays.
pub fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pipewatch did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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

/// `pipewatch serve` on a free port in a project, stopped when dropped.
pub struct Dashboard {
    pub child: Child,
    pub port: u16,
}

impl Dashboard {
    pub fn start(p: &Project) -> Dashboard {
        Self::start_with_env(p, &[])
    }

    /// Starts it with extra environment variables.
    pub fn start_with_env(p: &Project, env: &[(&str, &std::ffi::OsStr)]) -> Dashboard {
        use std::io::BufRead;
        let mut cmd = p.cmd(&["serve", "--bind", "127.0.0.1:0"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pipewatch serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the address line");
        let port = first
            .trim()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        Dashboard { child, port }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut r = Self::agent()
            .get(&format!("http://127.0.0.1:{}{path}", self.port))
            .call()
            .expect("GET");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let mut r = Self::agent()
            .post(&format!("http://127.0.0.1:{}{path}", self.port))
            .content_type("application/json")
            .send(body)
            .expect("POST");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The runs the API lists (up to 1000).
    pub fn runs(&self) -> Vec<Value> {
        match self.get("/api/runs?limit=1000") {
            (200, Value::Array(v)) => v,
            other => panic!("GET /api/runs: {other:?}"),
        }
    }

    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        wait_child(&mut self.child, Duration::from_secs(30));
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
