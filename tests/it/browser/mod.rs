//! The dashboard page in a real headless Chromium, driven through `chromedriver` with
//! `fantoccini`, against the real `pipewatch serve` on a loopback port.
//!
//! Needs `chromium` and `chromedriver` on `PATH` (Debian: `chromium`, `chromium-driver`).
//! Without them every test here prints a loud SKIPPED message and passes, unless
//! `PIPEWATCH_REQUIRE_TOOLS=1` is set, which turns the skip into a failure (CI sets it).
//!
//! Screenshots of each view go to `target/screenshots/`; with `PIPEWATCH_UPDATE_SCREENSHOTS=1`
//! one of each (runs, run, schedule, mobile, run-dark, the overview of several pipelines, a
//! run's stages as a graph, and the Alerts view) is also copied to `docs/screenshots/`.
//!
//! The tests run one at a time (one browser at a time keeps timings honest on small machines).
//! The page of a workspace of several pipelines (the overview, a pipeline's page) has its
//! tests in [`overview`], a run's stages drawn as their dependency graph in [`graph`], and the
//! Alerts view in `alerts`, on this module's harness.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use pipewatch::sync::MutexExt;
use serde_json::{Value, json};

use crate::support::tools::{Chromium as Tools, chromium as tools};
use crate::support::{Options, Project, Resp, Server, free_port};

// The alert receiver and the failing stage are written for a POSIX shell.
#[cfg(unix)]
mod alerts;
mod graph;
mod hosts;
mod operating;
mod overview;

/// One browser test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock_anyway()
}

// ------------------------------------------------------------------ the browser

struct Browser {
    client: Option<Client>,
    driver: Child,
    /// chromedriver's own address, for what fantoccini does not ask for (the console log).
    driver_url: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(tools: &Tools, width: u32, height: u32) -> Browser {
        Browser::start_with(tools, width, height, &[]).await
    }

    async fn start_with(tools: &Tools, width: u32, height: u32, extra: &[&str]) -> Browser {
        let port = free_port();
        let mut cmd = Command::new(&tools.driver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that the browser it starts goes with it.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser {
            client: None,
            driver,
            driver_url: format!("http://127.0.0.1:{port}"),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--hide-scrollbars".into(),
            "--force-color-profile=srgb".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let args: Vec<String> = args
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": tools.chromium, "args": args }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("start a Chromium session");
        browser.client = Some(client);
        browser
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("client")
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.expect("goto");
    }

    async fn js(&self, script: &str) -> Value {
        self.c()
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script` as the body of an async function; returns what it returns.
    async fn js_async(&self, script: &str) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\
             (async () => {{ {script} }})().then(done, (e) => done({{ error: String(e) }}));"
        );
        self.c()
            .execute_async(&wrapped, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The errors the browser logged since the last call: uncaught exceptions,
    /// `console.error`, failed loads (a 404 included) and refused content.
    async fn console_errors(&self) -> Vec<String> {
        let session = self
            .c()
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a session");
        let url = format!("{}/session/{session}/se/log", self.driver_url);
        let log = tokio::task::spawn_blocking(move || {
            let text = ureq::post(&url)
                .content_type("application/json")
                .send(r#"{"type":"browser"}"#)
                .expect("read the browser log")
                .body_mut()
                .read_to_string()
                .expect("the browser log");
            serde_json::from_str::<Value>(&text).expect("the browser log as JSON")
        })
        .await
        .expect("log task");
        log["value"]
            .as_array()
            .expect("log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Polls `expr` (a JS expression) until it is truthy; returns its value.
    async fn wait(&self, what: &str, timeout: Duration, expr: &str) -> Value {
        let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(&script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let state = self
                    .js("return document.querySelector('#conn')?.textContent + ' | ' + (document.querySelector('#rv-msg')?.textContent || '') + ' | ' + (document.querySelector('#sched-msg')?.textContent || '') + ' | ' + location.href")
                    .await;
                panic!("timed out after {timeout:?} waiting for {what} ({expr}); page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// Clicks the element `css` selects. The live page may redraw it between finding and
    /// clicking (a stale element to WebDriver, nothing to a person): it is found again then.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Clear of the sticky header.
            self.js(&format!(
                "document.querySelector({})?.scrollIntoView({{block: 'center'}}); return true",
                json!(css)
            ))
            .await;
            let clicked = match self.c().find(Locator::Css(css)).await {
                Ok(el) => el.click().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("click {css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn screenshot(&self, name: &str, css: Option<&str>) {
        let png = match css {
            Some(css) => self
                .c()
                .find(Locator::Css(css))
                .await
                .expect("element to capture")
                .screenshot()
                .await
                .expect("element screenshot"),
            None => self.c().screenshot().await.expect("screenshot"),
        };
        save_screenshot(name, &png);
    }

    async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        #[cfg(unix)]
        {
            let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp: the screenshots go next to it.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("screenshots")
}

fn save_screenshot(name: &str, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    // One of each view goes to the docs (the rest stay test artifacts).
    const IN_DOCS: [&str; 8] = [
        "runs", "run", "schedule", "mobile", "run-dark", "overview", "graph", "alerts",
    ];
    if std::env::var("PIPEWATCH_UPDATE_SCREENSHOTS").as_deref() == Ok("1")
        && IN_DOCS.contains(&name)
    {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).expect("docs/screenshots");
        std::fs::write(docs.join(format!("{name}.png")), png).expect("write docs screenshot");
    }
}

// ------------------------------------------------------------------ run files

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn run_id_at(t: DateTime<Utc>, n: u32) -> String {
    format!("{}-{n:04x}", t.format("%Y%m%dT%H%M%SZ"))
}

/// A run file written the way another writer (or a runner) would: one line at a time.
struct RunFile {
    path: PathBuf,
    run_id: String,
    seq: u64,
    source: String,
    pipeline: String,
}

impl RunFile {
    fn new(p: &Project, run_id: &str, source: &str) -> RunFile {
        std::fs::create_dir_all(p.events_dir()).expect("events dir");
        RunFile {
            path: p.events_dir().join(format!("pipeline_{run_id}.jsonl")),
            run_id: run_id.to_string(),
            seq: 0,
            source: source.to_string(),
            pipeline: "p".to_string(),
        }
    }

    fn line(
        &mut self,
        t: DateTime<Utc>,
        stage: &str,
        event: &str,
        level: &str,
        msg: &str,
        data: Value,
    ) -> String {
        let v = json!({
            "seq": self.seq, "run_id": self.run_id, "pipeline": self.pipeline, "stage": stage,
            "event": event, "level": level, "timestamp": stamp(t), "source": self.source,
            "msg": msg, "data": data,
        });
        self.seq += 1;
        v.to_string() + "\n"
    }

    fn push_at(
        &mut self,
        t: DateTime<Utc>,
        stage: &str,
        event: &str,
        level: &str,
        msg: &str,
        data: Value,
    ) {
        let line = self.line(t, stage, event, level, msg, data);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .expect("open run file");
        f.write_all(line.as_bytes()).expect("append");
        f.flush().expect("flush");
    }

    fn push(&mut self, stage: &str, event: &str, level: &str, msg: &str, data: Value) {
        self.push_at(Utc::now(), stage, event, level, msg, data);
    }

    /// Holds the runner's lock (`<state_dir>/runs/<run_id>.lock`), as a live runner does, so
    /// that the dashboard sees the run alive rather than abandoned. Released when dropped.
    fn hold_lock(&self, p: &Project) -> std::fs::File {
        let dir = p.state_dir().join("runs");
        std::fs::create_dir_all(&dir).expect("runs dir");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(format!("{}.lock", self.run_id)))
            .expect("lock file");
        f.lock().expect("lock");
        f
    }

    fn log(&mut self, stage: &str, stream: &str, msg: &str) {
        let level = if stream == "stderr" { "warn" } else { "info" };
        self.push(stage, "log", level, msg, json!({ "stream": stream }));
    }
}

/// A project with one stage, `work`, and a run of it (id `n`, started at `t` by `source`)
/// whose file has the run's and the stage's `start`; the caller holds its lock if it is alive.
fn work_run(t: DateTime<Utc>, n: u32, source: &str) -> (Project, String, RunFile) {
    let p = Project::with_config(&format!(
        "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"
    ));
    let id = run_id_at(t, n);
    let mut f = RunFile::new(&p, &id, source);
    start_work(&mut f);
    (p, id, f)
}

/// The run's `start` (with its one stage, `work`) and the stage's `start`.
fn start_work(f: &mut RunFile) {
    f.push(
        "pipeline",
        "start",
        "info",
        "run started",
        json!({ "stages": ["work"] }),
    );
    f.push(
        "work",
        "start",
        "info",
        "stage work started",
        json!({ "attempt": 1 }),
    );
}

/// A config with a schedule that will not fire during a test.
const QUIET: &str = "schedule = \"0 3 1 1 *\"\ncatchup = \"none\"\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ------------------------------------------------------------------ tests

/// An event appended to the run file of the open run shows in the page at once.
#[test]
fn appended_event_shows_in_the_open_run_page() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, id, mut f) = work_run(Utc::now(), 1, "scheduler");
        let _alive = f.hold_lock(&p);
        f.log("work", "stdout", "first line");
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the existing lines", Duration::from_secs(15), "document.querySelector('#log .lr[data-seq=\"2\"]')").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        assert_eq!(b.js("return document.querySelector('#rv-status').dataset.status").await, "running");

        let mut worst = Duration::ZERO;
        for i in 0..3 {
            let msg = format!("appended line {i} {}", std::process::id());
            let started = Instant::now();
            f.log("work", if i == 1 { "stderr" } else { "stdout" }, &msg);
            b.wait(
                "the appended line",
                Duration::from_secs(10),
                &format!("[...document.querySelectorAll('#log .lr')].some(r => r.textContent.includes({}))", json!(msg)),
            )
            .await;
            let took = started.elapsed();
            eprintln!("appended line {i} shown after {took:?}");
            worst = worst.max(took);
        }
        assert!(worst < Duration::from_secs(3), "an appended line took {worst:?} to show");
        // stderr stands out.
        assert_eq!(b.js("return document.querySelector('#log .lr[data-seq=\"4\"]').classList.contains('stderr')").await, true);
        // A stage event moves the timeline: the stage ends, the run ends.
        f.push("work", "success", "info", "stage work succeeded", json!({ "attempt": 1, "exit_code": 0 }));
        f.push("pipeline", "success", "info", "run succeeded", json!({}));
        b.wait("the run to end", Duration::from_secs(10), "document.querySelector('#rv-status').dataset.status === 'success'").await;
        b.wait("the stage bar", Duration::from_secs(5), "document.querySelector('.tl-bar[data-stage=\"work\"]')?.dataset.status === 'success'").await;
        b.close().await;
    });
}

/// "Run now" starts a run that appears in the list, fills the timeline and ends `success`.
#[test]
fn run_now_runs_the_pipeline_to_success() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}[[stages]]\nname = \"extract\"\nrun = \"echo extracting\"\n\n[[stages]]\nname = \"load\"\nrun = \"echo loading\"\nneeds = [\"extract\"]\n"
        ));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("the empty runs list", Duration::from_secs(10), "document.querySelector('#runs .empty') && !document.querySelector('#runs .empty').textContent.includes('Loading')").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        let started = Instant::now();
        b.click("#run-now").await;
        let id = b
            .wait("the new run in the list", Duration::from_secs(10), "document.querySelector('#runs li.run')?.dataset.runId")
            .await;
        let id = id.as_str().expect("run id").to_string();
        eprintln!("new run {id} listed after {:?}", started.elapsed());
        assert!(
            b.js("return document.querySelector('#sched-msg').textContent").await.as_str().unwrap_or("").contains(&id),
            "the panel names the started run"
        );
        b.click(&format!("#runs li.run[data-run-id='{id}'] .id a")).await;
        b.wait("the run view", Duration::from_secs(5), &format!("location.hash === '#/runs/{id}'")).await;
        b.wait("the run to succeed", Duration::from_secs(30), "document.querySelector('#rv-status').dataset.status === 'success'").await;
        b.wait(
            "both stages in the timeline",
            Duration::from_secs(5),
            "['extract','load'].every(s => document.querySelector(`.tl-bar[data-stage=\"${s}\"]`)?.dataset.status === 'success')",
        )
        .await;
        b.wait("the stage output in the log", Duration::from_secs(5), "document.querySelector('#log').textContent.includes('loading')").await;
        // Back on the list, the row has changed state without a reload.
        b.click(".crumbs a").await;
        b.wait(
            "the row to show success",
            Duration::from_secs(10),
            &format!("document.querySelector(\"#runs li.run[data-run-id='{id}']\")?.dataset.status === 'success'"),
        )
        .await;
        assert_eq!(b.js("return document.querySelector('#runs li.run .trigger').textContent").await, "manual");
        b.close().await;
    });
}

/// The enabled switch calls enable/disable on the builtin backend and shows the result.
#[test]
fn schedule_switch_round_trips_through_the_builtin_backend() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}\n[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n\n[scheduler]\nbackend = \"builtin\"\n"
        ));
        let server = Server::start(&p);
        let Resp { status: code, body, .. } = server.get("/api/scheduler/status");
        assert_eq!(code, 200, "scheduler status: {body}");
        let before: Value = serde_json::from_str(&body).expect("status JSON");
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("the switch", Duration::from_secs(10), "!document.querySelector('#sched-switch').disabled").await;
        assert!(b.js("return document.querySelector('#sched-facts').textContent").await.as_str().unwrap_or("").contains("builtin"));
        let initial = before["enabled"].as_bool().unwrap_or(false);
        assert_eq!(b.js("return document.querySelector('#sched-switch').getAttribute('aria-checked')").await, initial.to_string());
        for want in [!initial, initial] {
            b.click("#sched-switch").await;
            b.wait(
                "the switch to flip",
                Duration::from_secs(10),
                &format!("document.querySelector('#sched-switch').getAttribute('aria-checked') === '{want}' && !document.querySelector('#sched-switch').disabled"),
            )
            .await;
            let Resp { status: code, body, .. } = server.get("/api/scheduler/status");
            assert_eq!(code, 200);
            let now: Value = serde_json::from_str(&body).expect("status JSON");
            assert_eq!(now["enabled"], want, "the backend agrees: {body}");
            // A reload shows the same.
            b.c().refresh().await.expect("reload");
            b.wait(
                "the switch after a reload",
                Duration::from_secs(10),
                &format!("!document.querySelector('#sched-switch').disabled && document.querySelector('#sched-switch').getAttribute('aria-checked') === '{want}'"),
            )
            .await;
        }
        b.close().await;
    });
}

