//! The `pipewatch` command line: parses arguments, calls the library, maps the outcome to an
//! exit code (see `pipewatch::exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use pipewatch::config::{Config, ConfigError};
use pipewatch::event::RunId;
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
    /// Serve the dashboard: tail the run files, stream their events, answer the API.
    Serve {
        /// Listen on this address instead of [server] bind (for example 127.0.0.1:9000).
        #[arg(long, value_name = "ADDR")]
        bind: Option<std::net::SocketAddr>,
        /// Serve the example pipeline from ./pipewatch-example (written there by `init` if
        /// missing) and start one run of it at once.
        #[arg(long, conflicts_with = "config")]
        example: bool,
    },
    /// Rebuild the run index from the run files.
    Reindex,
    /// Install, remove, turn on or off, or show the task that runs the pipeline on its schedule.
    Scheduler {
        #[command(subcommand)]
        action: SchedulerAction,
        /// builtin, windows, systemd or cron (default: [scheduler] backend).
        #[arg(long, global = true, value_enum)]
        backend: Option<BackendArg>,
        /// Print the status as JSON (the object of GET /api/scheduler/status).
        #[arg(long, global = true)]
        json: bool,
        /// systemd: a system unit (systemctl --system) instead of the user's.
        #[arg(long, global = true)]
        system: bool,
    },
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
        /// Use this run id instead of generating one (used by the dashboard's "Run now").
        #[arg(long, hide = true, value_parser = parse_run_id)]
        run_id: Option<RunId>,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum SchedulerAction {
    /// Create (or replace) the task and turn it on.
    Install,
    /// Remove the task.
    Uninstall,
    /// Turn the task on.
    Enable,
    /// Turn the task off (a run going on is left to finish).
    Disable,
    /// Show whether the task exists, is on, and its next and last run.
    Status,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Builtin,
    Windows,
    Systemd,
    Cron,
}

impl From<BackendArg> for pipewatch::config::Backend {
    fn from(b: BackendArg) -> Self {
        use pipewatch::config::Backend;
        match b {
            BackendArg::Builtin => Backend::Builtin,
            BackendArg::Windows => Backend::Windows,
            BackendArg::Systemd => Backend::Systemd,
            BackendArg::Cron => Backend::Cron,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIPEWATCH_LOG").unwrap_or_else(|_| {
                // The dashboard logs what it does; one-shot commands only what goes wrong.
                tracing_subscriber::EnvFilter::new(match cli.command {
                    Command::Serve { .. } => "info",
                    _ => "warn",
                })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .init();
    match run(cli) {
        Ok(code) => exit::code(code),
        Err(e) => {
            eprintln!("pipewatch: error: {e:#}");
            let code = if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<pipewatch::scheduler::SchedulerError>()
                    .is_some_and(|e| {
                        !e.is_tool_error()
                            && !matches!(
                                e,
                                pipewatch::scheduler::SchedulerError::Io { .. }
                                    | pipewatch::scheduler::SchedulerError::Exe(_)
                            )
                    })
                || e.downcast_ref::<pipewatch::server::ServeError>()
                    .is_some_and(|e| matches!(e, pipewatch::server::ServeError::Unprotected(_)))
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
        Command::Serve { bind, example } => {
            let mut config = if example {
                let dir = cwd.join("pipewatch-example");
                if !dir.join(pipewatch::config::FILE_NAME).exists() {
                    pipewatch::init::write_example(&dir)?;
                    println!("wrote the example pipeline into {}", dir.display());
                }
                Config::load(&dir.join(pipewatch::config::FILE_NAME))?
            } else {
                load_config(cli.config.as_deref(), &cwd)?
            };
            if let Some(b) = bind {
                config.server.bind = b;
            }
            pipewatch::server::check_bind(config.server.bind, &config.server.token)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.server.bind)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.bind))?;
                let addr = listener.local_addr()?;
                println!("pipewatch dashboard: http://{addr}/");
                let exe = std::env::current_exe()?;
                if example {
                    // A first run to watch right away; it runs on its own, like any run.
                    std::process::Command::new(&exe)
                        .arg("run")
                        .arg("--config")
                        .arg(&config.path)
                        .args(["--source", "manual", "--quiet", "--no-notify"])
                        .stdin(std::process::Stdio::null())
                        .spawn()
                        .map(|mut child| std::thread::spawn(move || child.wait()))
                        .map_err(|e| anyhow::anyhow!("cannot start the example run: {e}"))?;
                }
                pipewatch::server::serve(
                    listener,
                    config,
                    pipewatch::server::ServeOptions {
                        exe,
                        ring: pipewatch::bus::DEFAULT_RING,
                    },
                    async {
                        let sig = pipewatch::shutdown::signalled().await;
                        tracing::info!("{sig} received");
                    },
                )
                .await?;
                anyhow::Ok(exit::SUCCESS)
            })
        }
        Command::Scheduler {
            action,
            backend,
            json,
            system,
        } => {
            use pipewatch::scheduler;
            let config = load_config(cli.config.as_deref(), &cwd)?;
            let kind = backend.map_or(config.scheduler.backend, Into::into);
            let b = scheduler::backend(
                kind,
                &config,
                scheduler::OsOptions {
                    system,
                    ..scheduler::OsOptions::default()
                },
            );
            let status = match action {
                SchedulerAction::Install => b.install(),
                SchedulerAction::Uninstall => b.uninstall(),
                SchedulerAction::Enable => b.enable(),
                SchedulerAction::Disable => b.disable(),
                SchedulerAction::Status => b.status(),
            }?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
                println!(
                    "backend:     {}",
                    serde_json::to_value(status.backend)?
                        .as_str()
                        .unwrap_or("?")
                );
                println!("task:        {}", status.task_name);
                println!("exists:      {}", if status.exists { "yes" } else { "no" });
                println!("enabled:     {}", if status.enabled { "yes" } else { "no" });
                println!("state:       {}", status.state);
                println!("schedule:    {}", status.schedule);
                println!("next run:    {}", or(&status.next_run));
                println!("last run:    {}", or(&status.last_run));
                println!("last result: {}", or(&status.last_result));
            }
            Ok(exit::SUCCESS)
        }
        Command::Reindex => {
            let config = load_config(cli.config.as_deref(), &cwd)?;
            let db = config.server.state_dir.join("index.db");
            let (mut idx, _) = pipewatch::index::Index::open_or_reset(&db)?;
            let stats = pipewatch::index::rebuild(&mut idx, &config.server.events_dir)?;
            println!(
                "reindexed {} run files ({} events, {} malformed lines) into {}",
                stats.files,
                stats.events,
                stats.malformed,
                db.display()
            );
            Ok(exit::SUCCESS)
        }
        Command::Run {
            source,
            quiet,
            no_notify,
            run_id,
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
                    run_id,
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

fn parse_run_id(s: &str) -> Result<RunId, String> {
    RunId::parse(s).map_err(|e| e.to_string())
}

/// Colour only on a terminal, and never with `NO_COLOR` set.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}
