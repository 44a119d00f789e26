//! `serve` with `[cluster]`: every host's events from JetStream (`docs/scale-out.md`). Real
//! `nats-server` processes (`support::nats`); the tests publish events as the forwarder does
//! (subject `pipewatch.events.<pipeline>.<run_id>`, `Nats-Msg-Id: <run_id>:<seq>`, the event's
//! JSON with `seq`, `run_id` and `host`), and read what the dashboards show through the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pipewatch::cluster::{Engine, STREAM, StreamLimits, msg_id, subject};
use pipewatch::config::Cluster;
use pipewatch::event::RunId;
use serde_json::{Value, json};

use crate::support::nats::Nats;
use crate::support::ws::{cursor, key};
use crate::support::*;

const LONG: Duration = Duration::from_secs(90);

/// One event as the forwarder publishes it.
struct Pub {
    pipeline: &'static str,
    run_id: String,
    seq: u64,
    host: &'static str,
    /// Without `Nats-Msg-Id`: the engine cannot drop a repeat, the dashboard must.
    no_msg_id: bool,
}

fn ev(pipeline: &'static str, host: &'static str, run_id: &str, seq: u64) -> Pub {
    Pub {
        pipeline,
        run_id: run_id.to_string(),
        seq,
        host,
        no_msg_id: false,
    }
}

fn payload(p: &Pub) -> String {
    let (stage, event) = if p.seq == 0 {
        ("pipeline", "start")
    } else {
        ("a", "log")
    };
    json!({
        "seq": p.seq,
        "run_id": p.run_id,
        "pipeline": p.pipeline,
        "stage": stage,
        "event": event,
        "timestamp": "2026-12-03T10:15:00.000Z",
        "msg": format!("line {}", p.seq),
        "host": p.host,
    })
    .to_string()
}

/// Publishes `events` in order, each acknowledged by the stream.
fn publish(nats: &Nats, events: Vec<Pub>) {
    nats.with_client(|js| async move {
        for p in events {
            let id = RunId::parse(&p.run_id).expect("run id");
            let subj = subject(p.pipeline, &id);
            let body = payload(&p);
            let ack = if p.no_msg_id {
                js.publish(subj, body.into()).await
            } else {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id(&id, p.seq).as_str());
                js.publish_with_headers(subj, headers, body.into()).await
            };
            ack.expect("publish")
                .await
                .expect("the stream acknowledges");
        }
    });
}

/// Creates the events stream, as the first host to forward or serve does.
fn ensure_stream(nats: &Nats) {
    let cfg = Cluster {
        nats: nats.urls(),
        host: "test".into(),
        credentials: None,
        replicas: nats.nodes.len(),
        max_bytes: None,
    };
    nats.with_client(|_| async move {
        let engine = Engine::connect(&cfg).await.expect("connect");
        engine
            .ensure_stream(StreamLimits {
                max_age: Duration::ZERO,
                max_bytes: -1,
            })
            .await
            .expect("the events stream");
    });
}

/// A project whose `[cluster]` is on `nats`, as host `host`.
fn dashboard(nats: &Nats, host: &str) -> Project {
    Project::with_config(&format!("{QUICK}{}", nats.cluster_toml(host)))
}

fn keys(runs: &[(&str, u64)]) -> BTreeSet<(String, u64)> {
    runs.iter()
        .flat_map(|&(id, n)| (0..n).map(move |s| (id.to_string(), s)))
        .collect()
}

/// The stream sequence of every `(run_id, seq)` in the stream (the first, for a repeat).
fn stream_seqs(nats: &Nats) -> BTreeMap<(String, u64), u64> {
    let mut out = BTreeMap::new();
    for (seq, _, _, body) in nats.messages(STREAM, "pipewatch.events.>") {
        let v: Value = serde_json::from_str(&body).expect("a JSON payload");
        out.entry(key(&v)).or_insert(seq);
    }
    out
}