/// A new built-in setup two minutes in, with one scheduled run from before it and a manual run
/// since: the panel expects nothing yet (no "0 of 96"), has no OS task row, no interval "in
/// practice" from one run, and says whose last run it shows.
#[test]
fn schedule_panel_on_a_fresh_builtin_setup_alarms_nothing() {
    use chrono::DurationRound;
    let Some(tools) = tools() else { return };
    let _serial = serial();
    // Clear of a quarter hour, so that no occurrence falls during the test.
    let quarter = |t: DateTime<Utc>| {
        t.duration_trunc(chrono::Duration::minutes(15))
            .expect("truncate")
    };
    while Utc::now() + chrono::Duration::seconds(60)
        >= quarter(Utc::now()) + chrono::Duration::minutes(15)
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    rt().block_on(async {
        let p = Project::with_config(
            "schedule = \"*/15 * * * *\"\ncatchup = \"none\"\n\n[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n\n\
             [scheduler]\nbackend = \"builtin\"\ntask_name = \"Pipeline Runner\"\n",
        );
        let now = Utc::now();
        for (n, source, ago) in [(1, "scheduler", 10), (2, "manual", 2)] {
            let at = now - chrono::Duration::minutes(ago);
            let mut f = RunFile::new(&p, &run_id_at(at, n), source);
            f.push_at(at, "pipeline", "start", "info", "run started", json!({}));
            f.push_at(at + chrono::Duration::seconds(3), "pipeline", "success", "info", "run succeeded", json!({}));
        }
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait(
            "the schedule panel with the manual run",
            Duration::from_secs(10),
            "document.querySelector('#sched-latest')?.textContent.includes('manual')",
        )
        .await;
        let facts = b.js("return document.querySelector('#sched-facts').innerText").await;
        let facts = facts.as_str().unwrap_or("");
        assert!(!facts.contains("of 96"), "nothing was due yet: {facts}");
        assert!(facts.contains("No run was due yet since"), "{facts}");
        assert!(!facts.contains("in practice"), "one run has no interval: {facts}");
        assert!(!facts.contains("Pipeline Runner"), "the built-in backend has no OS task: {facts}");
        let labels = b
            .js("return [...document.querySelectorAll('#sched-facts dt')].map((d) => d.textContent)")
            .await;
        let labels: Vec<&str> = labels.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert!(!labels.contains(&"Task"), "{labels:?}");
        // Nor what an installed task runs: there is none.
        assert!(!facts.contains("pipewatch.toml"), "no configuration rows: {facts}");
        assert!(labels.contains(&"Last scheduled run"), "{labels:?}");
        assert!(labels.contains(&"Last run"), "{labels:?}");
        assert_eq!(
            b.js("return document.querySelector('#sched-last').textContent").await,
            "none yet",
            "the built-in scheduler has started no run"
        );
        assert_eq!(
            b.js("return document.querySelector('#sched-expected').classList.contains('sched-short')").await,
            false,
            "no alarm when nothing was due"
        );
        b.close().await;
    });
}

