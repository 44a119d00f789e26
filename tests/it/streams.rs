//! The all-runs stream's cursor through the binary: `/ws/events` and `/api/events/stream`
//! never leave a gap for a client that keeps reading, and a client that comes back with its
//! cursor — after pausing, or after the server restarted — gets every event once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::ws::{cursor, key};
use crate::support::*;

const LONG: Duration = Duration::from_secs(120);

/// Writes `lines` log lines (numbered from `from`) to run `id`, in one append.
fn write_run(p: &Project, id: &str, from: u64, lines: u64, pad: &str) {
    append(&run_path(p, id), &log_lines(id, from, lines, pad));
}

/// `lines` log lines of run `id`, numbered from `from`, each message padded with `pad`.
fn log_lines(id: &str, from: u64, lines: u64, pad: &str) -> String {
    (from..from + lines)
        .map(|n| {
            line(
                id,
                "a",
                "log",
                "2026-11-29T08:15:00.000Z",
                &format!("{n}{pad}"),
            )
        })
        .collect()
}

/// Asserts that `got` holds exactly the events `want` once each, in cursor order with no hole.
fn assert_exactly(got: &[Value], want: &BTreeSet<(String, u64)>) {
    let keys: Vec<_> = got.iter().map(key).collect();
    let unique: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(keys.len(), unique.len(), "duplicates on the stream");
    let missing: Vec<_> = want.difference(&unique).take(5).collect();
    let extra: Vec<_> = unique.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}…, extra {extra:?}… ({} got, {} wanted)",
        unique.len(),
        want.len()
    );
    for w in got.windows(2) {
        assert_eq!(cursor(&w[1]), cursor(&w[0]) + 1, "cursors skip or repeat");
    }
}

fn all_keys(runs: &[(&str, u64, u64)]) -> BTreeSet<(String, u64)> {
    runs.iter()
        .flat_map(|&(id, from, n)| (from..from + n).map(move |s| (id.to_string(), s)))
        .collect()
}

#[test]
fn a_reader_pausing_longer_than_the_ring_holds_gets_every_event_once() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let mut ws = s.ws("/ws/events");
    // 40 runs × 1,000 events of ~500 bytes: about 20 MB of JSON, several times what the bus's
    // ring (16 MiB, counting each event's two encodings) holds, and ten times its lag limit.
    let pad = "x".repeat(400);
    let runs: Vec<String> = (0..40).map(|r| format!("pause{r}")).collect();
    for id in &runs {
        write_run(&p, id, 0, 1000, &pad);
    }
    // Not reading while all of it is ingested and published.
    let total = 40_000u64;
    wait_until(LONG, "every event ingested", || {
        s.health()["events_ingested"].as_u64() == Some(total)
    });
    let got = read_until(&mut ws, "every event after the pause", |g| {
        g.len() as u64 >= total
    });
    let want = all_keys(
        &runs
            .iter()
            .map(|id| (id.as_str(), 0, 1000))
            .collect::<Vec<_>>(),
    );
    assert_exactly(&got, &want);
    // And nothing more.
    assert!(read_for(&mut ws, Duration::from_millis(300)).is_empty());
    let metrics = s.get("/metrics").body;
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("pipewatch_{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(
        figure("websocket_lagged_total"),
        0,
        "a client that kept reading was let go"
    );
    // The ring held a fraction of it, within its bound in bytes.
    assert!(figure("bus_ring_bytes") <= 16 << 20, "{metrics}");
    assert!(figure("bus_ring_events") < total / 2, "{metrics}");
    assert_eq!(figure("bus_cursor"), cursor(&got[got.len() - 1]));
}