/// Asserts that `got` holds each event of `want` exactly once, each run in `seq` order, with
/// growing cursors that are the events' stream sequences.
fn assert_once_in_order(
    got: &[Value],
    want: &BTreeSet<(String, u64)>,
    seqs: &BTreeMap<(String, u64), u64>,
) {
    let ks: Vec<_> = got.iter().map(key).collect();
    let unique: BTreeSet<_> = ks.iter().cloned().collect();
    assert_eq!(ks.len(), unique.len(), "duplicates: {ks:?}");
    assert_eq!(&unique, want, "not every event, or others");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (run, seq) in &ks {
        if let Some(prev) = last.insert(run.clone(), *seq) {
            assert!(prev < *seq, "run {run}: seq {seq} after {prev}");
        }
    }
    for w in got.windows(2) {
        assert!(cursor(&w[1]) > cursor(&w[0]), "cursors do not grow");
    }
    for e in got {
        assert_eq!(
            Some(&cursor(e)),
            seqs.get(&key(e)),
            "the cursor of {e} is not its stream sequence"
        );
    }
}

/// The seqs `/api/runs/{id}/events` gives.
fn run_seqs(s: &Server, id: &str) -> Vec<u64> {
    seqs(&s.all_events(id))
}

#[test]
fn two_replicas_show_every_hosts_events_once_and_a_cursor_resumes_on_either() {
    let Some(nats) = Nats::single() else { return };
    ensure_stream(&nats);
    let (a, b) = ("20261203T101500Z-aaaa", "20261203T101500Z-bbbb");
    // Two hosts' runs, interleaved in the stream; a repeat that the engine cannot drop (no
    // message id) for the dashboards to drop.
    let mut first = Vec::new();
    for seq in 0..20 {
        first.push(ev("etl", "etl-01", a, seq));
        first.push(ev("etl", "etl-02", b, seq));
    }
    first.insert(
        11,
        Pub {
            no_msg_id: true,
            ..ev("etl", "etl-01", a, 3)
        },
    );
    publish(&nats, first);

    let (p1, p2) = (dashboard(&nats, "dash-1"), dashboard(&nats, "dash-2"));
    let s1 = Server::start(&p1);
    let s2 = Server::start(&p2);
    let want = keys(&[(a, 20), (b, 20)]);
    let mut ws1 = s1.ws("/ws/events");
    let mut ws2 = s2.ws("/ws/events");
    let got1 = read_until(&mut ws1, "replica 1: every event", |g| g.len() >= 40);
    let got2 = read_until(&mut ws2, "replica 2: every event", |g| g.len() >= 40);
    let seqs = stream_seqs(&nats);
    assert_once_in_order(&got1, &want, &seqs);
    assert_once_in_order(&got2, &want, &seqs);
    assert_eq!(got1, got2, "both replicas give the same frames");
    assert!(read_for(&mut ws1, Duration::from_millis(300)).is_empty());
    for s in [&s1, &s2] {
        let runs = s.runs();
        let ids: BTreeSet<&str> = runs.iter().filter_map(|r| r["run_id"].as_str()).collect();
        assert_eq!(ids, BTreeSet::from([a, b]), "{runs:?}");
        for r in &runs {
            assert_eq!(r["events"], 20, "{r}");
        }
        assert_eq!(run_seqs(s, a), (0..20).collect::<Vec<_>>());
        assert_eq!(run_seqs(s, b), (0..20).collect::<Vec<_>>());
        assert_eq!(s.health()["status"], "ok", "{}", s.health());
    }
    // The host's own file is not what they show: nothing was written there.
    assert!(p1.journals().is_empty());

    // A client that read 25 events from replica 1 goes on at replica 2 with its cursor.
    let mid = cursor(&got1[24]);
    let mut moved = s2.ws(&format!("/ws/events?since={mid}"));
    let rest = read_until(&mut moved, "the rest at replica 2", |g| g.len() >= 15);
    let mut joined = got1[..25].to_vec();
    joined.extend(rest);
    assert_once_in_order(&joined, &want, &seqs);

    // A cursor beyond what has been published (another replica ahead of this one) waits for
    // the events after it.
    let last = cursor(&got1[39]);
    let mut ahead = s1.ws(&format!("/ws/events?since={}", last + 3));
    publish(
        &nats,
        (20..26).map(|seq| ev("etl", "etl-02", b, seq)).collect(),
    );
    let live1 = read_until(&mut ws1, "replica 1: live", |g| g.len() >= 6);
    let live2 = read_until(&mut moved, "replica 2: live, after the resume", |g| {
        g.len() >= 6
    });
    let seqs = stream_seqs(&nats);
    let more: BTreeSet<_> = (20..26).map(|s| (b.to_string(), s)).collect();
    assert_once_in_order(&live1, &more, &seqs);
    assert_once_in_order(&live2, &more, &seqs);
    let after = read_until(&mut ahead, "the events after a cursor from ahead", |g| {
        g.len() >= 3
    });
    let want_after: BTreeSet<_> = (23..26).map(|s| (b.to_string(), s)).collect();
    assert_once_in_order(&after, &want_after, &seqs);
    assert!(read_for(&mut ahead, Duration::from_millis(300)).is_empty());
}

