//! Reading the configuration again while the dashboard runs: on `POST /api/reload` and, on
//! Unix, on SIGHUP.
//!
//! What a reload applies at once: the pipelines (added, removed, changed — their schedules,
//! stages, overlap, catch-up), `[retention]` and `[scheduler]`. Each pipeline whose
//! configuration changed gets a new built-in timer and auditor; an unchanged one keeps its
//! own, so its schedule goes on undisturbed. Nothing else is touched: the tailer, the index,
//! the bus and every open WebSocket and SSE stream go on as they were, so a reload loses no
//! event and repeats none.
//!
//! What needs a restart: `[server]` (the address, the folders, the token, the stream buffer).
//! A reload keeps the `[server]` the dashboard started with and names what differs. A file
//! that does not load leaves everything as it was; the error names the file and line.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::schedule;
use super::state::AppState;
use crate::config::{Config, ConfigError, Server, Workspace};

/// What a reload changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    /// The pipelines served now, in file order.
    pub pipelines: Vec<String>,
    /// New in the configuration.
    pub added: Vec<String>,
    /// No longer in the configuration (their history stays, shown as removed).
    pub removed: Vec<String>,
    /// Still there, with a changed configuration: their scheduling started again with it.
    pub changed: Vec<String>,
    /// The `[server]` keys that differ from what the dashboard started with: kept as they
    /// were until `pipewatch serve` is restarted.
    pub restart_needed: Vec<String>,
}

/// Reads the configuration file again and applies it (see the module doc). One reload at a
/// time; the file is read off the async workers.
pub async fn reload(state: &Arc<AppState>) -> Result<Reloaded, ConfigError> {
    let _one_at_a_time = state.reloading.lock().await;
    let old = state.workspace();
    let path = old.path.clone();
    let loaded = tokio::task::spawn_blocking(move || Workspace::load(&path))
        .await
        .map_err(|e| ConfigError::Read {
            path: old.path.clone(),
            message: e.to_string(),
        })??;
    let (new, restart_needed) = keep_server(loaded, &state.config.server);
    let names =
        |w: &Workspace| -> Vec<String> { w.names().into_iter().map(str::to_string).collect() };
    let reloaded = Reloaded {
        pipelines: names(&new),
        added: names(&new)
            .into_iter()
            .filter(|n| old.get(n).is_none())
            .collect(),
        removed: names(&old)
            .into_iter()
            .filter(|n| new.get(n).is_none())
            .collect(),
        changed: new
            .pipelines
            .iter()
            .filter(|c| old.get(&c.pipeline.name).is_some_and(|o| o != *c))
            .map(|c| c.pipeline.name.clone())
            .collect(),
        restart_needed,
    };
    state.replace_workspace(new);
    schedule::apply(state, &state.workspace());
    tracing::info!(
        pipelines = ?reloaded.pipelines,
        added = ?reloaded.added,
        removed = ?reloaded.removed,
        changed = ?reloaded.changed,
        "configuration reloaded from {}",
        old.path.display()
    );
    if !reloaded.restart_needed.is_empty() {
        tracing::warn!(
            keys = ?reloaded.restart_needed,
            "these [server] settings changed; they apply when pipewatch serve is restarted"
        );
    }
    Ok(reloaded)
}

/// Gives every pipeline of `workspace` the `[server]` the dashboard runs with, and names the
/// keys in which the file's differs (the address is left out: `--bind` may set it).
fn keep_server(mut workspace: Workspace, running: &Server) -> (Workspace, Vec<String>) {
    let mut differ = Vec::new();
    if let Some(file) = workspace.pipelines.first().map(|c| &c.server) {
        let mut key = |name: &str, same: bool| {
            if !same {
                differ.push(format!("[server] {name}"));
            }
        };
        key("events_dir", file.events_dir == running.events_dir);
        key("state_dir", file.state_dir == running.state_dir);
        key("poll_interval", file.poll_interval == running.poll_interval);
        key("stream_buffer", file.stream_buffer == running.stream_buffer);
        key("token", file.token == running.token);
        key("allowed_hosts", file.allowed_hosts == running.allowed_hosts);
    }
    for c in &mut workspace.pipelines {
        keep(c, running);
    }
    (workspace, differ)
}

/// `config` with the running `[server]`, its own state under the running `state_dir`.
fn keep(config: &mut Config, running: &Server) {
    config.pipeline_state_dir = if config.in_workspace {
        running
            .state_dir
            .join("pipelines")
            .join(&config.pipeline.name)
    } else {
        running.state_dir.clone()
    };
    config.server = running.clone();
}

/// Reloads on every SIGHUP until the dashboard closes (Unix; elsewhere `POST /api/reload`
/// is the way). A failed reload is logged and changes nothing.
pub async fn on_hangup(state: Arc<AppState>, mut hangups: crate::runner::shutdown::Hangups) {
    let closed = state.closed();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => return,
            _ = hangups.next() => {}
        }
        tracing::info!("SIGHUP received: reading the configuration again");
        if let Err(e) = reload(&state).await {
            tracing::error!("reload refused, the configuration in use is unchanged: {e}");
        }
    }
}
