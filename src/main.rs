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
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PIPEWATCH_COMMIT"), ")"),
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
    /// The history of runs, newest first (list), or one run with its stages (show RUN_ID).
    #[command(args_conflicts_with_subcommands = true)]
    Runs {
        #[command(subcommand)]
        action: Option<RunsAction>,
        #[command(flatten)]
        list: ListArgs,
        /// Print JSON: the objects of GET /api/runs and GET /api/runs/{run_id}.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Follow a run's events as they are written, and exit with its result (0 success or
    /// skipped, 1 failure, cancelled or abandoned).
    Tail {
        /// The run to follow (default: --latest).
        #[arg(value_parser = parse_run_id, value_name = "RUN_ID")]
        run_id: Option<RunId>,
        /// Follow the newest running run, or wait for the next one to start.
        #[arg(long, conflicts_with = "run_id")]
        latest: bool,
        /// Print each event as its raw JSON line.
        #[arg(long)]
        json: bool,
        /// Read the run file even when the dashboard is up.
        #[arg(long)]
        no_dashboard: bool,
    },
    /// Check the setup (configuration, events folder, recent runs, dashboard, WebSocket,
    /// scheduler task, inotify) and say what to fix. Exit code 1 if a check fails.
    Doctor {
        /// Print the checks as a JSON array of {check, ok, level, detail, fix}.
        #[arg(long)]
        json: bool,
    },
    /// Remove run files and index rows older than [retention] max_age or beyond max_runs
    /// (never a running run).
    Prune {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (for example: pipewatch completions bash >
    /// ~/.local/share/bash-completion/completions/pipewatch).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum RunsAction {
    /// Runs newest first (the default).
    List(ListArgs),
    /// One run: its stages with status, attempts, durations and exit codes, and the last
    /// stderr lines of a failed stage.
    Show {
        #[arg(value_parser = parse_run_id, value_name = "RUN_ID")]
        run_id: RunId,
    },
}

#[derive(clap::Args, Clone, Default)]
struct ListArgs {
    /// Only runs with this status.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(pipewatch::history::STATUSES))]
    status: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
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

/// The tailer allocates every event on its thread and the ingest task frees them on another:
/// glibc's allocator serializes that on its arena lock (a third of the dashboard's CPU at
/// high ingest rates, measured); mimalloc frees across threads without it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
                || e.downcast_ref::<pipewatch::history::HistoryError>()
                    .is_some_and(|e| e.is_usage())
                || e.downcast_ref::<pipewatch::follow::FollowError>()
                    .is_some_and(|e| matches!(e, pipewatch::follow::FollowError::UnknownRun { .. }))
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
        Command::Runs { action, list, json } => {
            let config = load_config(cli.config.as_deref(), &cwd)?;
            runs(&config, action, list, json)
        }
        Command::Tail {
            run_id,
            latest: _,
            json,
            no_dashboard,
        } => {
            let config = load_config(cli.config.as_deref(), &cwd)?;
            tail(&config, run_id, json, no_dashboard)
        }
        Command::Doctor { json } => {
            let config = match Config::locate(cli.config.as_deref(), &cwd) {
                Ok(path) => Config::load(&path),
                Err(e) => Err(e),
            };
            let checks =
                pipewatch::doctor::run(config, &pipewatch::scheduler::OsOptions::default());
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                print!("{}", pipewatch::doctor::render(&checks, stdout_paint()));
            }
            Ok(if pipewatch::doctor::failed(&checks) {
                exit::FAILURE
            } else {
                exit::SUCCESS
            })
        }
        Command::Prune { dry_run, json } => {
            let config = load_config(cli.config.as_deref(), &cwd)?;
            let report = pipewatch::retention::prune(&config, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render(&config.retention));
            }
            Ok(if report.failed.is_empty() {
                exit::SUCCESS
            } else {
                exit::ENVIRONMENT
            })
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pipewatch",
                &mut std::io::stdout(),
            );
            Ok(exit::SUCCESS)
        }
    }
}