#[test]
fn a_dashboard_killed_mid_stream_shows_every_event_once_after_its_restart() {
    let Some(nats) = Nats::single() else { return };
    ensure_stream(&nats);
    let p = dashboard(&nats, "dash-1");
    let mut s = Server::start(&p);
    let runs = [
        "20261203T101500Z-k001",
        "20261203T101500Z-k002",
        "20261203T101500Z-k003",
    ];
    let per_run = 600u64;
    let hosts = ["etl-01", "etl-02", "etl-03"];
    let mut all = Vec::new();
    for seq in 0..per_run {
        for (i, id) in runs.iter().enumerate() {
            all.push(ev("etl", hosts[i], id, seq));
        }
    }
    let total = all.len() as u64;
    // Published in the background while the dashboard is killed, twice, part-way.
    let publisher = {
        let urls = nats.urls();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = async_nats::connect(urls).await.expect("connect");
                let js = async_nats::jetstream::new(client);
                for chunk in all.chunks(20) {
                    for p in chunk {
                        let id = RunId::parse(&p.run_id).expect("run id");
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Nats-Msg-Id", msg_id(&id, p.seq).as_str());
                        js.publish_with_headers(
                            subject(p.pipeline, &id),
                            headers,
                            payload(p).into(),
                        )
                        .await
                        .expect("publish")
                        .await
                        .expect("acknowledged");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        })
    };
    for kill in 0..2 {
        wait_until(LONG, "some events ingested", || {
            s.health()["events_ingested"].as_u64().unwrap_or(0) > 50
        });
        s.kill9();
        if kill == 0 {
            assert!(!publisher.is_finished(), "killed after the last publish");
        }
        s.spawn();
    }
    publisher.join().expect("the publisher");
    wait_until(LONG, "every event in the runs' summaries", || {
        let runs = s.runs();
        runs.len() == 3 && runs.iter().all(|r| r["events"] == per_run)
    });
    for id in runs {
        assert_eq!(
            run_seqs(&s, id),
            (0..per_run).collect::<Vec<_>>(),
            "run {id}"
        );
        let mirror = p
            .state_dir()
            .join("cluster")
            .join("events")
            .join(format!("pipeline_{id}.jsonl"));
        assert_eq!(count_lines(&mirror), per_run, "{}", mirror.display());
    }
    // The whole all-runs stream from its start: each event once, its cursor its stream
    // sequence, however the kills cut the batches.
    let mut ws = s.ws("/ws/events?since=0");
    let got = read_until(&mut ws, "the whole stream", |g| g.len() as u64 >= total);
    let want = keys(&[(runs[0], per_run), (runs[1], per_run), (runs[2], per_run)]);
    assert_once_in_order(&got, &want, &stream_seqs(&nats));
    assert!(read_for(&mut ws, Duration::from_millis(300)).is_empty());
}

