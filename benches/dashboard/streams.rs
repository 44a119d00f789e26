//! The streams cases: what one or many WebSocket clients get from `pipewatch serve`, with the
//! clients in a process of their own ([`crate::client`]) and the server's own CPU time and
//! memory read from `/proc` beside each latency.
//!
//! - gap: one client on `/ws/events`; 200 finished runs of 1,000 events are renamed into the
//!   events folder at once, then (once the server has ingested them) 200 more. Every event must
//!   arrive exactly once with no close; the server's RSS growth per 100,000 events.
//! - fanout-run: 200 clients, then 20, on `/ws/events/{run_id}` while a writer appends 10,000
//!   events/s to that run for 5 s: server CPU per delivery, peak RSS, p99 append → delivery.
//! - burst: 100 finished runs of 1,000 events renamed in at once, one `/ws/events` client;
//!   events/s from the renames to the last event received, median of 5 rounds.
//! - latency1: one client on `/ws/events/{run_id}`, 100 events/s; p50 / p99 append → delivery,
//!   and the same client reading a bare local WebSocket sender (the client's floor).
//!
//! The paced writer of fanout-run and latency1 writes lines as `pipewatch run` does
//! (`PW_STREAMS_LINES=timed`: with an unknown top-level key as well, which the server must
//! encode again without it).
//!
//! Latency across processes: the writer stamps each event with its wall clock (`data.t_ns`,
//! nanoseconds since the Unix epoch) and the client subtracts it from its own.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::client::{Clients, Report, Spec};
use crate::server::Server;
use crate::{
    cpu_seconds, env_or, events_dir, file_name, finished_run, line, minor_faults, now_ns, project,
    runner_line, status_mib, timed_line, ts, write_paced,
};

/// Writes `files` finished runs of `lines` events, ids `{group}-NNNNNN`, into `dir`.
fn write_runs(dir: &Path, group: &str, files: u64, lines: u64) {
    fs::create_dir_all(dir).expect("mkdir");
    let start = Utc::now();
    for i in 0..files {
        let run_id = format!("{group}-{i:06}");
        fs::write(
            dir.join(file_name(&run_id)),
            finished_run(&run_id, start, lines),
        )
        .expect("write a run file");
    }
}

/// Renames every file of `from` into `to`.
fn move_all(from: &Path, to: &Path) {
    for e in fs::read_dir(from).expect("staging folder").flatten() {
        fs::rename(e.path(), to.join(e.file_name())).expect("rename");
    }
}

/// The line the paced writer writes: as `pipewatch run` does, or (`PW_STREAMS_LINES=timed`)
/// with an unknown top-level key.
fn paced_line() -> fn(u64, &str, u64) -> String {
    match std::env::var("PW_STREAMS_LINES").as_deref() {
        Ok("timed") => timed_line,
        _ => runner_line,
    }
}

/// A server on an empty events folder, once it watches it.
fn watching_server(dir: &Path) -> Server {
    fs::create_dir_all(events_dir(dir)).expect("events dir");
    let s = Server::start(dir);
    s.wait_json("/api/health", "the watch", Duration::from_secs(10), |h| {
        h["tailer"]["watching"].as_bool() == Some(true)
    });
    s
}

/// Waits until the server has ingested (committed and published) `n` events.
fn wait_ingested(s: &Server, n: u64, within: Duration) {
    s.wait_json("/api/health", "events ingested", within, |h| {
        h["events_ingested"].as_u64() >= Some(n)
    });
}

/// Waits until `n` sockets are open on the server, and a little more for them to subscribe.
fn wait_clients(s: &Server, n: usize) {
    s.wait_json(
        "/api/health",
        "every client",
        Duration::from_secs(60),
        |h| h["websocket_clients"].as_u64() >= Some(n as u64),
    );
    std::thread::sleep(Duration::from_millis(300));
}

/// A run file with its `start` line, once the server has ingested it.
fn started_run(s: &Server, events: &Path, run_id: &str) {
    let mut first = String::new();
    line(
        &mut first,
        0,
        run_id,
        "pipeline",
        "start",
        &ts(Utc::now()),
        "run of bench started",
        r#"{"stages":["a"]}"#,
    );
    fs::write(events.join(file_name(run_id)), first).expect("first line");
    wait_ingested(s, 1, Duration::from_secs(10));
}

fn resumed(r: &Report) -> &'static str {
    if r.0["cursor"].as_bool() == Some(true) {
        "with ?since=CURSOR"
    } else {
        "without a cursor (frames carry none)"
    }
}

// ---------------------------------------------------------------------------------------------
// gap
// ---------------------------------------------------------------------------------------------

/// `PW_GAP_ROUNDS` (default 3: the loss varies from round to round), `PW_GAP_FILES`, and
/// `PW_GAP_WAIT=1` to rename the second batch in only once the first is ingested.
pub fn gap() {
    for round in 1..=env_or("PW_GAP_ROUNDS", 3) {
        gap_round(round);
    }
}

