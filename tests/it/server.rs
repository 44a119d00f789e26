//! `pipewatch serve` through the binary: ingest of run files written by other tools and by
//! `pipewatch run`, the HTTP API, WebSocket and SSE streams, restarts, security guards.
//!
//! Each test starts the real binary on port 0 in a [`Project`] ([`Server`]); events are
//! appended to `logs/events/pipeline_<id>.jsonl` directly (append + flush of complete lines, as
//! other tools do) or by real runs. HTTP goes over a raw `TcpStream` (so that odd paths and
//! headers reach the server unchanged), WebSocket through `tungstenite`. Nothing sleeps for
//! readiness: conditions are polled with generous deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

/// A log line of stage `a`, `msg` = `m<n>`.
fn log_line(id: &str, n: u64) -> String {
    line(id, "a", "log", "2026-11-29T08:15:00.000Z", &format!("m{n}"))
}

// ---------------------------------------------------------------------------------------------
// 1. The original format

#[test]
fn original_format_files_are_indexed_and_streamed_with_seq() {
    let p = Project::with_config(QUICK);
    let write = |id: &str| {
        let mut text = String::new();
        text += &line(
            id,
            "pipeline",
            "start",
            "2025-12-08T21:45:00",
            "Pipeline started",
        );
        text += &line(
            id,
            "translator",
            "start",
            "2025-12-08T21:45:01",
            "translating",
        );
        text += &line(id, "translator", "success", "2025-12-08T21:45:07", "done");
        text += &line(
            id,
            "pipeline",
            "success",
            "2025-12-08T21:45:08",
            "Pipeline finished",
        );
        append(&run_path(&p, id), &text);
    };
    // One file present at start-up, one written while the server runs.
    write("orig_before");
    let s = Server::start(&p);
    let mut all = s.ws("/ws/events");
    write("orig_live");

    for id in ["orig_before", "orig_live"] {
        let run = s.wait_run(id, LONG, |r| r["status"] == "success");
        assert_eq!(run["run_id"], id);
        assert!(run["started_at"].is_string(), "{run}");
        assert!(run["finished_at"].is_string(), "{run}");
        assert_eq!(run["duration_ms"], 8000, "{run}");
        let stages = run["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 1, "{run}");
        assert_eq!(stages[0]["name"], "translator");
        assert_eq!(stages[0]["status"], "success");
        assert_eq!(stages[0]["duration_ms"], 6000, "{run}");

        let mut ws = s.ws(&format!("/ws/events/{id}"));
        let got = read_until(&mut ws, "4 events", |g| g.len() >= 4);
        assert_eq!(seqs(&got), vec![0, 1, 2, 3]);
        assert_eq!(got[0]["msg"], "Pipeline started");
        assert_eq!(got[0]["timestamp"], "2025-12-08T21:45:00");
        assert_eq!(got[2]["stage"], "translator");
        assert_eq!(got[3]["event"], "success");
        for e in &got {
            assert_eq!(e["run_id"], id);
        }
        let events = s.json(&format!("/api/runs/{id}/events"));
        assert_eq!(seqs(events.as_array().unwrap()), vec![0, 1, 2, 3]);
    }
    let list = s.json("/api/runs");
    let ids: BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["orig_before", "orig_live"]));

    // The live file went over the bus too, with seq filled in.
    let live = read_until(&mut all, "the live run on /ws/events", |g| {
        g.iter().filter(|e| e["run_id"] == "orig_live").count() >= 4
    });
    let live: Vec<Value> = live
        .into_iter()
        .filter(|e| e["run_id"] == "orig_live")
        .collect();
    assert_eq!(seqs(&live), vec![0, 1, 2, 3]);

    // History survives a restart.
    let mut s = s;
    s.restart();
    let again = s.json("/api/runs");
    assert_eq!(again.as_array().unwrap().len(), 2, "{again}");
    assert_eq!(again, list);
}

// ---------------------------------------------------------------------------------------------
// 2. A line written in two halves

#[test]
fn a_line_written_in_two_halves_is_one_event() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let mut all = s.ws("/ws/events");
    let mut one = s.ws("/ws/events/halves");
    let path = run_path(&p, "halves");
    append(&path, &log_line("halves", 0));
    read_until(&mut one, "line 0", |g| g.len() == 1);

    let full = line(
        "halves",
        "a",
        "log",
        "2026-11-29T08:15:01.000Z",
        "a long message that is split in the middle",
    );
    let (first, second) = full.split_at(full.len() / 2);
    append(&path, first);
    // Let the tailer see the half line: a later complete line in another file is read after it.
    append(&run_path(&p, "marker"), &log_line("marker", 0));
    let mut on_bus = read_until(&mut all, "the marker", |g| {
        g.iter().any(|e| e["run_id"] == "marker")
    });
    std::thread::sleep(Duration::from_millis(300)); // the pause between the two halves
    assert!(
        read_for(&mut one, Duration::from_millis(200)).is_empty(),
        "an incomplete line was delivered"
    );
    append(&path, second);
    let got = read_until(&mut one, "the completed line", |g| !g.is_empty());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["seq"], 1);
    assert_eq!(got[0]["msg"], "a long message that is split in the middle");
    append(&path, &log_line("halves", 2));
    let got = read_until(&mut one, "line 2", |g| !g.is_empty());
    assert_eq!(seqs(&got), vec![2], "{got:?}");

    on_bus.extend(read_until(&mut all, "line 2 on the bus", |g| {
        g.iter().any(|e| e["run_id"] == "halves" && e["seq"] == 2)
    }));
    on_bus.retain(|e| e["run_id"] == "halves");
    assert_eq!(seqs(&on_bus), vec![0, 1, 2]);
    assert_eq!(s.health()["malformed_lines"], 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Bad lines between good ones

#[test]
fn bad_lines_are_skipped_counted_and_leave_their_seq_unused() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    assert_eq!(s.health()["malformed_lines"], 0);
    let mut one = s.ws("/ws/events/bad");
    let id = "bad";
    let mut text = String::new();
    text += &log_line(id, 0);
    text += "this is not json\n";
    text += &log_line(id, 2);
    text += "{\"run_id\":\"bad\",\"stage\":\"a\",\"msg\":\"no event, no timestamp\"}\n";
    text += &log_line(id, 4);
    text += "{\"run_id\":\"bad\",\"stage\":\"a\",\"event\":\"log\",\n"; // cut JSON
    text += &log_line(id, 6);
    append(&run_path(&p, id), &text);

    let got = read_until(&mut one, "the good lines", |g| has_seq(g, 6));
    assert_eq!(seqs(&got), vec![0, 2, 4, 6]);
    for e in &got {
        assert_eq!(e["msg"], format!("m{}", e["seq"]));
    }
    wait_until(LONG, "3 malformed lines in health", || {
        s.health()["malformed_lines"] == 3
    });
    let events = s.json(&format!("/api/runs/{id}/events"));
    assert_eq!(seqs(events.as_array().unwrap()), vec![0, 2, 4, 6]);
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains("pipewatch_malformed_lines_total 3"),
        "{metrics}"
    );
    // The tailer goes on after them.
    append(&run_path(&p, id), &log_line(id, 7));
    let got = read_until(&mut one, "line 7", |g| !g.is_empty());
    assert_eq!(seqs(&got), vec![7]);
}

// ---------------------------------------------------------------------------------------------
// 4. Replay + live: no gap, no duplicate, whenever a client connects

