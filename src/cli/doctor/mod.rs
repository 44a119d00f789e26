//! `pipewatch doctor`: the troubleshooting guide's checks, automated. Each check says what it
//! found and, when something is wrong, the fix to try.
//!
//! The checks, in the order a person would look: the configuration; the events folder (there,
//! writable); the run files (any, and the newest as recent as the schedule says); the dashboard
//! at `[server] bind` (`/api/health`: the tailer running, its figures); a WebSocket upgrade to
//! `/ws/events`; the scheduler task (the tool there, the task installed and enabled, its last
//! run and result); on Linux, the inotify limits the tailer's folder watch depends on.
//!
//! A check never panics and never stops the others: a dashboard that is down is a failed
//! check, not an error. Checks that depend on a failed one are reported as skipped.
//! Everything blocks (short timeouts); the command has nothing else to do.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Backend, Config, ConfigError, Workspace};

mod cluster;
mod runs;
use crate::scheduler::{self, SchedulerError};
use runs::{run_files, runs_of_each};

/// How long the dashboard may take to answer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    /// Works, but worth a look.
    Warn,
    Fail,
    /// Not checked because a check it depends on failed.
    Skip,
}

/// One check: `{check, ok, detail, fix}` in `--json` (plus `level`).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    /// False when the check failed or could not be made.
    pub ok: bool,
    pub level: Level,
    pub detail: String,
    /// What to try; `None` when all is well.
    pub fix: Option<String>,
}

impl Check {
    fn new(check: &str, level: Level, detail: impl Into<String>, fix: Option<String>) -> Check {
        Check {
            check: check.to_string(),
            ok: matches!(level, Level::Pass | Level::Warn),
            level,
            detail: detail.into(),
            fix,
        }
    }
    fn pass(check: &str, detail: impl Into<String>) -> Check {
        Check::new(check, Level::Pass, detail, None)
    }
    fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Level::Warn, detail, Some(fix.into()))
    }
    fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Level::Fail, detail, Some(fix.into()))
    }
    fn skip(check: &str, detail: impl Into<String>) -> Check {
        Check::new(check, Level::Skip, detail, None)
    }
}

/// Whether any check failed (the exit code is 1 then).
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.level == Level::Fail)
}

/// Runs every check for the configuration at `config` (or the error loading it).
pub fn run(workspace: Result<Workspace, ConfigError>, opts: &scheduler::OsOptions) -> Vec<Check> {
    let mut out = Vec::new();
    let workspace = match workspace {
        Ok(ws) => {
            let pipelines: Vec<String> = ws
                .pipelines
                .iter()
                .map(|c| {
                    format!(
                        "pipeline {:?}, {} stage{}, schedule {}",
                        c.pipeline.name,
                        c.stages.len(),
                        if c.stages.len() == 1 { "" } else { "s" },
                        c.pipeline.schedule.expression()
                    )
                })
                .collect();
            out.push(Check::pass(
                "config",
                format!("{} is valid: {}", ws.path.display(), pipelines.join("; ")),
            ));
            ws
        }
        Err(e) => {
            let fix = match &e {
                ConfigError::NotFound { .. } => {
                    "run `pipewatch init` to write an example, or pass --config PATH".to_string()
                }
                _ => "fix the key named above (docs/configuration.md lists every key)".to_string(),
            };
            out.push(Check::fail("config", e.to_string(), fix));
            out.push(Check::skip(
                "everything else",
                "not checked: it all depends on the configuration",
            ));
            return out;
        }
    };
    // The events folder, the dashboard and the WebSocket are the workspace's; each pipeline
    // has its own scheduler task.
    let config = workspace.shared();
    let folder_ok = events_folder(config, &mut out);
    if folder_ok && workspace.is_workspace {
        runs_of_each(&workspace, &mut out);
    } else if folder_ok {
        run_files(config, &mut out);
    } else {
        out.push(Check::skip("run files", "not checked: no events folder"));
    }
    let up = dashboard(config, &mut out);
    if up {
        websocket(config, &mut out);
    } else {
        out.push(Check::skip(
            "websocket",
            "not checked: no dashboard of this configuration answers",
        ));
    }
    for c in &workspace.pipelines {
        let check = match c.run_name() {
            Some(name) => format!("scheduler ({name})"),
            None => "scheduler".to_string(),
        };
        scheduler_task(c, opts, up, &check, &mut out);
    }
    for alert in &workspace.alerts {
        out.push(match crate::alerts::send::reachable(&alert.destination) {
            Ok(detail) => Check::pass(&format!("alerts ({})", alert.name), detail),
            Err(why) => {
                let what = match alert.destination {
                    crate::config::Destination::Email { .. } => format!(
                        "fix [smtp] in {}, or set {} (the password of its username) where \
                         `pipewatch serve` runs",
                        workspace.path.display(),
                        crate::config::smtp::PASSWORD_ENV
                    ),
                    _ => format!(
                        "fix [[alerts]] {:?} in {}, or start what it points to",
                        alert.name,
                        workspace.path.display()
                    ),
                };
                Check::fail(
                    &format!("alerts ({})", alert.name),
                    why,
                    format!(
                        "{what}; `pipewatch alerts test {}` sends a test alert",
                        alert.name
                    ),
                )
            }
        });
    }
    if let Some(cluster) = &config.cluster {
        out.push(cluster::check(cluster, &workspace.path));
    }
    inotify(&mut out);
    out
}