/// The server restarts (killed, lines written meanwhile, started again on the same port) while
/// a run page is open: the log goes on with every line once.
#[test]
fn log_survives_a_server_restart_without_duplicates() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"
        ));
        let id = run_id_at(Utc::now(), 2);
        let mut f = RunFile::new(&p, &id, "scheduler");
        let _alive = f.hold_lock(&p);
        f.push(
            "pipeline",
            "start",
            "info",
            "run started",
            json!({ "stages": ["work"] }),
        );
        f.push(
            "work",
            "start",
            "info",
            "stage work started",
            json!({ "attempt": 1 }),
        );
        for i in 0..40 {
            f.log("work", "stdout", &format!("before {i}"));
        }
        let mut server = Server::start(&p);
        let port = server.port;
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait(
            "the first lines",
            Duration::from_secs(15),
            "window.__pipewatch.logSeqs().length === 42",
        )
        .await;
        b.wait(
            "a live connection",
            Duration::from_secs(10),
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;

        server.kill9();
        for i in 0..30 {
            f.log("work", "stdout", &format!("while down {i}"));
        }
        b.wait(
            "the indicator to notice",
            Duration::from_secs(10),
            "document.querySelector('#conn').dataset.state !== 'live'",
        )
        .await;
        let down_label = b
            .js("return document.querySelector('#conn').textContent")
            .await;
        eprintln!("indicator while the server is down: {down_label}");

        // Same port: the page reconnects to where it came from.
        let deadline = Instant::now() + Duration::from_secs(10);
        let server2 = loop {
            let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Server::start_with(
                    &p,
                    Options {
                        bind: Some(format!("127.0.0.1:{port}")),
                        ..Options::default()
                    },
                )
            }));
            match s {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let reconnected = Instant::now();
        b.wait(
            "the lines written while down",
            Duration::from_secs(20),
            "window.__pipewatch.logSeqs().includes(71)",
        )
        .await;
        eprintln!("caught up {:?} after the restart", reconnected.elapsed());
        b.wait(
            "live again",
            Duration::from_secs(20),
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        for i in 0..30 {
            f.log("work", "stdout", &format!("after {i}"));
        }
        f.push(
            "work",
            "success",
            "info",
            "stage work succeeded",
            json!({ "attempt": 1, "exit_code": 0 }),
        );
        f.push("pipeline", "success", "info", "run succeeded", json!({}));
        let last = f.seq - 1;
        b.wait(
            "the last line",
            Duration::from_secs(10),
            &format!("window.__pipewatch.logSeqs().includes({last})"),
        )
        .await;
        let seqs: Vec<u64> =
            serde_json::from_value(b.js("return window.__pipewatch.logSeqs()").await)
                .expect("seqs");
        let expected: Vec<u64> = (0..=last).collect();
        assert_eq!(seqs, expected, "every line exactly once, in order");
        // The rendered rows agree: no seq twice.
        let rows: Vec<String> = serde_json::from_value(
            b.js("return [...document.querySelectorAll('#log .lr')].map(r => r.dataset.seq)")
                .await,
        )
        .expect("rows");
        let mut unique = rows.clone();
        unique.dedup();
        assert_eq!(rows, unique, "a line rendered twice");
        assert!(
            rows.contains(&last.to_string()),
            "the log follows to the last line"
        );
        let history = b
            .js("return window.__pipewatch.connHistory.join(' → ')")
            .await;
        eprintln!(
            "connection: {history}; duplicates dropped by the page: {}",
            b.js("return window.__pipewatch.dupesDropped()").await
        );
        drop(server2);
        b.close().await;
    });
}

/// A run of 100,000 lines opens at its tail, renders few rows, scrolls and loads earlier lines.
#[test]
fn long_log_opens_at_the_tail_and_scrolls() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        const N: u64 = 100_000;
        let p = Project::with_config(&format!("{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"));
        let id = run_id_at(Utc::now(), 3);
        let mut f = RunFile::new(&p, &id, "cli");
        let _alive = f.hold_lock(&p);
        let t0 = Utc::now() - chrono::Duration::seconds(120);
        let mut text = String::with_capacity(160 * N as usize);
        text.push_str(&f.line(t0, "pipeline", "start", "info", "run started", json!({ "stages": ["work"] })));
        for i in 1..=N {
            let t = t0 + chrono::Duration::milliseconds(i as i64);
            let stream = if i % 1000 == 0 { "stderr" } else { "stdout" };
            text.push_str(&f.line(t, "work", "log", "info", &format!("line {i}"), json!({ "stream": stream })));
        }
        std::fs::write(&f.path, text).expect("write the long run");
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        let started = Instant::now();
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the last line", Duration::from_secs(60), &format!("document.querySelector('#log .lr[data-seq=\"{N}\"]')")).await;
        let fetch = b
            .js("return performance.getEntriesByType('resource').filter(e => e.name.includes('/events?tail=')).map(e => `${Math.round(e.duration)} ms, from ${Math.round(e.startTime)} ms after navigation`)[0]")
            .await;
        eprintln!("100,000-line run opened at its tail in {:?} (the tail request took {fetch})", started.elapsed());
        let visible = b
            .js(&format!(
                "const r = document.querySelector('#log .lr[data-seq=\"{N}\"]').getBoundingClientRect();\
                 const v = document.querySelector('#log').getBoundingClientRect();\
                 return r.top >= v.top - 1 && r.bottom <= v.bottom + 1;"
            ))
            .await;
        assert_eq!(visible, true, "the last line is in view");
        let loaded = b.js("return window.__pipewatch.logSeqs().length").await;
        assert_eq!(loaded, 1000, "the tail: 1000 lines, seqs 99001..=100000");
        let rows = b.js("return document.querySelectorAll('#log .lr').length").await.as_u64().unwrap_or(0);
        assert!(rows > 10 && rows < 120, "rendered rows: {rows}");

        // Scroll to the top: the first loaded line shows, then "load earlier" adds a window.
        b.js("const l = document.querySelector('#log'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); return true").await;
        b.wait("the first loaded line", Duration::from_secs(5), "document.querySelector('#log .lr[data-seq=\"99001\"]')").await;
        assert_eq!(b.js("return document.querySelector('#follow').getAttribute('aria-pressed')").await, "false", "scrolling up pauses following");
        b.click("#load-earlier").await;
        b.wait("a window of earlier lines", Duration::from_secs(30), "window.__pipewatch.logSeqs()[0] === 98001").await;
        let seqs: Vec<u64> = serde_json::from_value(b.js("return window.__pipewatch.logSeqs()").await).expect("seqs");
        assert_eq!(seqs, (98_001..=N).collect::<Vec<_>>());
        // The view stays where it was: line 99001 is still on screen.
        b.wait("the anchor line", Duration::from_secs(5), "document.querySelector('#log .lr[data-seq=\"99001\"]')").await;
        let rows = b.js("return document.querySelectorAll('#log .lr').length").await.as_u64().unwrap_or(0);
        assert!(rows < 120, "rendered rows after loading earlier: {rows}");

        // Search filters the array, not the DOM.
        let search = b.c().find(Locator::Css("#f-text")).await.expect("search box");
        search.send_keys("line 99999").await.expect("type");
        b.wait("the match count", Duration::from_secs(5), "document.querySelector('#log-count').textContent.startsWith('1 matching')").await;
        b.wait("the matching row", Duration::from_secs(5), "document.querySelector('#log .lr[data-seq=\"99999\"] mark')").await;
        b.close().await;
    });
}

/// A failed run, as a run of this shape is written: `validate` fails twice (exit code 3) early
/// on, `load` writes `load_lines` lines and times out, `report` (needing `validate`) is
/// skipped. Returns the `seq` of the first error (`validate`'s `failure`) and the line count.
fn failed_run(p: &Project, id: &str, load_lines: u64) -> (u64, u64) {
    let mut f = RunFile::new(p, id, "scheduler");
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let ms = |n: i64| t0 + chrono::Duration::milliseconds(n);
    let stages = json!({ "stages": ["validate", "load", "report"] });
    let mut text = f.line(ms(0), "pipeline", "start", "info", "run started", stages);
    text += &f.line(
        ms(10),
        "validate",
        "start",
        "info",
        "stage validate started",
        json!({ "attempt": 1 }),
    );
    text += &f.line(
        ms(10),
        "load",
        "start",
        "info",
        "stage load started",
        json!({ "attempt": 1 }),
    );
    text += &f.line(
        ms(20),
        "validate",
        "log",
        "warn",
        "bad row 17",
        json!({ "stream": "stderr" }),
    );
    text += &f.line(
        ms(30),
        "validate",
        "retry",
        "warn",
        "retrying",
        json!({ "attempt": 2, "reason": "exit", "exit_code": 3, "attempt_ms": 20 }),
    );
    text += &f.line(
        ms(1030),
        "validate",
        "start",
        "info",
        "stage validate started (attempt 2)",
        json!({ "attempt": 2 }),
    );
    text += &f.line(
        ms(1040),
        "validate",
        "log",
        "warn",
        "bad row 17 again",
        json!({ "stream": "stderr" }),
    );
    let first_error = f.seq;
    text += &f.line(ms(1050), "validate", "failure", "error", "stage validate failed: exit code 3", json!({ "attempt": 2, "reason": "exit", "exit_code": 3, "duration_ms": 1040, "attempt_ms": 20 }));
    text += &f.line(
        ms(1050),
        "report",
        "skipped",
        "warn",
        "skipped: needed stage validate did not succeed",
        json!({ "reason": "needs_failed", "needs": "validate" }),
    );
    for i in 0..load_lines {
        text += &f.line(
            ms(1100 + i as i64 / 10),
            "load",
            "log",
            "info",
            &format!("loaded batch {i}"),
            json!({ "stream": "stdout" }),
        );
    }
    let end = 1100 + load_lines as i64 / 10 + 3000;
    text += &f.line(ms(end), "load", "failure", "error", "stage load failed: timed out after 5s", json!({ "attempt": 1, "reason": "timeout", "duration_ms": end - 10, "attempt_ms": end - 10 }));
    text += &f.line(ms(end + 5), "pipeline", "failure", "error", "run failed: validate, load", json!({ "reason": "stage_failed", "failed_stages": ["validate", "load"], "duration_ms": end + 5 }));
    std::fs::write(&f.path, text).expect("write the failed run");
    (first_error, f.seq)
}