#[test]
fn clients_connecting_at_random_moments_get_every_event_once_in_order() {
    const N: u64 = 2000;
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let port = s.port;
    let path = run_path(&p, "race");
    let mut rng = Rng::seeded("clients_connecting_at_random_moments");
    let delays: Vec<u64> = (0..5).map(|_| rng.below(1500)).collect();
    let chunks: Vec<u64> = (0..N).map(|_| 1 + rng.below(40)).collect();

    let writer = std::thread::spawn(move || {
        let mut n = 0;
        let mut i = 0;
        while n < N {
            let k = chunks[i].min(N - n);
            i += 1;
            let text: String = (n..n + k).map(|j| log_line("race", j)).collect();
            append(&path, &text);
            n += k;
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    let clients: Vec<_> = delays
        .into_iter()
        .map(|d| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(d));
                let mut ws = ws_connect(port, "/ws/events/race", &[]).unwrap();
                seqs(&read_until(&mut ws, "all 2000 events", |g| {
                    g.last().is_some_and(|e| e["seq"] == N - 1)
                }))
            })
        })
        .collect();
    writer.join().unwrap();
    let expected: Vec<u64> = (0..N).collect();
    for (i, c) in clients.into_iter().enumerate() {
        let got = c.join().unwrap();
        assert_eq!(got.len() as u64, N, "client {i}: {} events", got.len());
        assert!(got == expected, "client {i}: gap, duplicate or disorder");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Resuming: since, limit, tail, Last-Event-ID

#[test]
fn since_limit_tail_and_last_event_id_resume_where_asked() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "resume";
    let path = run_path(&p, id);
    append(&path, &(0..10).map(|n| log_line(id, n)).collect::<String>());
    wait_until(LONG, "the run to be indexed", || {
        s.get(&format!("/api/runs/{id}")).status == 200
    });

    let api = |q: &str| {
        seqs(
            s.json(&format!("/api/runs/{id}/events{q}"))
                .as_array()
                .unwrap(),
        )
    };
    assert_eq!(api(""), (0..10).collect::<Vec<_>>());
    assert_eq!(api("?since=4"), vec![5, 6, 7, 8, 9]);
    assert_eq!(api("?limit=3"), vec![0, 1, 2]);
    assert_eq!(api("?since=2&limit=3"), vec![3, 4, 5]);
    assert_eq!(api("?tail=3"), vec![7, 8, 9]);
    assert_eq!(api("?since=9"), Vec::<u64>::new());
    let bad = s.get(&format!("/api/runs/{id}/events?since=x"));
    assert_eq!(bad.status, 400);
    bad.assert_error();

    let mut ws = s.ws(&format!("/ws/events/{id}?since=4"));
    let mut sse_last = Sse::open(
        s.port,
        &format!("/api/runs/{id}/events/stream"),
        &[("Last-Event-ID", "6")],
    );
    let mut sse_all = Sse::open(s.port, &format!("/api/runs/{id}/events/stream"), &[]);
    let got = read_until(&mut ws, "5..=9", |g| has_seq(g, 9));
    assert_eq!(seqs(&got), vec![5, 6, 7, 8, 9]);
    let got = sse_last.wait("7..=9", |e| e.iter().any(|(i, _)| *i == 9));
    assert_eq!(got, vec![7, 8, 9]);
    let got = sse_all.wait("0..=9", |e| e.iter().any(|(i, _)| *i == 9));
    assert_eq!(got, (0..10).collect::<Vec<_>>());

    // Then live.
    append(&path, &log_line(id, 10));
    let got = read_until(&mut ws, "10", |g| !g.is_empty());
    assert_eq!(seqs(&got), vec![10]);
    let got = sse_last.wait("10", |e| e.iter().any(|(i, _)| *i == 10));
    assert_eq!(got, vec![7, 8, 9, 10]);
    let ev = sse_last.events();
    assert_eq!(ev.last().unwrap().1["seq"], 10);
    assert_eq!(ev.last().unwrap().1["msg"], "m10");
}

