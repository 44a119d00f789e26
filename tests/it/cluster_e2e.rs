//! `[cluster]` end to end: `pipewatch run` on several hosts (folders with their own
//! `[cluster] host`), through real `nats-server` processes, to several `pipewatch serve`
//! replicas, each showing every event exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::support::nats::Nats;
use crate::support::{Project, Server, count_lines, wait_until};

/// A folder of host `host`: pipeline `p`, one stage printing `lines` lines, `[cluster]`.
fn host(nats: &Nats, host: &str, lines: u32, pause: &str) -> Project {
    Project::with_config(&format!(
        "\n[[stages]]\nname = \"emit\"\nrun = '''i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo line $i; {pause} done'''\n\n{}",
        nats.cluster_toml(host)
    ))
}

/// Each run's `seq`s seen.
type Seqs = BTreeMap<String, BTreeSet<u64>>;

/// Every run's events by `seq`, and the (run, seq) pairs that came more than once.
fn by_run(events: &[Value]) -> (Seqs, Vec<(String, u64)>) {
    let mut runs = Seqs::new();
    let mut repeated = Vec::new();
    for e in events {
        let (Some(run), Some(seq)) = (e["run_id"].as_str(), e["seq"].as_u64()) else {
            continue;
        };
        if !runs.entry(run.to_string()).or_default().insert(seq) {
            repeated.push((run.to_string(), seq));
        }
    }
    (runs, repeated)
}

/// The run files of `hosts`: each run id with its number of lines.
fn run_files(hosts: &[&Project]) -> BTreeMap<String, u64> {
    hosts
        .iter()
        .flat_map(|p| p.journals())
        .map(|f| {
            let name = f
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .trim_start_matches("pipeline_")
                .to_string();
            (name, count_lines(&f))
        })
        .collect()
}

