//! The fault suite (issue 7): the real `pipewatch` binary under `kill -9`, deleted and
//! truncated files, a broken index, a full disk and a scheduler whose clock jumps.
//!
//! Every test is bounded in time and in count and stops by itself. Randomness comes from one
//! seeded generator per test ([`Rng`]); the seed is printed (`seed N`) and
//! `PIPEWATCH_TEST_SEED=N` replays it. Run with `cargo test --test it faults:: -- --nocapture`
//! to see the figures each test prints (`FIGURES ...` lines), which `docs/reliability.md` quotes.
//!
//! A test that shows a bug in `src/` is marked `#[ignore = "BUG: ..."]` until the bug is fixed;
//! `cargo test --test it faults:: -- --ignored --nocapture` runs them.
//!
//! The faults that exist only on Unix (processes killed by signal and their process groups,
//! an open file deleted or made read-only, a small tmpfs) are in [`unix`].

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, Timelike, Utc};
use pipewatch::sync::MutexExt;
use serde_json::{Value, json};

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Events as keys

fn key(e: &Value) -> (String, u64) {
    (
        e["run_id"].as_str().expect("run_id").to_string(),
        e["seq"].as_u64().expect("seq"),
    )
}

/// (run_id, seq) pairs delivered more than once.
fn duplicates(events: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|k| !seen.insert((*k).clone()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Run files

/// A complete three-line run (start, stage success, run success).
fn whole_run(id: &str) -> String {
    line(id, "pipeline", "start", "2026-11-29T08:00:00.000Z", "s")
        + &line(id, "a", "success", "2026-11-29T08:00:01.000Z", "a")
        + &line(id, "pipeline", "success", "2026-11-29T08:00:02.000Z", "e")
}

/// Appends log lines to one run file until stopped, then the run's final events; what it
/// wrote is the file (the thread is the only writer).
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<u64>,
}

impl Writer {
    /// `minute` makes each run's timestamps (and so its place in the list) its own.
    fn start(path: PathBuf, id: String, minute: u32, mut rng: Rng, pause: (u64, u64)) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let ts = |s: u32| {
                    format!(
                        "2026-11-29T{:02}:{:02}:{s:02}.000Z",
                        minute / 60,
                        minute % 60
                    )
                };
                append(
                    &path,
                    &(line(&id, "pipeline", "start", &ts(0), "start")
                        + &line(&id, "a", "start", &ts(1), "a")),
                );
                let mut n = 2u64;
                written.store(n, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    let k = 1 + rng.below(3);
                    let text: String = (n..n + k)
                        .map(|j| line(&id, "a", "log", &ts(2), &format!("m{j}")))
                        .collect();
                    append(&path, &text);
                    n += k;
                    written.store(n, Ordering::SeqCst);
                    std::thread::sleep(rng.millis(pause.0, pause.1));
                }
                append(
                    &path,
                    &(line(&id, "a", "success", &ts(3), "a done")
                        + &line(&id, "pipeline", "success", &ts(4), "done")),
                );
                n + 2
            })
        };
        Writer {
            stop,
            written,
            handle,
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Clients that follow a server across restarts

/// Where the current server is: which start of it (its generation) and its port, 0 while it
/// is down. A client leaves a connection once the server it was made to has been replaced,
/// whether or not it has seen the socket close: the close of a killed server's sockets is
/// not a thing every platform shows at once (under Wine it never comes), a new generation is.
#[derive(Default)]
struct Target {
    now: Mutex<(u64, u16)>,
    connects: AtomicU64,
}

impl Target {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u16)> {
        self.now.lock_anyway()
    }

    /// The server is up (again) on `port`: a new generation.
    fn up(&self, port: u16) {
        let mut now = self.lock();
        *now = (now.0 + 1, port);
    }

    /// The server is going down.
    fn down(&self) {
        self.lock().1 = 0;
    }

    /// (generation, port) of the server now, or `None` while it is down.
    fn current(&self) -> Option<(u64, u16)> {
        let now = *self.lock();
        (now.1 != 0).then_some(now)
    }

    fn generation(&self) -> u64 {
        self.lock().0
    }

    /// A WebSocket to generation `generation`'s server at `path`; `None` if that server is
    /// gone (the connection failed, or the server there now is a later one: nothing was read
    /// from it).
    fn connect(&self, generation: u64, port: u16, path: &str) -> Option<Ws> {
        let ws = ws_connect(port, path, &[]).ok()?;
        (self.generation() == generation).then_some(ws)
    }
}

/// A per-run WebSocket client that reconnects with `since=<last seen>` whenever the server is
/// replaced (or its socket closes); stops once it has seen `final_seq` (set when the writer
/// has finished) or at its deadline. Returns every seq in the order received.
fn follow_run_across_restarts(
    target: Arc<Target>,
    id: String,
    final_seq: Arc<AtomicU64>,
    deadline: Instant,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut got: Vec<u64> = Vec::new();
        let done = |got: &[u64]| got.last() == Some(&final_seq.load(Ordering::SeqCst));
        'outer: while !done(&got) && Instant::now() < deadline {
            let Some((generation, port)) = target.current() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let since = got.last().map_or(String::new(), |s| format!("?since={s}"));
            let Some(mut ws) = target.connect(generation, port, &format!("/ws/events/{id}{since}"))
            else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            target.connects.fetch_add(1, Ordering::Relaxed);
            loop {
                match next(&mut ws) {
                    Next::Event(e) => {
                        assert_eq!(e["run_id"], id.as_str(), "{e}");
                        got.push(e["seq"].as_u64().expect("seq"));
                    }
                    Next::Closed(_) => continue 'outer,
                    Next::Idle => {}
                }
                if done(&got) || Instant::now() > deadline {
                    break 'outer;
                }
                if target.generation() != generation {
                    continue 'outer;
                }
            }
        }
        got
    })
}