/// `/events` answers in pages: 1,000 events unless asked, never more than 10,000, with a
/// `Link: rel="next"` whose cursor is the last `seq` while the run may have more. A review
/// made the server build 2.1 GB for 8 plain GETs of one 50 MB run: there was no default.
#[test]
fn run_events_come_in_bounded_pages_with_a_next_link() {
    let p = Project::with_config(QUICK);
    let id = "paged";
    let n = 12_345u64;
    append(
        &run_path(&p, id),
        &(0..n).map(|i| log_line(id, i)).collect::<String>(),
    );
    let s = Server::start(&p);
    let first = s.get(&format!("/api/runs/{id}/events"));
    assert_eq!(
        seqs(first.json().as_array().unwrap()),
        (0..1000).collect::<Vec<_>>()
    );
    assert_eq!(
        first.header("link"),
        Some(format!("</api/runs/{id}/events?since=999&limit=1000>; rel=\"next\"").as_str())
    );
    let most = s.get(&format!("/api/runs/{id}/events?since=99&limit=1000000"));
    assert_eq!(
        seqs(most.json().as_array().unwrap()),
        (100..10_100).collect::<Vec<_>>()
    );
    assert!(
        most.header("link")
            .is_some_and(|l| l.contains("since=10099&limit=10000"))
    );
    // The last page: no next. A page that ends exactly at the end: no next either.
    let last = s.get(&format!("/api/runs/{id}/events?since=12000&limit=1000"));
    assert_eq!(last.json().as_array().unwrap().len(), 344);
    assert_eq!(last.header("link"), None);
    let exact = s.get(&format!("/api/runs/{id}/events?since=12000&limit=344"));
    assert_eq!(exact.json().as_array().unwrap().len(), 344);
    assert_eq!(exact.header("link"), None);
    let tail = s.get(&format!("/api/runs/{id}/events?tail=20000"));
    assert_eq!(
        seqs(tail.json().as_array().unwrap()),
        (n - 10_000..n).collect::<Vec<_>>()
    );
    assert_eq!(tail.header("link"), None);
    // Following the links reads every event once, in order.
    assert_eq!(seqs(&s.all_events(id)), (0..n).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// 6. Restarts while a run is being written

/// Appends log lines of `id` until stopped, then the run's final events.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<u64>,
}

impl Writer {
    fn start(path: PathBuf, id: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let handle = {
            let stop = stop.clone();
            let written = written.clone();
            std::thread::spawn(move || {
                append(
                    &path,
                    &line(id, "pipeline", "start", "2026-11-29T08:15:00.000Z", "start"),
                );
                append(
                    &path,
                    &line(id, "a", "start", "2026-11-29T08:15:00.000Z", "a"),
                );
                let mut n = 2;
                written.store(n, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    let text: String = (n..n + 3).map(|j| log_line(id, j)).collect();
                    append(&path, &text);
                    n += 3;
                    written.store(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
                append(
                    &path,
                    &line(id, "a", "success", "2026-11-29T08:16:00.000Z", "a done"),
                );
                append(
                    &path,
                    &line(
                        id,
                        "pipeline",
                        "success",
                        "2026-11-29T08:16:01.000Z",
                        "done",
                    ),
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

    /// Waits until `n` more lines are written.
    fn wait_more(&self, n: u64) {
        let target = self.written() + n;
        wait_until(LONG, "the writer to go on", || self.written() >= target);
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

#[test]
fn restarts_while_writing_lose_nothing_and_publish_nothing_twice() {
    let id = "restart";
    let p = Project::with_config(QUICK);
    let path = run_path(&p, id);
    let mut s = Server::start(&p);
    let mut per_run: Vec<Value> = Vec::new();
    // Every /ws/events connection's events, and which server generation it was.
    let mut bus: Vec<(usize, Value)> = Vec::new();
    let mut down_ranges: Vec<(u64, u64)> = Vec::new();

    let mut one = s.ws(&format!("/ws/events/{id}"));
    let mut all = s.ws("/ws/events");
    let w = Writer::start(path.clone(), id);
    for generation in 0..3 {
        // Follow for a while on this server, and until the all-runs client has what this
        // server published of the lines written while the one before was down: a client
        // without a cursor never gets again what a killed server published and did not send
        // it (the all-runs client often lags the run's, and under Wine it did at the kill).
        let target = per_run.len() + 150;
        let owed: Vec<u64> = down_ranges
            .last()
            .map_or(Vec::new(), |&(from, to)| (from..to).collect());
        let drain = |one: &mut Ws, all: &mut Ws, per_run: &mut Vec<Value>, bus: &mut Vec<_>| {
            let deadline = Instant::now() + LONG;
            let has_owed = |bus: &Vec<(usize, Value)>| {
                let got: std::collections::BTreeSet<u64> = bus
                    .iter()
                    .filter(|(g, _)| *g == generation)
                    .filter_map(|(_, e)| e["seq"].as_u64())
                    .collect();
                owed.iter().all(|seq| got.contains(seq))
            };
            while per_run.len() < target || !has_owed(bus) {
                if let Next::Event(e) = next(one) {
                    per_run.push(e);
                }
                if let Next::Event(e) = next(all) {
                    bus.push((generation, e));
                }
                assert!(
                    Instant::now() < deadline,
                    "no events on generation {generation}"
                );
            }
        };
        drain(&mut one, &mut all, &mut per_run, &mut bus);
        if generation == 2 {
            break;
        }
        if generation == 0 {
            s.stop();
        } else {
            s.kill9();
        }
        // What the stopped server had sent still arrives; then these clients move on to the
        // next server (the run's client resuming with `?since=`).
        let mut rest = Vec::new();
        drain_until_quiet(&mut one, &mut rest, Duration::from_secs(2));
        per_run.extend(rest);
        let mut rest = Vec::new();
        drain_until_quiet(&mut all, &mut rest, Duration::from_secs(2));
        bus.extend(rest.into_iter().map(|e| (generation, e)));
        // The server is down: these lines can only be published by the next one.
        let from = count_lines(&path);
        w.wait_more(100);
        let to = count_lines(&path);
        down_ranges.push((from, to));
        s.spawn();
        let since = per_run.last().map_or(String::new(), |e| {
            format!("?since={}", e["seq"].as_u64().unwrap())
        });
        one = s.ws(&format!("/ws/events/{id}{since}"));
        all = s.ws("/ws/events");
    }
    let total = w.finish();
    let rest = read_until(&mut one, "the final event", |g| {
        g.last().is_some_and(|e| e["seq"] == total - 1)
    });
    per_run.extend(rest);
    let rest = read_until(&mut all, "the final event on the bus", |g| {
        g.last().is_some_and(|e| e["seq"] == total - 1)
    });
    bus.extend(rest.into_iter().map(|e| (2, e)));

    assert_eq!(count_lines(&path), total);
    let got = seqs(&per_run);
    let expected: Vec<u64> = (0..total).collect();
    assert!(
        got == expected,
        "per-run client across restarts: {} events for {total} lines, first difference at {:?}",
        got.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );

    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for (generation, e) in &bus {
        assert_eq!(e["run_id"], id);
        let seq = e["seq"].as_u64().unwrap();
        if let Some(g) = seen.insert(seq, *generation) {
            panic!("seq {seq} published on /ws/events by generation {g} and again by {generation}");
        }
    }
    for (i, (from, to)) in down_ranges.iter().enumerate() {
        for seq in *from..*to {
            assert_eq!(
                seen.get(&seq),
                Some(&(i + 1)),
                "seq {seq}, written while the server was down, was not published once it came back"
            );
        }
    }

    let run = s.wait_run(id, LONG, |r| r["status"] == "success");
    assert_eq!(run["stages"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(run["stages"][0]["name"], "a");
    assert_eq!(run["stages"][0]["status"], "success");
    assert_eq!(run["started_at"], "2026-11-29T08:15:00.000Z");
    assert_eq!(run["finished_at"], "2026-11-29T08:16:01.000Z");
    // Every page of it (a slow machine writes more than one page while the servers restart).
    assert_eq!(seqs(&s.all_events(id)), expected);
}

// ---------------------------------------------------------------------------------------------
// 7. Truncation

/// Writes lines 0..=9 of `trunc`, reads them on `/ws/events`, truncates the file to its first
/// 5 lines and, once the server has noticed, writes lines 5..=12 anew (`new5`..`new12`).
/// Everything `/ws/events` delivered, until `new12` and a little after.
fn truncate_and_rewrite(s: &Server, p: &Project) -> Vec<Value> {
    let id = "trunc";
    let mut all = s.ws("/ws/events");
    let path = run_path(p, id);
    let first: Vec<String> = (0..10).map(|n| log_line(id, n)).collect();
    append(&path, &first.concat());
    let mut got = read_until(&mut all, "0..=9", |g| has_seq(g, 9));

    let keep: usize = first[..5].iter().map(String::len).sum();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    wait_until(LONG, "the server to notice the truncation", || {
        s.stderr().contains("truncated or replaced")
    });
    let rewritten: String = (5..13)
        .map(|n| {
            line(
                id,
                "a",
                "log",
                "2026-11-29T08:15:00.000Z",
                &format!("new{n}"),
            )
        })
        .collect();
    append(&path, &rewritten);
    got.extend(read_until(&mut all, "new12", |g| {
        g.iter().any(|e| e["msg"] == "new12")
    }));
    got.extend(read_for(&mut all, Duration::from_millis(500)));
    assert_eq!(count_lines(&path), 13);
    got
}

#[test]
fn a_truncated_and_rewritten_file_publishes_no_seq_twice() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let got = truncate_and_rewrite(&s, &p);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &got {
        *counts.entry(e["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let twice: Vec<&u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| s)
        .collect();
    assert!(twice.is_empty(), "seqs delivered twice: {twice:?}");
    assert_eq!(seqs(&got[..10]), (0..10).collect::<Vec<_>>());
    // Lines 5..=9 were published before the truncation: not again.
    for e in &got[10..] {
        assert!(e["msg"].as_str().unwrap().starts_with("new"), "{e}");
        assert!(e["seq"].as_u64().unwrap() >= 10, "{e}");
    }
}

#[test]
fn after_a_truncation_and_rewrite_seq_is_still_the_line_index() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let got = truncate_and_rewrite(&s, &p);
    let after: Vec<(u64, String)> = got[10..]
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["msg"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The file's lines 10..=12 were never published: each once, with its own index.
    assert_eq!(
        after,
        vec![
            (10, "new10".to_string()),
            (11, "new11".to_string()),
            (12, "new12".to_string())
        ]
    );
    assert_eq!(
        s.health()["malformed_lines"],
        0,
        "a complete file has no bad line"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. A year of runs at start-up

#[test]
fn a_year_of_run_files_is_listed_newest_first_with_paging_and_status() {
    const RUNS: i64 = 35_040;
    if under_wine(
        "a_year_of_run_files_is_listed_newest_first_with_paging_and_status",
        "35,040 files take Wine's file calls many minutes; a scale test, run on Linux and Windows",
    ) {
        return;
    }
    let p = Project::with_config(QUICK);
    std::fs::create_dir_all(p.events_dir()).unwrap();
    let start = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut ids = Vec::with_capacity(RUNS as usize);
    for i in 0..RUNS {
        let t = start + chrono::Duration::minutes(15 * i);
        let id = format!("{}-{:04x}", t.format("%Y%m%dT%H%M%SZ"), i % 0xffff);
        let ts = |s: i64| {
            (t + chrono::Duration::seconds(s))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let end = if i % 10 == 3 { "failure" } else { "success" };
        let text = line(&id, "pipeline", "start", &ts(0), "start")
            + &line(&id, "a", end, &ts(5), "a")
            + &line(&id, "pipeline", end, &ts(6), "end");
        std::fs::write(run_path(&p, &id), text).unwrap();
        ids.push((id, end));
    }
    let s = Server::start(&p);
    let newest: Vec<&str> = ids.iter().rev().map(|(id, _)| id.as_str()).collect();
    let page_ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    wait_until(LONG, "the runs to be listed", || {
        s.get("/api/runs?limit=1")
            .json()
            .as_array()
            .is_some_and(|a| {
                a.first()
                    .is_some_and(|r| r["run_id"] == newest[0] && r["status"] != "running")
            })
    });
    let page1 = s.json("/api/runs?limit=50");
    assert_eq!(page_ids(&page1), newest[..50]);
    assert_eq!(page1[0]["status"], "success");
    assert_eq!(page1[0]["duration_ms"], 6000);
    let last = page1[49]["run_id"].as_str().unwrap().to_string();
    let page2 = s.json(&format!("/api/runs?limit=50&before={last}"));
    assert_eq!(page_ids(&page2), newest[50..100]);
    let oldest = s.json(&format!(
        "/api/runs?limit=50&before={}",
        newest[RUNS as usize - 3]
    ));
    assert_eq!(page_ids(&oldest), newest[RUNS as usize - 2..]);

    let failures: Vec<&str> = ids
        .iter()
        .rev()
        .filter(|(_, st)| *st == "failure")
        .map(|(id, _)| id.as_str())
        .collect();
    let f1 = s.json("/api/runs?limit=50&status=failure");
    assert_eq!(page_ids(&f1), failures[..50]);
    assert!(
        f1.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "failure")
    );
    let f2 = s.json(&format!(
        "/api/runs?limit=50&status=failure&before={}",
        failures[49]
    ));
    assert_eq!(page_ids(&f2), failures[50..100]);
    let bad = s.get("/api/runs?status=nonsense");
    assert_eq!(bad.status, 400);
    bad.assert_error();
    wait_until(LONG, "every file to be watched", || {
        s.health()["files_watched"] == RUNS
    });
}

// ---------------------------------------------------------------------------------------------
// 9. A client that never reads

const FLOOD_RUNS: u64 = 10;
const FLOOD_PER_RUN: u64 = 5_000;

/// Writes 50,000 bulky events, 5,000 to each of 10 runs, 100 lines per write.
fn flood(p: &Project) {
    let pad = "x".repeat(400);
    for chunk in 0..FLOOD_PER_RUN / 100 {
        for r in 0..FLOOD_RUNS {
            let id = format!("flood{r}");
            let text: String = (chunk * 100..chunk * 100 + 100)
                .map(|n| {
                    line(
                        &id,
                        "a",
                        "log",
                        "2026-11-29T08:15:00.000Z",
                        &format!("{n}{pad}"),
                    )
                })
                .collect();
            append(&run_path(p, &id), &text);
        }
    }
}

/// `run_id` and `seq` of a frame, without building a `Value` (the reader must be quick).
#[derive(serde::Deserialize)]
struct Key {
    run_id: String,
    seq: u64,
}

/// Reads `n` events as fast as it can: (distinct (run, seq), duplicates), or how it was closed.
fn count_events(mut ws: Ws, n: u64) -> Result<(u64, u64), String> {
    let mut seen = BTreeSet::new();
    let mut dups = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen.len() as u64) < n {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let k: Key = serde_json::from_str(t.as_str()).unwrap();
                if !seen.insert((k.run_id, k.seq)) {
                    dups += 1;
                }
            }
            Ok(Message::Close(f)) => {
                return Err(format!("closed with {f:?} after {} events", seen.len()));
            }
            Ok(_) | Err(tungstenite::Error::Io(_)) => {}
            Err(e) => return Err(format!("{e} after {} events", seen.len())),
        }
        assert!(
            Instant::now() < deadline,
            "only {} events in 120 s",
            seen.len()
        );
    }
    Ok((seen.len() as u64, dups))
}

/// Reads what a client that never read was sent: its close code, or `None` if it got all.
fn drain_slow(ws: &mut Ws, all: u64) -> (usize, Option<u16>) {
    let mut n = 0usize;
    let deadline = Instant::now() + LONG;
    loop {
        match next(ws) {
            Next::Event(_) => n += 1,
            Next::Closed(code) => return (n, code),
            Next::Idle if n as u64 >= all => return (n, None),
            Next::Idle => {}
        }
        assert!(
            Instant::now() < deadline,
            "slow client neither closed nor done"
        );
    }
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_server_keeps_serving() {
    if under_wine(
        "a_client_that_never_reads_is_dropped_and_the_server_keeps_serving",
        "under Wine the dropped client sees its connection end without the 4000 close frame",
    ) {
        return;
    }
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let mut slow = s.ws("/ws/events");
    // Per-run followers fall back on the file: they never lag.
    let one = s.ws("/ws/events/flood3");
    let reader = std::thread::spawn(move || count_events(one, FLOOD_PER_RUN));
    flood(&p);
    assert_eq!(reader.join().unwrap(), Ok((FLOOD_PER_RUN, 0)));
    assert_eq!(s.health()["status"], "ok");
    wait_until(LONG, "every event ingested", || {
        s.health()["events_ingested"] == FLOOD_RUNS * FLOOD_PER_RUN
    });
    let runs = s.json("/api/runs");
    assert_eq!(runs.as_array().unwrap().len() as u64, FLOOD_RUNS);
    let (n, code) = drain_slow(&mut slow, FLOOD_RUNS * FLOOD_PER_RUN);
    eprintln!("the client that never read: {n} events, close code {code:?}");
    // Closed with 4000, or, when it did not read again in time to take even the close frame,
    // let go all the same (counted as lagged); or it got everything.
    let lagged = s
        .get("/metrics")
        .body
        .lines()
        .any(|l| l.starts_with("pipewatch_websocket_lagged_total ") && !l.ends_with(" 0"));
    assert!(
        code == Some(4000) || (code.is_none() && lagged) || n as u64 == FLOOD_RUNS * FLOOD_PER_RUN,
        "closed with {code:?} after {n} events"
    );
}

#[test]
fn a_client_that_never_reads_does_not_hold_back_one_that_does() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let _slow = s.ws("/ws/events");
    let fast = s.ws("/ws/events");
    let reader = std::thread::spawn(move || count_events(fast, FLOOD_RUNS * FLOOD_PER_RUN));
    flood(&p);
    assert_eq!(
        reader.join().unwrap(),
        Ok((FLOOD_RUNS * FLOOD_PER_RUN, 0)),
        "the client that reads"
    );
    assert_eq!(s.health()["status"], "ok");
}

#[test]
fn one_burst_of_3000_small_events_does_not_drop_a_reading_client() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let ws = s.ws("/ws/events");
    let reader = std::thread::spawn(move || count_events(ws, 3000));
    // 3,000 lines of ~110 bytes in one write, read as fast as they come: nobody is let go.
    append(
        &run_path(&p, "burst"),
        &(0..3000).map(|n| log_line("burst", n)).collect::<String>(),
    );
    assert_eq!(reader.join().unwrap(), Ok((3000, 0)));
    let m = s.get("/metrics").body;
    assert!(m.contains("pipewatch_websocket_lagged_total 0"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// 10. Run ids that are not run ids

#[test]
fn run_id_injection_is_refused_on_every_endpoint() {
    const SECRET: &str = "TOPSECRET-5f3a";
    let p = Project::with_config(QUICK);
    // Files a traversal would reach: one beside events_dir (through a folder named
    // `pipeline_`), one in the project, one at the root of the temp folder's parent.
    std::fs::create_dir_all(p.events_dir().join("pipeline_")).unwrap();
    let secret_line = line("x", "pipeline", "start", "2026-11-29T08:15:00Z", SECRET);
    std::fs::write(p.path().join("logs/secret.jsonl"), &secret_line).unwrap();
    std::fs::write(p.path().join("secret.jsonl"), &secret_line).unwrap();
    std::fs::write(p.events_dir().join("pipeline_x.jsonl.jsonl"), &secret_line).unwrap();
    let s = Server::start(&p);
    let long = "a".repeat(65);
    let ids = [
        "..",
        "a/b",
        "a%2Fb",
        "a%2F..%2Fx",
        "a%20b",
        "a b",
        "%00",
        "a%00b",
        long.as_str(),
        "%2F..%2F..%2Fsecret",
        "%2F..%2Fsecret",
        "%2F..%2F..%2F..%2Fsecret",
        "x.jsonl",
        "..%2F..%2Fsecret",
        "%2e%2e",
        "%C3%A9",
        "%FF",
    ];
    let check = |what: &str, r: &Resp| {
        assert!(
            r.status == 400 || r.status == 404,
            "{what}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains(SECRET), "{what} leaked the secret");
    };
    for id in ids {
        for path in [
            format!("/api/runs/{id}"),
            format!("/api/runs/{id}/events"),
            format!("/api/runs/{id}/events?tail=5"),
            format!("/api/runs/{id}/events/stream"),
            format!("/api/runs?before={id}"),
        ] {
            check(&format!("GET {path}"), &s.get(&path));
        }
        let path = format!("/api/runs/{id}/cancel");
        check(&format!("POST {path}"), &s.post_json(&path, ""));
        let path = format!("/ws/events/{id}");
        let r = s.request(
            "GET",
            &path,
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            b"",
        );
        check(&format!("upgrade {path}"), &r);
    }
    // A body can carry anything.
    for id in [
        "..",
        "a/b",
        "../secret",
        "/../../secret",
        "a b",
        "\u{0}",
        long.as_str(),
        "é",
    ] {
        let body = json!({ "run_id": id, "source": "x" }).to_string();
        let r = s.post_json("/api/pipeline/notify-scheduled-run", &body);
        assert_eq!(r.status, 400, "notify {id:?}: {}", r.body);
        r.assert_error();
    }
    assert_eq!(s.health()["status"], "ok");
    // Nothing was created outside the events folder either.
    let list = s.json("/api/runs");
    assert_eq!(list.as_array().unwrap().len(), 0, "{list}");
}

// ---------------------------------------------------------------------------------------------
// 11. The token

#[test]
fn with_a_token_every_protected_endpoint_needs_it() {
    let p = Project::with_config(&format!("{QUICK}\n[server]\ntoken = \"t0k\"\n"));
    append(&run_path(&p, "r1"), &log_line("r1", 0));
    let s = Server::start(&p);
    assert_eq!(s.get("/api/health").status, 200);
    let gets = [
        "/api/runs",
        "/api/runs/r1",
        "/api/runs/r1/events",
        "/metrics",
        "/api/runs?token=wrong",
    ];
    let posts = [
        "/api/runs/r1/cancel",
        "/api/pipeline/notify-scheduled-run",
        "/api/pipeline/run",
    ];
    let notify = r#"{"run_id":"r2","source":"x"}"#;
    let body_for = |path: &str| if path.contains("notify") { notify } else { "" };
    let upgrade: [(&str, &str); 4] = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let wrong: [(&str, &str); 3] = [
        ("Authorization", "Bearer t0kX"),
        ("Authorization", "Basic dDBr"),
        ("Cookie", "pipewatch_token=nope"),
    ];

    let mut without = Vec::new();
    for path in gets {
        without.push((format!("GET {path}"), s.get(path)));
        for h in wrong {
            without.push((
                format!("GET {path} with {h:?}"),
                s.request("GET", path, &[h], b""),
            ));
        }
    }
    for path in posts {
        without.push((format!("POST {path}"), s.post_json(path, body_for(path))));
    }
    for path in ["/ws/events", "/ws/events/r1"] {
        without.push((
            format!("upgrade {path}"),
            s.request("GET", path, &upgrade, b""),
        ));
        assert_eq!(
            ws_connect(s.port, path, &[]).err(),
            Some(Refused::Status(401)),
            "{path}"
        );
    }
    let sse = s.request(
        "GET",
        "/api/runs/r1/events/stream",
        &[("Connection", "close")],
        b"",
    );
    without.push(("GET the SSE stream".into(), sse));
    for (what, r) in &without {
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        r.assert_error();
    }

    for auth in [
        ("Authorization", "Bearer t0k"),
        ("Cookie", "theme=dark; pipewatch_token=t0k"),
    ] {
        for path in gets.iter().take(4) {
            let r = s.request("GET", path, &[auth], b"");
            assert_eq!(r.status, 200, "GET {path} with {auth:?}: {}", r.body);
        }
        let r = s.request(
            "POST",
            "/api/pipeline/notify-scheduled-run",
            &[auth, ("Content-Type", "application/json")],
            notify.as_bytes(),
        );
        assert_eq!(r.status, 202, "notify with {auth:?}: {}", r.body);
        let r = s.request(
            "POST",
            "/api/runs/r1/cancel",
            &[auth, ("Content-Type", "application/json")],
            b"",
        );
        assert_eq!(r.status, 409, "cancel with {auth:?}: {}", r.body);
        for path in ["/ws/events", "/ws/events/r1"] {
            let mut ws = ws_connect(s.port, path, &[auth])
                .unwrap_or_else(|st| panic!("upgrade {path} with {auth:?}: {st}"));
            if path.ends_with("r1") {
                let got = read_until(&mut ws, "r1's event", |g| !g.is_empty());
                assert_eq!(got[0]["msg"], "m0");
            }
        }
        let mut sse = Sse::open(s.port, "/api/runs/r1/events/stream", &[auth]);
        assert_eq!(sse.wait("seq 0", |e| !e.is_empty()), vec![0]);
    }
    // `?token=` links work for the page.
    assert_eq!(s.get("/api/runs?token=t0k").status, 200);

    // Beyond loopback only with a token.
    let open = Project::with_config(QUICK);
    let out = open.run(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
    let tp = Project::with_config(&format!("{QUICK}\n[server]\ntoken = \"t0k\"\n"));
    let mut open_s = Server::start_with(
        &tp,
        Options {
            bind: Some("0.0.0.0:0".to_string()),
            ..Options::default()
        },
    );
    assert_eq!(open_s.get("/api/runs").status, 401);
    open_s.stop();
}

// ---------------------------------------------------------------------------------------------
// 12. Cross-origin requests

#[test]
fn cross_origin_upgrades_and_posts_are_refused() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let port = s.port;
    let evil = [("Origin", "http://evil.example")];
    let r = s.request(
        "POST",
        "/api/pipeline/run",
        &[evil[0], ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    r.assert_error();
    let r = s.request(
        "POST",
        "/api/pipeline/notify-scheduled-run",
        &[evil[0], ("Content-Type", "application/json")],
        br#"{"run_id":"x1"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        s.get("/api/runs/x1").status,
        404,
        "the refused notify acted"
    );
    let same = format!("http://127.0.0.1:{port}");
    for path in ["/ws/events", "/ws/events/r1"] {
        assert_eq!(
            ws_connect(port, path, &evil).err(),
            Some(Refused::Status(403)),
            "{path}"
        );
        assert_eq!(
            ws_connect(port, path, &[("Origin", "http://127.0.0.1:1")]).err(),
            Some(Refused::Status(403)),
            "{path}: another port is another origin"
        );
        assert_eq!(
            ws_connect(port, path, &[("Origin", &format!("{same}.evil.example"))]).err(),
            Some(Refused::Status(403)),
            "{path}"
        );
        assert!(ws_connect(port, path, &[]).is_ok(), "{path} without Origin");
        assert!(
            ws_connect(port, path, &[("Origin", &same)]).is_ok(),
            "{path} same origin"
        );
    }
    // A same-origin POST is accepted.
    let r = s.request(
        "POST",
        "/api/pipeline/notify-scheduled-run",
        &[("Origin", &same), ("Content-Type", "application/json")],
        br#"{"run_id":"x2"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// 13. Request bodies

#[test]
fn state_changing_requests_take_bounded_json_only() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let notify = "/api/pipeline/notify-scheduled-run";
    let good = r#"{"run_id":"b1","source":"x"}"#;
    let r = s.request(
        "POST",
        notify,
        &[("Content-Type", "text/plain")],
        good.as_bytes(),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    r.assert_error();
    let r = s.request(
        "POST",
        notify,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"run_id=b1",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    let big = format!(
        r#"{{"run_id":"b1","source":"x","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = s.post_json(notify, &big);
    assert_eq!(r.status, 413, "{}", r.body);
    r.assert_error();
    for bad in [r#"{"run_id":"#, "not json", "{", r#"{"run_id":"b1",}"#] {
        let r = s.post_json(notify, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        r.assert_error();
    }
    assert_eq!(s.get("/api/runs/b1").status, 404, "a refused body acted");
    let r = s.post_json(notify, good);
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn malformed_or_misshapen_json_is_a_400() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let notify = "/api/pipeline/notify-scheduled-run";
    for bad in ["[1,2", r#"{"source":"x"}"#, r#"{"run_id":5}"#, "[]", "null"] {
        let r = s.post_json(notify, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        r.assert_error();
    }
}

// ---------------------------------------------------------------------------------------------
// 14. The scheduled-run notification

/// Announces `id` as the Windows task of the original design does; asserts it shows
/// `running` at once, before its file exists.
fn notify_windows_run(s: &Server, p: &Project, id: &str) {
    let r = s.post_json(
        "/api/pipeline/notify-scheduled-run",
        &json!({"run_id": id, "source": "windows_scheduler"}).to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["run_id"], id);
    assert!(!run_path(p, id).exists());
    let run = s.json(&format!("/api/runs/{id}"));
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["source"], "scheduler", "{run}");
    let listed = s.json("/api/runs");
    assert_eq!(listed[0]["run_id"], id, "{listed}");
    assert_eq!(listed[0]["status"], "running", "{listed}");
}

#[test]
fn a_notified_run_shows_running_at_once_then_its_file_is_read() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "20261129T081500Z-notif";
    notify_windows_run(&s, &p, id);
    // A per-run client may connect before the file exists.
    let mut ws = s.ws(&format!("/ws/events/{id}"));
    append(
        &run_path(&p, id),
        &(line(id, "pipeline", "start", "2026-11-29T08:15:00.000Z", "start")
            + &line(id, "a", "start", "2026-11-29T08:15:00.100Z", "a")
            + &line(id, "a", "success", "2026-11-29T08:15:02.000Z", "a")
            + &line(id, "pipeline", "success", "2026-11-29T08:15:03.000Z", "end")),
    );
    let got = read_until(&mut ws, "the run's events", |g| g.len() >= 4);
    assert_eq!(seqs(&got), vec![0, 1, 2, 3]);
    assert_eq!(got[3]["event"], "success");
    let run = s.wait_run(id, LONG, |r| r["status"] == "success");
    assert_eq!(run["started_at"], "2026-11-29T08:15:00.000Z", "{run}");
    assert_eq!(run["finished_at"], "2026-11-29T08:15:03.000Z", "{run}");
    assert_eq!(run["source"], "scheduler", "{run}");
    assert_eq!(run["stages"][0]["name"], "a", "{run}");
    assert_eq!(run["stages"][0]["status"], "success", "{run}");
}

#[test]
fn a_notified_run_stays_running_until_its_writer_starts() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "20261129T081500Z-later";
    notify_windows_run(&s, &p, id);
    // The run's writer (another tool: no pipewatch lock file) starts a few seconds later;
    // nothing says it died, so the run is running meanwhile.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let run = s.json(&format!("/api/runs/{id}"));
        assert_eq!(run["status"], "running", "before its file exists: {run}");
        std::thread::sleep(Duration::from_millis(200));
    }
    append(
        &run_path(&p, id),
        &(line(id, "pipeline", "start", "2026-11-29T08:15:00.000Z", "start")
            + &line(id, "a", "start", "2026-11-29T08:15:00.100Z", "a")),
    );
    let run = s.wait_run(id, LONG, |r| {
        r["stages"].as_array().is_some_and(|s| !s.is_empty())
    });
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["stages"][0]["status"], "running", "{run}");
}

/// A notified run whose file never appears (another project's runner notified this
/// dashboard, or a runner died before writing) ends `abandoned` within the usual seconds,
/// with a reason; a review saw 36 such runs `running` for ever. If its file appears after
/// all, it is running again.
#[test]
fn a_notified_run_whose_file_never_appears_is_abandoned() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "20261129T081500Z-nofile";
    notify_windows_run(&s, &p, id);
    let announced = Instant::now();
    let run = s.wait_run(id, Duration::from_secs(20), |r| r["status"] == "abandoned");
    let took = announced.elapsed();
    assert_eq!(run["reason"], "its run file never appeared", "{run}");
    assert!(took <= Duration::from_secs(13), "abandoned after {took:?}");
    append(
        &run_path(&p, id),
        &(line(id, "pipeline", "start", "2026-11-29T08:15:00.000Z", "start")
            + &line(id, "a", "start", "2026-11-29T08:15:00.100Z", "a")),
    );
    let run = s.wait_run(id, LONG, |r| r["status"] == "running");
    assert_eq!(run["reason"], Value::Null, "{run}");
    append(
        &run_path(&p, id),
        &(line(id, "a", "success", "2026-11-29T08:15:02.000Z", "a")
            + &line(id, "pipeline", "success", "2026-11-29T08:15:03.000Z", "end")),
    );
    s.wait_run(id, LONG, |r| r["status"] == "success");
}

/// Two projects on one machine, the second configured with the first's dashboard address: the
/// second's runs notify a dashboard that will never see their files. It refuses them — no
/// phantom `running` row — and the runner says why.
#[test]
fn a_run_of_another_project_is_refused_by_the_dashboard_it_notifies() {
    let a = Project::with_config(QUICK);
    let s = Server::start(&a);
    let b = Project::with_config(QUICK);
    let mut text = std::fs::read_to_string(b.path().join("pipewatch.toml")).unwrap();
    text = format!("{text}\n[server]\nbind = \"127.0.0.1:{}\"\n", s.port);
    b.write_config(&text);
    let out = b.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tails another events folder"), "{stderr}");
    // The second project's run was written to its own folder, never shown here.
    assert_eq!(b.journals().len(), 1);
    let theirs = b.journal()[0]["run_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    // (The first project's own scheduler may start a run meanwhile, on a quarter hour.)
    assert!(
        !s.runs().iter().any(|r| r["run_id"] == theirs.as_str()),
        "{:?}",
        s.runs()
    );

    // Through the API: another folder's id is a 409 naming both; this dashboard's own (what
    // `/api/health` says) is accepted.
    let ours = s.health()["events_id"].as_str().unwrap().to_string();
    assert_eq!(ours.len(), 16, "{ours}");
    let body = |id: &str| {
        json!({"run_id": "20261129T081500Z-other", "source": "cron", "events_id": id}).to_string()
    };
    let r = s.post_json(
        "/api/pipeline/notify-scheduled-run",
        &body("0123456789abcdef"),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    r.assert_error();
    assert!(
        r.body.contains("0123456789abcdef") && r.body.contains(&ours),
        "{}",
        r.body
    );
    let r = s.post_json("/api/pipeline/notify-scheduled-run", &body(&ours));
    assert_eq!(r.status, 202, "{}", r.body);
}

// ---------------------------------------------------------------------------------------------
// 15. Run now, overlap, cancel

#[test]
fn manual_runs_start_refuse_overlap_and_cancel() {
    // Waits for a `go` file, at most a minute.
    let p = Project::with_config(&format!(
        "overlap = \"skip\"\n[[stages]]\nname = \"a\"\nrun = '''{}'''\n",
        stage::GATE
    ));
    let s = Server::start(&p);
    let start = || {
        let r = s.request(
            "POST",
            "/api/pipeline/run",
            &[("Content-Type", "application/json")],
            b"",
        );
        (r.status, r)
    };
    let (status, r) = start();
    assert_eq!(status, 202, "{}", r.body);
    let id = r.json()["run_id"].as_str().unwrap().to_string();
    let run = s.json(&format!("/api/runs/{id}"));
    assert_eq!(run["status"], "running", "{run}");
    assert_eq!(run["source"], "manual", "{run}");
    s.wait_run(&id, LONG, |r| r["stages"][0]["status"] == "running");

    let (status, r) = start();
    assert_eq!(status, 409, "a second run while one runs: {}", r.body);
    r.assert_error();

    let r = s.post_json(&format!("/api/runs/{id}/cancel"), "");
    assert_eq!(r.status, 202, "{}", r.body);
    let run = s.wait_run(&id, LONG, |r| r["status"] == "cancelled");
    assert_eq!(run["stages"][0]["status"], "cancelled", "{run}");
    // Reasons are codes in one style (`stage_failed`, `user`), not free text.
    assert_eq!(run["reason"], "user", "{run}");
    assert_eq!(run["source"], "manual", "{run}");
    let r = s.post_json(&format!("/api/runs/{id}/cancel"), "");
    assert_eq!(r.status, 409, "cancel of a finished run: {}", r.body);
    r.assert_error();
    let r = s.post_json("/api/runs/nosuchrun/cancel", "");
    assert!(r.status == 404 || r.status == 409, "{}", r.body);

    std::fs::write(p.path().join("go"), "").unwrap();
    // The first runner may still be releasing its lock: a 409 here is allowed, briefly.
    let mut second = None;
    wait_until(LONG, "a second run to start", || {
        let (status, r) = start();
        if status == 202 {
            second = Some(r.json()["run_id"].as_str().unwrap().to_string());
        }
        status == 202
    });
    let id2 = second.unwrap();
    assert_ne!(id2, id);
    let run = s.wait_run(&id2, LONG, |r| r["status"] == "success");
    assert_eq!(run["stages"][0]["status"], "success", "{run}");
    assert_eq!(run["source"], "manual", "{run}");
    let events = read_events(&run_path(&p, &id2));
    assert!(events.iter().all(|e| e["source"] == "manual"));
}

/// A run "Run now" started that waits to begin — queued behind another here; under
/// `[cluster]`, a run about to lose its occurrence's claim to another host waits the same way —
/// has written no run file and holds no run lock. While the dashboard holds its runner it is
/// `running`; the dashboard withdraws it as it stops, so after the restart it is not shown
/// `abandoned` ("its run file never appeared", within 10 s, before); once it does begin it is
/// shown from its file like any run. (Unix: the harness stops a dashboard with SIGTERM; on
/// Windows its stop is a kill, and a killed dashboard withdraws nothing.)
#[cfg(unix)]
#[test]
fn a_run_still_waiting_to_begin_when_the_dashboard_stops_is_not_shown_abandoned() {
    let p = Project::with_config(&format!(
        "overlap = \"queue\"\n[[stages]]\nname = \"a\"\nrun = '''{}'''\n",
        stage::GATE
    ));
    let mut s = Server::start(&p);
    let run_now = |s: &Server| {
        let r = s.post_json("/api/pipeline/run", "");
        assert_eq!(r.status, 202, "{}", r.body);
        r.json()["run_id"].as_str().unwrap().to_string()
    };
    let first = run_now(&s);
    s.wait_run(&first, LONG, |r| r["stages"][0]["status"] == "running");
    let queued = run_now(&s);
    // Waiting, it has no file and no run lock, but the dashboard holds its runner: it stays
    // `running` (it was `abandoned` after 8 s, "its run file never appeared").
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        let run = s.json(&format!("/api/runs/{queued}"));
        assert_eq!(run["status"], "running", "{run}");
        std::thread::sleep(Duration::from_millis(250));
    }
    s.stop();
    assert!(!run_path(&p, &queued).exists(), "the queued run began");

    s.spawn();
    let shown = |s: &Server| {
        s.runs()
            .into_iter()
            .find(|r| r["run_id"] == queued.as_str())
    };
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(shown(&s), None, "the queued run is shown before it began");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::fs::write(p.path().join("go"), "").unwrap();
    s.wait_run(&first, LONG, |r| r["status"] == "success");
    s.wait_run(&queued, LONG, |r| r["status"] == "success");
}

// ---------------------------------------------------------------------------------------------
// 16. Abandoned runs

#[test]
fn a_run_whose_runner_is_killed_becomes_abandoned() {
    let p = Project::with_config(&format!(
        "[[stages]]\nname = \"a\"\nrun = '''{}'''\n",
        stage::GATE
    ));
    let s = Server::start(&p);
    let mut runner = p.spawn(&["run", "--no-notify", "--quiet"]);
    wait_until(LONG, "the stage to start", || {
        p.journals().first().is_some_and(|j| {
            read_events(j)
                .iter()
                .any(|e| e["stage"] == "a" && e["event"] == "start")
        })
    });
    let events = read_events(&p.journals()[0]);
    let id = events[0]["run_id"].as_str().unwrap().to_string();
    s.wait_run(&id, LONG, |r| r["status"] == "running");
    runner.kill().unwrap();
    let _ = runner.wait();
    let killed = Instant::now();
    let run = s.wait_run(&id, LONG, |r| r["status"] == "abandoned");
    std::fs::write(p.path().join("go"), "").unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "abandoned after {:?}",
        killed.elapsed()
    );
    assert_eq!(run["stages"][0]["status"], "abandoned", "{run}");
    let listed = s.json("/api/runs?status=abandoned");
    assert_eq!(listed[0]["run_id"], id.as_str());
}

// ---------------------------------------------------------------------------------------------
// 17. Health, metrics, the start-up log line

/// SIGTERM while `serve` is still starting (rebuilding its index from a long history) is a
/// clean shutdown, exit status 0: the handler was installed only once the server was up, so
/// until then the signal's default action ended the process at once.
#[cfg(unix)]
#[test]
fn sigterm_during_start_up_is_a_clean_shutdown() {
    use std::io::{BufRead, BufReader};
    let p = Project::with_config(QUICK);
    let run: String = (0..20).map(|n| log_line("{ID}", n)).collect();
    std::fs::create_dir_all(p.events_dir()).unwrap();
    for i in 0..3000 {
        let id = format!("h{i:05}");
        std::fs::write(run_path(&p, &id), run.replace("{ID}", &id)).unwrap();
    }
    let port = free_port().to_string();
    let mut child = crate::support::server::pipewatch(p.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("pipewatch dashboard:"), "{first:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_child(&mut child, LONG);
    assert!(st.success(), "serve ended with {st} on an early SIGTERM");
}

#[test]
fn health_metrics_and_startup_log() {
    let p = Project::with_config(QUICK);
    append(&run_path(&p, "h1"), &log_line("h1", 0));
    let s = Server::start(&p);
    let _ws = s.ws("/ws/events");
    append(
        &run_path(&p, "h2"),
        &(log_line("h2", 0) + &log_line("h2", 1)),
    );
    wait_until(LONG, "2 events ingested", || {
        s.health()["events_ingested"] == 2
    });
    let h = s.health();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["files_watched"], 2, "{h}");
    assert_eq!(h["malformed_lines"], 0, "{h}");
    assert!(h["bus_subscribers"].as_u64().is_some_and(|n| n >= 1), "{h}");

    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        m.headers
    );
    let mut samples = BTreeMap::new();
    for l in m.body.lines() {
        if l.starts_with('#') || l.is_empty() {
            assert!(
                l.is_empty() || l.starts_with("# HELP ") || l.starts_with("# TYPE "),
                "{l}"
            );
            continue;
        }
        let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("{l}"));
        samples.insert(name.to_string(), v);
    }
    assert_eq!(
        samples.get("pipewatch_events_ingested_total"),
        Some(&2.0),
        "{}",
        m.body
    );
    assert!(s.stderr().contains("JSONL Event Replay Monitor started"));
}

// ---------------------------------------------------------------------------------------------
// 18. The index deleted while stopped

#[test]
fn a_deleted_index_is_rebuilt_without_republishing() {
    let p = Project::with_config(QUICK);
    let mut s = Server::start(&p);
    let mut all = s.ws("/ws/events");
    let done = "20261129T080000Z-done";
    let open = "20261129T090000Z-open";
    append(
        &run_path(&p, done),
        &(line(done, "pipeline", "start", "2026-11-29T08:00:00.000Z", "s")
            + &line(done, "a", "success", "2026-11-29T08:00:01.000Z", "a")
            + &line(done, "pipeline", "success", "2026-11-29T08:00:02.000Z", "e")),
    );
    append(
        &run_path(&p, open),
        &(line(open, "pipeline", "start", "2026-11-29T09:00:00.000Z", "s")
            + &line(open, "a", "start", "2026-11-29T09:00:01.000Z", "a")),
    );
    read_until(&mut all, "5 events", |g| g.len() >= 5);
    s.stop();
    let mut removed = 0;
    for e in std::fs::read_dir(p.state_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("index.db") {
            std::fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    assert!(removed >= 1, "no index.db in {}", p.state_dir().display());

    s.spawn();
    let mut all = s.ws("/ws/events");
    let list = s.json("/api/runs");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![open, done], "{list}");
    assert_eq!(s.json(&format!("/api/runs/{done}"))["status"], "success");
    assert_eq!(s.json(&format!("/api/runs/{open}"))["status"], "running");

    append(
        &run_path(&p, open),
        &line(open, "a", "log", "2026-11-29T09:00:02.000Z", "after"),
    );
    let mut got = read_until(&mut all, "the new line", |g| {
        g.iter().any(|e| e["msg"] == "after")
    });
    got.extend(read_for(&mut all, Duration::from_millis(300)));
    let keys: Vec<(String, u64)> = got
        .iter()
        .map(|e| {
            (
                e["run_id"].as_str().unwrap().to_string(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![(open.to_string(), 2)],
        "old events published again"
    );
    assert_eq!(s.health()["events_ingested"], 1);
}

/// `GET /api/runs/{run_id}/log`: the run's whole output as text, one line per event (`time
/// stage stream text`), streamed from the file — a run far larger than the server's memory
/// budget downloads with the server's memory flat; an unknown run is a 404; `runs show --log`
/// prints the same text.
#[test]
fn a_run_log_downloads_as_text_in_bounded_memory() {
    use std::io::{BufRead, BufReader, Write};
    const LINES: u64 = 15_000;
    let p = Project::with_config(QUICK);
    std::fs::create_dir_all(p.events_dir()).unwrap();
    let id = "20261202T100000000Z-10a901";
    let path = p.events_dir().join(format!("pipeline_{id}.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let line = |f: &mut dyn Write, seq: u64, stage: &str, event: &str, msg: &str, data: &str| {
        writeln!(
            f,
            r#"{{"seq":{seq},"run_id":"{id}","pipeline":"p","stage":"{stage}","event":"{event}","level":"info","timestamp":"2026-12-02T10:00:00.000Z","source":"cli","msg":"{msg}","data":{data}}}"#
        )
        .unwrap();
    };
    line(&mut f, 0, "pipeline", "start", "run started", "{}");
    // 1.5 KB lines: 22 MB of output, 90 times the server's batch.
    let pad = "x".repeat(1500);
    for i in 1..=LINES {
        let stream = if i % 3 == 0 { "stderr" } else { "stdout" };
        line(
            &mut f,
            i,
            "work",
            "log",
            &format!("line {i} {pad}"),
            &format!(r#"{{"stream":"{stream}"}}"#),
        );
    }
    line(
        &mut f,
        LINES + 1,
        "pipeline",
        "success",
        "run succeeded",
        "{}",
    );
    f.flush().unwrap();
    drop(f);

    let s = Server::start(&p);
    s.wait_json(&format!("/api/runs/{id}"), "the run indexed", LONG, |r| {
        r["status"] == "success"
    });
    assert_eq!(
        s.get("/api/runs/20261202T100000000Z-000000/log").status,
        404
    );
    assert_eq!(s.get("/api/runs/..%2Fetc/log").status, 400);

    // The server's memory, sampled as the body arrives (read from /proc on Linux only).
    let rss = || -> u64 {
        #[cfg(target_os = "linux")]
        return s.rss();
        #[cfg(not(target_os = "linux"))]
        return 0;
    };
    let before = rss();
    let url = format!("http://127.0.0.1:{}/api/runs/{id}/log", s.port);
    let res = ureq::get(&url).call().expect("the log download");
    assert_eq!(res.status(), 200);
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let disposition = res
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(disposition, format!("attachment; filename=\"{id}.log\""));
    let mut body = BufReader::new(res.into_body().into_reader());
    let (mut n, mut peak, mut buf) = (0u64, 0u64, String::new());
    while body.read_line(&mut buf).unwrap() > 0 {
        match n {
            0 => assert_eq!(buf, "2026-12-02T10:00:00.000Z pipeline start run started\n"),
            3 => assert!(
                buf.starts_with("2026-12-02T10:00:00.000Z work stderr line 3 xxx"),
                "{buf}"
            ),
            1 => assert!(
                buf.starts_with("2026-12-02T10:00:00.000Z work stdout line 1 xxx"),
                "{buf}"
            ),
            _ => {}
        }
        n += 1;
        if n % 2_000 == 0 {
            peak = peak.max(rss());
        }
        if n == LINES + 2 {
            assert_eq!(
                buf,
                "2026-12-02T10:00:00.000Z pipeline success run succeeded\n"
            );
        }
        buf.clear();
    }
    assert_eq!(n, LINES + 2, "one line per event");
    if cfg!(target_os = "linux") {
        let grew = peak.saturating_sub(before);
        assert!(
            grew < 12 * 1024 * 1024,
            "the server grew by {} MiB while sending a 22 MB log",
            grew / (1024 * 1024)
        );
    }

    // The terminal prints the same text.
    let o = p.run(&["runs", "show", id, "--log"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count() as u64, LINES + 2);
    assert!(text.ends_with("pipeline success run succeeded\n"));
    let o = p.run(&["runs", "show", "20261202T100000000Z-000000", "--log"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
