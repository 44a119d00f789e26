//! `[cluster]` forwarding (`cluster::forward`): the run file is the outbox, and every event
//! reaches the engine's stream once — through a run, `pipewatch forward` killed over and
//! over, an engine that is down or restarted, and `serve`'s drain. Real `nats-server`
//! processes (`support::nats`), the real binary; the stream is read back with the official
//! client.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pipewatch::cluster::{self, STREAM};
use pipewatch::event::RunId;
use serde_json::Value;

use crate::support::nats::Nats;
use crate::support::{Project, Rng, Server, read_events, wait_child, wait_until};

/// The pipeline every test runs: one stage, `a`, running `script`.
fn pipeline(script: &str) -> String {
    format!("[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = {script:?}\n")
}

/// A project with the pipeline in `pipewatch.toml` (with `[cluster]` on `nats`, as host
/// `host`) and in `plain.toml` (without): same folders, so runs of either are this host's.
fn project(script: &str, nats: &Nats, host: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!("{}{}", pipeline(script), nats.cluster_toml(host)));
    std::fs::write(p.path().join("plain.toml"), pipeline(script)).expect("plain.toml");
    p
}

/// Every message of the events stream, by `Nats-Msg-Id`: its subjects and payloads, in
/// stream order.
fn stream_by_id(nats: &Nats) -> BTreeMap<String, Vec<(String, Value)>> {
    let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (_, subject, id, payload) in nats.messages(STREAM, "pipewatch.events.>") {
        let v: Value = serde_json::from_str(&payload).expect("a JSON payload");
        out.entry(id).or_default().push((subject, v));
    }
    out
}

fn stream_exists(nats: &Nats) -> bool {
    nats.with_client(|js| async move { js.get_stream(STREAM).await.is_ok() })
}

/// Every line of every run file of `p`, as `(Nats-Msg-Id, subject, event)`.
fn expected(p: &Project) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for path in p.journals() {
        let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
        let id = name
            .strip_prefix("pipeline_")
            .and_then(|n| n.strip_suffix(".jsonl"))
            .expect("a run file");
        let run = RunId::parse(id).expect("a run id");
        for (i, e) in read_events(&path).into_iter().enumerate() {
            out.push((
                cluster::msg_id(&run, i as u64),
                cluster::subject("p", &run),
                e,
            ));
        }
    }
    out
}