/// Whether the log row of `seq` is on screen (an expression, for `Browser::wait`).
fn row_in_view(seq: u64) -> String {
    format!(
        "(() => {{ const r = document.querySelector('#log .lr[data-seq=\"{seq}\"]'); if (!r) return false;\
         const b = r.getBoundingClientRect(), v = document.querySelector('#log').getBoundingClientRect();\
         return b.top >= v.top - 1 && b.bottom <= v.bottom + 1; }})()"
    )
}

/// "Why did it fail?": the runs list and the run's header name the failed stages with how each
/// failed; each stage's bar says its outcome (exit code, timed out) and spans its whole
/// duration, retries included; a skipped stage says what it needed; the log of a finished
/// failed run opens at its first error, says how much of the run it holds, and a "First error"
/// button reaches an error before the loaded lines.
#[test]
fn a_failed_run_says_why_and_opens_its_log_at_the_first_error() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!("{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"));
        let near = run_id_at(Utc::now() - chrono::Duration::minutes(10), 11);
        let (near_error, near_total) = failed_run(&p, &near, 3_000);
        let far = run_id_at(Utc::now() - chrono::Duration::minutes(20), 12);
        let (far_error, far_total) = failed_run(&p, &far, 12_000);
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;

        // The list names the failed stages.
        b.goto(&format!("{}/#/", server.url())).await;
        let why = format!("document.querySelector(\"#runs li.run[data-run-id='{near}'] .why\")");
        b.wait("the failed run listed", Duration::from_secs(20), &format!("{why} && {why}.textContent.includes('validate')")).await;
        let listed = b.js(&format!("return {why}.textContent")).await;
        assert_eq!(listed, "Failed: validate, load", "the list's why");

        // The run: its header, its stages, its log opened at the first error.
        b.goto(&format!("{}/#/runs/{near}", server.url())).await;
        b.wait("the first error in view", Duration::from_secs(30), &row_in_view(near_error)).await;
        let head = b.js("return document.querySelector('#rv-facts').textContent").await;
        let head = head.as_str().unwrap_or_default();
        assert!(head.contains("validate (exit code 3)") && head.contains("load (timed out)"), "header: {head}");
        let label = |stage: &str| format!("return document.querySelector('#timeline .tl-bar[data-stage=\"{stage}\"] .lbl').textContent");
        let validate = b.js(&label("validate")).await;
        let validate = validate.as_str().unwrap_or_default();
        assert!(validate.starts_with("1.0s") && validate.contains("2 attempts") && validate.contains("exit code 3"), "validate's bar: {validate}");
        let load = b.js(&label("load")).await;
        assert!(load.as_str().unwrap_or_default().contains("timed out"), "load's bar: {load}");
        let report = b.js("return document.querySelector('#timeline .tl-skip[data-stage=\"report\"]').textContent").await;
        assert_eq!(report, "skipped: validate did not succeed");
        assert_eq!(b.js("return document.querySelector('#follow').getAttribute('aria-pressed')").await, "false", "opened at the error, not following the end");
        let count = b.js("return document.querySelector('#log-count').textContent").await;
        assert_eq!(count, format!("{} lines", fmt_thousands(near_total)), "the whole run is loaded");
        b.wait("the first error button", Duration::from_secs(5), "!document.querySelector('#first-error').hidden").await;
        // "Download log" fetches the whole log as text.
        let first_line = b
            .js_async("const a = document.querySelector('#log-download');\
                 const t = await (await fetch(a.href)).text();\
                 return [a.getAttribute('download'), t.split('\\n').length - 1, t.split('\\n')[0]];")
            .await;
        assert_eq!(first_line[0], format!("{near}.log"));
        assert_eq!(first_line[1], near_total, "one line per event");
        let first = first_line[2].as_str().unwrap_or_default();
        assert!(first.ends_with(" pipeline start run started"), "{first}");

        // A run whose first error is further back than one read: the tail, said as such, and
        // the button that fetches the lines back to the error.
        b.goto(&format!("{}/#/runs/{far}", server.url())).await;
        b.wait("the tail", Duration::from_secs(30), &format!("document.querySelector('#log .lr[data-seq=\"{}\"]')", far_total - 1)).await;
        let count = b.js("return document.querySelector('#log-count').textContent").await;
        assert_eq!(count, format!("last 1,000 of {} lines", fmt_thousands(far_total)));
        b.click("#first-error").await;
        b.wait("the far first error in view", Duration::from_secs(30), &row_in_view(far_error)).await;
        let seqs: Vec<u64> = serde_json::from_value(b.js("return window.__pipewatch.logSeqs()").await).expect("seqs");
        assert_eq!(seqs.first(), Some(&0), "loaded back to the run's start");
        assert_eq!(seqs.len() as u64, far_total, "every line once");
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "the browser logged errors:\n{}", errors.join("\n"));
        b.close().await;
    });
}

/// `n` with thousands separators, as the page writes counts (`toLocaleString` in en-US).
fn fmt_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// With a token: a `?token=` link is moved into the cookie and out of the URL; without the
/// cookie the page asks for the token, refuses a wrong one and works with the right one.
#[test]
fn token_link_and_login_form() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n\n[server]\ntoken = \"s3cret-token\"\n"
        ));
        let id = run_id_at(Utc::now(), 4);
        let mut f = RunFile::new(&p, &id, "manual");
        f.push("pipeline", "start", "info", "run started", json!({}));
        f.push("pipeline", "success", "info", "run succeeded", json!({}));
        let server = Server::start(&p);
        assert_eq!(server.get("/api/runs").status, 401, "the API wants the token");
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/?token=s3cret-token#/", server.url())).await;
        b.wait("the run listed", Duration::from_secs(10), &format!("document.querySelector(\"#runs li.run[data-run-id='{id}']\")")).await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        assert_eq!(b.js("return location.search + location.hash").await, "#/", "the token left the URL");
        assert_eq!(b.js("return document.cookie.includes('pipewatch_token=s3cret-token')").await, true);
        assert_eq!(b.js("return document.querySelector('#login').open").await, false);

        b.c().delete_all_cookies().await.expect("forget the token");
        b.c().refresh().await.expect("reload");
        b.wait("the login form", Duration::from_secs(10), "document.querySelector('#login').open").await;
        let input = b.c().find(Locator::Css("#login-token")).await.expect("token field");
        input.send_keys("wrong").await.expect("type");
        b.click("#login-form button[type=submit]").await;
        b.wait("the refusal", Duration::from_secs(10), "document.querySelector('#login-msg').textContent.includes('refused')").await;
        input.clear().await.expect("clear");
        input.send_keys("s3cret-token").await.expect("type");
        b.click("#login-form button[type=submit]").await;
        b.wait("the form to close", Duration::from_secs(10), "!document.querySelector('#login').open").await;
        b.wait("the run listed", Duration::from_secs(10), &format!("document.querySelector(\"#runs li.run[data-run-id='{id}']\")")).await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        b.close().await;
    });
}

/// The Server-Sent Events fallback (forced with `?transport=sse`) streams the log too.
#[test]
fn sse_fallback_streams_the_log() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, id, mut f) = work_run(Utc::now(), 5, "scheduler");
        let _alive = f.hold_lock(&p);
        f.log("work", "stdout", "first line");
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/?transport=sse#/runs/{id}", server.url())).await;
        b.wait("the existing lines", Duration::from_secs(10), "window.__pipewatch.logSeqs().length === 3").await;
        b.wait("the SSE stream", Duration::from_secs(10), "document.querySelector('#conn').textContent.includes('SSE')").await;
        let started = Instant::now();
        f.log("work", "stderr", "over server-sent events");
        b.wait("the appended line", Duration::from_secs(10), "document.querySelector('#log .lr[data-seq=\"3\"]')?.textContent.includes('over server-sent events')").await;
        eprintln!("line over SSE shown after {:?}", started.elapsed());
        assert_eq!(b.js("return window.__pipewatch.transport()").await, "sse");
        b.close().await;
    });
}