fn gap_round(round: u64) {
    let files = env_or("PW_GAP_FILES", 200);
    let wait_first = env_or("PW_GAP_WAIT", 0) == 1;
    const LINES: u64 = 1_000;
    let batch = files * LINES;
    let dir = project();
    let staging = dir.path().join("logs/staging");
    write_runs(&staging.join("1"), "gap1", files, LINES);
    write_runs(&staging.join("2"), "gap2", files, LINES);
    let events = events_dir(dir.path());
    let server = watching_server(dir.path());
    let clients = Clients::start(&Spec {
        port: server.port,
        path: "/ws/events".into(),
        clients: 1,
        want: 2 * batch,
        reconnect: true,
    });
    wait_clients(&server, 1);

    let pid = server.pid();
    let (rss0, cpu0) = (status_mib(pid, "VmRSS"), cpu_seconds(pid));
    let t0 = Instant::now();
    move_all(&staging.join("1"), &events);
    if wait_first {
        wait_ingested(&server, batch, Duration::from_secs(120));
    }
    let first_in = t0.elapsed();
    move_all(&staging.join("2"), &events);
    wait_ingested(&server, 2 * batch, Duration::from_secs(120));
    let all_in = t0.elapsed();
    let r = clients.finish(Duration::from_secs(10));
    let (rss1, hwm, cpu) = (
        status_mib(pid, "VmRSS"),
        status_mib(pid, "VmHWM"),
        cpu_seconds(pid) - cpu0,
    );
    let done = t0.elapsed();

    println!(
        "gap {round}: 1 client on /ws/events, {files} files x {LINES} events at once, then {files} more: first {batch}: {} arrived, second {batch}: {} arrived; {} duplicates; closed with 4000 {} times, all closes {}, {} reconnects {} (target: all {}, 0 closes)",
        r.group("gap1"),
        r.group("gap2"),
        r.u("duplicates"),
        r.closes_with(4000),
        r.closes(),
        r.u("reconnects"),
        resumed(&r),
        2 * batch,
    );
    println!(
        "gap {round}: server RSS {rss0:.1} -> {rss1:.1} MiB over {} events = {:+.2} MiB per 100,000 (target < 1 MiB); peak RSS {hwm:.1} MiB; server CPU {cpu:.1} s; ingested in {:.1} s + {:.1} s, clients done after {:.1} s",
        2 * batch,
        (rss1 - rss0) / (2 * batch) as f64 * 100_000.0,
        first_in.as_secs_f64(),
        (all_in - first_in).as_secs_f64(),
        done.as_secs_f64(),
    );
}

// ---------------------------------------------------------------------------------------------
// fanout-run
// ---------------------------------------------------------------------------------------------

