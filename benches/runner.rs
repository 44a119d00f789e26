//! Runner benchmarks (`cargo bench --bench runner`): figures go to docs/benchmarks.md.
//!
//! - overhead: 50 stages of `true` run by pipewatch, against the same 50 commands in one
//!   shell script; reported as the time added per stage.
//! - capture: a stage printing 1,000,000 short lines; reported as lines per second into the
//!   journal, and the stage's own duration against the same command writing to /dev/null.
//!
//! Each figure is the median of several runs of the release binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pipewatch");
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_pipewatch(dir: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new(BIN)
        .args(["run", "--quiet", "--no-notify"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .expect("run pipewatch");
    assert!(st.success(), "pipewatch run failed");
    t.elapsed()
}

fn sh(script: &str, dir: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run sh");
    assert!(st.success());
    t.elapsed()
}

fn overhead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = String::from("[pipeline]\nname = \"bench\"\n");
    let mut script = String::new();
    for i in 0..50 {
        // A chain, so stages run one after another like the script's lines.
        let needs = if i == 0 {
            String::new()
        } else {
            format!("needs = [\"s{}\"]\n", i - 1)
        };
        config.push_str(&format!(
            "[[stages]]\nname = \"s{i}\"\nrun = \"true\"\n{needs}"
        ));
        script.push_str("sh -c true\n");
    }
    std::fs::write(dir.path().join("pipewatch.toml"), config).expect("config");
    std::fs::write(dir.path().join("all.sh"), script).expect("script");
    let pw = median((0..ROUNDS).map(|_| run_pipewatch(dir.path())).collect());
    let base = median((0..ROUNDS).map(|_| sh("sh all.sh", dir.path())).collect());
    let added = pw.saturating_sub(base).as_secs_f64() * 1000.0 / 50.0;
    println!(
        "overhead: 50 stages of `true`: pipewatch {:.1} ms, shell script {:.1} ms, added per stage {added:.2} ms (target < 2 ms)",
        pw.as_secs_f64() * 1000.0,
        base.as_secs_f64() * 1000.0
    );
}

fn capture() {
    // `seq` is a firehose (about 90 M lines/s to /dev/null): the worst case. `awk` prints the
    // same count at the pace of a program doing a little work per line.
    capture_one("seq", "seq 1 1000000");
    capture_one(
        "awk",
        "awk 'BEGIN { for (i = 1; i <= 1000000; i++) print \"line \" i }'",
    );
}

fn capture_one(label: &str, cmd: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipewatch.toml"),
        format!("[pipeline]\nname = \"bench\"\n[[stages]]\nname = \"print\"\nrun = '''{cmd}'''\n"),
    )
    .expect("config");
    let mut totals = Vec::new();
    let mut stage_ms = Vec::new();
    for _ in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(dir.path().join("logs"));
        totals.push(run_pipewatch(dir.path()));
        let events = dir.path().join("logs/events");
        let file = std::fs::read_dir(&events)
            .expect("events dir")
            .filter_map(|e| e.ok())
            .next()
            .expect("one run file")
            .path();
        let text = std::fs::read_to_string(file).expect("journal");
        let lines = text
            .lines()
            .filter(|l| l.contains("\"event\":\"log\""))
            .count();
        assert_eq!(lines, 1_000_000, "every line journaled");
        let success = text
            .lines()
            .find(|l| l.contains("\"stage\":\"print\"") && l.contains("\"event\":\"success\""))
            .expect("stage success");
        let v: serde_json::Value = serde_json::from_str(success).expect("json");
        stage_ms.push(Duration::from_millis(
            v["data"]["duration_ms"].as_u64().unwrap_or_default(),
        ));
    }
    let total = median(totals);
    let stage = median(stage_ms);
    let to_null = median(
        (0..ROUNDS)
            .map(|_| sh(&format!("{cmd} > /dev/null"), dir.path()))
            .collect(),
    );
    let to_pipe = median(
        (0..ROUNDS)
            .map(|_| sh(&format!("{cmd} | cat > /dev/null"), dir.path()))
            .collect(),
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "capture ({label}): 1,000,000 lines journaled in {:.0} ms = {:.0} lines/s (target >= 300,000)",
        ms(total),
        1_000_000.0 / total.as_secs_f64()
    );
    println!(
        "capture ({label}): the stage ran {:.0} ms under pipewatch; {:.0} ms into /dev/null ({:+.0}%), {:.0} ms into a pipe to cat",
        ms(stage),
        ms(to_null),
        (ms(stage) / ms(to_null) - 1.0) * 100.0,
        ms(to_pipe)
    );
}

fn main() {
    // `cargo bench` passes --bench; a filter argument picks one benchmark.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if want("overhead") {
        overhead();
    }
    if want("capture") {
        capture();
    }
}
