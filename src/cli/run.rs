//! `pipewatch run`: one run of the pipeline, now, with the terminal view of its stages.

use std::sync::Arc;

use super::{CliError, parse_run_id};
use crate::cluster::{claim, forward};
use crate::config::{Workspace, params};
use crate::event::RunId;
use crate::exit;
use crate::runner::progress::{self, Reporter};
use crate::runner::{self, RunOptions, RunStatus, plan};

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline to run: required in a workspace of several pipelines.
    #[arg(value_name = "PIPELINE")]
    pipeline: Option<String>,
    /// Recorded as the `source` of every event (cli, scheduler, manual, ...).
    #[arg(long, default_value = "cli")]
    source: String,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Do not notify the dashboard.
    #[arg(long)]
    no_notify: bool,
    /// Use this run id instead of generating one (used by the dashboard's "Run now").
    #[arg(long, hide = true, value_parser = parse_run_id)]
    run_id: Option<RunId>,
    /// A parameter's value for this run (repeatable); see [pipeline.params].
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = params::parse_pair)]
    params: Vec<(String, String)>,
    /// Run only this stage (repeatable): the others are recorded `skipped` (not_selected) and
    /// count as done for the stages that need them.
    #[arg(long = "stage", value_name = "NAME", conflicts_with = "retry")]
    stages: Vec<String>,
    /// Retry RUN_ID from where it failed: reuse the stages that succeeded in it, run the rest,
    /// with its parameters.
    #[arg(long, value_name = "RUN_ID", value_parser = parse_run_id, conflicts_with = "params")]
    retry: Option<RunId>,
    /// With --retry: retry even though the pipeline's stages or parameters changed since.
    #[arg(long, requires = "retry")]
    force: bool,
    /// The occurrence of the schedule this run is for (RFC 3339), given by the built-in
    /// scheduler; under [cluster] a scheduled run claims it.
    #[arg(long, hide = true, value_parser = parse_occurrence)]
    occurrence: Option<chrono::DateTime<chrono::Utc>>,
}

fn parse_occurrence(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Exit code 0 for success (or a run skipped by the overlap policy), 1 for a failed or
/// cancelled one.
pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let recorded = match &args.retry {
        Some(id) => Some(recorded(ws, id)?),
        None => None,
    };
    // A retry is of the pipeline its run was a run of.
    let named = match (&args.pipeline, &recorded) {
        (None, Some(r)) if ws.pipelines.len() > 1 => r.pipeline().map(str::to_string),
        (name, _) => name.clone(),
    };
    let config = ws.select(named.as_deref(), "run")?;
    let (plan, params, retry_of) = match (&args.retry, &recorded) {
        (Some(id), Some(r)) => {
            let retry = plan::retry(config, id, r, args.force)?;
            (retry.plan, retry.params, Some(retry.of))
        }
        _ => (
            if args.stages.is_empty() {
                plan::Plan::default()
            } else {
                plan::only(config, &args.stages)?
            },
            params::resolve(&config.pipeline.params, &args.params)?,
            None,
        ),
    };
    let reporter: Arc<dyn Reporter> = Arc::from(progress::for_terminal(args.quiet));
    let rt = tokio::runtime::Runtime::new()?;
    // Under [cluster], a scheduled run first claims its occurrence: one host runs it, with
    // the run id it claimed it for.
    let mut args = args;
    let claimed = if config.cluster.is_some() && claim::is_scheduled(&args.source) {
        let run_id = args
            .run_id
            .clone()
            .unwrap_or_else(|| RunId::generate(chrono::Utc::now()));
        let decision = rt.block_on(claim::decide(
            config,
            &args.source,
            args.occurrence,
            &run_id,
        ));
        args.run_id = Some(run_id);
        decision
    } else {
        claim::Decision::Run(None)
    };
    let options = RunOptions {
        source: args.source,
        announce: !args.no_notify,
        run_id: args.run_id,
        params,
        plan,
        retry_of,
    };
    match claimed {
        claim::Decision::Run(note) => {
            if let Some(note) = note {
                reporter.note(&note);
            }
        }
        claim::Decision::NotHere(msg) => {
            reporter.note(&msg);
            return Ok(exit::SUCCESS);
        }
        claim::Decision::Unreachable(msg) => {
            // Recorded in the run file like any run: forwarded with the backlog once the
            // engine answers again.
            rt.block_on(runner::record_skipped(
                config,
                options,
                reporter,
                claim::ENGINE_UNREACHABLE,
                &msg,
            ))?;
            return Ok(exit::SUCCESS);
        }
    }
    let outcome = rt.block_on(async {
        // With [cluster], the run's events (and what older runs left) go to the engine as
        // they are written, in the background: the run never waits for it.
        let forwarding = config.cluster.clone().map(|c| {
            forward::InRun::start(
                c,
                forward::Folders::of(ws),
                crate::cluster::StreamLimits::of(ws),
            )
        });
        let outcome = runner::run(config, options, reporter).await;
        if let Some(f) = forwarding
            && !f.finish().await
            && let Err(e) = forward::hand_over(&config.path)
        {
            tracing::warn!("cannot start `pipewatch forward` for what is left: {e}");
        }
        outcome
    })?;
    Ok(match outcome.status {
        RunStatus::Success | RunStatus::Skipped => exit::SUCCESS,
        RunStatus::Failure | RunStatus::Cancelled => exit::FAILURE,
    })
}

/// What run `id` recorded: from this host's events folder, or, with `[cluster]`, from the copy
/// of every host's run files that `serve` keeps beside it (a run of another host, retried from
/// the dashboard here).
fn recorded(ws: &Workspace, id: &RunId) -> Result<plan::Recorded, CliError> {
    let shared = ws.shared();
    match plan::Recorded::read(&shared.server.events_dir, id) {
        Err(plan::PlanError::NoRun(why)) if shared.cluster.is_some() => {
            let mirror = crate::server::mirror_dir(&shared.server.state_dir);
            plan::Recorded::read(&mirror, id).map_err(|e| match e {
                plan::PlanError::NoRun(_) => plan::PlanError::NoRun(why).into(),
                e => e.into(),
            })
        }
        r => Ok(r?),
    }
}