/// `PW_FANOUT_RUN_CLIENTS` (a list, default `200,20`), `PW_FANOUT_RUN_RATE`,
/// `PW_FANOUT_RUN_SECS`.
pub fn fanout_run() {
    let counts: Vec<usize> = std::env::var("PW_FANOUT_RUN_CLIENTS")
        .unwrap_or_else(|_| "200,20".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    for n in counts {
        fanout_run_with(n);
    }
}

fn fanout_run_with(n: usize) {
    let rate = env_or("PW_FANOUT_RUN_RATE", 10_000);
    let secs = env_or("PW_FANOUT_RUN_SECS", 5);
    let total = rate * secs;
    let dir = project();
    let events = events_dir(dir.path());
    let server = Server::start(dir.path());
    let run_id = format!("fanrun-{}-{n}", std::process::id());
    started_run(&server, &events, &run_id);
    let clients = Clients::start(&Spec {
        port: server.port,
        path: format!("/ws/events/{run_id}"),
        clients: n,
        // The start line, then every timed event.
        want: total + 1,
        reconnect: false,
    });
    wait_clients(&server, n);

    let pid = server.pid();
    let (rss0, cpu0) = (status_mib(pid, "VmRSS"), cpu_seconds(pid));
    let t0 = Instant::now();
    write_paced(
        &events,
        std::slice::from_ref(&run_id),
        1,
        total,
        rate,
        paced_line(),
    );
    let wrote = t0.elapsed();
    let r = clients.finish(Duration::from_secs(60));
    let done = t0.elapsed();
    let (cpu, rss1, hwm) = (
        cpu_seconds(pid) - cpu0,
        status_mib(pid, "VmRSS"),
        status_mib(pid, "VmHWM"),
    );
    let deliveries = r.u("timed");
    let p99_target = if n <= 20 { "< 20 ms" } else { "< 1 s" };

    println!(
        "fanout-run {n}: {n} clients on /ws/events/{{id}}, {total} events at {rate}/s for {secs} s (written in {:.1} s): {}/{n} got every event exactly once; {deliveries}/{} deliveries, {} duplicates; closes {} (target: all)",
        wrote.as_secs_f64(),
        r.u("complete"),
        n as u64 * total,
        r.u("duplicates"),
        r.closes(),
    );
    println!(
        "fanout-run {n}: append -> delivery {} (target p99 {p99_target}); clients done {:.1} s after the writer started",
        r.latency(),
        done.as_secs_f64(),
    );
    println!(
        "fanout-run {n}: server CPU {cpu:.2} s = {:.3} us per delivery (target <= 0.3 us); peak RSS {hwm:.0} MiB (target < 128 MiB), RSS {rss0:.0} -> {rss1:.0} MiB; client process CPU {:.1} s",
        cpu * 1e6 / deliveries.max(1) as f64,
        r.f("cpu_s"),
    );
}

// ---------------------------------------------------------------------------------------------
// burst
// ---------------------------------------------------------------------------------------------

pub fn burst() {
    let rounds = env_or("PW_BURST_ROUNDS", 5);
    const FILES: u64 = 100;
    const LINES: u64 = 1_000;
    let total = FILES * LINES;
    let mut rates = Vec::new();
    for round in 0..rounds {
        let dir = project();
        let staging = dir.path().join("logs/staging");
        write_runs(&staging, &format!("burst{round}"), FILES, LINES);
        let server = watching_server(dir.path());
        let clients = Clients::start(&Spec {
            port: server.port,
            path: "/ws/events".into(),
            clients: 1,
            want: total,
            reconnect: true,
        });
        wait_clients(&server, 1);
        let pid = server.pid();
        let cpu0 = cpu_seconds(pid);
        let faults0 = minor_faults(pid);
        let t0 = now_ns();
        move_all(&staging, &events_dir(dir.path()));
        let r = clients.finish(Duration::from_secs(15));
        let cpu = cpu_seconds(pid) - cpu0;
        let faults = minor_faults(pid) - faults0;
        let secs = r.u("last_ns").saturating_sub(t0) as f64 / 1e9;
        let first_ms = r.u("first_ns").saturating_sub(t0) as f64 / 1e6;
        let rate = r.u("distinct") as f64 / secs;
        eprintln!(
            "burst round {round}: {}/{total} events in {:.0} ms (the first after {first_ms:.0} ms) = {rate:.0} events/s; {} duplicates, closes {}; server CPU {cpu:.2} s, {faults} page faults, peak RSS {:.0} MiB",
            r.u("distinct"),
            secs * 1000.0,
            r.u("duplicates"),
            r.closes(),
            status_mib(pid, "VmHWM"),
        );
        rates.push(if r.u("distinct") == total { rate } else { 0.0 });
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "burst: {FILES} files x {LINES} events renamed in at once, 1 client on /ws/events: median {:.0} events/s over {rounds} rounds (each {:?}; 0 = incomplete) (target >= 1,000,000 events/s)",
        rates[rates.len() / 2],
        rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
    );
}

// ---------------------------------------------------------------------------------------------
// latency1
// ---------------------------------------------------------------------------------------------

pub fn latency1() {
    let total = env_or("PW_LATENCY1_EVENTS", 1_000);
    const RATE: u64 = 100;
    let dir = project();
    let events = events_dir(dir.path());
    let server = Server::start(dir.path());
    let run_id = format!("latency1-{}", std::process::id());
    started_run(&server, &events, &run_id);
    let clients = Clients::start(&Spec {
        port: server.port,
        path: format!("/ws/events/{run_id}"),
        clients: 1,
        want: total + 1,
        reconnect: false,
    });
    wait_clients(&server, 1);
    let pid = server.pid();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    write_paced(
        &events,
        std::slice::from_ref(&run_id),
        1,
        total,
        RATE,
        paced_line(),
    );
    let r = clients.finish(Duration::from_secs(10));
    let cpu = cpu_seconds(pid) - cpu0;
    let floor = client_floor(total, RATE);
    println!(
        "latency1: 1 client on /ws/events/{{id}}, {total} events at {RATE}/s: append -> socket {} (target p99 <= 0.5 ms); received {}/{total}; server CPU {:.1}% of one core",
        r.latency(),
        r.u("timed"),
        cpu / t0.elapsed().as_secs_f64() * 100.0,
    );
    println!(
        "latency1: client floor (the same frames from a bare local WebSocket sender) {}",
        floor.latency()
    );
}

/// The client process reading frames of the same size and rate from a WebSocket sender in
/// this process that stamps each just before sending it: what the client and the loopback
/// cost with no server in between.
fn client_floor(total: u64, rate: u64) -> Report {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (go_tx, go) = mpsc::channel::<()>();
    let sender = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut ws = tungstenite::accept(stream).expect("handshake");
        let _ = go.recv();
        let start = Instant::now();
        for seq in 0..total {
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let l = timed_line(seq, "floor", now_ns());
            ws.send(tungstenite::Message::text(l.trim_end()))
                .expect("send");
        }
        // Keep the socket open until the client has read the last frame.
        std::thread::sleep(Duration::from_millis(500));
    });
    let clients = Clients::start(&Spec {
        port,
        path: "/".into(),
        clients: 1,
        want: total,
        reconnect: false,
    });
    let _ = go_tx.send(());
    let r = clients.finish(Duration::from_secs(total / rate + 10));
    let _ = sender.join();
    r
}