/// A burst of events (log lines, and stage events that move the timeline) is drawn once a
/// frame, not once an event: the timeline and the log's rows are rebuilt at most once per
/// animation frame, and the log still follows to the last line.
#[test]
fn a_burst_of_events_is_drawn_once_a_frame() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        const N: u64 = 3000;
        let (p, id, mut f) = work_run(Utc::now(), 9, "scheduler");
        let _alive = f.hold_lock(&p);
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the run's first lines", Duration::from_secs(15), "document.querySelector('#log-rows > .lr[data-seq=\"1\"]')").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        // Frames, rebuilds of the timeline, and the times the log's rows were written (a frame's
        // writes, however many rows they add and drop, reach an observer as one call), counted
        // from now on.
        b.js("const c = window.__counts = { frames: 0, timeline: 0, rows: 0 };\
              const frame = () => { c.frames++; requestAnimationFrame(frame); }; requestAnimationFrame(frame);\
              new MutationObserver((rs) => { c.timeline += rs.length; }).observe(document.querySelector('#timeline'), { childList: true });\
              new MutationObserver(() => { c.rows += 1; }).observe(document.querySelector('#log-rows'), { childList: true });\
              return true")
            .await;
        let t = Utc::now();
        let mut text = String::new();
        for i in 0..N {
            text += &if i % 2 == 0 {
                f.line(t, "work", "log", "info", &format!("burst {i}"), json!({ "stream": "stdout" }))
            } else {
                f.line(t, "work", "retry", "warn", "retrying", json!({ "attempt": 2 }))
            };
        }
        let last = f.seq - 1;
        let mut file = std::fs::OpenOptions::new().append(true).open(&f.path).expect("open run file");
        file.write_all(text.as_bytes()).expect("append the burst");
        file.flush().expect("flush");
        b.wait("the burst's last line painted", Duration::from_secs(60), &format!("document.querySelector('#log-rows > .lr[data-seq=\"{last}\"]')")).await;
        let seqs: Vec<u64> = serde_json::from_value(b.js("return window.__pipewatch.logSeqs()").await).expect("seqs");
        assert_eq!(seqs, (0..=last).collect::<Vec<_>>(), "every event once, in order");
        let counts = b.js("return window.__counts").await;
        eprintln!("{N} events drawn: {counts}");
        let (frames, timeline, rows) = (counts["frames"].as_u64().unwrap_or(0), counts["timeline"].as_u64().unwrap_or(0), counts["rows"].as_u64().unwrap_or(0));
        // Besides the frames: the page's clock redraws a running run's timeline once a second.
        assert!(timeline <= frames + frames / 30 + 3, "the timeline was rebuilt {timeline} times in {frames} frames");
        assert!(rows <= frames + 3, "the log's rows were written {rows} times in {frames} frames");
        b.close().await;
    });
}

/// Screenshots of the runs list, a run, the schedule panel and the phone layout.
#[test]
fn screenshots_of_each_view() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::new();
        p.write_config(
            "[pipeline]\nname = \"translation\"\nschedule = \"*/15 * * * *\"\ncatchup = \"none\"\n\n\
             [[stages]]\nname = \"extract\"\nrun = \"echo extract\"\n\n\
             [[stages]]\nname = \"translate\"\nrun = \"echo translate\"\nneeds = [\"extract\"]\nretries = 2\n\n\
             [[stages]]\nname = \"load\"\nrun = \"echo load\"\nneeds = [\"translate\"]\n\n\
             [[stages]]\nname = \"report\"\nrun = \"echo report\"\nneeds = [\"load\"]\n\n\
             [scheduler]\nbackend = \"builtin\"\ntask_name = \"Pipeline Runner\"\n",
        );
        let (failed, (running, _alive)) = seed_history(&p);
        // The built-in scheduler came on just before the oldest run written and started the
        // latest scheduled one, as it would have for the history just written.
        let now = Utc::now();
        let quarter = now - chrono::Duration::minutes(i64::from(now.minute() % 15));
        let last = quarter.with_second(2).unwrap_or(quarter);
        std::fs::create_dir_all(p.state_dir()).expect("state dir");
        std::fs::write(
            p.state_dir().join("scheduler.json"),
            json!({
                "enabled": true,
                "last_occurrence": stamp(quarter.with_second(0).unwrap_or(quarter)),
                "last_run": stamp(last),
                "enabled_since": stamp(now - chrono::Duration::minutes(15 * 54 + 1)),
            })
            .to_string(),
        )
        .expect("scheduler state");
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("the runs", Duration::from_secs(10), "document.querySelectorAll('#runs li.run').length >= 20").await;
        b.wait("the trend", Duration::from_secs(10), "document.querySelectorAll('#trend rect.bar').length >= 20").await;
        b.wait("the schedule panel", Duration::from_secs(10), "!document.querySelector('#sched-facts').textContent.includes('loading')").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        b.wait("the dead runner's run to show abandoned", Duration::from_secs(15), "document.querySelector('#runs li.run[data-status=\"abandoned\"]')").await;
        assert_eq!(
            b.js(&format!("return document.querySelector(\"#runs li.run[data-run-id='{running}']\")?.dataset.status")).await,
            "running"
        );
        // Explanations on the rows that need one.
        for st in ["missed", "skipped", "abandoned"] {
            let why = b.js(&format!("return document.querySelector('#runs li.run[data-status=\"{st}\"] .why')?.textContent")).await;
            assert!(why.as_str().is_some_and(|w| !w.is_empty()), "{st} row explained: {why}");
        }
        b.js("document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
        b.screenshot("runs", None).await;
        b.screenshot("schedule", Some("#sched-card")).await;

        // Filter by status, then page back with "Older runs" (56 runs, 50 a page).
        let count = |query: &str| {
            let Resp { status: code, body, .. } = server.get(&format!("/api/runs?limit=1000{query}"));
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<Vec<Value>>(&body).expect("runs").len()
        };
        b.click("#status-filter .chip:nth-child(7)").await; // missed
        let missed = count("&status=missed");
        b.wait(
            "only missed runs",
            Duration::from_secs(10),
            &format!("[...document.querySelectorAll('#runs li.run')].length === {missed} && [...document.querySelectorAll('#runs li.run')].every(r => r.dataset.status === 'missed')"),
        )
        .await;
        b.click("#status-filter .chip:nth-child(1)").await; // all
        b.wait("a full page", Duration::from_secs(10), "document.querySelectorAll('#runs li.run').length === 50 && !document.querySelector('#older').hidden").await;
        b.click("#older").await;
        let total = count("");
        assert!(total > 50, "{total} runs");
        b.wait(
            "the older runs",
            Duration::from_secs(10),
            &format!("document.querySelectorAll('#runs li.run').length >= {total} && document.querySelector('#older').hidden"),
        )
        .await;
        let ids: Vec<String> = serde_json::from_value(b.js("return [...document.querySelectorAll('#runs li.run')].map(r => r.dataset.runId)").await).expect("ids");
        let mut sorted = ids.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(ids, sorted, "newest first, each once");

        // Clicking a bar of the trend opens its run.
        b.click(&format!("#trend a[data-run-id='{failed}']")).await;
        b.wait("the failed run", Duration::from_secs(10), "document.querySelector('#rv-status').dataset.status === 'failure'").await;
        b.wait("its timeline", Duration::from_secs(10), "document.querySelectorAll('.tl-bar').length >= 2").await;
        b.wait("its log", Duration::from_secs(10), "document.querySelectorAll('#log .lr.stderr').length >= 1").await;
        b.c().set_window_size(1280, 1240).await.expect("taller window");
        b.js("document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
        b.wait("the log after resizing", Duration::from_secs(5), "document.querySelectorAll('#log .lr').length >= 20").await;
        b.screenshot("run", None).await;

        b.c().set_window_size(390, 844).await.expect("phone size");
        b.goto(&format!("{}/#/", server.url())).await;
        b.wait("the runs", Duration::from_secs(10), "document.querySelectorAll('#runs li.run').length >= 20").await;
        b.wait("the schedule panel", Duration::from_secs(10), "!document.querySelector('#sched-facts').textContent.includes('loading')").await;
        let overflow = b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_i64().unwrap_or(0) <= 0, "no sideways scrolling on a phone: {overflow}");
        b.screenshot("mobile", None).await;
        b.goto(&format!("{}/#/runs/{failed}", server.url())).await;
        b.wait("the failed run", Duration::from_secs(10), "document.querySelector('#rv-status').dataset.status === 'failure' && document.querySelectorAll('.tl-bar').length >= 2").await;
        b.js("document.activeElement.blur(); return true").await;
        b.screenshot("mobile-run", None).await;
        b.close().await;

        // The dark theme follows the system setting.
        let b = Browser::start_with(&tools, 1280, 860, &["--force-dark-mode"]).await;
        b.goto(&format!("{}/", server.url())).await;
        let dark = b.js("return matchMedia('(prefers-color-scheme: dark)').matches").await;
        if dark == true {
            b.wait("the runs", Duration::from_secs(10), "document.querySelectorAll('#runs li.run').length >= 20 && !document.querySelector('#sched-facts').textContent.includes('loading')").await;
            let bg = b.js("return getComputedStyle(document.body).backgroundColor").await;
            assert_eq!(bg, "rgb(14, 17, 22)", "dark background");
            b.screenshot("runs-dark", None).await;
            b.goto(&format!("{}/#/runs/{failed}", server.url())).await;
            b.c().set_window_size(1280, 1240).await.expect("taller window");
            b.wait("the failed run", Duration::from_secs(10), "document.querySelectorAll('.tl-bar').length >= 2 && document.querySelectorAll('#log .lr').length >= 20").await;
            b.js("document.activeElement.blur(); return true").await;
            b.screenshot("run-dark", None).await;
        } else {
            eprintln!("this Chromium ignores --force-dark-mode: no dark screenshots");
        }
        b.close().await;
    });
}

