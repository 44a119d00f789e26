//! Starting a run from the dashboard: "Run now" (`POST /api/pipeline/run`) and the built-in
//! scheduler's occurrences both come here.
//!
//! The run is `pipewatch run` as a child process ([`Invocation`]), never a task inside the
//! dashboard, so a run that crashes can never take the dashboard down, and a dashboard that
//! stops leaves the run to finish. It runs in its own process group, so a Ctrl-C meant for
//! the dashboard does not stop it. The run id is chosen here and shown as `running` at once;
//! a runner that exits without writing its file is marked `abandoned` (or, having exited 0,
//! removed: another host claimed the occurrence). A dashboard that stops before it knows
//! withdraws the run ([`withdraw_unwritten`]).

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::error::ApiError;
use super::state::{AppState, Stats};
use crate::config::Config;
use crate::event::{RunId, now_timestamp};
use crate::runner::invocation::Invocation;
use crate::scheduler::builtin::timer::Launcher;
use crate::sync::MutexExt;

/// What a run started from the dashboard is asked to do beyond a plain run: its
/// parameters, only some stages, or a retry (`--param`, `--stage`, `--retry [--force]`).
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub params: Vec<(String, String)>,
    pub stages: Vec<String>,
    pub retry: Option<(RunId, bool)>,
    /// The schedule's occurrence a scheduled run is for (`--occurrence`).
    pub occurrence: Option<chrono::DateTime<chrono::Utc>>,
}

/// Starts `pipewatch run [PIPELINE] --source SOURCE` for `config`'s pipeline, with what was
/// `asked`. Returns its run id and a handle that resolves when the process has exited.
pub async fn launch(
    state: &Arc<AppState>,
    config: &Config,
    source: &str,
    asked: Asked,
) -> Result<(RunId, JoinHandle<()>), ApiError> {
    let id = RunId::generate(chrono::Utc::now());
    let mut invocation =
        Invocation::of(&state.exe, config, source).from_dashboard(Some(id.clone()));
    invocation.params = asked.params;
    invocation.stages = asked.stages;
    invocation.retry = asked.retry;
    invocation.occurrence = asked.occurrence;
    let mut cmd = tokio::process::Command::from(invocation.command());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::unavailable(format!("cannot start {}: {e}", state.exe.display())))?;
    Stats::add(&state.stats.runs_started, 1);
    let announced = id.clone();
    let source = source.to_string();
    state.launched.lock_anyway().insert(id.clone());
    let _ = state
        .with_index(move |idx| idx.note_announced(&announced, &source, &now_timestamp()))
        .await;
    let logged = id.clone();
    let state = state.clone();
    let exited = tokio::spawn(async move {
        if let Some(err) = child.stderr.take() {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(run_id = %logged, "run: {line}");
            }
        }
        let ok = match child.wait().await {
            Ok(st) => {
                tracing::info!(run_id = %logged, "run exited: {st}");
                st.success()
            }
            Err(e) => {
                tracing::warn!(run_id = %logged, "run: {e}");
                false
            }
        };
        let written = written(&state, &logged);
        state.launched.lock_anyway().remove(&logged);
        if ok && !written {
            // Exited 0 with no run: under [cluster], another host claimed the occurrence.
            // There was never a run here to show.
            let gone = logged.clone();
            let _ = state
                .with_index(move |idx| idx.remove_runs(std::slice::from_ref(&gone)))
                .await;
        } else if !written {
            // A runner that exited before writing anything (a broken configuration, say) left
            // no file and no lock to tell: it is gone, so the run it was announced as is too.
            let at = now_timestamp();
            let _ = state
                .with_index(move |idx| idx.mark_abandoned(&logged, &at, None))
                .await;
        }
    });
    Ok((id, exited))
}

/// Whether run `id`'s file is there. The runner writes the local events folder; with
/// [cluster] the dashboard's mirror may not have the file yet.
fn written(state: &AppState, id: &RunId) -> bool {
    state.config.server.events_dir.join(id.file_name()).exists()
}

/// At shutdown, once the schedules are stopped: withdraws from the index the runs this
/// dashboard started whose runner is still starting — it has written no run file. Nothing
/// would be left to settle them: a runner that goes on to write its file is read from it at
/// the next start, like any run; one that never does (it lost its occurrence's claim to another
/// host, or failed first) was never a run, and is not shown `abandoned` after the restart.
pub async fn withdraw_unwritten(state: &Arc<AppState>) {
    let ids: Vec<RunId> = state
        .launched
        .lock_anyway()
        .iter()
        .filter(|id| !written(state, id))
        .cloned()
        .collect();
    if ids.is_empty() {
        return;
    }
    tracing::info!(
        runs = ids.len(),
        "withdrawn: runs started here that had written no run file yet"
    );
    if let Err(e) = state.with_index(move |idx| idx.remove_runs(&ids)).await {
        tracing::warn!("cannot withdraw the runs that had written no run file: {e}");
    }
}

/// The built-in scheduler starts its pipeline's runs the way "Run now" does.
pub struct DashboardLauncher(pub Arc<AppState>, pub Config);

impl Launcher for DashboardLauncher {
    async fn launch(
        &self,
        source: &'static str,
        occurrence: chrono::DateTime<chrono::Utc>,
    ) -> Result<(RunId, JoinHandle<()>), String> {
        let asked = Asked {
            occurrence: Some(occurrence),
            ..Asked::default()
        };
        launch(&self.0, &self.1, source, asked)
            .await
            .map_err(|e| e.message)
    }
}