/// A `/ws/events` client that reconnects whenever the server is replaced (or its socket
/// closes), until `stop`; one connection per generation of the server, since each connection
/// begins with the recent events of the server's ring buffer.
fn follow_all_across_restarts(
    target: Arc<Target>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<(String, u64)>, u64)> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut connections = 0;
        let mut followed = None;
        'outer: while !stop.load(Ordering::SeqCst) {
            let Some((generation, port)) = target.current().filter(|(g, _)| followed != Some(*g))
            else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let Some(mut ws) = target.connect(generation, port, "/ws/events") else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            followed = Some(generation);
            connections += 1;
            while !stop.load(Ordering::SeqCst) && target.generation() == generation {
                match next(&mut ws) {
                    Next::Event(e) => got.push(key(&e)),
                    Next::Closed(_) => continue 'outer,
                    Next::Idle => {}
                }
            }
        }
        (got, connections)
    })
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 the dashboard while 50 runs write

#[test]
fn kill9_the_dashboard_20_times_while_50_runs_write() {
    const RUNS: usize = 50;
    const KILLS: usize = 20;
    let mut rng = Rng::seeded("kill9_dashboard");
    let p = Project::with_config(QUICK);
    let mut s = Server::start(&p);
    let target = Arc::new(Target::default());
    target.up(s.port);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(150);

    let ids: Vec<String> = (0..RUNS).map(|i| format!("k9-{i:02}")).collect();
    let finals: Vec<Arc<AtomicU64>> = (0..RUNS)
        .map(|_| Arc::new(AtomicU64::new(u64::MAX)))
        .collect();
    let writers: Vec<Writer> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Writer::start(
                run_path(&p, id),
                id.clone(),
                i as u32,
                Rng::with_seed(rng.below(u64::MAX)),
                (15, 45),
            )
        })
        .collect();
    let clients: Vec<_> = ids
        .iter()
        .zip(&finals)
        .map(|(id, f)| follow_run_across_restarts(target.clone(), id.clone(), f.clone(), deadline))
        .collect();
    let stop_all = Arc::new(AtomicBool::new(false));
    let all = follow_all_across_restarts(target.clone(), stop_all.clone());

    let mut uptimes = Vec::new();
    for _ in 0..KILLS {
        let up = rng.millis(200, 1500);
        uptimes.push(up.as_millis() as u64);
        std::thread::sleep(up);
        assert!(s.alive(), "the dashboard died by itself:\n{}", s.stderr());
        target.down();
        s.kill9();
        std::thread::sleep(rng.millis(0, 300));
        s.spawn();
        target.up(s.port);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut totals = Vec::new();
    for (w, f) in writers.into_iter().zip(&finals) {
        let total = w.finish();
        f.store(total - 1, Ordering::SeqCst);
        totals.push(total);
    }
    let per_run: Vec<Vec<u64>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    // Let the bus client take the last events, then stop it.
    std::thread::sleep(Duration::from_millis(1000));
    stop_all.store(true, Ordering::SeqCst);
    let (bus, bus_connections) = all.join().unwrap();

    // Every per-run client: every seq exactly once, in order, across 20 kills.
    let mut checked = 0u64;
    for ((id, got), total) in ids.iter().zip(&per_run).zip(&totals) {
        assert_eq!(
            count_lines(&run_path(&p, id)),
            *total,
            "{id}: file and writer disagree"
        );
        let expected: Vec<u64> = (0..*total).collect();
        assert!(
            *got == expected,
            "{id}: {} events received for {total} lines; first difference at index {:?}; \
             duplicates {:?}",
            got.len(),
            got.iter().zip(&expected).position(|(a, b)| a != b),
            duplicates(&got.iter().map(|s| (id.clone(), *s)).collect::<Vec<_>>())
        );
        checked += got.len() as u64;
    }
    // /ws/events across restarts: never the same (run_id, seq) twice.
    let twice = duplicates(&bus);
    assert!(
        twice.is_empty(),
        "/ws/events delivered {} (run, seq) pairs twice across restarts, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );

    // The index agrees with the files.
    for (id, total) in ids.iter().zip(&totals) {
        let events = read_events(&run_path(&p, id));
        let run = s.wait_run(id, Duration::from_secs(20), |r| r["status"] == "success");
        assert_eq!(run["started_at"], events[0]["timestamp"], "{id}: {run}");
        assert_eq!(
            run["finished_at"],
            events.last().unwrap()["timestamp"],
            "{id}: {run}"
        );
        let stages = run["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 1, "{id}: {run}");
        assert_eq!(stages[0]["status"], "success", "{id}: {run}");
        assert_eq!(stages[0]["attempts"], 1, "{id}: {run}");
        let api = s.all_events(id);
        let seqs: Vec<u64> = api.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..*total).collect::<Vec<_>>(), "{id}: /events");
    }
    let listed: BTreeSet<String> = s
        .runs()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|id| listed.contains(id)), "{listed:?}");
    let h = s.health();
    assert_eq!(h["status"], "ok", "{h}");
    eprintln!(
        "FIGURES kill9_dashboard: {RUNS} runs, {KILLS} kill -9 + restarts (uptimes ms {uptimes:?}), \
         {} lines written, {checked} per-run events checked exactly once, {} per-run \
         (re)connections, {} distinct (run, seq) on /ws/events over {bus_connections} \
         connections, 0 duplicates, {:.1} s",
        totals.iter().sum::<u64>(),
        target.connects.load(Ordering::Relaxed),
        bus.len(),
        began.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The events folder deleted and re-created while serving

#[test]
fn events_folder_deleted_and_recreated_while_serving() {
    const CYCLES: usize = 3;
    let p = Project::with_config(QUICK);
    std::fs::create_dir_all(p.events_dir()).unwrap();
    let s = Server::start(&p);
    let mut all = s.ws("/ws/events");
    let mut everything: Vec<(String, u64)> = Vec::new();
    let mut health_seen = BTreeSet::new();
    for c in 0..CYCLES {
        let before = format!("gone-{c}");
        append(&run_path(&p, &before), &whole_run(&before));
        let got = read_until(&mut all, "the run before the deletion", |g| {
            g.iter().filter(|e| e["run_id"] == before.as_str()).count() == 3
        });
        everything.extend(got.iter().map(key));

        remove_folder(&p.events_dir());
        // What health says while the folder is missing.
        let gone = Instant::now();
        while gone.elapsed() < Duration::from_millis(2500) {
            let h = s.health();
            health_seen.insert(format!(
                "status={} watching={} files_watched={}",
                h["status"], h["tailer"]["watching"], h["files_watched"]
            ));
            std::thread::sleep(Duration::from_millis(250));
        }
        // The run listed before is still listed (from the index).
        s.wait_run(&before, Duration::from_secs(5), |r| {
            r["status"] == "success"
        });

        std::fs::create_dir_all(p.events_dir()).unwrap();
        let after = format!("back-{c}");
        append(&run_path(&p, &after), &whole_run(&after));
        let got = read_until(
            &mut all,
            "the run written after the folder came back",
            |g| g.iter().filter(|e| e["run_id"] == after.as_str()).count() == 3,
        );
        everything.extend(got.iter().map(key));
        s.wait_run(&after, Duration::from_secs(20), |r| {
            r["status"] == "success"
        });
        let mut one = s.ws(&format!("/ws/events/{after}"));
        let got = read_until(&mut one, "the per-run replay", |g| g.len() == 3);
        assert_eq!(
            got.iter()
                .map(|e| e["seq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
    everything.extend(
        read_for(&mut all, Duration::from_millis(300))
            .iter()
            .map(key),
    );
    assert!(duplicates(&everything).is_empty(), "{everything:?}");
    // This test's runs only: the built-in scheduler may have started one of its own at a
    // quarter hour meanwhile.
    everything.retain(|(id, _)| id.starts_with("gone-") || id.starts_with("back-"));
    assert_eq!(everything.len(), CYCLES * 6);
    let h = s.health();
    assert_eq!(h["status"], "ok", "{h}");
    eprintln!(
        "FIGURES events_folder: {CYCLES} delete/re-create cycles, {} events streamed once each; \
         health while the folder was missing: {health_seen:?}; after: status={} watching={}",
        everything.len(),
        h["status"],
        h["tailer"]["watching"]
    );
}

#[test]
fn health_says_so_while_the_events_folder_is_missing() {
    let p = Project::with_config(QUICK);
    std::fs::create_dir_all(p.events_dir()).unwrap();
    let s = Server::start(&p);
    remove_folder(&p.events_dir());
    let seen = watch_health(&s, Duration::from_secs(3));
    let h = s.health();
    std::fs::create_dir_all(p.events_dir()).unwrap();
    assert!(
        seen.iter().any(|h| h.starts_with("\"degraded\"")),
        "health while {} was missing: {seen:?}; last {h}",
        p.events_dir().display()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A run file truncated while serving

#[test]
fn run_files_truncated_while_serving_publish_no_seq_twice() {
    const RUNS: usize = 6;
    const TRUNCATIONS: usize = 12;
    let mut rng = Rng::seeded("truncate");
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let target = Arc::new(Target::default());
    target.up(s.port);
    let stop_all = Arc::new(AtomicBool::new(false));
    let all = follow_all_across_restarts(target.clone(), stop_all.clone());
    std::thread::sleep(Duration::from_millis(200));

    // Runs 0..3 are truncated now and then; runs 3..6 are left alone (controls).
    let ids: Vec<String> = (0..RUNS).map(|i| format!("tr-{i}")).collect();
    let writers: Vec<Writer> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Writer::start(
                run_path(&p, id),
                id.clone(),
                i as u32,
                Rng::with_seed(rng.below(u64::MAX)),
                (5, 20),
            )
        })
        .collect();
    let finals: Vec<Arc<AtomicU64>> = (0..RUNS)
        .map(|_| Arc::new(AtomicU64::new(u64::MAX)))
        .collect();
    let controls: Vec<_> = (RUNS / 2..RUNS)
        .map(|i| {
            follow_run_across_restarts(
                target.clone(),
                ids[i].clone(),
                finals[i].clone(),
                Instant::now() + LONG,
            )
        })
        .collect();
    let mut cuts = Vec::new();
    for _ in 0..TRUNCATIONS {
        std::thread::sleep(rng.millis(100, 500));
        let i = rng.below((RUNS / 2) as u64) as usize;
        let path = run_path(&p, &ids[i]);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let to = rng.below(len + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(to)
            .unwrap();
        cuts.push((i, len, to));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut totals = Vec::new();
    for (w, f) in writers.into_iter().zip(&finals) {
        let total = w.finish();
        f.store(total - 1, Ordering::SeqCst);
        totals.push(total);
    }
    let controls: Vec<Vec<u64>> = controls.into_iter().map(|c| c.join().unwrap()).collect();
    // A run written after all that is still ingested and streamed.
    let fresh = "tr-after";
    append(&run_path(&p, fresh), &whole_run(fresh));
    s.wait_run(fresh, Duration::from_secs(20), |r| r["status"] == "success");
    std::thread::sleep(Duration::from_millis(1000));
    stop_all.store(true, Ordering::SeqCst);
    let (bus, _) = all.join().unwrap();

    let twice = duplicates(&bus);
    assert!(
        twice.is_empty(),
        "seqs published twice on /ws/events: {twice:?}"
    );
    for (k, got) in controls.iter().enumerate() {
        let i = RUNS / 2 + k;
        assert_eq!(
            *got,
            (0..totals[i]).collect::<Vec<_>>(),
            "control run {}",
            ids[i]
        );
    }
    assert_eq!(
        bus.iter().filter(|(r, _)| r == fresh).count(),
        3,
        "the fresh run"
    );
    let h = s.health();
    assert_eq!(h["tailer"]["running"], true, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    let noticed = s.stderr().matches("truncated or replaced").count();
    eprintln!(
        "FIGURES truncate: {TRUNCATIONS} truncations (run, size, cut to) {cuts:?}; noticed \
         {noticed} times; {} (run, seq) on /ws/events, 0 duplicates; {} control events exactly \
         once; malformed lines counted {}",
        bus.len(),
        controls.iter().map(Vec::len).sum::<usize>(),
        h["malformed_lines"]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The index database deleted, corrupted, read-only or locked while serving

/// Polls health for `d`; the set of (status, index error) seen.
fn watch_health(s: &Server, d: Duration) -> BTreeSet<String> {
    let end = Instant::now() + d;
    let mut seen = BTreeSet::new();
    while Instant::now() < end {
        if let Ok(r) = s.try_get("/api/health") {
            let h = r.json();
            seen.insert(format!("{} / {}", h["status"], h["index"]["error"]));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    seen
}

/// While `fault` is applied to the index of a serving dashboard and a run keeps writing:
/// its per-run stream keeps going; after a restart the index is rebuilt (runs listed again)
/// and `/ws/events` publishes nothing twice. Returns what health said meanwhile.
fn index_fault(name: &str, fault: impl FnOnce(&Project)) -> BTreeSet<String> {
    let rng = Rng::seeded(name);
    let p = Project::with_config(QUICK);
    let mut s = Server::start(&p);
    let done = format!("{name}-done");
    append(&run_path(&p, &done), &whole_run(&done));
    s.wait_run(&done, Duration::from_secs(20), |r| r["status"] == "success");
    let id = format!("{name}-open");
    let w = Writer::start(run_path(&p, &id), id.clone(), 30, rng.clone(), (10, 30));
    let mut one = s.ws(&format!("/ws/events/{id}"));
    let mut all = s.ws("/ws/events");
    let mut bus: Vec<(String, u64)> = Vec::new();
    let mut per_run = read_until(&mut one, "events before the fault", |g| g.len() >= 20);

    fault(&p);
    let mark = w.written();
    per_run.extend(read_until(&mut one, "events after the fault", |g| {
        g.last()
            .and_then(|e| e["seq"].as_u64())
            .is_some_and(|s| s >= mark + 20)
    }));
    let health = watch_health(&s, Duration::from_secs(3));
    // `/api/runs` while the index is broken: whatever it answers, the server answers.
    let listed = s.try_get("/api/runs").ok().map(|r| r.status);
    bus.extend(
        read_for(&mut all, Duration::from_millis(200))
            .iter()
            .map(key),
    );
    assert!(s.alive(), "the dashboard died:\n{}", s.stderr());

    // Restart: the index is rebuilt or reopened, and everything is listed again.
    s.kill9();
    bus.extend(
        read_for(&mut all, Duration::from_millis(200))
            .iter()
            .map(key),
    );
    s.spawn();
    let mut all = s.ws("/ws/events");
    let total = w.finish();
    let run = s.wait_run(&id, Duration::from_secs(30), |r| r["status"] == "success");
    assert_eq!(run["stages"][0]["status"], "success", "{run}");
    s.wait_run(&done, Duration::from_secs(5), |r| r["status"] == "success");
    let mut one = s.ws(&format!(
        "/ws/events/{id}?since={}",
        per_run.last().unwrap()["seq"]
    ));
    per_run.extend(read_until(&mut one, "the rest after the restart", |g| {
        g.last().is_some_and(|e| e["seq"] == total - 1)
    }));
    let seqs: Vec<u64> = per_run.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..total).collect::<Vec<_>>(),
        "{name}: the per-run stream"
    );
    bus.extend(
        read_for(&mut all, Duration::from_millis(500))
            .iter()
            .map(key),
    );
    let twice = duplicates(&bus);
    assert!(
        twice.is_empty(),
        "{name}: published twice on /ws/events: {twice:?}"
    );
    let h = s.health();
    assert_eq!(h["status"], "ok", "{name} after the restart: {h}");
    let ids: Vec<String> = s
        .runs()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&id) && ids.contains(&done), "{name}: {ids:?}");
    let reset = s.stderr().contains("run index reset") || s.stderr().contains("rebuilt");
    eprintln!(
        "FIGURES index_{name}: {total} lines, every seq once on the per-run stream across the \
         fault and a kill -9; /api/runs while broken answered {listed:?}; health meanwhile \
         {health:?}; after restart: status ok, {} runs listed, index rebuilt = {reset}; \
         /ws/events {} events, 0 duplicates",
        ids.len(),
        bus.len()
    );
    health
}

#[test]
fn index_corrupted_while_serving() {
    let health = index_fault("corrupted", |p| {
        let db = p.state_dir().join("index.db");
        let len = std::fs::metadata(&db).unwrap().len().max(64 * 1024);
        let mut rng = Rng::with_seed(7);
        let garbage: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        // Overwritten in place (same inode), as a disk or a stray process would.
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.write_all(&garbage).unwrap();
        f.sync_all().unwrap();
    });
    eprintln!("corrupted: health while the index was garbage: {health:?}");
}

/// Ingest's commits leave checkpoints of the index's write-ahead log to a task of their own
/// (a checkpoint inside a commit held up the next batch for as long as the disk took to sync
/// the files): while `serve` runs, what it committed reaches the database file within
/// seconds, whether or not the log grew to the 1,000 pages at which SQLite would checkpoint.
#[test]
fn the_index_log_is_checkpointed_beside_the_commits_while_serving() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let db = p.state_dir().join("index.db");
    let ids: Vec<String> = (0..20).map(|i| format!("c{i:04}")).collect();
    for id in &ids {
        append(&run_path(&p, id), &whole_run(id));
    }
    s.wait_json("/api/runs?limit=100", "every run indexed", LONG, |v| {
        v.as_array().is_some_and(|a| a.len() == ids.len())
    });
    // The database file alone (a copy, without the log) holds every run.
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("copy.db");
    let in_file = || -> Option<i64> {
        std::fs::copy(&db, &copy).ok()?;
        let c = rusqlite::Connection::open(&copy).ok()?;
        c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .ok()
    };
    wait_until(
        Duration::from_secs(10),
        "every run in the database file",
        || in_file() == Some(ids.len() as i64),
    );
}

/// 4 KB overwritten inside the index (the file still opens, its schema still reads): a
/// review got 503 "database disk image is malformed" on `/api/runs` from then on, after
/// restarts too, while health said ok. The integrity check at start-up finds it; the index is
/// rebuilt from the files and every run is listed again.
#[test]
fn an_index_damaged_inside_is_rebuilt_at_start_up() {
    let p = Project::with_config(QUICK);
    let ids: Vec<String> = (0..300).map(|i| format!("r{i:04}")).collect();
    for id in &ids {
        append(&run_path(&p, id), &whole_run(id));
    }
    let mut s = Server::start(&p);
    s.wait_json("/api/runs?limit=1000", "every run indexed", LONG, |v| {
        v.as_array().is_some_and(|a| a.len() == ids.len())
    });
    s.stop();
    let db = p.state_dir().join("index.db");
    // Folded into the file first: a stop on Windows is a kill (there is no SIGTERM to send),
    // which leaves the last writes in the write-ahead log instead of the pages damaged below.
    rusqlite::Connection::open(&db)
        .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
        .unwrap();
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len >= 8 * 4096, "the index is only {len} bytes");
    // A page in the middle of the file, overwritten in place.
    let at = (len / 2) / 4096 * 4096;
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    s.spawn();
    let runs = s.json("/api/runs?limit=1000");
    assert_eq!(runs.as_array().map(Vec::len), Some(ids.len()), "{runs}");
    let h = s.health();
    assert_eq!(h["status"], "ok", "{h}");
    // Reported as what the check found, or as the check itself failing on the damage
    // (which depends on which page was hit).
    assert!(
        s.stderr().contains("integrity check failed")
            || s.stderr()
                .contains("check its integrity: database disk image is malformed"),
        "the damage was not reported:\n{}",
        s.stderr()
    );
    assert!(p.state_dir().join("index.db.broken").exists());
}

/// Holds SQLite's write lock on the index for longer than the dashboard's busy timeout (5 s),
/// the one way to make the index unwritable that also works as root.
fn hold_index_lock(p: &Project, for_: Duration) -> std::thread::JoinHandle<()> {
    let db = p.state_dir().join("index.db");
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(for_);
        conn.execute_batch("ROLLBACK").unwrap();
    });
    rx.recv().unwrap();
    h
}

#[test]
fn index_locked_while_serving_streams_go_on_and_health_says_so() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "locked-open";
    let w = Writer::start(
        run_path(&p, id),
        id.to_string(),
        50,
        Rng::with_seed(5),
        (20, 40),
    );
    let mut one = s.ws(&format!("/ws/events/{id}"));
    let mut got = read_until(&mut one, "events before", |g| g.len() >= 10);
    let lock = hold_index_lock(&p, Duration::from_secs(8));
    let locked = Instant::now();
    let mark = w.written();
    got.extend(read_until(
        &mut one,
        "events while the index is locked",
        |g| {
            g.last()
                .and_then(|e| e["seq"].as_u64())
                .is_some_and(|s| s >= mark + 20)
        },
    ));
    let streamed_after = locked.elapsed();
    // The tail thread hands a run's new lines to its followers itself: they do not wait for
    // the ingest task, which waits on the lock for the busy timeout (5 s) before each commit
    // fails.
    assert!(
        streamed_after < Duration::from_secs(4),
        "the run's follower waited {streamed_after:?} for the locked index"
    );
    // Until just past the lock's end: ingest's first commit fails after the busy timeout.
    let health = watch_health(&s, Duration::from_secs(9).saturating_sub(locked.elapsed()));
    lock.join().unwrap();
    let total = w.finish();
    got.extend(read_until(&mut one, "the final event", |g| {
        g.last().is_some_and(|e| e["seq"] == total - 1)
    }));
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..total).collect::<Vec<_>>());
    let run = s.wait_run(id, Duration::from_secs(20), |r| r["status"] == "success");
    // The index catches up on its next retry (every 2 s) once the lock is gone.
    let h = s.wait_json(
        "/api/health",
        "health to recover once the lock is gone",
        Duration::from_secs(20),
        |h| h["status"] == "ok",
    );
    eprintln!(
        "FIGURES index_locked: {total} lines streamed once while the index was locked for 8 s \
         (20 events past the lock after {streamed_after:?}); health meanwhile {health:?}; \
         after: {} / run {}",
        h["status"], run["status"]
    );
    assert!(
        health
            .iter()
            .any(|h| h.starts_with("\"degraded\"") && h.contains("locked")),
        "health never said degraded with the error: {health:?}"
    );
}

#[test]
fn events_published_during_an_index_failure_are_not_published_again_after_a_restart() {
    let p = Project::with_config(QUICK);
    let mut s = Server::start(&p);
    let id = "relock";
    let path = run_path(&p, id);
    append(
        &path,
        &(line(id, "pipeline", "start", "2026-11-29T08:00:00.000Z", "s")
            + &line(id, "a", "start", "2026-11-29T08:00:01.000Z", "a")),
    );
    s.wait_run(id, Duration::from_secs(20), |r| r["status"] == "running");
    let mut all = s.ws("/ws/events");
    let lock = hold_index_lock(&p, Duration::from_secs(7));
    // Three lines while the index cannot be written: published (after the busy timeout), not
    // committed.
    append(
        &path,
        &(line(id, "a", "log", "2026-11-29T08:00:02.000Z", "x")
            + &line(id, "a", "success", "2026-11-29T08:00:03.000Z", "a done")
            + &line(
                id,
                "pipeline",
                "success",
                "2026-11-29T08:00:04.000Z",
                "done",
            )),
    );
    // The ring buffer's 0 and 1, then the three lines (once the busy timeout has passed).
    let mut bus: Vec<(String, u64)> = read_until(&mut all, "the three lines", |g| {
        g.iter().any(|e| e["seq"] == 4)
    })
    .iter()
    .map(key)
    .collect();
    lock.join().unwrap();
    let stale = s
        .try_get(&format!("/api/runs/{id}"))
        .ok()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null)["status"].clone());
    std::thread::sleep(Duration::from_millis(500));
    s.kill9();
    s.spawn();
    let mut all = s.ws("/ws/events");
    bus.extend(read_for(&mut all, Duration::from_secs(3)).iter().map(key));
    let twice = duplicates(&bus);
    assert!(
        twice.is_empty(),
        "published on /ws/events before the restart and again after it: {twice:?} of {bus:?} \
         (the index \
         said status {stale:?} for a run whose file ends in success, until the restart)"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The built-in scheduler across a clock jump

fn write_scheduler_state(p: &Project, last: DateTime<Utc>) {
    std::fs::create_dir_all(p.state_dir()).unwrap();
    std::fs::write(
        p.state_dir().join("scheduler.json"),
        json!({ "enabled": true, "last_occurrence": last }).to_string(),
    )
    .unwrap();
}

#[test]
fn scheduler_after_a_clock_jump_forward_records_missed_occurrences_once() {
    // Hourly at a minute half an hour from now's, so the newest occurrence is never "on time";
    // the state says the last one handled was 30 days ago: what a dashboard sees after the
    // clock jumped 30 days forward.
    const DAYS: i64 = 30;
    let now = Utc::now();
    let minute = (now.minute() + 30) % 60;
    let p = Project::new();
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\nschedule = \"{minute} * * * *\"\ncatchup = \"last\"\ncatchup_window = \"6h\"\n[[stages]]\nname = \"a\"\nrun = \"{}\"\n[scheduler]\ngrace = \"10m\"\n",
        stage::OK
    ));
    let last = now - chrono::Duration::days(DAYS);
    write_scheduler_state(&p, last);
    // The occurrences strictly after `last`, at or before now.
    let mut expected: Vec<DateTime<Utc>> = Vec::new();
    let mut t = last.duration_trunc(chrono::Duration::hours(1)).unwrap()
        + chrono::Duration::minutes(minute as i64);
    while t <= now {
        if t > last {
            expected.push(t);
        }
        t += chrono::Duration::hours(1);
    }
    let started = Instant::now();
    let mut s = Server::start(&p);
    let want_missed = expected.len() - 1;
    let counts = |s: &Server| {
        let runs = s.runs();
        let missed: BTreeSet<String> = runs
            .iter()
            .filter(|r| r["status"] == "missed")
            .map(|r| r["scheduled_for"].as_str().unwrap_or("").to_string())
            .collect();
        let catchup = runs.iter().filter(|r| r["source"] == "catchup").count();
        // (A `missed` run's source is `scheduler` too.)
        let scheduled = runs
            .iter()
            .filter(|r| r["source"] == "scheduler" && r["status"] != "missed")
            .count();
        (missed, catchup, scheduled, runs.len())
    };
    wait_until(
        LONG,
        "every missed occurrence recorded and one catch-up run",
        || {
            let (m, c, _, _) = counts(&s);
            m.len() >= want_missed && c >= 1
        },
    );
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (missed, catchup, scheduled, total) = counts(&s);
    // Restarted twice (once with kill -9): nothing recorded or fired again.
    s.kill9();
    s.spawn();
    std::thread::sleep(Duration::from_secs(3));
    s.stop();
    s.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let again = counts(&s);
    let fmt = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let want: BTreeSet<String> = expected[..want_missed].iter().map(fmt).collect();
    assert_eq!(missed, want, "missed occurrences recorded");
    assert_eq!(catchup, 1, "catch-up runs (catchup = last)");
    assert_eq!(scheduled, 0, "on-time runs");
    assert_eq!(
        again,
        (missed.clone(), catchup, scheduled, total),
        "after 2 restarts"
    );
    eprintln!(
        "FIGURES clock_forward: {DAYS} days forward, {} occurrences: {} recorded missed, {catchup} \
         catch-up run, in {took:?}; after kill -9 + restart and stop + restart: unchanged \
         ({total} runs)",
        expected.len(),
        missed.len()
    );
}

