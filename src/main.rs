//! The `pipewatch` command line: parses arguments, calls the library, maps the outcome to an
//! exit code (see `pipewatch::exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use pipewatch::config::{Config, ConfigError};
use pipewatch::exit;
use pipewatch::runner::{self, RunOptions, RunStatus};

#[derive(Parser)]
#[command(
    name = "pipewatch",
    version,
    about = "Run a data pipeline on a schedule and watch every run live",
    propagate_version = true
)]
struct Cli {
    /// The configuration file (default: ./pipewatch.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented example pipewatch.toml and the pipeline it runs into the current folder.
    Init,
    /// Run the pipeline once, now.
    Run {
        /// Recorded as the `source` of every event (cli, scheduler, manual, ...).
        #[arg(long, default_value = "cli")]
        source: String,
        /// Print nothing but errors.
        #[arg(long, short)]
        quiet: bool,
        /// Do not notify the dashboard.
        #[arg(long)]
        no_notify: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIPEWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => exit::code(code),
        Err(e) => {
            eprintln!("pipewatch: error: {e:#}");
            let code = if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<pipewatch::init::InitError>()
                    .is_some_and(|e| matches!(e, pipewatch::init::InitError::Exists(_)))
            {
                exit::USAGE
            } else {
                exit::ENVIRONMENT
            };
            exit::code(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let cwd = std::env::current_dir()?;
    match cli.command {
        Command::Init => {
            let files = pipewatch::init::write_example(&cwd)?;
            for f in &files {
                println!("wrote {}", f.strip_prefix(&cwd).unwrap_or(f).display());
            }
            println!("next: pipewatch run   (or pipewatch serve to watch it live)");
            Ok(exit::SUCCESS)
        }
        Command::Run {
            source,
            quiet,
            no_notify,
        } => {
            let config = load_config(cli.config.as_deref(), &cwd)?;
            let reporter: Arc<dyn pipewatch::progress::Reporter> =
                Arc::from(pipewatch::progress::for_terminal(quiet));
            let rt = tokio::runtime::Runtime::new()?;
            let outcome = rt.block_on(runner::run(
                &config,
                RunOptions {
                    source,
                    announce: !no_notify,
                },
                reporter,
            ))?;
            Ok(match outcome.status {
                RunStatus::Success | RunStatus::Skipped => exit::SUCCESS,
                RunStatus::Failure | RunStatus::Cancelled => exit::FAILURE,
            })
        }
    }
}

fn load_config(
    explicit: Option<&std::path::Path>,
    cwd: &std::path::Path,
) -> anyhow::Result<Config> {
    let path = Config::locate(explicit, cwd)?;
    Ok(Config::load(&path)?)
}
