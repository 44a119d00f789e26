//! One run per occurrence across hosts (`[cluster]`, issue 18 item 4): scheduled runs claim
//! their occurrence in the engine's claims bucket; one host runs it, the others exit 0 with
//! no run; an unreachable engine is a `skipped` run with reason `engine_unreachable`. Hosts
//! are project folders with their own `[cluster] host`, against real `nats-server`s.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::nats::Nats;
use crate::support::{
    Project, QUICK, Server, read_events, run_end, stderr, wait_child, wait_until,
};

/// The claims bucket's stream.
const CLAIMS_STREAM: &str = "KV_pipewatch_claims";

/// A host: a project whose pipeline `p` (schedule `schedule`, one stage doing `true`) is on
/// `[cluster]` as `host`. Its runs may overlap (several occurrences are run at once here; the
/// overlap policy is not what these tests are about).
fn host(nats: &Nats, host: &str, schedule: &str) -> Project {
    Project::with_config(&format!(
        "schedule = \"{schedule}\"\noverlap = \"parallel\"\n{QUICK}{}",
        nats.cluster_toml(host)
    ))
}

/// The run files (`pipeline_<run_id>.jsonl`) in a host's events folder; nothing else that
/// may sit beside them.
fn run_files(p: &Project) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p.events_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|path| {
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("pipeline_") && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `pipewatch run --source scheduler` in `p`, with the occurrence if given.
fn scheduled(p: &Project, occurrence: Option<&str>, quiet: bool) -> Output {
    let mut args = vec!["run", "--source", "scheduler", "--no-notify"];
    if let Some(at) = occurrence {
        args.extend(["--occurrence", at]);
    }
    if quiet {
        args.push("--quiet");
    }
    p.run(&args)
}

/// The run id in the start event of a run file.
fn run_id_of(file: &Path) -> String {
    let events = read_events(file);
    events
        .first()
        .and_then(|e| e["run_id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Every claim in the bucket: key → the holder's run id and host (none before the bucket).
fn claims(nats: &Nats) -> Vec<(String, String, String)> {
    use futures_util::StreamExt;
    nats.with_client(|js| async move {
        // No bucket yet: nothing claimed yet.
        let Ok(kv) = js.get_key_value("pipewatch_claims").await else {
            return Vec::new();
        };
        let keys: Vec<String> = kv
            .keys()
            .await
            .expect("keys")
            .filter_map(|k| async move { k.ok() })
            .collect()
            .await;
        let mut out = Vec::new();
        for key in keys {
            let value = kv.get(&key).await.expect("get").expect("a value");
            let v: Value = serde_json::from_slice(&value).expect("a JSON claim");
            out.push((
                key,
                v["run_id"].as_str().unwrap_or_default().to_string(),
                v["host"].as_str().unwrap_or_default().to_string(),
            ));
        }
        out.sort();
        out
    })
}

#[test]
fn two_hosts_one_occurrence_one_run() {
    let Some(nats) = Nats::single() else { return };
    let hosts = [
        host(&nats, "etl-01", "*/15 * * * *"),
        host(&nats, "etl-02", "*/15 * * * *"),
    ];
    let at = "2026-12-03T10:15:00Z";
    // Both at once, as two schedulers firing the same occurrence.
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let runs: Vec<_> = hosts
            .iter()
            .map(|h| s.spawn(move || scheduled(h, Some(at), false)))
            .collect();
        runs.into_iter().map(|r| r.join().expect("a run")).collect()
    });
    for o in &outputs {
        assert!(o.status.success(), "{o:?}");
    }
    let files: Vec<Vec<PathBuf>> = hosts.iter().map(run_files).collect();
    let total: usize = files.iter().map(Vec::len).sum();
    assert_eq!(total, 1, "exactly one run in all: {files:?}");
    let winner = files.iter().position(|f| f.len() == 1).expect("a winner");
    let loser = 1 - winner;
    let winner_host = ["etl-01", "etl-02"][winner];
    let said = stderr(&outputs[loser]);
    assert!(
        said.contains(&format!("claimed by host {winner_host}")),
        "the loser names the host that runs it: {said}"
    );
    let events = read_events(&files[winner][0]);
    assert_eq!(run_end(&events)["event"], "success");
    // The claim holds the winner's run.
    let held = claims(&nats);
    assert_eq!(
        held,
        vec![(
            "p.20261203T101500Z".to_string(),
            run_id_of(&files[winner][0]),
            winner_host.to_string()
        )]
    );

    // Again for the same occurrence (a scheduler restarted): nobody runs it.
    for h in &hosts {
        let o = scheduled(h, Some(at), true);
        assert!(o.status.success(), "{o:?}");
        assert!(
            stderr(&o).is_empty(),
            "--quiet prints nothing: {}",
            stderr(&o)
        );
    }
    assert_eq!(hosts.iter().map(|h| run_files(h).len()).sum::<usize>(), 1);

    // Started by an OS scheduler (no --occurrence): both take the schedule's latest
    // occurrence, one runs it.
    let yearly = [
        host(&nats, "etl-01", "0 0 1 1 *"),
        host(&nats, "etl-02", "0 0 1 1 *"),
    ];
    for h in &yearly {
        let o = scheduled(h, None, true);
        assert!(o.status.success(), "{o:?}");
    }
    assert_eq!(yearly.iter().map(|h| run_files(h).len()).sum::<usize>(), 1);
    assert_eq!(claims(&nats).len(), 2);

    // Runs by hand are not claimed: each host runs.
    for h in &hosts {
        let o = h.run(&["run", "--no-notify", "--quiet"]);
        assert!(o.status.success(), "{o:?}");
    }
    assert_eq!(hosts.iter().map(|h| run_files(h).len()).sum::<usize>(), 3);
    assert_eq!(claims(&nats).len(), 2, "manual runs claim nothing");
}

#[test]
fn an_unreachable_engine_is_a_skipped_run_promptly() {
    let port = crate::support::free_port();
    let p = Project::with_config(&format!(
        "{QUICK}[cluster]\nnats = [\"nats://127.0.0.1:{port}\"]\nhost = \"etl-01\"\n"
    ));
    let started = Instant::now();
    let o = scheduled(&p, Some("2026-12-03T10:15:00Z"), false);
    let took = started.elapsed();
    assert!(o.status.success(), "exit 0: {o:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let files = run_files(&p);
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&files[0]);
    let run_level: Vec<&str> = events
        .iter()
        .filter(|e| e["stage"] == "pipeline")
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert_eq!(run_level, ["start", "skipped"], "{events:?}");
    assert!(
        events.iter().all(|e| e["stage"] == "pipeline"),
        "no stage ran: {events:?}"
    );
    let end = run_end(&events);
    assert_eq!(end["data"]["reason"], "engine_unreachable");
    let msg = end["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        stderr(&o).contains("could not be claimed"),
        "{}",
        stderr(&o)
    );

    // `runs show` says why.
    let id = run_id_of(&files[0]);
    let shown = p.run(&["runs", "show", &id]);
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(out.contains("skipped"), "{out}");
    assert!(
        out.contains("the cluster engine could not be reached"),
        "{out}"
    );

    // A run by hand does not need the engine.
    let o = p.run(&["run", "--no-notify", "--quiet"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(run_files(&p).len(), 2);
}

/// Five schedulers on one schedule over 200 occurrences, the claims stream's leader killed
/// midway (and back three quarters in): every occurrence runs exactly once.
#[test]
fn five_schedulers_two_hundred_occurrences_leader_killed_exactly_once_each() {
    const HOSTS: usize = 5;
    const OCCURRENCES: usize = 200;
    /// Runs in flight at once.
    const WORKERS: usize = 10;
    let Some(mut nats) = Nats::cluster() else {
        return;
    };
    let hosts: Vec<Project> = (0..HOSTS)
        .map(|i| host(&nats, &format!("etl-{i:02}"), "* * * * *"))
        .collect();
    let base = chrono::DateTime::parse_from_rfc3339("2026-12-03T00:00:00Z")
        .expect("a time")
        .with_timezone(&chrono::Utc);
    let occurrences: Vec<String> = (0..OCCURRENCES)
        .map(|i| {
            (base + chrono::Duration::minutes(i as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .collect();
    // Each occurrence on every host, the hosts of one occurrence side by side.
    let jobs: Vec<(usize, usize)> = (0..OCCURRENCES)
        .flat_map(|o| (0..HOSTS).map(move |h| (o, h)))
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let slowest = Mutex::new(Duration::ZERO);
    let started = Instant::now();
    let mut killed = None;
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(o, h)) = jobs.get(i) else { return };
                    let run_started = Instant::now();
                    let out = scheduled(&hosts[h], Some(&occurrences[o]), true);
                    let took = run_started.elapsed();
                    let mut slow = slowest.lock().expect("slowest");
                    *slow = (*slow).max(took);
                    drop(slow);
                    if !out.status.success() {
                        failures
                            .lock()
                            .expect("failures")
                            .push(format!("{} on host {h}: {out:?}", occurrences[o]));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Midway, the leader of the claims bucket's stream goes.
        while done.load(Ordering::SeqCst) < jobs.len() / 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let leader = nats
            .stream_leader(CLAIMS_STREAM)
            .expect("the claims stream has a leader");
        nats.kill(leader);
        killed = Some((leader, done.load(Ordering::SeqCst)));
        // Three quarters in, it comes back and catches up while the claims go on.
        while done.load(Ordering::SeqCst) < jobs.len() * 3 / 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        nats.restart(leader);
    });
    let took = started.elapsed();
    let failures = failures.into_inner().expect("failures");
    assert!(failures.is_empty(), "{failures:#?}");
    let (leader, at) = killed.expect("the leader was killed");
    eprintln!(
        "{} runs in {took:?}, the slowest {:?}; node {leader} killed after {at}",
        jobs.len(),
        slowest.into_inner().expect("slowest")
    );

    let files: Vec<PathBuf> = hosts.iter().flat_map(run_files).collect();
    assert_eq!(files.len(), OCCURRENCES, "exactly one run per occurrence");
    let mut ran = BTreeSet::new();
    for f in &files {
        let events = read_events(f);
        assert_eq!(run_end(&events)["event"], "success", "{f:?}: {events:?}");
        ran.insert(run_id_of(f));
    }
    let held = claims(&nats);
    let keys: BTreeSet<String> = held.iter().map(|(k, _, _)| k.clone()).collect();
    let expected: BTreeSet<String> = (0..OCCURRENCES)
        .map(|i| {
            let at = base + chrono::Duration::minutes(i as i64);
            format!("p.{}", at.format("%Y%m%dT%H%M%SZ"))
        })
        .collect();
    assert_eq!(keys, expected, "every occurrence claimed");
    let holders: BTreeSet<String> = held.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(holders, ran, "the runs are the claims' runs, one each");
    let by: BTreeSet<&str> = held.iter().map(|(_, _, h)| h.as_str()).collect();
    eprintln!("claimed by {} hosts: {by:?}", by.len());
}

/// A host whose pipeline `p` waits for a file `go` in its folder, under `overlap`.
fn gated_host(nats: &Nats, host: &str, overlap: &str) -> Project {
    Project::with_config(&format!(
        "overlap = \"{overlap}\"\n[[stages]]\nname = \"a\"\nrun = {:?}\n{}",
        crate::support::stage::GATE,
        nats.cluster_toml(host)
    ))
}

/// Starts a run by hand in `p` and waits until it has started its run file (so it holds the
/// locks).
fn start_gated(p: &Project) -> (std::process::Child, PathBuf) {
    let before = run_files(p);
    let child = p.spawn(&["run", "--no-notify", "--quiet"]);
    let mut file = None;
    // The file is created before its first line is written: wait for the line.
    wait_until(Duration::from_secs(30), "the gated run's start", || {
        file = run_files(p)
            .into_iter()
            .find(|f| !before.contains(f) && !run_id_of(f).is_empty());
        file.is_some()
    });
    (child, file.expect("a run file"))
}

fn release(p: &Project) {
    std::fs::write(p.path().join("go"), "").expect("the go file");
}

/// The run-level final event of a run file.
fn ending(file: &Path) -> Value {
    run_end(&read_events(file)).clone()
}

#[test]
fn skip_holds_across_hosts_and_a_dead_hosts_lock_expires() {
    let Some(nats) = Nats::single() else { return };
    let a = gated_host(&nats, "etl-01", "skip");
    let b = gated_host(&nats, "etl-02", "skip");
    release(&b);
    let (mut child, a_file) = start_gated(&a);
    let a_id = run_id_of(&a_file);

    // Another host's run is skipped, naming the run that holds the pipeline.
    let o = b.run(&["run", "--no-notify", "--quiet"]);
    assert!(o.status.success(), "{o:?}");
    let skipped = run_files(&b);
    assert_eq!(skipped.len(), 1);
    let end = ending(&skipped[0]);
    assert_eq!(end["event"], "skipped", "{end}");
    assert_eq!(end["data"]["reason"], "overlap");
    assert_eq!(end["data"]["running"], a_id.as_str());

    // Once it ends, the lock is free at once.
    release(&a);
    assert!(wait_child(&mut child, Duration::from_secs(30)).success());
    assert_eq!(ending(&a_file)["event"], "success");
    let o = b.run(&["run", "--no-notify", "--quiet"]);
    assert!(o.status.success(), "{o:?}");
    let last = run_files(&b).into_iter().last().expect("a run");
    assert_eq!(ending(&last)["event"], "success");

    // A host killed while its run holds the lock: others skip until the lock expires.
    std::fs::remove_file(a.path().join("go")).expect("remove go");
    let (mut child, _) = start_gated(&a);
    child.kill().expect("kill -9 the runner");
    let _ = child.wait();
    let killed = Instant::now();
    let before = run_files(&b).len();
    let mut freed = None;
    while killed.elapsed() < Duration::from_secs(60) {
        let o = b.run(&["run", "--no-notify", "--quiet"]);
        assert!(o.status.success(), "{o:?}");
        let last = run_files(&b).into_iter().last().expect("a run");
        if ending(&last)["event"] == "success" {
            freed = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The killed run's stage was left waiting for its gate.
    release(&a);
    let freed = freed.expect("the dead host's lock expired within a minute");
    let ttl = pipewatch::cluster::lock::LOCK_TTL;
    let refresh = pipewatch::cluster::lock::REFRESH;
    assert!(
        freed + refresh >= ttl - Duration::from_secs(2),
        "freed after {freed:?}: before its holder's last refresh could have expired"
    );
    assert!(
        run_files(&b).len() > before + 1,
        "skipped while the lock lived"
    );
}

#[test]
fn queue_waits_for_and_replace_stops_the_other_hosts_run() {
    let Some(nats) = Nats::single() else { return };
    let a = gated_host(&nats, "etl-01", "queue");
    let b = gated_host(&nats, "etl-02", "queue");
    release(&b);

    // queue: the second host's run waits, with no run file, until the first has ended.
    let (mut first, a_file) = start_gated(&a);
    let mut second = b.spawn(&["run", "--no-notify", "--quiet"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        second.try_wait().expect("try_wait").is_none(),
        "still waiting"
    );
    assert!(run_files(&b).is_empty(), "no run file while queued");
    release(&a);
    assert!(wait_child(&mut first, Duration::from_secs(30)).success());
    assert!(wait_child(&mut second, Duration::from_secs(30)).success());
    let b_file = run_files(&b).into_iter().last().expect("the queued run");
    let a_end = ending(&a_file);
    let b_start = read_events(&b_file)[0].clone();
    assert_eq!(a_end["event"], "success");
    assert_eq!(ending(&b_file)["event"], "success");
    assert!(
        b_start["timestamp"].as_str() >= a_end["timestamp"].as_str(),
        "the queued run started after the other ended: {b_start} / {a_end}"
    );

    // replace: the running run on the other host is cancelled (reason replaced), the new
    // one runs after it.
    std::fs::remove_file(a.path().join("go")).expect("remove go");
    a.write_config(&format!(
        "[pipeline]\nname = \"p\"\noverlap = \"replace\"\n[[stages]]\nname = \"a\"\nrun = {:?}\n{}",
        crate::support::stage::GATE,
        nats.cluster_toml("etl-01")
    ));
    b.write_config(&format!(
        "[pipeline]\nname = \"p\"\noverlap = \"replace\"\n[[stages]]\nname = \"a\"\nrun = {:?}\n{}",
        crate::support::stage::GATE,
        nats.cluster_toml("etl-02")
    ));
    let (mut old, old_file) = start_gated(&a);
    let started = Instant::now();
    let o = b.run(&["run", "--no-notify", "--quiet"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "replaced within a few refreshes: {:?}",
        started.elapsed()
    );
    let old_status = wait_child(&mut old, Duration::from_secs(30));
    assert!(!old_status.success(), "the replaced run ends cancelled");
    let old_end = ending(&old_file);
    assert_eq!(old_end["event"], "cancelled", "{old_end}");
    assert_eq!(old_end["data"]["reason"], "replaced");
    let new_file = run_files(&b).into_iter().last().expect("the new run");
    assert_eq!(ending(&new_file)["event"], "success");
    release(&a);
}

/// Two dashboards whose built-in schedulers fire the same schedule: each occurrence runs on
/// one host, and the host that lost a claim shows no run for it (not an abandoned one).
#[test]
fn two_builtin_schedulers_run_each_occurrence_once_and_show_no_phantom_runs() {
    let Some(nats) = Nats::single() else { return };
    let hosts: Vec<Project> = ["etl-01", "etl-02"]
        .iter()
        .map(|h| {
            Project::with_config(&format!(
                "schedule = \"*/2 * * * * *\"\noverlap = \"parallel\"\n{QUICK}\
                 [scheduler]\nbackend = \"builtin\"\n{}",
                nats.cluster_toml(h)
            ))
        })
        .collect();
    let mut servers: Vec<Server> = hosts.iter().map(|h| Server::start(h.path())).collect();
    wait_until(Duration::from_secs(60), "five occurrences claimed", || {
        claims(&nats).len() >= 5
    });
    // Every launched run has exited and been looked at: runs and claims agree.
    let files = || hosts.iter().flat_map(run_files).collect::<Vec<_>>();
    for s in &mut servers {
        s.stop();
    }
    // A run a scheduler launched just before its stop goes on (runs never depend on the
    // dashboard): it claims its occurrence and writes its file a moment later. So wait until
    // every claim has its file, every file its final event, and nothing changed for 3 s.
    let ended = |f: &PathBuf| {
        read_events(f).last().is_some_and(|e| {
            e["stage"] == "pipeline"
                && ["success", "failure", "cancelled", "skipped", "missed"]
                    .contains(&e["event"].as_str().unwrap_or_default())
        })
    };
    let mut held = Vec::new();
    let mut unchanged: Option<(Vec<PathBuf>, Instant)> = None;
    wait_until(
        Duration::from_secs(60),
        "every launched run ended, each with its claim",
        || {
            held = claims(&nats);
            let now = files();
            if now.len() != held.len() || !now.iter().all(ended) {
                unchanged = None;
                return false;
            }
            match &unchanged {
                Some((seen, since)) if *seen == now => since.elapsed() >= Duration::from_secs(3),
                _ => {
                    unchanged = Some((now, Instant::now()));
                    false
                }
            }
        },
    );
    let ran: BTreeSet<String> = files().iter().map(|f| run_id_of(f)).collect();
    let holders: BTreeSet<String> = held.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(
        ran, holders,
        "each claimed occurrence ran once, on its claimer"
    );
    for f in files() {
        assert_eq!(ending(&f)["event"], "success", "{f:?}");
    }
    // Each dashboard again (its scheduler fires on; what it shows of the runs before is what
    // matters). With [cluster] each shows every host's runs, from the engine: each a run that
    // ran on one of the hosts, none left `abandoned` or `running` for a lost claim.
    let all: BTreeSet<String> = files().iter().map(|f| run_id_of(f)).collect();
    for (h, s) in hosts.iter().zip(&mut servers) {
        h.write_config(
            &std::fs::read_to_string(h.path().join("pipewatch.toml"))
                .expect("config")
                .replace("backend = \"builtin\"", "backend = \"cron\""),
        );
        s.spawn();
        // Just started, it may still be reading the engine's last events: give it a moment
        // to show them before judging.
        let shown_ended = |runs: &[Value]| {
            runs.iter().all(|r| {
                all.contains(r["run_id"].as_str().unwrap_or_default()) && r["status"] == "success"
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut runs = s.runs();
        while !shown_ended(&runs) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            runs = s.runs();
        }
        for run in runs {
            let id = run["run_id"].as_str().unwrap_or_default();
            assert!(
                all.contains(id),
                "{} shows run {id} ({}) that no host ran",
                s.url(),
                run["status"]
            );
            assert_eq!(run["status"], "success", "{} shows {run}", s.url());
        }
    }
}