#[test]
fn a_catchup_run_interrupted_by_kill9_is_not_run_again() {
    // catchup = last with a stage that takes 4 s: the dashboard is killed while the catch-up
    // run is going, then restarted. The occurrence must not be run a second time.
    let now = Utc::now();
    let minute = (now.minute() + 30) % 60;
    let p = Project::new();
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\nschedule = \"{minute} * * * *\"\ncatchup = \"last\"\ncatchup_window = \"6h\"\noverlap = \"parallel\"\n[[stages]]\nname = \"a\"\nrun = \"{}\"\n[scheduler]\ngrace = \"10m\"\n",
        stage::sleep(4)
    ));
    write_scheduler_state(&p, now - chrono::Duration::hours(3));
    let mut s = Server::start(&p);
    wait_until(LONG, "the catch-up run to start", || {
        s.runs().iter().any(|r| r["source"] == "catchup")
    });
    s.kill9();
    s.spawn();
    std::thread::sleep(Duration::from_secs(6));
    let runs = s.runs();
    let catchup: Vec<&Value> = runs.iter().filter(|r| r["source"] == "catchup").collect();
    assert_eq!(
        catchup.len(),
        1,
        "one occurrence, {} catch-up runs after a kill -9 of the dashboard during the first: \
         {catchup:?}",
        catchup.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Unix-only faults

#[cfg(unix)]
mod unix {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    use super::{LONG, Rng, Writer, index_fault, watch_health};
    use crate::support::*;

    // 2. kill -9 runners mid-stage. Unix-only: grandchildren left by `sleep 300 &`, found
    // through /proc, and process groups killed by signal (on Windows a stage's job object
    // holds its processes).

    /// A project whose one stage starts a background `sleep 300` (the grandchild), prints its pid,
    /// and waits for it; runs may overlap.
    fn grandchild_project() -> Project {
        let p = Project::new();
        p.write_config(
            "[pipeline]\nname = \"p\"\noverlap = \"parallel\"\n[[stages]]\nname = \"a\"\nrun = 'sleep 300 & echo \"grandchild $!\"; wait'\n",
        );
        p
    }

    /// Starts `n` runners, waits for each stage's grandchild pid, kills every runner with
    /// SIGKILL, and returns (run id, grandchild pid, stage shell pid).
    fn kill_runners_mid_stage(p: &Project, n: usize) -> Vec<(String, i32, i32)> {
        let mut runners: Vec<Child> = (0..n)
            .map(|_| p.spawn(&["run", "--no-notify", "--quiet"]))
            .collect();
        let mut found: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        wait_until(LONG, "every stage to print its grandchild's pid", || {
            for j in p.journals() {
                let events = read_events(&j);
                for e in &events {
                    if let Some(pid) = e["msg"]
                        .as_str()
                        .and_then(|m| m.strip_prefix("grandchild "))
                        .and_then(|v| v.trim().parse::<i32>().ok())
                    {
                        // The stage's shell is the grandchild's parent.
                        let shell = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .ok()
                            .and_then(|st| st.split_whitespace().nth(3)?.parse::<i32>().ok())
                            .unwrap_or(0);
                        found.insert(e["run_id"].as_str().unwrap().to_string(), (pid, shell));
                    }
                }
            }
            found.len() == n
        });
        for r in &mut runners {
            r.kill().expect("kill -9 the runner");
            let _ = r.wait();
        }
        found.into_iter().map(|(id, (g, s))| (id, g, s)).collect()
    }

    /// Kills what a test left behind (the stages' process groups).
    fn reap(pids: &[i32]) {
        for &pid in pids {
            if pid > 0 {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    #[test]
    fn kill9_runners_mid_stage_their_runs_become_abandoned() {
        const RUNNERS: usize = 3;
        let p = grandchild_project();
        let s = Server::start(&p);
        let killed = kill_runners_mid_stage(&p, RUNNERS);
        let at = Instant::now();
        let mut took = Vec::new();
        for (id, _, _) in &killed {
            let run = s.wait_run(id, Duration::from_secs(20), |r| r["status"] == "abandoned");
            assert_eq!(run["stages"][0]["status"], "abandoned", "{run}");
            took.push(at.elapsed().as_millis());
        }
        let survivors: Vec<i32> = killed
            .iter()
            .filter(|(_, g, _)| pid_alive(*g))
            .map(|(_, g, _)| *g)
            .collect();
        reap(
            &killed
                .iter()
                .flat_map(|(_, g, s)| [*g, *s])
                .collect::<Vec<_>>(),
        );
        eprintln!(
            "FIGURES kill9_runners: {RUNNERS} runners killed mid-stage, all abandoned within \
             {took:?} ms of the kill; grandchildren still alive afterwards: {}/{RUNNERS} {survivors:?} \
             (see the ignored BUG test killed_runner_leaves_no_orphan_process)",
            survivors.len()
        );
    }

    #[test]
    fn killed_runner_leaves_no_orphan_process() {
        let p = grandchild_project();
        let s = Server::start(&p);
        let killed = kill_runners_mid_stage(&p, 1);
        let (id, grandchild, shell) = killed[0].clone();
        s.wait_run(&id, Duration::from_secs(20), |r| r["status"] == "abandoned");
        // Give any clean-up every chance.
        std::thread::sleep(Duration::from_secs(2));
        let alive = (pid_alive(grandchild), pid_alive(shell));
        let ppid = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(3).map(str::to_string));
        reap(&[grandchild, shell]);
        assert_eq!(
            alive,
            (false, false),
            "run {id} is abandoned but its stage's processes survive the runner: grandchild \
             `sleep 300` pid {grandchild} alive = {}, (parent now {ppid:?}); stage shell pid {shell} \
             alive = {}",
            alive.0,
            alive.1
        );
    }

    /// Processes a test started, killed and reaped when the test ends, however it ends.
    struct KillOnDrop(Vec<Child>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// A `sleep 300` in a process group of its own: a process that has nothing to do with
    /// pipewatch, which a stale or forged `.groups` line may name.
    fn stranger() -> Child {
        let mut c = Command::new("sleep");
        c.arg("300");
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c.spawn().expect("start a stranger process")
    }

    /// The first `.groups` file under the project's `runs/` folder and its first group line.
    fn recorded_group(p: &Project) -> Option<(PathBuf, String)> {
        let file = std::fs::read_dir(p.state_dir().join("runs"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|f| f.extension().is_some_and(|x| x == "groups"))?;
        let text = std::fs::read_to_string(&file).ok()?;
        let line = text.lines().find(|l| group_of(l).is_some())?.to_string();
        Some((file, line))
    }

    /// The process group a `.groups` line names (its first word).
    fn group_of(line: &str) -> Option<i32> {
        line.split_whitespace().next()?.parse().ok()
    }

    #[test]
    fn a_stale_or_forged_groups_file_never_kills_a_stranger() {
        let p = Project::with_config("[[stages]]\nname = \"a\"\nrun = 'echo started; sleep 300'\n");
        let mut procs = KillOnDrop(vec![p.spawn(&["run", "--no-notify", "--quiet"])]);
        let mut recorded = None;
        wait_until(LONG, "the stage's process group to be recorded", || {
            recorded = recorded_group(&p);
            recorded.is_some()
        });
        let (file, line) = recorded.expect("a recorded group");
        let pgid = group_of(&line).expect("a process group");
        // The runner dies outright; then its stage ends by itself (here: killed by someone else).
        procs.0[0].kill().expect("kill -9 the runner");
        let _ = procs.0[0].wait();
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        wait_until(LONG, "the stage to end", || !pid_alive(pgid));

        // Its group id is taken by an unrelated process (simulated: the line now names the
        // stranger, with everything else the runner recorded about its stage). A process that
        // takes over an id starts after the one that had it: here, at least a tick of the
        // start-time clock (10 ms) later, or the stranger could start in the stage's tick and
        // match its record, which no reused id can.
        std::thread::sleep(Duration::from_millis(50));
        let reused = stranger();
        let reused_pid = reused.id() as i32;
        procs.0.push(reused);
        let stale = line.replacen(&pgid.to_string(), &reused_pid.to_string(), 1);
        std::fs::write(&file, format!("{stale}\n")).unwrap();
        // And someone writes a `.groups` file of their own naming another one.
        let target = stranger();
        let target_pid = target.id() as i32;
        procs.0.push(target);
        let forged = p.state_dir().join("runs/forged.groups");
        std::fs::write(&forged, format!("{target_pid}\n")).unwrap();

        // The next run reaps what dead runners left: it must not touch either stranger.
        p.write_config("[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n");
        let out = p.run(&["run", "--no-notify", "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let alive = (pid_alive(reused_pid), pid_alive(target_pid));
        eprintln!(
            "FIGURES stale_groups: stale line {stale:?} (was {line:?}); forged line {target_pid}; \
             strangers alive after the next run: {alive:?}; its stderr: {}",
            stderr(&out).trim()
        );
        assert_eq!(
            alive,
            (true, true),
            "the next run killed a process that was not its stage's: stale-id stranger {reused_pid} \
             alive = {}, forged-file stranger {target_pid} alive = {}",
            alive.0,
            alive.1
        );
        // Unverifiable records are forgotten once, not retried on every run.
        assert!(!file.exists(), "{} is still there", file.display());
        assert!(!forged.exists(), "{} is still there", forged.display());
    }

    /// The index database and its journal files.
    fn index_files(p: &Project) -> Vec<PathBuf> {
        std::fs::read_dir(p.state_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("index.db") && !n.contains("broken"))
            })
            .collect()
    }

    // 5. Unix-only: a file another process has open can be deleted only on Unix (Windows
    // refuses while SQLite holds the index open).
    #[test]
    fn index_deleted_while_serving() {
        index_fault("deleted", |p| {
            for f in index_files(p) {
                std::fs::remove_file(&f).unwrap();
            }
        });
    }

    // 5. Unix-only: permission bits (chmod 0444 / 0555) on the open index and its folder.
    /// Whether permissions bind this process (they do not for root).
    fn permissions_bind(dir: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let probe = dir.join("probe");
        std::fs::write(&probe, "x").unwrap();
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o444)).unwrap();
        let bound = std::fs::OpenOptions::new()
            .write(true)
            .open(&probe)
            .is_err();
        let _ = std::fs::remove_file(&probe);
        bound
    }

    #[test]
    fn index_read_only_while_serving() {
        use std::os::unix::fs::PermissionsExt;
        let probe = tempfile::tempdir().unwrap();
        if !permissions_bind(probe.path()) {
            eprintln!(
                "SKIPPED index_read_only_while_serving: this process can write a 0444 file (root, \
                 or CAP_DAC_OVERRIDE), so chmod cannot make the index read-only here; \
                 index_locked_while_serving covers an index that cannot be written"
            );
            return;
        }
        let mode = |path: &Path, m: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let p = Project::with_config(QUICK);
        let s = Server::start(&p);
        let id = "ro-open";
        let w = Writer::start(
            run_path(&p, id),
            id.to_string(),
            40,
            Rng::with_seed(3),
            (10, 30),
        );
        let mut one = s.ws(&format!("/ws/events/{id}"));
        read_until(&mut one, "events before", |g| g.len() >= 10);
        for f in index_files(&p) {
            mode(&f, 0o444);
        }
        mode(&p.state_dir(), 0o555);
        read_until(&mut one, "events while read-only", |g| g.len() >= 40);
        let health = watch_health(&s, Duration::from_secs(3));
        mode(&p.state_dir(), 0o755);
        for f in index_files(&p) {
            mode(&f, 0o644);
        }
        let _ = w.finish();
        s.wait_run(id, Duration::from_secs(30), |r| r["status"] == "success");
        eprintln!("FIGURES index_read_only: health while read-only {health:?}");
        assert!(
            health.iter().any(|h| h.starts_with("\"degraded\"")),
            "health never said degraded: {health:?}"
        );
    }

    // 6. The disk full while the runner writes. Unix-only: the full disk is a 1 MiB tmpfs
    // mounted for the test (Linux, as root).

    /// A 1 MiB tmpfs, unmounted on drop.
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        fn mount(at: &Path) -> Result<SmallDisk, String> {
            std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(at)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(SmallDisk(at.to_path_buf()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn disk_full_while_the_runner_writes() {
        let p = Project::new();
        let disk = p.path().join("small");
        let _mounted = match SmallDisk::mount(&disk) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("SKIPPED disk_full_while_the_runner_writes: cannot mount a tmpfs ({e})");
                return;
            }
        };
        p.write_config(&format!(
            "[pipeline]\nname = \"p\"\n[server]\nevents_dir = \"{}\"\n[[stages]]\nname = \"a\"\nrun = \"seq 1 200000\"\n",
            disk.display()
        ));
        let started = Instant::now();
        let mut child = p.spawn(&["run", "--no-notify", "--quiet"]);
        let st = wait_child(&mut child, LONG);
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(&disk)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let journal = &files[0];
        assert_eq!(st.code(), Some(3), "exit status {st}; stderr: {stderr}");
        assert!(
            stderr.contains(&journal.display().to_string()),
            "the error does not name the run file {}: {stderr}",
            journal.display()
        );
        assert!(stderr.contains("No space left"), "{stderr}");
        // Parseable: every line is a complete JSON event, with seq = its index.
        let text = std::fs::read_to_string(journal).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "the file ends mid-line"
        );
        let events = read_events(journal);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"], i as u64, "{e}");
        }
        eprintln!(
            "FIGURES disk_full: exit {:?} after {:?}; {} complete events ({} bytes) in the 1 MiB \
             file system; last event {}; stderr: {}",
            st.code(),
            started.elapsed(),
            events.len(),
            text.len(),
            events
                .last()
                .map(|e| format!("{}/{}", e["stage"], e["event"]))
                .unwrap_or_default(),
            stderr.trim()
        );
    }

    #[test]
    fn a_full_disk_stops_the_run_before_the_next_stage_starts() {
        let p = Project::new();
        let disk = p.path().join("small");
        let _mounted = match SmallDisk::mount(&disk) {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "SKIPPED a_full_disk_stops_the_run_before_the_next_stage_starts: cannot mount a \
                     tmpfs ({e})"
                );
                return;
            }
        };
        // The disk is nearly full before the run starts (16 KiB left: room for the run's `start`
        // events); stage `a` prints 40 lines of 1,000 bytes and exits 0 at once, so the journal
        // fails just before `a` ends. Stage `b` needs `a` and leaves a mark outside the small disk
        // if it ever starts.
        std::fs::write(disk.join("filler"), vec![0u8; 1024 * 1024 - 16 * 1024]).unwrap();
        let line = "x".repeat(1000);
        p.write_config(&format!(
            "[pipeline]\nname = \"p\"\n[server]\nevents_dir = \"{}\"\n\
             [[stages]]\nname = \"a\"\nrun = \"yes {line} | head -n 40\"\n\
             [[stages]]\nname = \"b\"\nneeds = [\"a\"]\nrun = \"touch b-started\"\n",
            disk.display()
        ));
        let started = Instant::now();
        let out = p.run(&["run", "--no-notify", "--quiet"]);
        let took = started.elapsed();
        let b_started = p.path().join("b-started").exists();
        eprintln!(
            "FIGURES full_disk_next_stage: exit {:?} after {took:?}; stage b started: {b_started}; \
             stderr: {}",
            out.status.code(),
            stderr(&out).trim()
        );
        assert!(
            !b_started,
            "stage b started after the journal had failed: it ran in no journal"
        );
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    }
}
