//! What a run leaves out of its stages: the stages a retry reuses from the run it retries
//! ([`retry`]: `pipewatch run --retry RUN_ID`, `POST /api/runs/{run_id}/retry`) and the
//! stages not chosen with `--stage` ([`only`]). A stage left out is recorded `skipped` at the
//! run's start — `data.reason` `reused` (with `data.from_run`) or `not_selected` — and counts
//! as done for the stages that need it; the others run as usual, in dependency order.
//!
//! A retry is refused (unless forced) when the pipeline's stages changed since the run it
//! retries — a stage added, removed or renamed, or its `needs` changed — as the run's `start`
//! event recorded them (`data.stages`, `data.stage_needs`): what it reuses would no longer be
//! what the pipeline would have done.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::Config;
use crate::config::params;
use crate::event::{Event, PIPELINE_STAGE, RunId, kind};
use crate::index::history::read_batches;
use crate::runner::liveness::{self, Liveness};

/// Why a stage is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passed {
    /// It succeeded in this earlier run (the run retried, or the one that run reused it from).
    Reused { from_run: RunId },
    /// `--stage` chose other stages.
    NotSelected,
}

/// The stages a run leaves out, by index in `Config::stages`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub passed: BTreeMap<usize, Passed>,
}

/// A run that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No such run to retry.
    #[error("{0}")]
    NoRun(String),
    /// The run cannot be retried as asked (it succeeded, is running, is another pipeline's,
    /// or the pipeline changed since).
    #[error("{0}")]
    Refused(String),
    /// A `--stage` the pipeline does not have.
    #[error("{0}")]
    UnknownStage(String),
    /// The run's file cannot be read.
    #[error("{0}")]
    Read(String),
}

impl crate::exit::Code for PlanError {
    fn exit_code(&self) -> u8 {
        match self {
            PlanError::Read(_) => crate::exit::ENVIRONMENT,
            _ => crate::exit::USAGE,
        }
    }
}

/// Only the stages named: every other stage is left out.
pub fn only(config: &Config, names: &[String]) -> Result<Plan, PlanError> {
    for n in names {
        if !config.stages.iter().any(|s| s.name == *n) {
            return Err(PlanError::UnknownStage(format!(
                "no stage {n:?} in pipeline {}: its stages are {}",
                config.pipeline.name,
                config.stage_names().join(", ")
            )));
        }
    }
    Ok(Plan {
        passed: config
            .stages
            .iter()
            .enumerate()
            .filter(|(_, s)| !names.contains(&s.name))
            .map(|(i, _)| (i, Passed::NotSelected))
            .collect(),
    })
}

/// A retry, planned: what it reuses, and the parameters of the run it retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub of: RunId,
    pub plan: Plan,
    pub params: BTreeMap<String, String>,
}

/// What a run file says about the run, as far as a retry needs it: read once
/// ([`Recorded::read`]), then asked which pipeline it ran and planned from ([`retry`]).
#[derive(Debug, Default)]
pub struct Recorded {
    pipeline: Option<String>,
    /// `data.stages` of its start, in order.
    stages: Option<Vec<String>>,
    /// `data.stage_needs` of its start (runs written before it existed have none).
    needs: Option<BTreeMap<String, Vec<String>>>,
    params: Vec<(String, String)>,
    /// Its final run-level event.
    ended: Option<String>,
    /// Each stage's final event, with `data.from_run` for a stage it reused.
    stage_end: BTreeMap<String, (String, Option<String>, Option<String>)>,
}

