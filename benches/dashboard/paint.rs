//! paint: append → painted in the open run view of the real page, in headless Chromium
//! (driven through chromedriver with `fantoccini`, as `tests/it/browser.rs` does).
//!
//! The run is alive (its runner's lock is held) and open at `#/runs/<id>`, following its end.
//! A script in the page watches the log's rows (`#log-rows`, each row `data-seq`): a
//! `MutationObserver` stamps the wall clock (`performance.timeOrigin + performance.now()`) when a
//! row first enters the DOM — the log renders in an animation frame, so that is the frame that
//! paints it — and `requestAnimationFrame` stamps the start of the next frame, by when it has
//! been painted. A writer appends 1,000 events at 100/s stamping its own wall clock; the two
//! stamps give "in the DOM" and "painted by" latencies. The log keeps only the rows in view in
//! the DOM: when the page stalls and more lines arrive than the view holds, the earlier ones
//! are never there, and are counted as such.
//!
//! Without Chromium or chromedriver it prints a loud SKIPPED line.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::server::Server;
use crate::tools::{self, Chromium};
use crate::{Hist, cpu_seconds, env_or, events_dir, file_name, line, now_ns, project, ts};

/// chromedriver (in its own process group, with the browser it starts) and its session.
struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start(tools: &Chromium) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut cmd = Command::new(&tools.driver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping the browser ends Chromium with the driver.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut b = Browser {
            client: None,
            driver: cmd.spawn().expect("start chromedriver"),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-extensions".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": tools.chromium, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("start a Chromium session");
        b.client = Some(client);
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session")
    }

    async fn js(&self, script: &str) -> Value {
        self.c()
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `expr` until it is true.
    async fn wait(&self, what: &str, within: Duration, expr: &str) {
        let script = format!("try {{ return !!({expr}); }} catch (e) {{ return false; }}");
        let deadline = Instant::now() + within;
        while self.js(&script).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
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
        #[cfg(not(unix))]
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Stamps each event when the page takes it off the socket (`JSON.parse` of a `log` event),
/// each row of the log when it first enters the DOM, and when the frame that put it there has
/// been rendered; and the start of every frame.
///
/// The log inserts rows inside an animation frame, and that frame paints them. A task posted
/// from there (a `MessageChannel` message, from the `MutationObserver`'s callback) runs once
/// that frame's rendering is done: "painted". The start of the next frame would be a whole
/// frame later than the paint.
const WATCH: &str = r#"
const P = window.__paint = { recv: {}, dom: {}, painted: {}, frames: [] };
const parse = JSON.parse;
JSON.parse = function (text, reviver) {
  const v = parse(text, reviver);
  if (v && typeof v.seq === 'number' && v.event === 'log' && !(v.seq in P.recv)) {
    P.recv[v.seq] = performance.timeOrigin + performance.now();
  }
  return v;
};
const loop = (t) => { P.frames.push(performance.timeOrigin + t); requestAnimationFrame(loop); };
requestAnimationFrame(loop);
const after = new MessageChannel();
let waiting = [];
after.port1.onmessage = () => {
  const t = performance.timeOrigin + performance.now();
  for (const s of waiting) P.painted[s] = t;
  waiting = [];
};
new MutationObserver((muts) => {
  const at = performance.timeOrigin + performance.now();
  const fresh = [];
  for (const m of muts) for (const n of m.addedNodes) {
    const s = n.dataset && n.dataset.seq;
    if (s !== undefined && !(s in P.dom)) { P.dom[s] = at; fresh.push(s); }
  }
  if (fresh.length) { if (!waiting.length) after.port2.postMessage(0); waiting.push(...fresh); }
}).observe(document.querySelector('#log-rows'), { childList: true });
return true;
"#;

pub fn paint() {
    let Some(tools) = tools::chromium() else {
        println!(
            "paint: SKIPPED: chromium and chromedriver are needed (Debian: chromium, chromium-driver)"
        );
        return;
    };
    let total = env_or("PW_PAINT_EVENTS", 1_000);
    const RATE: u64 = 100;
    let dir = project();
    let events = events_dir(dir.path());
    let run_id = format!("paint-{}", std::process::id());
    // The runner's lock, held as a live runner holds it: the run shows as running.
    let locks = dir.path().join(".pipewatch/runs");
    std::fs::create_dir_all(&locks).expect("runs dir");
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(locks.join(format!("{run_id}.lock")))
        .expect("lock file");
    lock.lock().expect("lock");
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
    line(
        &mut first,
        1,
        &run_id,
        "a",
        "start",
        &ts(Utc::now()),
        "stage a started",
        r#"{"attempt":1}"#,
    );
    std::fs::create_dir_all(&events).expect("events dir");
    std::fs::write(events.join(file_name(&run_id)), first).expect("first lines");
    let server = Server::start(dir.path());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stamps, written, cpu, secs, offset_ns) = rt.block_on(async {
        let b = Browser::start(&tools).await;
        b.c()
            .goto(&format!("{}/#/runs/{run_id}", server.url()))
            .await
            .expect("open the run");
        b.wait(
            "the run's lines",
            Duration::from_secs(20),
            "document.querySelector('#log .lr[data-seq=\"1\"]')",
        )
        .await;
        b.js(WATCH).await;
        let offset_ns = clock_offset(&b).await;

        // The writer appends on a thread of its own, one `write` per line.
        let path = events.join(file_name(&run_id));
        let rid = run_id.clone();
        let cpu0 = cpu_seconds(server.pid());
        let t0 = Instant::now();
        let writer = std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .append(true)
                .open(path)
                .expect("run file");
            let mut at = HashMap::new();
            for i in 0..total {
                let due = t0 + Duration::from_nanos(i * 1_000_000_000 / RATE);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let seq = i + 2;
                let t_ns = now_ns();
                f.write_all(crate::timed_line(seq, &rid, t_ns).as_bytes())
                    .expect("append");
                at.insert(seq, t_ns);
            }
            at
        });
        while !writer.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let written = writer.join().expect("writer");
        let last = total + 1;
        // Rows that never show are counted, not waited for.
        let deadline = Instant::now() + Duration::from_secs(10);
        let probe = format!("return !!(window.__paint.painted['{last}'])");
        while b.js(&probe).await != Value::Bool(true) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu_seconds(server.pid()) - cpu0;
        let stamps = b.js("return window.__paint").await;
        let follow = b
            .js("return document.querySelector('#follow')?.textContent || ''")
            .await;
        if follow != "Following" {
            eprintln!("paint: the log stopped following its end ({follow})");
        }
        if let Some(c) = b.client.as_ref() {
            let _ = c.clone().close().await;
        }
        (stamps, written, cpu, t0.elapsed().as_secs_f64(), offset_ns)
    });
    drop(lock);

    let (mut recv, mut dom, mut painted) = (Hist::new(), Hist::new(), Hist::new());
    let to_ns = |ms: f64| (ms * 1e6 - offset_ns) as u64;
    let frames: Vec<u64> = stamps["frames"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).map(to_ns).collect())
        .unwrap_or_default();
    // How many frames started between the page taking an event in and the row going into the
    // DOM, that frame included: 1 is "painted in the frame after it arrived".
    let mut next_frame = 0;
    let mut later = 0;
    let mut missing = 0;
    for (seq, t_ns) in &written {
        let key = seq.to_string();
        let ns = |which: &str| stamps[which][&key].as_f64().map(to_ns);
        let (Some(r), Some(d), Some(p)) = (ns("recv"), ns("dom"), ns("painted")) else {
            missing += 1;
            continue;
        };
        recv.record_ns(r.saturating_sub(*t_ns));
        dom.record_ns(d.saturating_sub(*t_ns));
        painted.record_ns(p.saturating_sub(*t_ns));
        let started = frames.iter().filter(|&&f| f > r && f <= d).count();
        if started <= 1 {
            next_frame += 1;
        } else {
            later += 1;
        }
    }
    println!(
        "paint: {total} events at {RATE}/s into the open run view (headless Chromium): append -> taken in by the page {}; -> in the DOM {}; -> painted (the frame that inserted it rendered) {} (target p99 <= 16 ms)",
        recv.summary(),
        dom.summary(),
        painted.summary(),
    );
    let mut gaps: Vec<u64> = frames
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let frame_ms = gaps.get(gaps.len() / 2).map_or(0.0, |&g| g as f64 / 1e6);
    println!(
        "paint: painted in the frame after the page took it in: {next_frame} of {}; later: {later}; {missing} rows never seen; a frame every {frame_ms:.1} ms (median); server CPU {:.1}% of one core; page clock {:+.2} ms from ours (subtracted)",
        next_frame + later,
        cpu / secs * 100.0,
        offset_ns / 1e6,
    );
}

/// How far the page's wall clock (`performance.timeOrigin + performance.now()`, which runs on
/// the monotonic clock from the navigation on) is ahead of ours, in ns: the reading with the
/// shortest round trip of 20, against the middle of that round trip.
async fn clock_offset(b: &Browser) -> f64 {
    let mut best = (u64::MAX, 0.0);
    for _ in 0..20 {
        let before = now_ns();
        let page = b
            .js("return performance.timeOrigin + performance.now()")
            .await
            .as_f64()
            .expect("a number");
        let after = now_ns();
        if after - before < best.0 {
            best = (after - before, page * 1e6 - (before / 2 + after / 2) as f64);
        }
    }
    best.1
}