fn events_folder(config: &Config, out: &mut Vec<Check>) -> bool {
    let dir = &config.server.events_dir;
    let name = "events folder";
    let fix_missing = format!(
        "create it (mkdir -p {}), or point [server] events_dir in {} at the right folder; `pipewatch run` and `pipewatch serve` create it too",
        dir.display(),
        config.path.display()
    );
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push(Check::fail(
                name,
                format!("{} does not exist", dir.display()),
                fix_missing,
            ));
            return false;
        }
        Err(e) => {
            out.push(Check::fail(
                name,
                format!("cannot look at {}: {e}", dir.display()),
                "check the permissions of the folder and its parents",
            ));
            return false;
        }
        Ok(m) if !m.is_dir() => {
            out.push(Check::fail(
                name,
                format!("{} is not a folder", dir.display()),
                format!(
                    "move that file away, or point [server] events_dir in {} elsewhere",
                    config.path.display()
                ),
            ));
            return false;
        }
        Ok(_) => {}
    }
    let probe = dir.join(format!(".pipewatch-doctor-{}.tmp", std::process::id()));
    // A new file: a link planted under the probe's name is not written through.
    match crate::fsx::create_new(&probe)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"probe"))
    {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            out.push(Check::pass(
                name,
                format!("{} exists and is writable", dir.display()),
            ));
            true
        }
        Err(e) => {
            out.push(Check::fail(
                name,
                format!("cannot write in {}: {e}", dir.display()),
                "give the user that runs the pipeline write access to it (the scheduler may run it as another user)",
            ));
            // Readable still: the files can be looked at.
            true
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .into()
}