impl Recorded {
    /// Reads run `id`'s file in `events_dir`.
    pub fn read(events_dir: &Path, id: &RunId) -> Result<Recorded, PlanError> {
        let path = events_dir.join(id.file_name());
        let path = path.as_path();
        let mut r = Recorded::default();
        read_batches(path, id, |batch| {
            for e in &batch.events {
                r.take(&e.event);
            }
        })
        .map_err(|e| match &e {
            crate::tail::TailError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                PlanError::NoRun(format!("no run {id}: {} does not exist", path.display()))
            }
            _ => PlanError::Read(e.to_string()),
        })?;
        Ok(r)
    }

    fn take(&mut self, e: &Event) {
        let data = e.data.as_ref();
        if e.stage == PIPELINE_STAGE {
            if e.event == kind::START {
                self.pipeline = e.pipeline.clone();
                self.stages = data
                    .and_then(|d| d.get("stages"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                self.needs = data
                    .and_then(|d| d.get("stage_needs"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok());
                self.params = data
                    .and_then(|d| d.get("params"))
                    .and_then(|v| v.as_object())
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
            } else if e.is_run_terminal() {
                self.ended = Some(e.event.clone());
            }
        } else if kind::STAGE_FINAL.contains(&e.event.as_str()) {
            self.stage_end.insert(
                e.stage.clone(),
                (
                    e.event.clone(),
                    e.data_str("reason").map(str::to_string),
                    e.data_str("from_run").map(str::to_string),
                ),
            );
        }
    }

    /// How the pipeline's stages differ from what the run recorded, for people; empty when
    /// they do not.
    fn changes(&self, config: &Config) -> Vec<String> {
        let now: Vec<&str> = config.stage_names();
        let Some(then) = &self.stages else {
            return vec!["the run recorded no list of stages".to_string()];
        };
        let mut out = Vec::new();
        for s in then.iter().filter(|s| !now.contains(&s.as_str())) {
            out.push(format!("stage {s} is gone"));
        }
        for s in now.iter().filter(|s| !then.iter().any(|t| t == *s)) {
            out.push(format!("stage {s} is new"));
        }
        if let Some(needs) = &self.needs {
            for (stage, now_needs) in config.stage_needs() {
                if let Some(was) = needs.get(stage) {
                    let mut a: Vec<&str> = was.iter().map(String::as_str).collect();
                    let mut b = now_needs.clone();
                    a.sort_unstable();
                    b.sort_unstable();
                    if a != b {
                        out.push(format!(
                            "stage {stage} needed [{}] and now needs [{}]",
                            was.join(", "),
                            now_needs.join(", ")
                        ));
                    }
                }
            }
        }
        out
    }
}

impl Recorded {
    /// The pipeline the run is a run of, as its start event says: what `pipewatch run
    /// --retry` runs in a workspace when no pipeline is named.
    pub fn pipeline(&self) -> Option<&str> {
        self.pipeline.as_deref()
    }
}

/// Plans a retry of run `id` (as `r` read it) of `config`'s pipeline: its stages that succeeded (or that it
/// reused itself) are reused, the rest run again, with its parameters. Refused for a run that
/// succeeded, is still running, is another pipeline's, or — unless `force` — whose pipeline's
/// stages or parameters changed since.
pub fn retry(config: &Config, id: &RunId, r: &Recorded, force: bool) -> Result<Retry, PlanError> {
    if r.pipeline.is_none() && r.stages.is_none() {
        return Err(PlanError::NoRun(format!(
            "run {id} has no start event: there is nothing to retry"
        )));
    }
    if let Some(p) = &r.pipeline
        && *p != config.pipeline.name
    {
        return Err(PlanError::Refused(format!(
            "run {id} is a run of pipeline {p}, not of {}",
            config.pipeline.name
        )));
    }
    match r.ended.as_deref() {
        Some(kind::SUCCESS) => {
            return Err(PlanError::Refused(format!(
                "run {id} succeeded: there is nothing to retry"
            )));
        }
        None if liveness::liveness(&config.server.state_dir, id) == Liveness::Alive => {
            return Err(PlanError::Refused(format!(
                "run {id} is still running: cancel it first, or wait for it to end"
            )));
        }
        _ => {}
    }
    let changes = r.changes(config);
    if !changes.is_empty() && !force {
        return Err(PlanError::Refused(format!(
            "the stages of pipeline {} changed since run {id} ({}): what a retry would reuse is \
             no longer what the pipeline runs. Start a new run, or retry anyway with --force \
             (the API: {{\"force\": true}})",
            config.pipeline.name,
            changes.join("; ")
        )));
    }
    let params = match params::resolve(&config.pipeline.params, &r.params) {
        Ok(p) => p,
        Err(e) if !force => {
            return Err(PlanError::Refused(format!(
                "the parameters of pipeline {} changed since run {id} ({e}): retry anyway with \
                 --force to drop what no longer applies",
                config.pipeline.name
            )));
        }
        Err(_) => {
            // Forced: keep what still fits, the defaults for the rest.
            let fits: Vec<(String, String)> =
                r.params
                    .iter()
                    .filter(|(n, v)| {
                        config.pipeline.params.iter().any(|p| {
                            p.name == *n && (p.choices.is_empty() || p.choices.contains(v))
                        })
                    })
                    .cloned()
                    .collect();
            params::resolve(&config.pipeline.params, &fits)
                .map_err(|e| PlanError::Refused(e.to_string()))?
        }
    };
    let mut passed = BTreeMap::new();
    for (i, stage) in config.stages.iter().enumerate() {
        let from_run = match r.stage_end.get(&stage.name) {
            Some((event, _, _)) if event == kind::SUCCESS => Some(id.clone()),
            Some((event, Some(reason), Some(from)))
                if event == kind::SKIPPED && reason == "reused" =>
            {
                RunId::parse(from).ok()
            }
            _ => None,
        };
        if let Some(from_run) = from_run {
            passed.insert(i, Passed::Reused { from_run });
        }
    }
    Ok(Retry {
        of: id.clone(),
        plan: Plan { passed },
        params,
    })
}
