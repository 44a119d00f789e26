//! What `pipewatch run` shows while it runs: a live view of the stages on a terminal (like
//! cargo's or docker compose's), one plain line per change otherwise (cron mail, CI logs), or
//! nothing with `--quiet`. The journal is the record; this is only for the person watching.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sync::MutexExt;

/// How a stage or a run ended, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Success,
    Failure,
    Skipped,
    Cancelled,
}

impl Ending {
    pub fn word(self) -> &'static str {
        match self {
            Ending::Success => "success",
            Ending::Failure => "failure",
            Ending::Skipped => "skipped",
            Ending::Cancelled => "cancelled",
        }
    }

    fn mark(self) -> &'static str {
        match self {
            Ending::Success => "✓",
            Ending::Failure => "✗",
            Ending::Skipped => "-",
            Ending::Cancelled => "■",
        }
    }
}

/// Receives the run's progress.
pub trait Reporter: Send + Sync {
    fn run_started(&self, run_id: &str, stages: &[&str]);
    fn stage_started(&self, stage: &str, attempt: u32);
    fn stage_retrying(&self, stage: &str, next_attempt: u32, delay: Duration, why: &str);
    fn stage_finished(&self, stage: &str, ending: Ending, took: Duration, detail: &str);
    fn run_finished(&self, run_id: &str, ending: Ending, took: Duration, journal: &str);
    /// A message outside the stage list (waiting for another run, …).
    fn note(&self, msg: &str);
}

/// Picks the reporter for the current output: live on a terminal, plain lines otherwise.
pub fn for_terminal(quiet: bool) -> Box<dyn Reporter> {
    use std::io::IsTerminal;
    if quiet {
        Box::new(Quiet)
    } else if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Plain)
    }
}

pub struct Quiet;

impl Reporter for Quiet {
    fn run_started(&self, _: &str, _: &[&str]) {}
    fn stage_started(&self, _: &str, _: u32) {}
    fn stage_retrying(&self, _: &str, _: u32, _: Duration, _: &str) {}
    fn stage_finished(&self, _: &str, _: Ending, _: Duration, _: &str) {}
    fn run_finished(&self, _: &str, _: Ending, _: Duration, _: &str) {}
    fn note(&self, _: &str) {}
}

/// One line per change, on stderr.
pub struct Plain;

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Plain {
    fn line(&self, s: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{s}");
    }
}

impl Reporter for Plain {
    fn run_started(&self, run_id: &str, stages: &[&str]) {
        self.line(&format!("run {run_id}: {} stages", stages.len()));
    }
    fn stage_started(&self, stage: &str, attempt: u32) {
        if attempt > 1 {
            self.line(&format!("{stage}: started (attempt {attempt})"));
        } else {
            self.line(&format!("{stage}: started"));
        }
    }
    fn stage_retrying(&self, stage: &str, next: u32, delay: Duration, why: &str) {
        self.line(&format!(
            "{stage}: {why}; retrying in {} (attempt {next})",
            secs(delay)
        ));
    }
    fn stage_finished(&self, stage: &str, ending: Ending, took: Duration, detail: &str) {
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        self.line(&format!(
            "{stage}: {} in {}{detail}",
            ending.word(),
            secs(took)
        ));
    }
    fn run_finished(&self, run_id: &str, ending: Ending, took: Duration, journal: &str) {
        self.line(&format!(
            "run {run_id}: {} in {} — events in {journal}",
            ending.word(),
            secs(took)
        ));
    }
    fn note(&self, msg: &str) {
        self.line(msg);
    }
}

/// A line per stage, redrawn in place.
pub struct Live {
    multi: MultiProgress,
    /// Stage name to its line; filled when the run starts.
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Live {
    fn new() -> Live {
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, stage: &str) -> Option<ProgressBar> {
        self.bars.lock_anyway().get(stage).cloned()
    }

    fn style(template: &str) -> ProgressStyle {
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Reporter for Live {
    fn run_started(&self, run_id: &str, stages: &[&str]) {
        let _ = self.multi.println(format!("run {run_id}"));
        let width = stages.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut bars = self.bars.lock_anyway();
        for s in stages {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(Self::style("  · {prefix} {msg:.dim}"));
            bar.set_prefix(format!("{s:width$}"));
            bar.set_message("waiting");
            bar.tick();
            bars.insert(s.to_string(), bar);
        }
    }
    fn stage_started(&self, stage: &str, attempt: u32) {
        if let Some(bar) = self.bar(stage) {
            bar.set_style(Self::style(
                "  {spinner:.cyan} {prefix} {msg:.cyan} {elapsed:.dim}",
            ));
            bar.reset_elapsed();
            bar.set_message(if attempt > 1 {
                format!("running (attempt {attempt})")
            } else {
                "running".to_string()
            });
            bar.enable_steady_tick(Duration::from_millis(100));
        }
    }
    fn stage_retrying(&self, stage: &str, next: u32, delay: Duration, why: &str) {
        if let Some(bar) = self.bar(stage) {
            bar.set_style(Self::style("  {spinner:.yellow} {prefix} {msg:.yellow}"));
            bar.set_message(format!(
                "{why}; retrying in {} (attempt {next})",
                secs(delay)
            ));
        }
    }
    fn stage_finished(&self, stage: &str, ending: Ending, took: Duration, detail: &str) {
        if let Some(bar) = self.bar(stage) {
            let colour = match ending {
                Ending::Success => "green",
                Ending::Failure => "red",
                Ending::Skipped | Ending::Cancelled => "yellow",
            };
            bar.set_style(Self::style(&format!("  {{msg:.{colour}}}")));
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            };
            let prefix = bar.prefix();
            bar.finish_with_message(format!(
                "{} {prefix} {} {}{detail}",
                ending.mark(),
                ending.word(),
                secs(took)
            ));
        }
    }
    fn run_finished(&self, run_id: &str, ending: Ending, took: Duration, journal: &str) {
        // Every stage's line is final now (finished bars are not redrawn): the summary goes
        // below them, not above.
        Plain.run_finished(run_id, ending, took, journal);
    }
    fn note(&self, msg: &str) {
        let _ = self.multi.println(msg);
    }
}