/// Returns whether the dashboard answered.
fn dashboard(config: &Config, out: &mut Vec<Check>) -> bool {
    let name = "dashboard";
    let addr = crate::runner::announce::reachable(config.server.bind);
    let url = format!("http://{addr}/api/health");
    // With the token, health also says which folder the dashboard tails.
    let mut request = agent().get(&url);
    if !config.server.token.is_empty() {
        request = request.header("Authorization", format!("Bearer {}", config.server.token));
    }
    let answer = request.call().map_err(|e| e.to_string()).and_then(|mut r| {
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        Ok((status, body))
    });
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            out.push(Check::fail(
                name,
                format!("no dashboard at http://{addr}/ ({e})"),
                format!(
                    "start it with `pipewatch serve` (or check [server] bind in {})",
                    config.path.display()
                ),
            ));
            return false;
        }
    };
    let health: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status != 200 || health.get("status").is_none() {
        out.push(Check::fail(
            name,
            format!("http://{addr}/api/health answered {status}, not a pipewatch health report"),
            format!(
                "another program listens on {addr}: stop it, or give [server] bind another port"
            ),
        ));
        return false;
    }
    let n = |k: &str| health.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let tailer_running = health["tailer"]["running"].as_bool().unwrap_or(false);
    let figures = format!(
        "files watched {}, events ingested {}, malformed lines {}",
        n("files_watched"),
        n("events_ingested"),
        n("malformed_lines")
    );
    if health["status"] == "ok" && tailer_running {
        out.push(Check::pass(
            name,
            format!("http://{addr}/ is up, tailer running: {figures}"),
        ));
    } else {
        let why = health["index"]["error"]
            .as_str()
            .map(|e| format!("run index: {e}"))
            .unwrap_or_else(|| "the tailer has stopped".to_string());
        out.push(Check::fail(
            name,
            format!("http://{addr}/ is degraded ({why}): {figures}"),
            "look at the dashboard's log (stderr of `pipewatch serve`), then restart it; `pipewatch reindex` rebuilds a broken index",
        ));
    }
    if let Some(why) = crate::cli::dashboard::not_ours(config, health["events_id"].as_str()) {
        out.push(Check::fail(
            "dashboard folder",
            why,
            format!(
                "give this configuration its own [server] bind in {} and start its dashboard there (`pipewatch serve`); its runs are not shown by the dashboard at {addr}",
                config.path.display()
            ),
        ));
        // What that dashboard says (its scheduler, its stream) is about another project.
        return false;
    }
    if health["events_id"].is_null()
        && let Some(dir) = health["events_dir"].as_str()
        && Path::new(dir) != config.server.events_dir
    {
        out.push(Check::warn(
            "dashboard folder",
            format!(
                "the dashboard at {addr} tails {dir}, not {}",
                config.server.events_dir.display()
            ),
            "start the dashboard with this configuration (`pipewatch --config ... serve`), or give each pipeline its own [server] bind",
        ));
    }
    if n("malformed_lines") > 0 {
        out.push(Check::warn(
            "malformed lines",
            format!("{} lines in run files were skipped as not events", n("malformed_lines")),
            "the dashboard's log names each file and line; fix whatever writes them (every line must be one JSON object with run_id, stage, event, timestamp, msg)",
        ));
    }
    if health["tailer"]["watching"] == false {
        out.push(Check::warn(
            "file notifications",
            format!(
                "the tailer is not watching the folder: it finds new lines by polling every {}",
                crate::cli::term::duration(config.server.poll_interval)
            ),
            "on Linux, raise the inotify limits (sysctl fs.inotify.max_user_instances=512 fs.inotify.max_user_watches=524288) and restart the dashboard",
        ));
    }
    true
}

fn websocket(config: &Config, out: &mut Vec<Check>) {
    let addr = crate::runner::announce::reachable(config.server.bind);
    match crate::cli::dashboard::connect(addr, "/ws/events", &config.server.token, Duration::from_secs(1)) {
        Ok(mut ws) => {
            let _ = ws.close(None);
            let _ = ws.flush();
            out.push(Check::pass(
                "websocket",
                format!("an upgrade to ws://{addr}/ws/events succeeded"),
            ));
        }
        Err(e) => out.push(Check::fail(
            "websocket",
            e,
            "if a proxy stands between, it must pass WebSocket upgrades (the Upgrade and Connection headers); the page falls back to Server-Sent Events meanwhile",
        )),
    }
}