/// A history of runs for the screenshots: successes, a failure with a retry and stderr, a
/// skipped, a missed, a cancelled, an abandoned and a running one. Returns the failed run's id
/// and the running run's id with its lock (held by the caller to keep the run alive).
fn seed_history(p: &Project) -> (String, (String, std::fs::File)) {
    let now = Utc::now();
    let stages = ["extract", "translate", "load", "report"];
    let mut failed = String::new();
    for k in (1..=54).rev() {
        let start = now - chrono::Duration::minutes(15 * k) + chrono::Duration::seconds(2);
        let id = run_id_at(start, k as u32);
        let source = if k % 7 == 3 { "manual" } else { "scheduler" };
        let mut f = RunFile::new(p, &id, source);
        f.pipeline = "translation".into();
        let mut lines = String::new();
        let status = match k {
            5 => "missed",
            9 => "skipped",
            12 => "failure",
            17 => "cancelled",
            _ => "success",
        };
        match status {
            "missed" => {
                lines += &f.line(
                    start,
                    "pipeline",
                    "missed",
                    "warn",
                    "no run for this occurrence",
                    json!({ "scheduled_for": stamp(start - chrono::Duration::seconds(2)) }),
                );
            }
            "skipped" => {
                lines += &f.line(
                    start,
                    "pipeline",
                    "skipped",
                    "warn",
                    "not started: run is still running",
                    json!({ "reason": "overlap" }),
                );
            }
            _ => {
                lines += &f.line(
                    start,
                    "pipeline",
                    "start",
                    "info",
                    "run started",
                    json!({ "stages": stages }),
                );
                let mut t = start;
                let scale = 1.0 + ((k * 37) % 11) as f64 / 10.0;
                for (si, s) in stages.iter().enumerate() {
                    let ms = ((400 + si * 900) as f64 * scale) as i64;
                    t += chrono::Duration::milliseconds(30);
                    if status == "failure" && *s == "load" {
                        lines += &f.line(
                            t,
                            "load",
                            "skipped",
                            "warn",
                            "skipped: needed stage translate did not succeed",
                            json!({ "reason": "needs_failed", "needs": "translate" }),
                        );
                        lines += &f.line(
                            t,
                            "report",
                            "skipped",
                            "warn",
                            "skipped: needed stage load did not succeed",
                            json!({ "reason": "needs_failed", "needs": "load" }),
                        );
                        break;
                    }
                    if status == "cancelled" && *s == "load" {
                        lines += &f.line(
                            t,
                            s,
                            "start",
                            "info",
                            "stage load started",
                            json!({ "attempt": 1 }),
                        );
                        t += chrono::Duration::milliseconds(800);
                        lines += &f.line(
                            t,
                            s,
                            "cancelled",
                            "warn",
                            "stage load cancelled",
                            json!({ "attempt": 1 }),
                        );
                        lines += &f.line(
                            t,
                            "report",
                            "cancelled",
                            "warn",
                            "stage report cancelled",
                            json!({}),
                        );
                        break;
                    }
                    lines += &f.line(
                        t,
                        s,
                        "start",
                        "info",
                        &format!("stage {s} started"),
                        json!({ "attempt": 1 }),
                    );
                    for j in 0..6 {
                        t += chrono::Duration::milliseconds(ms / 8);
                        lines += &f.line(
                            t,
                            s,
                            "log",
                            "info",
                            &format!("{s}: processed batch {j} (250 records)"),
                            json!({ "stream": "stdout" }),
                        );
                    }
                    if status == "failure" && *s == "translate" {
                        lines += &f.line(
                            t,
                            s,
                            "log",
                            "warn",
                            "translate: upstream API answered 503, giving up on batch 6",
                            json!({ "stream": "stderr" }),
                        );
                        lines += &f.line(t, s, "retry", "warn", "stage translate attempt 1 failed (exit code 2); retrying in 10s", json!({ "attempt": 2, "exit_code": 2, "reason": "exit", "delay_ms": 10000 }));
                        t += chrono::Duration::milliseconds(1500);
                        lines += &f.line(
                            t,
                            s,
                            "start",
                            "info",
                            "stage translate started (attempt 2)",
                            json!({ "attempt": 2 }),
                        );
                        t += chrono::Duration::milliseconds(900);
                        lines += &f.line(t, s, "log", "warn", "Traceback (most recent call last): ConnectionError: 503 Service Unavailable", json!({ "stream": "stderr" }));
                        lines += &f.line(
                            t,
                            s,
                            "failure",
                            "error",
                            "stage translate failed: exit code 2",
                            json!({ "attempt": 2, "exit_code": 2, "reason": "exit" }),
                        );
                        continue;
                    }
                    t += chrono::Duration::milliseconds(ms / 4);
                    lines += &f.line(
                        t,
                        s,
                        "success",
                        "info",
                        &format!("stage {s} succeeded"),
                        json!({ "attempt": 1, "exit_code": 0, "duration_ms": ms }),
                    );
                }
                let end = match status {
                    "failure" => f.line(
                        t,
                        "pipeline",
                        "failure",
                        "error",
                        "run failed: translate",
                        json!({ "reason": "stage_failed", "failed_stages": ["translate"] }),
                    ),
                    "cancelled" => f.line(
                        t,
                        "pipeline",
                        "cancelled",
                        "warn",
                        "run cancelled (by a user)",
                        json!({ "reason": "user" }),
                    ),
                    _ => f.line(t, "pipeline", "success", "info", "run succeeded", json!({})),
                };
                lines += &end;
            }
        }
        if status == "failure" {
            failed = id.clone();
        }
        std::fs::write(&f.path, lines).expect("seed run");
    }
    // One still running: its runner's lock is held.
    let start = now - chrono::Duration::seconds(40);
    let id = run_id_at(start, 99);
    let mut f = RunFile::new(p, &id, "scheduler");
    f.pipeline = "translation".into();
    let running = (id.clone(), f.hold_lock(p));
    let mut lines = f.line(
        start,
        "pipeline",
        "start",
        "info",
        "run started",
        json!({ "stages": stages }),
    );
    lines += &f.line(
        start,
        "extract",
        "start",
        "info",
        "stage extract started",
        json!({ "attempt": 1 }),
    );
    lines += &f.line(
        start + chrono::Duration::seconds(12),
        "extract",
        "success",
        "info",
        "stage extract succeeded",
        json!({ "attempt": 1, "exit_code": 0 }),
    );
    lines += &f.line(
        start + chrono::Duration::seconds(12),
        "translate",
        "start",
        "info",
        "stage translate started",
        json!({ "attempt": 1 }),
    );
    std::fs::write(&f.path, lines).expect("seed running run");
    // One whose runner died: its lock file is there, nobody holds it.
    let start = now - chrono::Duration::minutes(7);
    let id = run_id_at(start, 98);
    let mut f = RunFile::new(p, &id, "scheduler");
    f.pipeline = "translation".into();
    let mut lines = f.line(
        start,
        "pipeline",
        "start",
        "info",
        "run started",
        json!({ "stages": stages }),
    );
    lines += &f.line(
        start,
        "extract",
        "start",
        "info",
        "stage extract started",
        json!({ "attempt": 1 }),
    );
    std::fs::write(&f.path, lines).expect("seed abandoned run");
    drop(f.hold_lock(p));
    (failed, running)
}

// ------------------------------------------------------------------ the page's files and fold

/// The page comes up with nothing in the console: every module of the graph loads (no 404 for
/// an `import`), every asset of the server's table answers 200 with its content type, the
/// icons are real images, and neither the list nor a run's page logs an error.
#[test]
fn the_page_and_its_files_load_without_a_console_error() {
    use pipewatch::server::assets::ASSETS;
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, id, mut f) = work_run(Utc::now() - chrono::Duration::minutes(5), 6, "manual");
        f.log("work", "stderr", "a warning");
        f.push("work", "success", "info", "stage work succeeded", json!({ "attempt": 1, "exit_code": 0 }));
        f.push("pipeline", "success", "info", "run succeeded", json!({}));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("the page to boot", Duration::from_secs(10), &format!("window.__pipewatch && document.querySelector(\"#runs li.run[data-run-id='{id}']\")")).await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;

        // The module graph: every module the server has, each loaded once with 200.
        let loaded: Vec<(String, u64)> = serde_json::from_value(
            b.js("return performance.getEntriesByType('resource').map(e => [new URL(e.name).pathname, e.responseStatus]).filter(([p]) => p.startsWith('/js/'))").await,
        )
        .expect("module loads");
        let mut paths: Vec<&str> = loaded.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort_unstable();
        let mut modules: Vec<&str> = ASSETS.iter().filter(|a| a.content_type.starts_with("text/javascript")).map(|a| a.path).collect();
        modules.sort_unstable();
        assert_eq!(paths, modules, "the modules the page loaded");
        assert!(loaded.iter().all(|(_, status)| *status == 200), "{loaded:?}");

        // Every asset over HTTP, as the table says.
        let answers = b
            .js_async(&format!(
                "return Promise.all({}.map(async (p) => {{ const r = await fetch(p, {{ cache: 'no-store' }}); const body = await r.arrayBuffer(); \
                 return {{ path: p, status: r.status, type: r.headers.get('content-type'), cache: r.headers.get('cache-control'), length: body.byteLength }}; }}));",
                json!(ASSETS.iter().map(|a| a.path).collect::<Vec<_>>())
            ))
            .await;
        for (a, got) in ASSETS.iter().zip(answers.as_array().expect("answers")) {
            assert_eq!(got["status"], 200, "{}: {got}", a.path);
            assert_eq!(got["type"], a.content_type, "{}", a.path);
            assert_eq!(got["cache"], "no-cache", "{}", a.path);
            assert_eq!(got["length"], a.bytes().len(), "{}", a.path);
        }
        // The icons are images a browser can draw.
        let icons = b
            .js_async(
                "const icon = document.querySelector('link[rel=icon]').getAttribute('href');\
                 return Promise.all([icon, '/favicon.ico'].map((src) => new Promise((res) => {\
                   const i = new Image(); i.onload = () => res([src, i.naturalWidth]); i.onerror = () => res([src, 0]); i.src = src; })));",
            )
            .await;
        for icon in icons.as_array().expect("icons") {
            assert!(icon[1].as_u64().unwrap_or(0) > 0, "not an image: {icon}");
        }

        // A run's page: its timeline, its log, its stream.
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the run", Duration::from_secs(10), "document.querySelector('#rv-status').dataset.status === 'success' && document.querySelector('#log .lr[data-seq=\"4\"]')").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "the browser logged errors:\n{}", errors.join("\n"));
        b.close().await;
    });
}