#[test]
fn a_cursor_resumes_after_a_restart_with_everything_written_meanwhile() {
    let p = Project::with_config(QUICK);
    let mut s = Server::start(&p);
    let mut ws = s.ws("/ws/events");
    write_run(&p, "before", 0, 10, "");
    let seen = read_until(&mut ws, "the first ten", |g| g.len() == 10);
    let (mid, end) = (cursor(&seen[4]), cursor(&seen[9]));
    drop(ws);
    s.stop();
    // Written while the dashboard is down: more of the same run, and a new one.
    write_run(&p, "before", 10, 10, "");
    write_run(&p, "during", 0, 10, "");
    s.spawn();
    let meanwhile = all_keys(&[("before", 10, 10), ("during", 0, 10)]);

    let mut ws = s.ws(&format!("/ws/events?since={end}"));
    let got = read_until(&mut ws, "what was written meanwhile", |g| g.len() >= 20);
    assert_exactly(&got, &meanwhile);
    assert!(cursor(&got[0]) > end);
    assert!(read_for(&mut ws, Duration::from_millis(300)).is_empty());

    // From the middle of what the client had: the rest of it (read again from the file),
    // then the same events with the same cursors.
    let mut ws = s.ws(&format!("/ws/events?since={mid}"));
    let again = read_until(&mut ws, "from the middle", |g| g.len() >= 25);
    let mut want = meanwhile.clone();
    want.extend(all_keys(&[("before", 5, 5)]));
    assert_exactly(&again, &want);
    assert_eq!(cursor(&again[0]), mid + 1);
    assert_eq!(&again[..5], &seen[5..], "read again, the same frames");
    assert_eq!(&again[5..], &got[..]);

    // Live events go on after a resume.
    write_run(&p, "after", 0, 3, "");
    let live = read_until(&mut ws, "a live event after the resume", |g| g.len() >= 3);
    assert_exactly(&live, &all_keys(&[("after", 0, 3)]));
    assert_eq!(cursor(&live[0]), cursor(&got[19]) + 1);

    // The same on Server-Sent Events: `id:` is the cursor, `Last-Event-ID` resumes.
    let last = end.to_string();
    let mut sse = Sse::open(s.port, "/api/events/stream", &[("Last-Event-ID", &last)]);
    let ids = sse.wait("the SSE resume", |ev| ev.len() >= 23);
    let frames: Vec<Value> = sse.events().into_iter().map(|(_, v)| v).collect();
    assert_eq!(ids, frames.iter().map(cursor).collect::<Vec<_>>());
    assert_exactly(
        &frames,
        &all_keys(&[("before", 10, 10), ("during", 0, 10), ("after", 0, 3)]),
    );
}

