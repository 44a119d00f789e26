//! `pipewatch scheduler install|uninstall|enable|disable|status`: the task that starts the
//! pipeline on its schedule, in whichever backend, and its status for a person or as JSON.
//! In a workspace each pipeline has its own task (`--pipeline` picks one); the JSON is then
//! an array of statuses, one per pipeline.

use super::CliError;
use super::out::note;
use crate::config::{Backend, Config, Workspace};
use crate::exit;
use crate::scheduler::{self, Status, record};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// builtin, windows, systemd or cron (default: [scheduler] backend).
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendArg>,
    /// Print the status as JSON (the object of GET /api/scheduler/status).
    #[arg(long, global = true)]
    json: bool,
    /// systemd: a system unit (systemctl --system) instead of the user's.
    #[arg(long, global = true)]
    system: bool,
    /// In a workspace: only this pipeline's task (install, uninstall and status default to
    /// every pipeline's; enable and disable need a name when there are several).
    #[arg(long, global = true, value_name = "NAME")]
    pipeline: Option<String>,
}

#[derive(clap::Subcommand, Clone, Copy)]
enum Action {
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

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Builtin => Backend::Builtin,
            BackendArg::Windows => Backend::Windows,
            BackendArg::Systemd => Backend::Systemd,
            BackendArg::Cron => Backend::Cron,
        }
    }
}

pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let every = matches!(
        args.action,
        Action::Install | Action::Uninstall | Action::Status
    );
    let pipelines: Vec<&Config> = match (&args.pipeline, every) {
        (None, true) => ws.pipelines.iter().collect(),
        (name, _) => vec![ws.select(name.as_deref(), "scheduler --pipeline")?],
    };
    let mut statuses = Vec::with_capacity(pipelines.len());
    for config in &pipelines {
        statuses.push((*config, one(config, &args)?));
    }
    keep_record(ws, &pipelines, &args, every && args.pipeline.is_none())?;
    let mut out = super::out::stdout();
    match (args.json, ws.is_workspace) {
        (true, false) => out.json(&statuses[0].1)?,
        (true, true) => out.json(&statuses.iter().map(|(_, s)| s).collect::<Vec<_>>())?,
        (false, false) => out.text(&render(&statuses[0].1))?,
        (false, true) => {
            let text: Vec<String> = statuses
                .iter()
                .map(|(c, s)| format!("{:<20}{}\n{}", "pipeline:", c.pipeline.name, render(s)))
                .collect();
            out.text(&text.join("\n"))?
        }
    }
    Ok(exit::SUCCESS)
}

/// Keeps `<state_dir>/scheduler-tasks.json` in step with what was installed or uninstalled,
/// and — when every pipeline's task was (re)installed or uninstalled — removes the tasks of
/// pipelines that are no longer in the configuration, saying so on stderr.
fn keep_record(ws: &Workspace, done: &[&Config], args: &Args, all: bool) -> Result<(), CliError> {
    let kind = args
        .backend
        .map_or(ws.shared().scheduler.backend, Into::into);
    if kind == Backend::Builtin || !matches!(args.action, Action::Install | Action::Uninstall) {
        return Ok(());
    }
    let state_dir = &ws.shared().server.state_dir;
    let mut entries = record::load(state_dir)?;
    for config in done {
        let e = record::entry(config, kind, args.system);
        entries.retain(|x| *x != e);
        if matches!(args.action, Action::Install) {
            entries.push(e);
        }
    }
    if all {
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            if e.backend != kind || !record::is_left_over(&e, ws) {
                kept.push(e);
                continue;
            }
            let which = e.pipeline.as_deref().unwrap_or("(the single pipeline)");
            match record::remove(&e, ws, scheduler::OsOptions::default()) {
                record::Removed::Gone => note(format_args!(
                    "removed the {} task of pipeline {which}: it is no longer in {}",
                    kind.as_str(),
                    ws.path.display()
                )),
                record::Removed::NotOurs(why) => note(format_args!(
                    "left the {} task of pipeline {which} alone: {why}",
                    kind.as_str()
                )),
                record::Removed::Failed(why) => {
                    note(format_args!(
                        "could not remove the {} task of pipeline {which}, no longer in {} \
                         (tried again at the next install): {why}",
                        kind.as_str(),
                        ws.path.display()
                    ));
                    kept.push(e);
                }
            }
        }
        entries = kept;
    }
    record::save(state_dir, &entries)?;
    Ok(())
}

/// The action on one pipeline's task.
fn one(config: &Config, args: &Args) -> Result<Status, CliError> {
    let kind = args.backend.map_or(config.scheduler.backend, Into::into);
    let options = scheduler::OsOptions {
        system: args.system,
        ..scheduler::OsOptions::default()
    };
    if matches!(args.action, Action::Install | Action::Enable) {
        scheduler::check_active(config, kind)?;
    }
    let b = scheduler::backend(kind, config, options);
    Ok(match args.action {
        Action::Install => b.install(),
        Action::Uninstall => b.uninstall(),
        Action::Enable => b.enable(),
        Action::Disable => b.disable(),
        Action::Status => b.status(),
    }?)
}

/// The status as aligned `name: value` lines.
pub fn render(status: &Status) -> String {
    let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows = [
        ("backend", status.backend.as_str().to_string()),
        ("task", status.task_name.clone()),
        ("exists", yes(status.exists).to_string()),
        ("enabled", yes(status.enabled).to_string()),
        ("state", status.state.clone()),
        ("schedule", status.schedule.clone()),
        ("next run", or(&status.next_run)),
        ("last run", or(&status.last_run)),
        ("last result", or(&status.last_result)),
        ("config", status.config.clone()),
        ("installed for", or(&status.installed_for)),
        ("installed schedule", or(&status.installed_schedule)),
    ];
    let mut text: String = rows
        .iter()
        .map(|(k, v)| format!("{:<20}{v}\n", format!("{k}:")))
        .collect();
    if let Some(w) = &status.warning {
        text.push_str(&format!("{:<20}{w}\n", "warning:"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_aligned_and_dash_what_is_unknown() {
        let status = Status {
            backend: Backend::Cron,
            task_name: "Pipeline Runner".into(),
            exists: true,
            enabled: false,
            state: "disabled".into(),
            schedule: "*/15 * * * *".into(),
            next_run: None,
            last_run: Some("2026-11-29T08:15:00+00:00".into()),
            last_result: None,
            config: "/srv/b/pipewatch.toml".into(),
            installed_for: Some("/srv/a/pipewatch.toml".into()),
            installed_schedule: Some("*/5 * * * *".into()),
            mismatch: Some(scheduler::Mismatch::OtherConfig),
            warning: Some("it runs another configuration".into()),
        };
        assert_eq!(
            render(&status),
            "backend:            cron\n\
             task:               Pipeline Runner\n\
             exists:             yes\n\
             enabled:            no\n\
             state:              disabled\n\
             schedule:           */15 * * * *\n\
             next run:           -\n\
             last run:           2026-11-29T08:15:00+00:00\n\
             last result:        -\n\
             config:             /srv/b/pipewatch.toml\n\
             installed for:      /srv/a/pipewatch.toml\n\
             installed schedule: */5 * * * *\n\
             warning:            it runs another configuration\n"
        );
    }
}
