//! The command line: the arguments (clap), one module per command, the terminal rendering
//! beside the data it shows, and the mapping of every error to its exit code.
//!
//! `main.rs` parses and calls [`run()`]; each command module takes the loaded configuration and
//! its own arguments and returns an exit code, or a [`CliError`] that knows its own.
//!
//! | module | command |
//! |---|---|
//! | [`init`] | `init`: the example configuration and pipeline (`--workspace`: three pipelines) |
//! | [`run`](mod@run) | `run`: one run of the pipeline, now |
//! | [`forward`] | `forward`: the events runs left unpublished sent to `[cluster]` |
//! | [`pipelines`] | `pipelines`: the pipelines of the workspace and how each is doing |
//! | [`serve`] | `serve`: the dashboard (and `serve --example`) |
//! | [`scheduler`] | `scheduler install\|uninstall\|enable\|disable\|status` |
//! | [`reindex`] | `reindex`: the run index rebuilt from the run files |
//! | [`runs`] | `runs` and `runs show`: history for a terminal |
//! | [`tail`] | `tail`: one run's events as they are written |
//! | [`alerts`] | `alerts` (list) and `alerts test NAME` |
//! | [`doctor`] | `doctor`: the troubleshooting checks |
//! | [`prune`] | `prune`: `[retention]` applied now |
//! | [`openapi`] | `openapi`: the API's description, as the dashboard serves it |
//! | [`dashboard`] | the terminal's WebSocket client of the dashboard (`tail`, `doctor`) |
//! | [`term`] | colour, times and durations for a terminal |
//! | [`out`] | stdout and stderr: one writing path, a closed reader is a quiet exit 0 |

pub mod alerts;
pub mod dashboard;
pub mod doctor;
mod error;
pub mod forward;
pub mod init;
pub mod openapi;
pub mod out;
pub mod pipelines;
pub mod prune;
pub mod reindex;
pub mod run;
pub mod runs;
pub mod scheduler;
pub mod serve;
pub mod tail;
pub mod term;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::CliError;

use crate::config::{Config, Workspace};
use crate::event::RunId;

