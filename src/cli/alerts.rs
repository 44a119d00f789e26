//! `pipewatch alerts`: the alerts `serve` recorded, newest first, read from the run index
//! (`list`, the default); and `alerts test NAME`, a test alert sent to one `[[alerts]]`
//! destination now, from this process.

use chrono::Utc;

use super::CliError;
use super::term::{self, Paint};
use crate::alerts::{self, send};
use crate::config::Workspace;
use crate::exit;
use crate::index::{self, AlertRecord, Index};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// How many alerts to list, newest first.
    #[arg(long, default_value_t = 50, global = true)]
    limit: usize,
    /// Print JSON: the objects of GET /api/alerts.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Action {
    /// The alerts recorded, newest first, with their delivery (the default).
    List,
    /// Send a test alert to the destination NAME now; exit code 3 with the error if it is
    /// not delivered.
    Test {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// Why `alerts test` did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("no alert destination {name:?} in {path}; the destinations are: {known}")]
    Unknown {
        name: String,
        path: String,
        known: String,
    },
    #[error("the test alert to {name:?} was not delivered: {why}")]
    NotDelivered { name: String, why: String },
}

impl crate::exit::Code for AlertsError {
    /// Naming no destination is the user's to fix; a destination that refuses is the
    /// environment's.
    fn exit_code(&self) -> u8 {
        match self {
            AlertsError::Unknown { .. } => exit::USAGE,
            AlertsError::NotDelivered { .. } => exit::ENVIRONMENT,
        }
    }
}

pub fn command(workspace: &Workspace, args: Args) -> Result<u8, CliError> {
    match args.action {
        None | Some(Action::List) => list(workspace, args.limit.clamp(1, 100_000), args.json),
        Some(Action::Test { name }) => test(workspace, &name),
    }
}

fn list(workspace: &Workspace, limit: usize, json: bool) -> Result<u8, CliError> {
    let db = index::path(&workspace.shared().server.state_dir);
    // No index yet, or one of another version (the next `serve` starts it afresh): no
    // alerts recorded in it.
    let rows = if db.is_file() {
        match Index::open(&db) {
            Ok(idx) => idx.list_alerts(limit)?,
            Err(e) if e.needs_rebuild() => {
                super::out::note(format_args!("pipewatch: {e}; no alerts recorded in it"));
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        Vec::new()
    };
    let mut out = super::out::stdout();
    if json {
        out.json(&rows)?;
    } else {
        out.text(&render(&rows, super::stdout_paint()))?;
    }
    Ok(exit::SUCCESS)
}

/// The alerts as a table for a terminal.
pub fn render(rows: &[AlertRecord], paint: Paint) -> String {
    if rows.is_empty() {
        return "no alerts recorded\n".to_string();
    }
    let mut text = String::new();
    for r in rows {
        let status = match r.status.as_str() {
            "sent" => paint.green(&r.status),
            "failed" => paint.red(&r.status),
            other => paint.yellow(other),
        };
        text.push_str(&format!(
            "{}  {:<9}  {:<16}  {:<24}  {:<12}  {} (attempts {})",
            term::local_datetime(&r.at),
            r.kind,
            r.pipeline,
            r.run_id,
            r.destination,
            status,
            r.attempts
        ));
        if let Some(e) = r.last_error.as_deref().filter(|_| r.status != "sent") {
            text.push_str(&format!("  {e}"));
        }
        text.push('\n');
    }
    text
}

fn test(workspace: &Workspace, name: &str) -> Result<u8, CliError> {
    let Some(dest) = workspace.alerts.iter().find(|a| a.name == name) else {
        let known: Vec<&str> = workspace.alerts.iter().map(|a| a.name.as_str()).collect();
        return Err(AlertsError::Unknown {
            name: name.to_string(),
            path: workspace.path.display().to_string(),
            known: if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            },
        }
        .into());
    };
    let base_url = format!("http://{}", workspace.shared().server.bind);
    let alert = alerts::test_alert(&dest.name, &base_url, Utc::now());
    send::send(dest, &alert).map_err(|why| AlertsError::NotDelivered {
        name: name.to_string(),
        why,
    })?;
    super::out::stdout().line(format_args!("test alert {} sent to {name}", alert.id))?;
    Ok(exit::SUCCESS)
}