fn scheduler_task(
    config: &Config,
    opts: &scheduler::OsOptions,
    dashboard_up: bool,
    name: &str,
    out: &mut Vec<Check>,
) {
    let kind = config.scheduler.backend;
    let backend_name = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let b = scheduler::backend(kind, config, opts.clone());
    let status = match b.status() {
        Ok(s) => s,
        Err(e) => {
            let fix = match (&e, kind) {
                (SchedulerError::ToolMissing { .. }, Backend::Cron) => {
                    "install cron (e.g. `apt install cron`) and start its service, or choose another [scheduler] backend (builtin runs inside `pipewatch serve`)".to_string()
                }
                (SchedulerError::ToolMissing { .. }, Backend::Systemd) => {
                    "systemd is not available here: choose [scheduler] backend = \"cron\" or \"builtin\"".to_string()
                }
                (SchedulerError::ToolMissing { .. }, _) => {
                    "the scheduler's tool is not on PATH: choose another [scheduler] backend".to_string()
                }
                _ => format!("run `pipewatch scheduler status --backend {backend_name}` for the details"),
            };
            out.push(Check::fail(name, format!("{backend_name}: {e}"), fix));
            return;
        }
    };
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "never".to_string());
    if !status.exists {
        out.push(Check::fail(
            name,
            format!(
                "the {backend_name} task {:?} is not installed",
                status.task_name
            ),
            format!("install it with `pipewatch scheduler install --backend {backend_name}`"),
        ));
        return;
    }
    // A task of this name that runs another configuration is that project's: whatever it
    // says about being enabled or its runs, none of it is about this pipeline.
    match (status.mismatch, &status.warning) {
        (Some(scheduler::Mismatch::OtherConfig | scheduler::Mismatch::UnknownConfig), Some(w)) => {
            out.push(Check::fail(
                name,
                format!("{backend_name}: {w}"),
                format!(
                    "give this pipeline a task of its own: set task_name under [scheduler] in {}, then `pipewatch scheduler install --backend {backend_name}`",
                    status.config
                ),
            ));
            return;
        }
        (Some(scheduler::Mismatch::Schedule), Some(w)) => out.push(Check::warn(
            "scheduler schedule",
            format!("{backend_name}: {w}"),
            format!("`pipewatch scheduler install --backend {backend_name}`"),
        )),
        _ => {}
    }
    if !status.enabled {
        out.push(Check::fail(
            name,
            format!("the {backend_name} task {:?} is disabled", status.task_name),
            "turn it on with `pipewatch scheduler enable` (or the dashboard's switch)",
        ));
        return;
    }
    let detail = format!(
        "{backend_name} task {:?} is installed and enabled; last run {}, result {}; next run {}",
        status.task_name,
        or(&status.last_run),
        status
            .last_result
            .clone()
            .unwrap_or_else(|| "unknown".to_string()),
        or(&status.next_run),
    );
    if kind == Backend::Builtin && !dashboard_up {
        out.push(Check::fail(
            name,
            format!("{detail}; but the built-in scheduler runs inside the dashboard, which is down"),
            "start it with `pipewatch serve`, or install an OS scheduler (`pipewatch scheduler install --backend cron`)",
        ));
        return;
    }
    out.push(Check::pass(name, detail));
    if let Some(r) = &status.last_result
        && (r.starts_with("failure") || r == "abandoned")
    {
        out.push(Check::warn(
            "last scheduled run",
            format!("it ended {r}"),
            "see why with `pipewatch runs --status failure` and `pipewatch runs show RUN_ID`",
        ));
    }
}

/// The inotify limits, on Linux: the tailer needs one instance and one watch (the folder).
fn inotify(out: &mut Vec<Check>) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/sys/fs/inotify/{f}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let (Some(watches), instances) = (read("max_user_watches"), read("max_user_instances")) else {
        return;
    };
    let detail = format!(
        "max_user_watches {watches}, max_user_instances {}",
        instances.map_or_else(|| "?".to_string(), |i| i.to_string())
    );
    if watches < 1024 || instances.is_some_and(|i| i < 8) {
        out.push(Check::warn(
            "inotify",
            format!("{detail}: low; other programs may use them all and leave the tailer polling"),
            "sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512 (and the same in /etc/sysctl.d/ to keep it)",
        ));
    } else {
        out.push(Check::pass("inotify", detail));
    }
}

/// The checks for a person: ✓ / ! / ✗ / - and, under each problem, the fix.
pub fn render(checks: &[Check], paint: crate::cli::term::Paint) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.level {
            Level::Pass => paint.green("✓"),
            Level::Warn => paint.yellow("!"),
            Level::Fail => paint.bold_red("✗"),
            Level::Skip => paint.dim("-"),
        };
        out.push_str(&format!("{mark} {}: {}\n", paint.bold(&c.check), c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    out.push_str(&match (fails, warns) {
        (0, 0) => "all checks passed\n".to_string(),
        (0, w) => format!(
            "no check failed; {w} warning{}\n",
            if w == 1 { "" } else { "s" }
        ),
        (f, _) => format!("{f} check{} failed\n", if f == 1 { "" } else { "s" }),
    });
    out
}

#[derive(clap::Args)]
pub struct Args {
    /// Print the checks as a JSON array of {check, ok, level, detail, fix}.
    #[arg(long)]
    json: bool,
}

/// `pipewatch doctor`: exit code 1 if a check failed.
pub fn command(
    workspace: Result<Workspace, ConfigError>,
    args: Args,
) -> Result<u8, super::CliError> {
    let checks = run(workspace, &scheduler::OsOptions::default());
    if args.json {
        super::out::stdout().json(&checks)?;
    } else {
        super::out::stdout().text(&render(&checks, super::stdout_paint()))?;
    }
    Ok(if failed(&checks) {
        crate::exit::FAILURE
    } else {
        crate::exit::SUCCESS
    })
}