#[derive(Parser)]
#[command(
    name = "pipewatch",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PIPEWATCH_COMMIT"), ")"),
    about = "Run a data pipeline on a schedule and watch every run live",
    propagate_version = true
)]
pub struct Cli {
    /// The configuration file (default: ./pipewatch.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard: tail the run files, stream their events, answer the API.
    Serve(serve::Args),
    /// Rebuild the run index from the run files.
    Reindex,
    /// Install, remove, turn on or off, or show the task that runs the pipeline on its schedule.
    Scheduler(scheduler::Args),
    /// Write a commented example pipewatch.toml and the pipeline it runs into the current folder
    /// (with --workspace: a workspace of three pipelines).
    Init(init::Args),
    /// Run the pipeline once, now (in a workspace of several: the one named).
    Run(run::Args),
    /// Send the events this host's runs left unpublished to NATS JetStream ([cluster]), oldest
    /// run first, then exit (with --follow: keep sending what runs write).
    Forward(forward::Args),
    /// The pipelines of the workspace: schedule, whether it is on, last run, next run.
    Pipelines(pipelines::Args),
    /// The history of runs, newest first (list), or one run with its stages (show RUN_ID).
    #[command(args_conflicts_with_subcommands = true)]
    Runs(runs::Args),
    /// Follow a run's events as they are written, and exit with its result (0 success or
    /// skipped, 1 failure, cancelled or abandoned).
    Tail(tail::Args),
    /// Check the setup (configuration, events folder, recent runs, dashboard, WebSocket,
    /// scheduler task, inotify) and say what to fix. Exit code 1 if a check fails.
    Doctor(doctor::Args),
    /// Remove run files and index rows older than [retention] max_age or beyond max_runs
    /// (never a running run).
    Prune(prune::Args),
    /// The alerts the dashboard recorded, newest first, with their delivery (list), or a test
    /// alert sent to one [[alerts]] destination now (test NAME).
    Alerts(alerts::Args),
    /// Print the dashboard API's OpenAPI 3.1 description (what GET /api/openapi.json serves),
    /// for generating a client.
    Openapi,
    /// Print a shell completion script (for example: pipewatch completions bash >
    /// ~/.local/share/bash-completion/completions/pipewatch).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs the parsed command line: logging set up, the command run, its error printed.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(matches!(cli.command, Command::Serve(_)));
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(CliError::OutputClosed) => ExitCode::from(crate::exit::SUCCESS),
        Err(e) => {
            out::note(format_args!("pipewatch: error: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let cwd = std::env::current_dir()?;
    let workspace = || load_workspace(cli.config.as_deref(), &cwd);
    // The settings every pipeline shares: for the commands about the whole configuration.
    let config = || workspace().map(|ws| ws.shared().clone());
    match cli.command {
        Command::Init(args) => init::command(&cwd, args),
        Command::Serve(args) => serve::command(cli.config.as_deref(), &cwd, args),
        Command::Scheduler(args) => scheduler::command(&workspace()?, args),
        Command::Reindex => reindex::command(&config()?),
        Command::Run(args) => run::command(&workspace()?, args),
        Command::Forward(args) => forward::command(&workspace()?, args),
        Command::Runs(args) => runs::command(&config()?, args),
        Command::Tail(args) => tail::command(&workspace()?, args),
        Command::Pipelines(args) => pipelines::command(&workspace()?, args),
        Command::Doctor(args) => {
            let workspace =
                Config::locate(cli.config.as_deref(), &cwd).and_then(|path| Workspace::load(&path));
            doctor::command(workspace, args)
        }
        Command::Prune(args) => prune::command(&workspace()?, args),
        Command::Alerts(args) => alerts::command(&workspace()?, args),
        Command::Openapi => openapi::command(),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Generated into memory: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pipewatch", &mut script);
            out::stdout().text(&String::from_utf8_lossy(&script))?;
            Ok(crate::exit::SUCCESS)
        }
    }
}

/// `PIPEWATCH_LOG` decides, else: the dashboard logs what it does; one-shot commands only
/// what goes wrong.
fn init_logging(serving: bool) {
    let default = if serving { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIPEWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
}

fn load_workspace(explicit: Option<&Path>, cwd: &Path) -> Result<Workspace, CliError> {
    let path = Config::locate(explicit, cwd)?;
    Ok(Workspace::load(&path)?)
}

fn parse_run_id(s: &str) -> Result<RunId, String> {
    RunId::parse(s).map_err(|e| e.to_string())
}

/// Colour only on a terminal, and never with `NO_COLOR` set.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    term::colour_for(std::io::stderr().is_terminal())
}

/// How to paint what goes to stdout.
fn stdout_paint() -> term::Paint {
    use std::io::IsTerminal;
    term::Paint::new(term::colour_for(std::io::stdout().is_terminal()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::runner::invocation::Invocation;

    /// Every flag the dashboard and the schedulers put on a `pipewatch run` command line is
    /// one `run` accepts.
    #[test]
    fn every_invocation_is_a_command_line_run_parses() {
        let id = RunId::parse("20260101T000000Z-abcd").unwrap();
        let mut inv =
            Invocation::new("pw", "/w/pipewatch.toml", "manual").from_dashboard(Some(id.clone()));
        inv.pipeline = Some("sync".into());
        inv.params = vec![("region".into(), "us=east".into())];
        inv.stages = vec!["load".into(), "report".into()];
        inv.occurrence = Some(chrono::Utc::now());
        let parse = |inv: &Invocation| {
            let mut argv = vec![std::ffi::OsString::from("pipewatch")];
            argv.extend(inv.args());
            Cli::try_parse_from(argv)
        };
        assert!(parse(&inv).is_ok(), "{:?}", parse(&inv).err());
        inv.stages.clear();
        inv.params.clear();
        inv.retry = Some((id, true));
        assert!(parse(&inv).is_ok(), "{:?}", parse(&inv).err());
    }
}