#[test]
fn a_dashboard_starts_without_the_engine_and_reads_on_after_every_server_came_back() {
    let Some(mut nats) = Nats::single() else {
        return;
    };
    ensure_stream(&nats);
    let p = dashboard(&nats, "dash-1");
    let id = "20261203T101500Z-gone";
    nats.kill_all();
    // The engine is down: serve starts anyway, and health says why.
    let s = Server::start(&p);
    wait_until(LONG, "health names the unreachable engine", || {
        let h = s.health();
        h["status"] == "degraded"
            && h["tailer"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("unreachable"))
    });
    nats.restart_all();
    publish(
        &nats,
        (0..10).map(|seq| ev("etl", "etl-01", id, seq)).collect(),
    );
    wait_until(LONG, "the first ten", || {
        run_seqs_or_none(&s, id) == Some(10)
    });
    wait_until(LONG, "health ok once connected", || {
        s.health()["status"] == "ok"
    });
    let mut ws = s.ws("/ws/events?since=0");
    let before = read_until(&mut ws, "the first ten, live stream", |g| g.len() >= 10);

    // Every server killed while serving, and started again: it reads on.
    nats.kill_all();
    wait_until(LONG, "health says the engine is gone", || {
        s.health()["status"] == "degraded"
    });
    nats.restart(0);
    publish(
        &nats,
        (10..20).map(|seq| ev("etl", "etl-01", id, seq)).collect(),
    );
    let after = read_until(&mut ws, "the next ten", |g| g.len() >= 10);
    let mut all = before;
    all.extend(after);
    assert_once_in_order(&all, &keys(&[(id, 20)]), &stream_seqs(&nats));
    assert_eq!(run_seqs(&s, id), (0..20).collect::<Vec<_>>());
    wait_until(LONG, "health ok again", || s.health()["status"] == "ok");
}

/// How many events `/api/runs/{id}` counts, once the run is known.
fn run_seqs_or_none(s: &Server, id: &str) -> Option<u64> {
    let r = s.get(&format!("/api/runs/{id}"));
    (r.status == 200).then(|| r.json()["events"].as_u64().unwrap_or(0))
}

#[test]
fn the_watchdog_judges_only_this_hosts_runs_and_waits_for_their_last_events() {
    let Some(nats) = Nats::single() else { return };
    ensure_stream(&nats);
    let p = dashboard(&nats, "dash-1");
    let (mine, theirs) = ("20261203T101500Z-mine", "20261203T101500Z-them");
    // This host's run: its runner is gone (its lock file is there, held by nobody) and its
    // file has three lines, of which the engine has two so far.
    let mut text = String::new();
    for seq in 0..3 {
        text += &payload(&ev("etl", "dash-1", mine, seq));
        text.push('\n');
    }
    append(&run_path(&p, mine), &text);
    let runs = p.state_dir().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    // Another host's run, with a lock file here that nobody holds: still not this
    // dashboard's to judge.
    for id in [mine, theirs] {
        std::fs::write(runs.join(format!("{id}.lock")), "").unwrap();
    }
    publish(
        &nats,
        vec![
            ev("etl", "dash-1", mine, 0),
            ev("etl", "dash-1", mine, 1),
            ev("etl", "etl-02", theirs, 0),
        ],
    );
    let s = Server::start(&p);
    s.wait_run(theirs, LONG, |r| r["events"] == 1);
    // The third line reaches the engine through this dashboard's own drain of the local
    // events folder (`server::forward`); only then is the run abandoned, with all its events.
    let r = s.wait_run(mine, LONG, |r| r["status"] == "abandoned");
    assert_eq!(r["events"], 3, "abandoned before its last event came: {r}");
    // Three passes of the watchdog later, the other host's run is still not judged.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(s.json(&format!("/api/runs/{theirs}"))["status"], "running");
}