/// Reads `/ws/events` until every line of every run file in `want` has come, or a minute has
/// passed: then fails naming what is missing, what the stream holds and what the server said.
fn read_all(
    s: &Server,
    ws: crate::support::ws::Reading,
    want: &BTreeMap<String, u64>,
    nats: &Nats,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ws.so_far();
        let (runs, _) = by_run(&got);
        let complete = want
            .iter()
            .all(|(id, n)| runs.get(id).is_some_and(|seqs| seqs.len() as u64 >= *n));
        if complete {
            return got;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<String> = want
                .iter()
                .map(|(id, n)| {
                    let have = runs.get(id).cloned().unwrap_or_default();
                    let gone: Vec<u64> = (0..*n).filter(|q| !have.contains(q)).collect();
                    format!(
                        "{id}: {} of {n}, missing {:?}",
                        have.len(),
                        &gone[..gone.len().min(20)]
                    )
                })
                .collect();
            let msgs = nats.messages(pipewatch::cluster::STREAM, "pipewatch.events.>");
            panic!(
                "not every event came within a minute: {missing:?}; the stream holds {} messages; \
                 the server said:\n{}",
                msgs.len(),
                s.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `/ws/events` as [`read_all`] does, and checks that every line of every run in `want`
/// came exactly once. Returns what came.
fn shown_once(
    s: &Server,
    ws: crate::support::ws::Reading,
    want: &BTreeMap<String, u64>,
    nats: &Nats,
) -> Vec<Value> {
    let got = read_all(s, ws, want, nats);
    let (runs, repeated) = by_run(&got);
    assert!(repeated.is_empty(), "shown twice: {repeated:?}");
    for (id, n) in want {
        assert_eq!(runs[id], (0..*n).collect(), "run {id}");
    }
    got
}

/// Checks that the stream holds each line of the runs in `want` once: one message per line,
/// no `Nats-Msg-Id` twice (a line sent again without one is a message more). Only those runs:
/// a dashboard's own host runs its pipeline on its schedule, every quarter of an hour, and
/// the test may be running when one comes.
fn stored_once(nats: &Nats, want: &BTreeMap<String, u64>) {
    let msgs: Vec<_> = nats
        .messages(pipewatch::cluster::STREAM, "pipewatch.events.>")
        .into_iter()
        .filter(|m| {
            m.1.rsplit('.')
                .next()
                .is_some_and(|id| want.contains_key(id))
        })
        .collect();
    let ids: BTreeSet<&str> = msgs.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(ids.len(), msgs.len(), "a Nats-Msg-Id stored twice");
    assert_eq!(
        msgs.len() as u64,
        want.values().sum::<u64>(),
        "messages in the stream for the runs' lines"
    );
}

/// A dashboard of `dash`, started once the events stream has a leader.
fn dashboard_with_stream(nats: &Nats, dash: &Project) -> Server {
    let s = Server::start(dash);
    wait_until(
        Duration::from_secs(30),
        "the events stream's leader",
        || nats.stream_leader(pipewatch::cluster::STREAM).is_some(),
    );
    s
}

/// Runs the host made while nothing forwarded them: `runs` runs of `lines` lines in a folder
/// without `[cluster]`, their files moved into `host`'s events folder.
fn backlog(host: &Project, runs: usize, lines: u32) {
    let plain = Project::with_config(&format!(
        "\n[[stages]]\nname = \"emit\"\nrun = '''i=0; while [ $i -lt {lines} ]; do i=$((i+1)); echo line $i; done'''\n"
    ));
    for _ in 0..runs {
        assert!(plain.run(&["run", "--quiet"]).status.success());
    }
    std::fs::create_dir_all(host.events_dir()).unwrap();
    for f in plain.journals() {
        std::fs::rename(&f, host.events_dir().join(f.file_name().unwrap())).unwrap();
    }
}

/// Waits (a minute at most) for `child` to exit, and checks that it succeeded.
fn succeeds(mut child: std::process::Child) {
    let status = crate::support::wait_child(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(status.success(), "{err}");
}

#[test]
fn runs_on_two_hosts_reach_two_dashboards_each_event_once_with_their_host() {
    let Some(nats) = Nats::single() else { return };
    let dash: Vec<Project> = ["dash-a", "dash-b"]
        .iter()
        .map(|h| host(&nats, h, 1, ""))
        .collect();
    let servers: Vec<Server> = dash.iter().map(Server::start).collect();
    let sockets: Vec<_> = servers
        .iter()
        .map(|s| crate::support::keep_reading(s.ws("/ws/events")))
        .collect();

    let a = host(&nats, "etl-01", 300, "");
    let b = host(&nats, "etl-02", 300, "");
    for p in [&a, &b] {
        let o = p.run(&["run", "--quiet"]);
        assert!(o.status.success(), "{}", crate::support::stderr(&o));
    }
    let want = run_files(&[&a, &b]);
    assert_eq!(want.len(), 2);

    for (s, ws) in servers.iter().zip(sockets) {
        let got = shown_once(s, ws, &want, &nats);
        // Each event says its host, and so does each run.
        let hosts: BTreeSet<&str> = got.iter().filter_map(|e| e["host"].as_str()).collect();
        assert_eq!(hosts, BTreeSet::from(["etl-01", "etl-02"]));
        s.wait_json(
            "/api/runs",
            "both runs, ended, with their host",
            Duration::from_secs(30),
            |v| {
                let runs = v.as_array().cloned().unwrap_or_default();
                let hosts: BTreeSet<String> = runs
                    .iter()
                    .filter(|r| r["status"] == "success")
                    .filter_map(|r| r["host"].as_str().map(str::to_string))
                    .collect();
                hosts == BTreeSet::from(["etl-01".to_string(), "etl-02".to_string()])
            },
        );
    }
}

#[test]
fn two_forwards_of_the_same_backlog_at_once_both_succeed_and_send_each_event_once() {
    let Some(nats) = Nats::cluster() else {
        return;
    };
    let dash = host(&nats, "dash-a", 1, "");
    let a = host(&nats, "etl-01", 1, "");
    let s = Server::start(&dash);
    let ws = crate::support::keep_reading(s.ws("/ws/events"));
    backlog(&a, 3, 3000);
    // Both send the same events at the same time (as a run's forwarder handed over at its end
    // and a `forward` started by hand do): the stream may answer one of them "duplicate
    // message id is in process" for an event the other is storing at that moment. That one
    // waits for the other's store: the stream holds each line once.
    let forwards: Vec<_> = (0..2).map(|_| a.spawn(&["forward", "--quiet"])).collect();
    forwards.into_iter().for_each(succeeds);
    let want = run_files(&[&a]);
    assert_eq!(want.len(), 3);
    shown_once(&s, ws, &want, &nats);
    stored_once(&nats, &want);
}

#[test]
fn the_stream_leader_killed_mid_run_loses_and_repeats_nothing() {
    let Some(mut nats) = Nats::cluster() else {
        return;
    };
    let dash = host(&nats, "dash-a", 1, "");
    let a = host(&nats, "etl-01", 1500, "[ $((i % 100)) = 0 ] && sleep 0.1;");
    // The stream exists before the run, so that it has a leader to kill.
    let s = dashboard_with_stream(&nats, &dash);
    // Read all along, as a browser does (`support::keep_reading`).
    let ws = crate::support::keep_reading(s.ws("/ws/events"));
    let mut run = a.spawn(&["run", "--quiet"]);
    std::thread::sleep(Duration::from_millis(500));
    let leader = nats
        .stream_leader(pipewatch::cluster::STREAM)
        .expect("a leader");
    nats.kill(leader);
    let status = crate::support::wait_child(&mut run, Duration::from_secs(60));
    assert!(
        status.success(),
        "the run goes on without the stream's leader"
    );
    // What the run could not send while the stream had no leader (it waits at most a second
    // for the engine at its end) goes with the host's next `forward` (or run, or serve).
    let o = a.run(&["forward"]);
    assert!(o.status.success(), "{}", crate::support::stderr(&o));
    let want = run_files(&[&a]);
    shown_once(&s, ws, &want, &nats);
    // And the stream holds each event of the run once.
    stored_once(&nats, &want);
}

/// A dashboard offers a retry of another host's failed run: it runs here, reusing the stages
/// that succeeded there, read from this dashboard's copy of that host's run file.
#[test]
fn a_dashboard_retries_another_hosts_failed_run_here() {
    let Some(nats) = Nats::single() else { return };
    // The same pipeline on both hosts; `load` needs a file only the dashboard's host has.
    let pipeline = |host_name: &str| {
        Project::with_config(&format!(
            "\n[[stages]]\nname = \"extract\"\nrun = \"echo extracted\"\n\n[[stages]]\nname = \"load\"\nrun = \"test -f fixed\"\nneeds = [\"extract\"]\n\n{}",
            nats.cluster_toml(host_name)
        ))
    };
    let a = pipeline("etl-01");
    let d = pipeline("dash-01");
    std::fs::write(d.path().join("fixed"), "").expect("the dashboard host's file");
    let s = Server::start(&d);
    let o = a.run(&["run", "--quiet", "--no-notify"]);
    assert!(!o.status.success(), "the run fails on etl-01");
    let failed = run_files(&[&a]).into_keys().next().expect("etl-01's run");
    s.wait_run(&failed, Duration::from_secs(30), |r| {
        r["status"] == "failure" && r["host"] == "etl-01"
    });

    let retry = s.post_json(&format!("/api/runs/{failed}/retry"), "");
    assert_eq!(retry.status, 202, "{}", retry.body);
    let second = retry.json()["run_id"]
        .as_str()
        .expect("the retry's run id")
        .to_string();
    let run = s.wait_run(&second, Duration::from_secs(60), |r| {
        r["status"] == "success"
    });
    assert_eq!(run["retry_of"], failed.as_str());
    assert_eq!(run["host"], "dash-01");
    let stages: Vec<(&str, &str)> = run["stages"]
        .as_array()
        .map(|st| {
            st.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or_default(),
                        x["status"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(stages, [("extract", "skipped"), ("load", "success")]);
}

/// `pipewatch forward` started while the engine has lost its quorum (two servers of three
/// down), for longer than a JetStream request waits (the stream answers "temporarily
/// unavailable"), and the quorum back 8 s later: the forward waits it out and sends every
/// event once.
#[test]
fn forward_started_while_the_engine_has_lost_its_quorum_waits_for_it() {
    let Some(mut nats) = Nats::cluster() else {
        return;
    };
    let dash = host(&nats, "dash-a", 1, "");
    let a = host(&nats, "etl-01", 1, "");
    let s = dashboard_with_stream(&nats, &dash);
    let ws = crate::support::keep_reading(s.ws("/ws/events"));
    backlog(&a, 1, 500);
    nats.kill(1);
    nats.kill(2);
    let forward = a.spawn(&["forward", "--quiet"]);
    std::thread::sleep(Duration::from_secs(8));
    nats.restart_all();
    succeeds(forward);
    let want = run_files(&[&a]);
    shown_once(&s, ws, &want, &nats);
    stored_once(&nats, &want);
}
