//! `pipewatch run`: one run of the pipeline, now, with the terminal view of its stages.

use std::sync::Arc;

use super::{CliError, parse_run_id};
use crate::config::Workspace;
use crate::event::RunId;
use crate::exit;
use crate::runner::progress::{self, Reporter};
use crate::runner::{self, RunOptions, RunStatus};

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
}

/// Exit code 0 for success (or a run skipped by the overlap policy), 1 for a failed or
/// cancelled one.
pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let config = ws.select(args.pipeline.as_deref(), "run")?;
    let reporter: Arc<dyn Reporter> = Arc::from(progress::for_terminal(args.quiet));
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(runner::run(
        config,
        RunOptions {
            source: args.source,
            announce: !args.no_notify,
            run_id: args.run_id,
        },
        reporter,
    ))?;
    Ok(match outcome.status {
        RunStatus::Success | RunStatus::Skipped => exit::SUCCESS,
        RunStatus::Failure | RunStatus::Cancelled => exit::FAILURE,
    })
}
