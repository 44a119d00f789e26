use super::*;
use crate::event::{Event, Published};
use crate::sync::MutexExt;

fn ev(run: &str, seq: u64) -> Arc<Published> {
    let e = Event {
        seq: None,
        run_id: String::new(),
        pipeline: None,
        stage: "s".into(),
        event: "log".into(),
        level: None,
        timestamp: "2026-11-29T08:15:00.000Z".into(),
        source: None,
        msg: seq.to_string(),
        data: None,
        host: None,
    };
    Arc::new(Published::new(RunId::parse(run).unwrap(), seq, e))
}

/// Publishes `events`, in order, to every stream.
fn publish(bus: &Bus, events: &[Arc<Fed>]) {
    bus.publish_to_runs([], events);
    bus.publish_to_all(events);
}

fn fed(cursor: u64) -> Arc<Fed> {
    Arc::new(Fed::new(cursor, &ev("r", cursor), None))
}

fn cursors(taken: Taken) -> Vec<u64> {
    match taken {
        Taken::Events(v) => v.iter().map(|e| e.cursor).collect(),
        Taken::Behind { until } => panic!("behind, until {until:?}"),
    }
}

#[test]
fn the_frame_is_the_event_with_its_cursor() {
    let f = fed(7);
    let v: serde_json::Value = serde_json::from_str(&f.frame).unwrap();
    assert_eq!(v["cursor"], 7);
    assert_eq!(v["seq"], 7);
    assert_eq!(v["run_id"], "r");
    assert!(!f.json.contains("cursor"));
}

#[test]
fn neighbours_share_their_pipeline_and_the_final_event_is_known() {
    let of = |run: &str, seq: u64, pipeline: &str, event: &str| {
        let mut e = ev(run, seq).event.clone();
        e.pipeline = Some(pipeline.into());
        e.stage = crate::event::PIPELINE_STAGE.into();
        e.event = event.into();
        Published::new(RunId::parse(run).unwrap(), seq, e)
    };
    let a = Fed::new(1, &of("a", 0, "p", "start"), None);
    let b = Fed::new(2, &of("a", 1, "p", "success"), Some(&a));
    assert!(Arc::ptr_eq(
        a.pipeline.as_ref().unwrap(),
        b.pipeline.as_ref().unwrap()
    ));
    assert!(!a.terminal && b.terminal);
    // Another run, another pipeline: their own.
    let c = Fed::new(3, &of("c", 0, "q", "log"), Some(&b));
    assert_eq!((c.run_id.as_str(), c.pipeline.as_deref()), ("c", Some("q")));
    assert_eq!(c.json.as_str(), of("c", 0, "q", "log").json.as_str());
}

#[test]
fn ring_keeps_the_most_recent_bytes() {
    let one = fed(0).cost();
    let bus = Bus::new(3 * one, 1);
    publish(&bus, &(1..=5).map(fed).collect::<Vec<_>>());
    assert_eq!(bus.ring_start(), 2);
    assert_eq!(cursors(bus.after(bus.ring_start(), 100)), vec![3, 4, 5]);
    assert_eq!(bus.ring_size(), (3, 3 * one));
    assert_eq!(bus.last_cursor(), 5);
}

#[test]
fn after_a_cursor_from_the_ring_or_behind_it() {
    let one = fed(10).cost();
    let bus = Bus::new(3 * one, 10);
    assert_eq!(cursors(bus.after(9, 100)), Vec::<u64>::new());
    assert!(matches!(bus.after(8, 100), Taken::Behind { until: None }));
    publish(&bus, &(10..=15).map(fed).collect::<Vec<_>>());
    assert_eq!(cursors(bus.after(12, 100)), vec![13, 14, 15]);
    assert_eq!(cursors(bus.after(12, 2)), vec![13, 14]);
    assert_eq!(cursors(bus.after(14, 100)), vec![15]);
    assert_eq!(cursors(bus.after(15, 100)), Vec::<u64>::new());
    assert_eq!(cursors(bus.after(99, 100)), Vec::<u64>::new());
    assert!(
        matches!(bus.after(11, 100), Taken::Behind { until: Some(13) }),
        "cursor 12 is no longer in the ring"
    );
}

#[test]
fn cursors_that_skip_numbers_are_found_and_not_taken_for_a_gap() {
    let bus = Bus::new(usize::MAX, 1);
    publish(&bus, &[fed(1), fed(5), fed(9)]);
    assert_eq!(cursors(bus.after(0, 100)), vec![1, 5, 9]);
    assert_eq!(cursors(bus.after(3, 100)), vec![5, 9]);
    assert_eq!(cursors(bus.after(5, 100)), vec![9]);
}