/// Number of stderr lines `runs show` prints for a failed stage.
const STDERR_TAIL: usize = 10;

fn runs(
    config: &Config,
    action: Option<RunsAction>,
    list: ListArgs,
    json: bool,
) -> anyhow::Result<u8> {
    use pipewatch::history::{self, History};
    let paint = stdout_paint();
    let history = History::open(config)?;
    tracing::debug!(source = ?history.source(), "run history");
    let now = chrono::Utc::now();
    match action {
        None | Some(RunsAction::List(_)) => {
            let args = match action {
                Some(RunsAction::List(a)) => a,
                _ => list,
            };
            let runs = history.list(args.limit, args.status.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", history::render_list(&runs, paint, now));
            }
        }
        Some(RunsAction::Show { run_id }) => {
            let detail = history.get(&run_id)?;
            let failed: Vec<&str> = detail
                .stages
                .iter()
                .filter(|s| s.status == "failure")
                .map(|s| s.name.as_str())
                .collect();
            let tails = history.stderr_tails(&run_id, &failed, STDERR_TAIL)?;
            if json {
                let mut v = serde_json::to_value(&detail)?;
                if let Some(stages) = v.get_mut("stages").and_then(|s| s.as_array_mut()) {
                    for s in stages {
                        let name = s["name"].as_str().unwrap_or_default().to_string();
                        if let Some(t) = tails.get(&name) {
                            s["stderr_tail"] = serde_json::json!(t);
                        }
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", history::render_detail(&detail, &tails, paint, now));
            }
        }
    }
    Ok(exit::SUCCESS)
}

fn tail(
    config: &Config,
    run_id: Option<RunId>,
    json: bool,
    no_dashboard: bool,
) -> anyhow::Result<u8> {
    use pipewatch::follow::{self, Options, Target, Via};
    use std::io::Write;
    let paint = stdout_paint();
    let note = pipewatch::term::Paint::new(colour_on_stderr());
    let opts = Options {
        file_only: no_dashboard,
        ..Options::default()
    };
    let id = match run_id {
        Some(id) => id,
        None => follow::latest(config, opts.poll, &mut || {
            eprintln!(
                "{}",
                note.dim("no run is going: waiting for the next one to start (Ctrl-C to stop)")
            );
        })?,
    };
    let target = Target::new(config, id.clone());
    let width = config
        .stages
        .iter()
        .map(|s| s.name.chars().count())
        .chain([pipewatch::config::PIPELINE_STAGE.len()])
        .max()
        .unwrap_or(8);
    let mut stdout = std::io::stdout().lock();
    let mut on_event = |p: &pipewatch::event::Published| -> std::io::Result<()> {
        if json {
            writeln!(stdout, "{}", p.json)
        } else {
            writeln!(stdout, "{}", follow::render(p, paint, width))
        }
    };
    let mut on_switch = |via: &Via, why: Option<&str>| {
        let why = why.map(|w| format!("{w}: ")).unwrap_or_default();
        let msg = match via {
            Via::Dashboard(addr) => {
                format!("{why}following run {id} through the dashboard at {addr}")
            }
            Via::File(path) => format!("{why}following run {id} from its file {}", path.display()),
        };
        eprintln!("{}", note.dim(&msg));
    };
    let end = follow::follow(&target, &opts, &mut on_event, &mut on_switch)?;
    let text = match &end {
        follow::End::Abandoned => {
            format!("run {id} abandoned: its runner is gone without a final event")
        }
        e => format!("run {id} ended: {}", e.as_str()),
    };
    eprintln!(
        "{}",
        note.status_line(&text, end.exit_code() == exit::SUCCESS)
    );
    Ok(end.exit_code())
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
    pipewatch::term::colour_for(std::io::stderr().is_terminal())
}

/// How to paint what goes to stdout.
fn stdout_paint() -> pipewatch::term::Paint {
    use std::io::IsTerminal;
    pipewatch::term::Paint::new(pipewatch::term::colour_for(std::io::stdout().is_terminal()))
}