#[test]
fn a_cursor_the_server_never_gave_is_a_fresh_start_and_a_bad_one_is_refused() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    write_run(&p, "fresh", 0, 3, "");
    wait_until(LONG, "ingested", || s.health()["events_ingested"] == 3);
    // From the future (an index since rebuilt): the ring, as without a cursor.
    let mut ws = s.ws(&format!("/ws/events?since={}", u64::MAX));
    let got = read_until(&mut ws, "the ring", |g| g.len() >= 3);
    assert_exactly(&got, &all_keys(&[("fresh", 0, 3)]));
    let r = s.get("/ws/events?since=soon");
    assert_eq!(r.status, 400, "{}", r.body);
    r.assert_error();
    let r = s.request("GET", "/api/events/stream", &[("Last-Event-ID", "x")], b"");
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn a_finished_runs_stream_ends_after_its_final_event() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "ends";
    let mut text = line(id, "pipeline", "start", "2026-11-29T08:15:00.000Z", "go");
    text += &line(id, "a", "log", "2026-11-29T08:15:01.000Z", "working");
    append(&run_path(&p, id), &text);
    // Followed live: the socket stays open while the run goes on, and is closed with 1000
    // once the final event is sent.
    let mut ws = s.ws(&format!("/ws/events/{id}"));
    let got = read_until(&mut ws, "the first two", |g| g.len() >= 2);
    assert_eq!(got.len(), 2);
    assert!(read_for(&mut ws, Duration::from_millis(300)).is_empty());
    append(
        &run_path(&p, id),
        &line(
            id,
            "pipeline",
            "success",
            "2026-11-29T08:15:02.000Z",
            "done",
        ),
    );
    let mut rest = Vec::new();
    assert_eq!(drain_until_closed(&mut ws, &mut rest), Some(1000));
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["event"], "success");

    // Opened after the end: the whole run, then the close.
    let mut ws = s.ws(&format!("/ws/events/{id}"));
    let mut all = Vec::new();
    assert_eq!(drain_until_closed(&mut ws, &mut all), Some(1000));
    assert_eq!(all.len(), 3);

    // Server-Sent Events: the events, an `end` event, and the body ends (as `curl -N` sees).
    let r = s.get_within(
        &format!("/api/runs/{id}/events/stream"),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body.matches("\ndata: ").count() + usize::from(r.body.starts_with("data: ")),
        4,
        "{}",
        r.body
    );
    assert!(
        r.body.contains("event: end\ndata: run finished"),
        "{}",
        r.body
    );
    // An EventSource reconnecting after the end is told to stop.
    let r = s.request(
        "GET",
        &format!("/api/runs/{id}/events/stream"),
        &[("Last-Event-ID", "2")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // One resuming before the final event gets it, then the end.
    let r = s.request(
        "GET",
        &format!("/api/runs/{id}/events/stream"),
        &[("Last-Event-ID", "1")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("\"success\"") && r.body.contains("event: end"),
        "{}",
        r.body
    );
}

/// Every stream sends an event as the dashboard keeps it, however the line was written: its
/// `seq` and `run_id` are the file's, unknown keys and `null` fields are left out, and `data`
/// is kept whole. A line pipewatch writes goes out as written.
#[test]
fn streams_send_what_the_event_keeps_and_not_what_the_line_added() {
    let p = Project::with_config(QUICK);
    let s = Server::start(&p);
    let id = "shapes";
    let written = format!(
        r#"{{"seq":0,"run_id":"{id}","pipeline":"p","stage":"a","event":"log","level":"info","timestamp":"2026-11-29T08:15:00.000Z","source":"cli","msg":"as written","data":{{"stream":"stdout","n":[1,{{"k":null}}]}}}}"#
    );
    let lines = [
        written.clone(),
        // Another writer's line: an unknown key, a null field, a seq and run id of its own.
        r#"{"seq":7,"run_id":"elsewhere","pipeline":null,"stage":"a","event":"log","timestamp":"2026-11-29T08:15:01","msg":"other","extra":{"x":1},"data":{"k":"v"}}"#.to_string(),
        format!(r#"  {{"run_id":"{id}","stage":"a","event":"log","timestamp":"t","msg":"no seq"}} "#),
    ];
    append(&run_path(&p, id), &(lines.join("\n") + "\n"));

    let mut ws = s.ws(&format!("/ws/events/{id}"));
    let run = read_until(&mut ws, "the run's three events", |g| g.len() >= 3);
    let mut all = s.ws("/ws/events");
    let every = read_until(&mut all, "the three on the all-runs stream", |g| {
        g.len() >= 3
    });
    for (n, (e, f)) in run.iter().zip(&every).enumerate() {
        assert_eq!(e["seq"], n as u64, "{e}");
        assert_eq!(e["run_id"], id, "{e}");
        assert!(
            e.get("extra").is_none() && e.get("pipeline") != Some(&Value::Null),
            "{e}"
        );
        assert!(e.get("cursor").is_none(), "{e}");
        // The all-runs frame is the same event with its cursor.
        let mut f = f.clone();
        assert!(f.as_object_mut().unwrap().remove("cursor").is_some(), "{f}");
        assert_eq!(&f, e);
    }
    let as_written: Value = serde_json::from_str(&written).unwrap();
    assert_eq!(run[0], as_written);
    assert_eq!(run[1]["data"], serde_json::json!({"k": "v"}));
    assert_eq!(run[1]["msg"], "other");
    assert_eq!(run[2]["msg"], "no seq");
    // The API's pages say the same.
    assert_eq!(s.all_events(id), run, "the API and the stream differ");
}

/// `[server] stream_buffer` bounds the ring of recent events: with 1 MiB set, 4 MiB of
/// events leave at most 1 MiB in memory (`/metrics`), and a reader from the start still gets
/// every one of them, the older from the files.
#[test]
fn the_ring_holds_what_stream_buffer_says_and_no_more() {
    let p = Project::with_config(&format!("{QUICK}\n[server]\nstream_buffer = \"1MiB\"\n"));
    let s = Server::start(&p);
    let id = "20261202T100000000Z-5b0f00";
    let pad = "x".repeat(1000);
    write_run(&p, id, 0, 4000, &pad);
    s.wait_json(&format!("/api/runs/{id}"), "the run indexed", LONG, |r| {
        r["events"] == 4000
    });
    let metric = |name: &str| s.metric(name);
    let held = metric("pipewatch_bus_ring_bytes");
    assert!(
        held > 0 && held <= 1024 * 1024,
        "the ring holds {held} bytes"
    );
    let events = metric("pipewatch_bus_ring_events");
    assert!(events < 4000, "the ring holds {events} of 4,000 events");
    // From before the first event: every event once, the ones the ring let go read from
    // the file.
    let last = metric("pipewatch_bus_cursor");
    let mut ws = s.ws(&format!("/ws/events?since={}", last - 4000));
    let mut got = read_until(&mut ws, "every event", |got| got.len() >= 4000);
    got.extend(read_for(&mut ws, Duration::from_millis(300)));
    let seqs: BTreeSet<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), 4000, "every event, once");
    assert_eq!(got.len(), 4000, "no event twice");
}

/// A run's follower that falls behind the run's log (1 MiB here, `/metrics` says so) while the
/// run goes on being written reads what fell out of the log again from the file, as often as
/// it falls behind, and gets every event once, in order.
#[test]
fn a_runs_reader_falling_behind_its_log_again_and_again_gets_every_event_once() {
    let p = Project::with_config(&format!("{QUICK}\n[server]\nstream_buffer = \"1MiB\"\n"));
    let s = Server::start(&p);
    let id = "20261202T100000000Z-b0b0b0";
    let mut ws = s.ws(&format!("/ws/events/{id}"));
    let pad = "x".repeat(1000);
    let (chunks, per_chunk) = (100u64, 250u64);
    let path = run_path(&p, id);
    let writer = std::thread::spawn(move || {
        for c in 0..chunks {
            append(&path, &log_lines(id, c * per_chunk, per_chunk, &pad));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // Not reading while the first part is written, then reading more slowly than the rest is
    // written.
    std::thread::sleep(Duration::from_millis(300));
    let total = chunks * per_chunk;
    let mut got = Vec::new();
    let mut last_news = std::time::Instant::now();
    while (got.len() as u64) < total {
        let more = read_for(&mut ws, Duration::from_millis(1));
        if !more.is_empty() {
            last_news = std::time::Instant::now();
        } else if writer.is_finished() && last_news.elapsed() > Duration::from_secs(5) {
            break;
        }
        got.extend(more);
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.join().unwrap();
    got.extend(read_for(&mut ws, Duration::from_millis(300)));
    // The run's log, still followed, holds no more than `stream_buffer` of the 25 MiB.
    assert_eq!(s.metric("pipewatch_bus_run_logs"), 1);
    let held = s.metric("pipewatch_bus_run_log_bytes");
    assert!(
        held > 0 && held <= 1024 * 1024,
        "the run's log holds {held} bytes"
    );
    let seqs: Vec<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let want: Vec<u64> = (0..total).collect();
    if seqs != want {
        let sent: BTreeSet<u64> = seqs.iter().copied().collect();
        let missing: Vec<_> = want.iter().filter(|s| !sent.contains(s)).take(5).collect();
        panic!(
            "{} events ({} distinct), not {total} in order once each; missing {missing:?}…",
            seqs.len(),
            sent.len()
        );
    }
}