/// The page's run fold (`web/js/fold.js`, which moves a run's page with each live event) and
/// the server's index agree on every shape of run: the page folds each run's events and the
/// result must be what `/api/runs/{run_id}` says.
#[test]
fn the_page_fold_agrees_with_the_index() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"
        ));
        let ids = fold_cases(&p);
        let server = Server::start(&p);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ids
            .iter()
            .any(|id| server.get(&format!("/api/runs/{id}")).status != 200)
        {
            assert!(Instant::now() < deadline, "the runs were not indexed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait(
            "the page to boot",
            Duration::from_secs(10),
            "window.__pipewatch && window.__pipewatch.foldEvents",
        )
        .await;
        let folded = b
            .js_async(&format!(
                "return Promise.all({}.map(async (id) => {{\
                   const events = await (await fetch(`/api/runs/${{id}}/events`)).json();\
                   return window.__pipewatch.foldEvents(id, events); }}));",
                json!(ids)
            ))
            .await;
        // The API leaves out `reason` and `scheduled_for` when they are not set.
        let fields = |v: &Value, keys: &[&str]| -> Value {
            keys.iter()
                .map(|k| (k.to_string(), v.get(*k).cloned().unwrap_or(Value::Null)))
                .collect()
        };
        const RUN: [&str; 12] = [
            "run_id",
            "pipeline",
            "status",
            "source",
            "started_at",
            "finished_at",
            "duration_ms",
            "reason",
            "scheduled_for",
            "failed_stages",
            "events",
            "first_error_seq",
        ];
        const STAGE: [&str; 10] = [
            "name",
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "attempts",
            "exit_code",
            "reason",
            "signal",
            "needs",
        ];
        let shape = |v: &Value| -> Value {
            let mut run = fields(v, &RUN);
            run["stages"] = v["stages"]
                .as_array()
                .expect("stages")
                .iter()
                .map(|s| fields(s, &STAGE))
                .collect();
            run
        };
        for (id, page) in ids.iter().zip(folded.as_array().expect("folded runs")) {
            let api = server.json(&format!("/api/runs/{id}"));
            assert_eq!(
                shape(page),
                shape(&api),
                "run {id}: the page's fold (left) and the index (right) differ"
            );
        }
        b.close().await;
    });
}

/// Runs of every shape the fold handles: retries and attempts, failures and skipped stages,
/// cancels, a skipped and a missed run, a running one, another writer's bare lines with naive
/// timestamps, a second final event, negative durations and time zone offsets.
fn fold_cases(p: &Project) -> Vec<String> {
    let t0 = Utc::now() - chrono::Duration::hours(2);
    let at = |ms: i64| t0 + chrono::Duration::milliseconds(ms);
    let mut ids = Vec::new();
    let mut run = |n: u32, events: &[(i64, &str, &str, Value)]| {
        let id = run_id_at(at(i64::from(n) * 60_000), 100 + n);
        let mut f = RunFile::new(
            p,
            &id,
            if n.is_multiple_of(2) {
                "scheduler"
            } else {
                "manual"
            },
        );
        let mut text = String::new();
        for (ms, stage, event, data) in events {
            text += &f.line(
                at(i64::from(n) * 60_000 + ms),
                stage,
                event,
                "info",
                event,
                data.clone(),
            );
        }
        std::fs::write(&f.path, text).expect("write a run");
        ids.push(id);
    };
    let none = Value::Null;
    // Retries, attempts with and without `data.attempt`, durations given and measured.
    run(
        1,
        &[
            (0, "pipeline", "start", json!({ "stages": ["a", "b"] })),
            (10, "a", "start", json!({ "attempt": 1 })),
            (20, "a", "log", json!({ "stream": "stdout" })),
            (
                30,
                "a",
                "retry",
                json!({ "attempt": 2, "exit_code": 1, "reason": "exit" }),
            ),
            (1030, "a", "start", json!({ "attempt": 2 })),
            (
                2530,
                "a",
                "success",
                json!({ "attempt": 2, "exit_code": 0, "duration_ms": 1500 }),
            ),
            (2540, "b", "start", none.clone()),
            (2600, "b", "start", none.clone()),
            (3777, "b", "success", json!({ "exit_code": 0 })),
            (3800, "pipeline", "success", json!({ "duration_ms": 9000 })),
        ],
    );
    // A failed stage, a stage skipped before it started, a failure measured from the start.
    run(
        2,
        &[
            (0, "pipeline", "start", json!({})),
            (5, "a", "start", json!({ "attempt": 1 })),
            (
                905,
                "a",
                "failure",
                json!({ "attempt": 1, "exit_code": 2, "reason": "exit" }),
            ),
            (910, "b", "skipped", json!({ "reason": "needs_failed" })),
            (
                912,
                "pipeline",
                "failure",
                json!({ "reason": "stage_failed" }),
            ),
        ],
    );
    // Cancelled: one stage while running, one before it started.
    run(
        3,
        &[
            (0, "pipeline", "start", json!({})),
            (5, "a", "start", json!({ "attempt": 1 })),
            (800, "a", "cancelled", json!({ "attempt": 1 })),
            (801, "b", "cancelled", json!({})),
            (802, "pipeline", "cancelled", json!({ "reason": "user" })),
        ],
    );
    // Not started at all.
    run(
        4,
        &[(0, "pipeline", "skipped", json!({ "reason": "overlap" }))],
    );
    // Missed: alone it belongs where it was due; after a start it keeps the start.
    run(
        5,
        &[(
            0,
            "pipeline",
            "missed",
            json!({ "scheduled_for": stamp(at(5 * 60_000 - 2000)) }),
        )],
    );
    run(
        6,
        &[
            (0, "pipeline", "start", json!({})),
            (
                50,
                "pipeline",
                "missed",
                json!({ "scheduled_for": stamp(at(6 * 60_000 - 2000)), "duration_ms": 5 }),
            ),
        ],
    );
    // Still running: a stage known only from its output, one started and retrying.
    run(
        7,
        &[
            (0, "pipeline", "start", none.clone()),
            (10, "c", "log", json!({ "stream": "stderr" })),
            (20, "d", "start", json!({ "attempt": 1 })),
            (30, "d", "retry", json!({ "attempt": 2 })),
        ],
    );
    // A stage started again after it ended, a second final event, a late start that changes nothing.
    run(
        8,
        &[
            (0, "pipeline", "start", json!({})),
            (10, "a", "start", json!({ "attempt": 1 })),
            (20, "a", "success", json!({ "attempt": 1, "exit_code": 0 })),
            (30, "a", "start", json!({ "attempt": 2 })),
            (
                40,
                "a",
                "failure",
                json!({ "attempt": 2, "exit_code": 3, "duration_ms": 10 }),
            ),
            (50, "a", "success", json!({})),
            (60, "pipeline", "success", json!({})),
            (70, "pipeline", "failure", json!({ "reason": "late" })),
            (80, "pipeline", "start", json!({})),
        ],
    );
    // Durations that would be negative are none.
    run(
        9,
        &[
            (1000, "pipeline", "start", json!({})),
            (1010, "a", "start", json!({ "attempt": 1 })),
            (1020, "a", "success", json!({ "duration_ms": -5 })),
            (0, "pipeline", "success", json!({})),
        ],
    );
    // Another writer: only the required keys, naive timestamps (UTC), one with a space.
    let id = run_id_at(at(10 * 60_000), 110);
    let bare = |stage: &str, event: &str, ts: &str| {
        json!({ "run_id": id, "stage": stage, "event": event, "timestamp": ts, "msg": event })
            .to_string()
            + "\n"
    };
    let text = bare("pipeline", "start", "2025-12-08T21:45:00")
        + &bare("w", "start", "2025-12-08T21:45:01")
        + &bare("w", "success", "2025-12-08 21:45:03.5")
        + &bare("pipeline", "success", "2025-12-08T21:46:00");
    std::fs::write(p.events_dir().join(format!("pipeline_{id}.jsonl")), text)
        .expect("write a bare run");
    ids.push(id);
    // Offsets: the same instant written in two zones.
    let id = run_id_at(at(11 * 60_000), 111);
    let mut f = RunFile::new(p, &id, "cli");
    let text = f
        .line(t0, "pipeline", "start", "info", "start", json!({}))
        .replace(
            &stamp(t0),
            &(t0 + chrono::Duration::hours(2))
                .format("%Y-%m-%dT%H:%M:%S%.3f+02:00")
                .to_string(),
        )
        + &f.line(
            t0 + chrono::Duration::milliseconds(1250),
            "pipeline",
            "success",
            "info",
            "success",
            json!({}),
        );
    std::fs::write(&f.path, text).expect("write an offset run");
    ids.push(id);
    ids
}