#[test]
fn following_while_publishing_has_no_gap_and_no_duplicate() {
    let bus = Arc::new(Bus::new(usize::MAX, 0));
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for i in 0..20_000 {
                publish(&bus, &[fed(i)]);
            }
        })
    };
    let mut followers: Vec<(u64, Vec<u64>)> = Vec::new();
    for _ in 0..20 {
        followers.push((bus.ring_start(), Vec::new()));
        std::thread::yield_now();
    }
    publisher.join().unwrap();
    for (mut last, mut got) in followers {
        let start = last;
        loop {
            let more = cursors(bus.after(last, 1000));
            let Some(&l) = more.last() else { break };
            last = l;
            got.extend(more);
        }
        let expected: Vec<u64> = (start + 1..20_000).collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn a_slow_follower_falls_behind_without_holding_anyone_back() {
    // Cursors of three digits: every event costs the same.
    let one = fed(100).cost();
    let bus = Bus::new(16 * one, 100);
    let slow = bus.ring_start();
    let mut fast = bus.ring_start();
    let mut watch = bus.watch_all();
    for i in 100..200 {
        publish(&bus, &[fed(i)]);
        assert!(watch.has_changed().unwrap());
        watch.mark_unchanged();
        assert_eq!(cursors(bus.after(fast, 100)), vec![i]);
        fast = i;
    }
    assert!(matches!(
        bus.after(slow, 100),
        Taken::Behind { until: Some(184) }
    ));
}

fn run_seqs(log: &RunLog, after: Option<u64>) -> Vec<u64> {
    match log.after(after, 100) {
        Taken::Events(v) => v.iter().map(|e| e.seq).collect(),
        Taken::Behind { until } => panic!("behind, until {until:?}"),
    }
}

#[test]
fn a_runs_followers_get_its_events_before_the_all_runs_stream_does() {
    let bus = Bus::new(usize::MAX, 0);
    let a = RunId::parse("r").unwrap();
    let mut run = bus.subscribe_run(&a);
    let all = bus.watch_all();
    let events: Vec<Arc<Fed>> = (0..3).map(fed).collect();
    bus.publish_to_runs([], &events);
    assert!(run.changed.has_changed().unwrap());
    run.changed.mark_unchanged();
    assert_eq!(run_seqs(&run.log, None), vec![0, 1, 2]);
    assert_eq!(run_seqs(&run.log, Some(0)), vec![1, 2]);
    // Not committed yet: no cursor given out, nothing in the ring.
    assert!(!all.has_changed().unwrap());
    assert_eq!(bus.ring_size().0, 0);
    bus.publish_to_all(&events);
    assert!(all.has_changed().unwrap());
    assert_eq!(bus.last_cursor(), 2);
    assert!(
        !run.changed.has_changed().unwrap(),
        "a run's followers get each event once"
    );
}

#[test]
fn a_runs_log_gets_only_its_run_and_goes_when_its_followers_do() {
    let bus = Bus::new(usize::MAX, 0);
    let a = RunId::parse("a").unwrap();
    let sub = bus.subscribe_run(&a);
    assert_eq!(bus.subscribers(), 1);
    let events: Vec<Arc<Fed>> = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
        .iter()
        .enumerate()
        .map(|(i, (run, seq))| Arc::new(Fed::new(i as u64, &ev(run, *seq), None)))
        .collect();
    publish(&bus, &events);
    assert_eq!(run_seqs(&sub.log, None), vec![0, 1]);
    drop(sub);
    publish(&bus, &[Arc::new(Fed::new(4, &ev("a", 2), None))]);
    assert_eq!(bus.subscribers(), 0);
    let runs = bus.runs.lock_anyway();
    assert!(runs.logs.is_empty());
    assert_eq!(runs.bytes, 0);
}

#[test]
fn the_run_logs_together_hold_what_the_ring_may() {
    // Cursors of three digits and `seq`s of two: every event costs the same.
    let one = Arc::new(Fed::new(100, &ev("a", 10), None)).cost();
    let bus = Bus::new(10 * one, 100);
    let (a, b) = (RunId::parse("a").unwrap(), RunId::parse("b").unwrap());
    let (sa, sb) = (bus.subscribe_run(&a), bus.subscribe_run(&b));
    let mut cursor = 100;
    let mut publish = |run: &str, seqs: std::ops::Range<u64>| {
        let events: Vec<Arc<Fed>> = seqs
            .map(|s| {
                cursor += 1;
                Arc::new(Fed::new(cursor, &ev(run, s), None))
            })
            .collect();
        bus.publish_to_runs([], &events);
    };
    publish("b", 10..14);
    publish("a", 10..30);
    // The largest log gave up its oldest: b keeps all of its own.
    assert_eq!(run_seqs(&sb.log, None), vec![10, 11, 12, 13]);
    assert!(matches!(
        sa.log.after(Some(15), 100),
        Taken::Behind { until: Some(24) }
    ));
    assert_eq!(run_seqs(&sa.log, Some(23)), (24..30).collect::<Vec<_>>());
    assert_eq!(bus.runs.lock_anyway().bytes, 10 * one);
}

#[test]
fn a_runs_marks_enclose_spans_that_its_followers_share() {
    let bus = Bus::new(usize::MAX, 0);
    let a = RunId::parse("a").unwrap();
    let sub = bus.subscribe_run(&a);
    let at = |lines: u64, ino: u64| Checkpoint {
        offset: lines * 100,
        lines,
        ..Checkpoint::start(a.clone(), 1, ino)
    };
    let other = Checkpoint::start(RunId::parse("b").unwrap(), 1, 1);
    bus.publish_to_runs(&[at(0, 1), at(100, 1), other, at(300, 1), at(600, 1)], &[]);
    let lines = |s: Option<Span>| s.map(|s| (s.from.lines, s.to.lines, s.events.initialized()));
    assert_eq!(lines(sub.log.span(0)), Some((0, 300, false)));
    assert_eq!(lines(sub.log.span(299)), Some((0, 300, false)));
    assert_eq!(lines(sub.log.span(300)), Some((300, 600, false)));
    assert_eq!(lines(sub.log.span(600)), None, "no mark after it yet");
    let span = sub.log.span(10).unwrap();
    span.events.set(Arc::new(vec![ev("a", 0)])).unwrap();
    assert_eq!(lines(sub.log.span(10)), Some((0, 300, true)), "shared");
    // Another file under the same name: the old marks are forgotten.
    bus.publish_to_runs(&[at(0, 2)], &[]);
    assert_eq!(lines(sub.log.span(10)), None);
}

#[test]
fn a_read_goes_to_its_runs_followers_only_and_not_to_the_ring() {
    let bus = Bus::new(usize::MAX, 1);
    let a = RunId::parse("a").unwrap();
    let read = |run: &str, seqs: std::ops::Range<u64>| Batch {
        from: Checkpoint {
            lines: seqs.start,
            ..Checkpoint::start(RunId::parse(run).unwrap(), 1, 1)
        },
        checkpoint: Checkpoint::start(RunId::parse(run).unwrap(), 1, 1),
        events: seqs
            .map(|s| {
                let mut e = ev(run, s).event.clone();
                e.pipeline = Some("p".into());
                Arc::new(Published::new(RunId::parse(run).unwrap(), s, e))
            })
            .collect(),
        malformed: 0,
        cursor: None,
        followed: false,
    };
    // Nobody follows `a` yet: nothing is kept for it.
    bus.publish_read(&read("a", 0..2));
    assert_eq!(bus.run_logs_size(), (0, 0));
    let sub = bus.subscribe_run(&a);
    bus.publish_read(&read("a", 2..4));
    bus.publish_read(&read("b", 0..3));
    bus.publish_read(&read("a", 4..5));
    assert_eq!(run_seqs(&sub.log, None), vec![2, 3, 4]);
    assert!(sub.changed.has_changed().unwrap(), "the follower is woken");
    // Built for the run's followers: the event's JSON, with no cursor and no copy of it.
    let Taken::Events(got) = sub.log.after(None, 10) else {
        panic!("behind")
    };
    assert!(got.iter().all(|f| f.frame.as_ptr() == f.json.as_ptr()));
    let pipeline = |f: &Fed| f.pipeline.clone().unwrap();
    assert!(
        Arc::ptr_eq(&pipeline(&got[0]), &pipeline(&got[2])),
        "the pipeline's name held once for the run, across reads"
    );
    assert_eq!(
        bus.run_logs_size().1,
        got.iter().map(|f| f.cost()).sum::<usize>()
    );
    assert_eq!(got[0].cost(), got[0].json.len() + 192, "one encoding held");
    // The all-runs stream has none of them: it waits for their cursors.
    assert_eq!(bus.ring_size(), (0, 0));
}
