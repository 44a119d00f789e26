//! A run file of arbitrary bytes through the tailer's reader, in small chunks and batches:
//! never a panic; events come out in strictly increasing `seq`, each with its JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipewatch::event::RunId;
use pipewatch::tail::{ReadLimits, read_file};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pipeline_fuzz.jsonl");
    std::fs::write(&path, data).expect("write");
    let id = RunId::parse("fuzz").expect("valid id");
    let limits = ReadLimits {
        max_line_bytes: 256,
        max_batch_bytes: 512,
        chunk_bytes: 37,
    };
    let mut checkpoint = None;
    let mut last: Option<u64> = None;
    let mut lines = 0u64;
    loop {
        let read = read_file(&path, &id, checkpoint.as_ref(), 0, limits).expect("readable");
        for e in &read.batch.events {
            assert!(last.is_none_or(|l| e.seq > l), "seq must increase");
            last = Some(e.seq);
            let v: serde_json::Value = serde_json::from_str(&e.json).expect("valid json");
            assert_eq!(v["seq"], e.seq);
        }
        assert!(read.batch.checkpoint.lines >= lines);
        lines = read.batch.checkpoint.lines;
        checkpoint = Some(read.batch.checkpoint);
        if !read.more {
            break;
        }
    }
    let complete = data.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(lines, complete, "every complete line is counted");
});