/// Where WebSocket does not get through (a proxy that refuses upgrades) but the server
/// answers, the one reconnect machine falls back: a run's page to Server-Sent Events, the
/// runs list to the all-runs Server-Sent Events stream (to polling where the server has none).
/// Simulated by a browser whose WebSocket never opens, across a server restart that drops the
/// open sockets.
#[test]
fn without_websocket_the_page_falls_back_to_sse_and_polling() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, id, mut f) = work_run(Utc::now(), 7, "scheduler");
        let _alive = f.hold_lock(&p);
        let mut server = Server::start(&p);
        let port = server.port;
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the run over WebSocket", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live' && window.__pipewatch.transport() === 'ws'").await;
        // From now on no WebSocket opens.
        b.js("window.WebSocket = class { constructor() { setTimeout(() => this.onclose && this.onclose({ code: 1006 }), 5); } close() {} }; return true").await;
        server.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        let _server = loop {
            let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Server::start_with(&p, Options { bind: Some(format!("127.0.0.1:{port}")), ..Options::default() })));
            match s {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        b.wait("the SSE fallback", Duration::from_secs(30), "window.__pipewatch.transport() === 'sse' && document.querySelector('#conn').textContent.includes('SSE')").await;
        f.log("work", "stdout", "after the fallback");
        b.wait("a line over SSE", Duration::from_secs(10), "document.querySelector('#log .lr[data-seq=\"2\"]')?.textContent.includes('after the fallback')").await;
        // The list's stream falls back too: to the all-runs Server-Sent Events stream, or, from
        // a server without one (it answers 404), to polling.
        b.js("location.hash = '#/'; return true").await;
        let all_runs_sse = b
            .js_async("const r = await fetch('/api/events/stream', { headers: { Accept: 'text/event-stream' } }); const ok = r.ok; await r.body?.cancel(); return ok;")
            .await;
        let (label, transport) = if all_runs_sse == true { ("SSE", "sse") } else { ("polling", "polling") };
        b.wait(label, Duration::from_secs(30), &format!("document.querySelector('#conn').textContent.includes('{label}')")).await;
        assert_eq!(b.js("return window.__pipewatch.globalTransport()").await, transport);
        let other = run_id_at(Utc::now(), 8);
        let mut g = RunFile::new(&p, &other, "manual");
        g.push("pipeline", "start", "info", "run started", json!({}));
        g.push("pipeline", "success", "info", "run succeeded", json!({}));
        b.wait("the new run listed", Duration::from_secs(15), &format!("document.querySelector(\"#runs li.run[data-run-id='{other}']\")")).await;
        let history = b.js("return window.__pipewatch.connHistory.join(' → ')").await;
        eprintln!("connection: {history}");
        b.close().await;
    });
}

/// A run written whole, as a runner leaves it: the run's start, a stage `work` that prints a
/// line and ends as the run does, and the run's end (`success` or `failure`).
fn finished_run(p: &Project, id: &str, status: &str) {
    let mut f = RunFile::new(p, id, "scheduler");
    start_work(&mut f);
    f.log("work", "stdout", "working");
    finish(&mut f, status);
}

/// Ends a run's stage `work` and then the run, both with `status` (`success` or `failure`).
fn finish(f: &mut RunFile, status: &str) {
    let (level, exit_code) = if status == "success" {
        ("info", 0)
    } else {
        ("error", 1)
    };
    f.push(
        "work",
        status,
        level,
        &format!("stage work: {status}"),
        json!({ "attempt": 1, "exit_code": exit_code }),
    );
    f.push(
        "pipeline",
        status,
        level,
        &format!("run: {status}"),
        json!({}),
    );
}

/// The all-runs stream drops (the server stops and starts again on the same port, in the same
/// folders) while the runs list is open: runs that start and end while it is down, and right
/// after it is back, all reach the list with their final status, without a reload. The page
/// resumes the stream after the last `cursor` it had (`/ws/events?since=`), so it does not
/// rely on reading the whole list again.
#[test]
fn the_page_keeps_a_complete_runs_list_across_a_forced_reconnect() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::with_config(&format!(
            "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"
        ));
        let mut server = Server::start_with(
            &p,
            Options {
                bind: Some(format!("127.0.0.1:{}", free_port())),
                ..Options::default()
            },
        );
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/", server.url())).await;
        b.wait(
            "a live connection",
            Duration::from_secs(10),
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        // Every WebSocket the page opens from now on, by URL; and a mark that a reload would
        // wipe.
        b.js("const W = window.WebSocket;\
              window.__opened = [];\
              window.WebSocket = class extends W { constructor(url, p) { super(url, p); window.__opened.push(String(url)); } };\
              window.__notReloaded = true;\
              return true")
            .await;

        let t = Utc::now();
        let id = |n: u32| run_id_at(t, n);
        let mut expected: Vec<(String, &str)> = Vec::new();
        let list_has = |expected: &[(String, &str)]| {
            format!(
                "(() => {{ const shown = Object.fromEntries([...document.querySelectorAll('#runs li.run')].map(li => [li.dataset.runId, li.dataset.status]));\
                 return {}.every(([id, st]) => shown[id] === st); }})()",
                json!(expected)
            )
        };

        // Live: two runs end, two are still going (their runners alive).
        finished_run(&p, &id(1), "success");
        finished_run(&p, &id(2), "failure");
        let mut going = Vec::new();
        let mut locks = Vec::new();
        for n in [3, 4] {
            let mut f = RunFile::new(&p, &id(n), "manual");
            locks.push(f.hold_lock(&p));
            f.push("pipeline", "start", "info", "run started", json!({ "stages": ["work"] }));
            f.push("work", "start", "info", "stage work started", json!({ "attempt": 1 }));
            going.push(f);
        }
        expected.extend([
            (id(1), "success"),
            (id(2), "failure"),
            (id(3), "running"),
            (id(4), "running"),
        ]);
        b.wait(
            "the runs written live",
            Duration::from_secs(15),
            &list_has(&expected),
        )
        .await;
        let cursor = b.js("return window.__pipewatch.globalCursor()").await;

        // Down: runs start and end, and a running one ends.
        server.stop();
        b.wait(
            "the indicator to notice",
            Duration::from_secs(10),
            "document.querySelector('#conn').dataset.state !== 'live'",
        )
        .await;
        finished_run(&p, &id(5), "success");
        finished_run(&p, &id(6), "failure");
        finish(&mut going[0], "success");
        expected[2].1 = "success";
        expected.extend([(id(5), "success"), (id(6), "failure")]);

        // Back on the same port: more, before the page has had time to reconnect.
        server.spawn();
        finished_run(&p, &id(7), "success");
        finish(&mut going[1], "failure");
        expected[3].1 = "failure";
        expected.push((id(7), "success"));
        drop(locks);

        b.wait(
            "every run with its final status",
            Duration::from_secs(30),
            &list_has(&expected),
        )
        .await;
        b.wait(
            "live again",
            Duration::from_secs(20),
            "document.querySelector('#conn').dataset.state === 'live'",
        )
        .await;
        assert_eq!(
            b.js("return window.__notReloaded === true").await,
            true,
            "the page was not reloaded"
        );
        let listed = server.runs();
        for (run_id, status) in &expected {
            let api = listed
                .iter()
                .find(|r| r["run_id"] == run_id.as_str())
                .unwrap_or_else(|| panic!("run {run_id} not in /api/runs"));
            assert_eq!(api["status"], *status, "run {run_id}: the API and the page differ");
        }

        // It resumed by cursor: each reconnect of the all-runs stream asked for what came
        // after the last cursor the page had, and the page moved past it.
        let opened: Vec<String> = serde_json::from_value(b.js("return window.__opened").await)
            .expect("the sockets opened");
        eprintln!("cursor before the drop: {cursor}; sockets opened since: {opened:?}");
        let cursor = cursor
            .as_u64()
            .unwrap_or_else(|| panic!("the all-runs stream gave no cursor: {cursor}"));
        let resumed: Vec<&String> = opened
            .iter()
            .filter(|u| u.contains("/ws/events") && !u.contains("/ws/events/"))
            .collect();
        assert!(!resumed.is_empty(), "the all-runs WebSocket never reopened");
        assert!(
            resumed[0].ends_with(&format!("/ws/events?since={cursor}")),
            "the first reconnect resumes after cursor {cursor}: {}",
            resumed[0]
        );
        assert!(
            resumed.iter().all(|u| u.contains("/ws/events?since=")),
            "every reconnect resumes: {resumed:?}"
        );
        let after = b.js("return window.__pipewatch.globalCursor()").await;
        assert!(
            after.as_u64().is_some_and(|c| c > cursor),
            "the page's cursor moved on from {cursor}: {after}"
        );
        drop(server);
        b.close().await;
    });
}