/// Whether the stream holds every event of `p`'s run files, each once.
fn all_there_once(p: &Project, nats: &Nats) -> Result<(), String> {
    let want = expected(p);
    let have = stream_by_id(nats);
    let mut missing = 0;
    for (id, _, _) in &want {
        match have.get(id).map(Vec::len) {
            None => missing += 1,
            Some(1) => {}
            Some(n) => return Err(format!("{id} is in the stream {n} times")),
        }
    }
    if missing > 0 {
        return Err(format!(
            "{missing} of {} events not in the stream",
            want.len()
        ));
    }
    if have.len() != want.len() {
        return Err(format!(
            "{} messages in the stream for {} events",
            have.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Asserts the stream holds every event of `p` once, with its subject, `seq`, `run_id` and
/// `host`.
fn assert_forwarded(p: &Project, nats: &Nats, host: &str) {
    if let Err(e) = all_there_once(p, nats) {
        panic!("{e}");
    }
    let have = stream_by_id(nats);
    for (id, subject, line) in expected(p) {
        let (got_subject, event) = &have[&id][0];
        assert_eq!(got_subject, &subject, "{id}");
        assert_eq!(event["host"], host, "{id}: {event}");
        assert_eq!(event["seq"], line["seq"], "{id}");
        assert_eq!(event["run_id"], line["run_id"], "{id}");
        assert_eq!(event["msg"], line["msg"], "{id}");
    }
}

/// `pipewatch ARGS` started in the background, its output thrown away.
fn quiet(p: &Project, args: &[&str]) -> Child {
    p.cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pipewatch")
}

fn forward(p: &Project) -> std::process::Output {
    let out = p.run(&["forward"]);
    assert!(
        out.status.success(),
        "pipewatch forward: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_run_publishes_each_event_once_with_its_subject_id_and_host() {
    let Some(nats) = Nats::single() else { return };
    let p = project("echo one; echo two; echo three", &nats, "etl-01");
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run waited for its acks: everything is there when it exits.
    assert_forwarded(&p, &nats, "etl-01");
    let sidecars = p.state_dir().join("cluster").join("forwarded");
    assert_eq!(
        std::fs::read_dir(&sidecars).map(|d| d.count()).unwrap_or(0),
        1,
        "one sidecar in {}",
        sidecars.display()
    );

    // A second run, and a forward after both: nothing is sent again.
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&forward(&p).stdout).into_owned();
    assert!(said.contains("forwarded 0 events"), "{said}");
    assert_eq!(p.journals().len(), 2);
    assert_forwarded(&p, &nats, "etl-01");
}

/// `pipewatch forward --follow` killed with `kill -9` twenty times while a run writes: every
/// seq is in the stream exactly once.
#[test]
fn forward_killed_twenty_times_mid_run_leaves_every_seq_once() {
    let Some(nats) = Nats::single() else { return };
    // 100 bursts of 100 lines, 50 ms apart: about 5 s of output.
    let script = "i=0; while [ $i -lt 100 ]; do j=0; while [ $j -lt 100 ]; do echo \"line $i $j\"; \
                  j=$((j+1)); done; sleep 0.05; i=$((i+1)); done";
    let p = project(script, &nats, "etl-01");
    // A dashboard of the cluster, on another host, reading all along.
    let dash = project("true", &nats, "dash");
    let s = Server::start(&dash);
    let ws = crate::support::keep_reading(s.ws("/ws/events"));
    // The run itself does not forward (`plain.toml` has no [cluster]): the forwarders do.
    let mut run = quiet(&p, &["--config", "plain.toml", "run"]);
    let mut rng = Rng::seeded("forward_killed_twenty_times_mid_run_leaves_every_seq_once");
    for _ in 0..20 {
        let mut f = quiet(&p, &["forward", "--follow"]);
        std::thread::sleep(rng.millis(150, 400));
        f.kill().expect("kill -9");
        let _ = f.wait();
    }
    let status = wait_child(&mut run, Duration::from_secs(60));
    assert!(status.success(), "the run failed");
    assert!(
        stream_exists(&nats) && !stream_by_id(&nats).is_empty(),
        "the forwarders sent nothing before they were killed"
    );
    // The last forwarder was killed with publishes acknowledged and not yet in its sidecar:
    // the next one starts from the stream's last message of the run, sending none again.
    let said = String::from_utf8_lossy(&forward(&p).stdout).into_owned();
    assert!(said.contains("; 0 sent again"), "{said}");
    assert_forwarded(&p, &nats, "etl-01");
    // And at the dashboard: every line of the run once, in order.
    let file = p.journals().into_iter().next().expect("the run file");
    let lines = crate::support::count_lines(&file);
    let got = ws.until("every line at the dashboard", |got| {
        got.iter().filter(|e| e["seq"].as_u64().is_some()).count() as u64 >= lines
    });
    let seqs: Vec<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (0..lines).collect::<Vec<_>>(),
        "each line once, in order"
    );
}

/// An engine that is down, or that accepts connections and never answers, neither fails nor
/// slows a run; `pipewatch forward` then sends the backlog, and so does `serve`.
#[test]
fn an_engine_down_neither_fails_nor_slows_a_run_and_the_backlog_is_forwarded_later() {
    let Some(mut nats) = Nats::single() else {
        return;
    };
    let p = project("sleep 1; echo done", &nats, "etl-01");

    let timed = |args: &[&str]| {
        let started = Instant::now();
        let out = p.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    };
    let baseline = timed(&["--config", "plain.toml", "run"]);

    // Down: nothing listens on its port.
    nats.kill_all();
    let down = timed(&["run"]);
    assert!(
        down < baseline + Duration::from_secs(2),
        "a run with the engine down took {down:?}, without [cluster] {baseline:?}"
    );

    // Unresponsive: connections are accepted, nothing is ever said.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let silent_port = silent.local_addr().expect("its address").port();
    let q = Project::new();
    q.write_config(&format!(
        "{}[cluster]\nnats = [\"nats://127.0.0.1:{silent_port}\"]\nhost = \"etl-01\"\n",
        pipeline("sleep 1; echo done")
    ));
    let started = Instant::now();
    let out = q.run(&["run"]);
    let hung = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hung < baseline + Duration::from_secs(2),
        "a run with an engine that never answers took {hung:?}, without [cluster] {baseline:?}"
    );
    drop(silent);

    // `forward` with the engine down: a clear error, the environment's exit code.
    let out = p.run(&["forward"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot reach NATS"), "{err}");

    // Back: the next run sends what the earlier ones left (the plain run's too: it is this
    // host's) while its stage runs, and `forward` then finds nothing left.
    nats.restart_all();
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_forwarded(&p, &nats, "etl-01");
    let said = String::from_utf8_lossy(&forward(&p).stdout).into_owned();
    assert!(said.contains("forwarded 0 events"), "{said}");

    // `forward` sends what a run left while the engine was down.
    nats.kill_all();
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nats.restart_all();
    let said = String::from_utf8_lossy(&forward(&p).stdout).into_owned();
    assert!(said.contains("of 1 runs"), "{said}");
    assert_forwarded(&p, &nats, "etl-01");

    // And `serve` drains what a run leaves while the engine is down.
    nats.kill_all();
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nats.restart(0);
    let _server = Server::start(p.path());
    wait_until(
        Duration::from_secs(20),
        "serve to forward the backlog",
        || all_there_once(&p, &nats).is_ok(),
    );
    assert_forwarded(&p, &nats, "etl-01");
}

/// Every server of a three-node cluster killed while a run writes, then started again: what
/// the run could not send is sent (by the run as the engine comes back, then by `forward`),
/// nothing lost, nothing twice.
#[test]
fn all_servers_killed_mid_run_and_restarted_the_backlog_drains() {
    let Some(mut nats) = Nats::cluster() else {
        return;
    };
    let script = "i=0; while [ $i -lt 40 ]; do echo \"line $i\"; sleep 0.1; i=$((i+1)); done";
    let p = project(script, &nats, "etl-02");
    let mut run = quiet(&p, &["run"]);
    wait_until(
        Duration::from_secs(20),
        "the first events in the stream",
        || stream_exists(&nats) && !stream_by_id(&nats).is_empty(),
    );
    nats.kill_all();
    std::thread::sleep(Duration::from_millis(1000));
    nats.restart_all();
    let status = wait_child(&mut run, Duration::from_secs(60));
    assert!(status.success(), "the run failed");
    forward(&p);
    // The cluster may still be electing the stream's leader after its restart.
    wait_until(Duration::from_secs(30), "the stream to answer", || {
        stream_exists(&nats)
    });
    assert_forwarded(&p, &nats, "etl-02");
}

/// A stream that refuses every event past its fifth (an operator set it to keep five and
/// refuse new ones): `pipewatch forward` makes its pass again for 15 s, then exits 3 naming
/// the event refused and the stream's reason; what the stream took is there once.
#[test]
fn forward_gives_up_after_fifteen_seconds_on_a_stream_that_keeps_refusing() {
    let Some(nats) = Nats::single() else { return };
    let p = project(
        "i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo line $i; done",
        &nats,
        "etl-01",
    );
    // A run without `[cluster]`: its file waits for `forward`.
    let run = p.run(&["--config", "plain.toml", "run", "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    nats.with_client(|js| async move {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["pipewatch.events.>".to_string()],
            max_messages: 5,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .expect("the events stream");
    });

    let started = Instant::now();
    let out = p.run(&["forward"]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        took >= Duration::from_secs(15),
        "gave up after {took:?}: {err}"
    );
    let (_, _, line) = &expected(&p)[5];
    let refused = format!(
        "cannot publish event {}:5 ",
        line["run_id"].as_str().unwrap_or_default()
    );
    assert!(err.contains(&refused), "{err}");
    assert!(err.contains("maximum messages"), "{err}");
    let have = stream_by_id(&nats);
    assert_eq!(have.len(), 5, "{have:?}");
    assert!(have.values().all(|copies| copies.len() == 1), "{have:?}");
}
