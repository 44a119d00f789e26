//! What every handler and background task of the dashboard shares: [`AppState`], built in
//! one place ([`AppState::new`]) whether `serve` runs it or a test drives the router without
//! a socket.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use super::auth::AllowedHosts;
use super::budget::Budget;
use super::error::ApiError;
use super::schedule::Schedules;
use crate::bus::Bus;
use crate::config::{Config, Workspace};
use crate::event::RunId;
use crate::index::{Index, IndexError};
use crate::sync::{MutexExt, RwLockExt};
use crate::tail::{TailStats, Tailer};

/// Counters shown in health and metrics.
#[derive(Default)]
pub struct Stats {
    pub events_published: AtomicU64,
    pub batches: AtomicU64,
    pub index_errors: AtomicU64,
    pub ws_clients: AtomicU64,
    pub ws_lagged: AtomicU64,
    pub sse_clients: AtomicU64,
    pub runs_started: AtomicU64,
    pub abandoned: AtomicU64,
}

impl Stats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// Every pipeline the dashboard serves, in file order: replaced whole when the
    /// configuration is read again (`reload`), so read it through [`AppState::workspace`].
    workspace: RwLock<Arc<Workspace>>,
    /// `[server]` and the configuration file, as the dashboard started with them (a reload
    /// keeps them: the address, folders and token need a restart). What may change on a
    /// reload — the pipelines, `[retention]`, `[scheduler]` — comes from
    /// [`AppState::workspace`] and [`AppState::pipeline`].
    pub config: Config,
    pub bus: Bus,
    /// The one SQLite connection; only ever locked inside `spawn_blocking`.
    pub index: Mutex<Index>,
    /// The last index error, shown in health until an operation succeeds again.
    pub index_error: Mutex<Option<String>>,
    /// Why the index is behind what was published (a failed commit), until it has caught up.
    pub ingest_error: Mutex<Option<String>>,
    pub tail_stats: Arc<TailStats>,
    pub stats: Stats,
    /// Set once the tailer runs; used to read an announced run's file at once.
    pub tailer: Mutex<Option<Tailer>>,
    /// The folder the dashboard reads run files from (replays, the log, the feed, the index's
    /// rebuild, retention): `[server] events_dir`, or with `[cluster]` the mirror of every
    /// host's runs that `server::cluster` writes (`<state_dir>/cluster/events`).
    pub events_dir: PathBuf,
    /// With `[cluster]`: the task consuming the engine's stream runs (health counts it as the
    /// tailer, which `serve` does not start then).
    pub consuming: std::sync::atomic::AtomicBool,
    /// The program started for "Run now".
    pub exe: PathBuf,
    /// The runs this dashboard started whose runner has not exited yet: those that have not
    /// written their run file by shutdown are withdrawn then (`launch::withdraw_unwritten`).
    pub launched: Mutex<HashSet<RunId>>,
    pub started: Instant,
    /// Flips to true on shutdown; long-lived streams watch it to close cleanly.
    pub closing: watch::Receiver<bool>,
    /// Wakes the ingest task when an index operation found the database corrupt: it rebuilds
    /// the index from the files (`ingest::run`).
    pub index_repair: Notify,
    /// Every pipeline's built-in timer and auditor.
    pub schedules: Schedules,
    /// Held while the configuration is read again: one reload at a time.
    pub reloading: tokio::sync::Mutex<()>,
    /// The `Host` values that name this server (`[server] bind` and `allowed_hosts`): every
    /// request is checked against them, against DNS rebinding.
    pub allowed_hosts: AllowedHosts,
    /// The bytes every client may have queued, and all of them together.
    pub budget: Budget,
    /// Wakes the alerts' delivery tasks when alerts were recorded (`server::alerting`).
    pub alerts_recorded: Notify,
    /// Delivery attempts by destination and outcome (`sent`, `retrying`, `failed`), for
    /// `/metrics`.
    pub alert_counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Whether the dashboard is still catching up on the runs that ended while it was down:
    /// its alerts are held, then summarized (`server::catchup`).
    pub catch_up: super::catchup::CatchUp,
    /// For a detached state (no accept loop owns the close signal): keeps the signal's sender
    /// alive, so streams do not see "closing" at once.
    _keep_open: Option<watch::Sender<bool>>,
}

impl AppState {
    /// A state over `index` for `workspace`, answering to the `Host` names of its
    /// `[server] bind` (the address actually bound: `serve` sets it). `closing` is the shutdown signal's receiver;
    /// without one (a test driving the router) the state keeps a signal of its own that never
    /// fires.
    pub fn new(
        workspace: Workspace,
        index: Index,
        bus: Bus,
        exe: PathBuf,
        closing: Option<watch::Receiver<bool>>,
    ) -> AppState {
        let (keep_open, closing) = match closing {
            Some(rx) => (None, rx),
            None => {
                let (tx, rx) = watch::channel(false);
                (Some(tx), rx)
            }
        };
        let config = workspace.shared().clone();
        let events_dir = config.server.events_dir.clone();
        AppState {
            allowed_hosts: AllowedHosts::new(config.server.bind, &config.server.allowed_hosts),
            budget: Budget::default(),
            schedules: Schedules::default(),
            reloading: tokio::sync::Mutex::new(()),
            workspace: RwLock::new(Arc::new(workspace)),
            config,
            bus,
            index: Mutex::new(index),
            index_error: Mutex::new(None),
            ingest_error: Mutex::new(None),
            tail_stats: Arc::new(TailStats::default()),
            stats: Stats::default(),
            tailer: Mutex::new(None),
            events_dir,
            consuming: std::sync::atomic::AtomicBool::new(false),
            exe,
            launched: Mutex::new(HashSet::new()),
            started: Instant::now(),
            closing,
            index_repair: Notify::new(),
            alerts_recorded: Notify::new(),
            alert_counts: Mutex::new(BTreeMap::new()),
            catch_up: Default::default(),
            _keep_open: keep_open,
        }
    }

    /// Runs `f` on the index off the async workers, recording the outcome for health.
    pub async fn with_index<T, F>(self: &Arc<Self>, f: F) -> Result<T, IndexError>
    where
        F: FnOnce(&mut Index) -> Result<T, IndexError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut idx = state.index.lock_anyway();
            f(&mut idx)
        })
        .await
        .unwrap_or_else(|e| Err(IndexError::TaskFailed(e.to_string())));
        self.note_index(&result);
        result
    }

    fn note_index<T>(&self, result: &Result<T, IndexError>) {
        let mut slot = self.index_error.lock_anyway();
        match result {
            Ok(_) => *slot = None,
            Err(e) => {
                Stats::add(&self.stats.index_errors, 1);
                *slot = Some(e.to_string());
                if e.is_corruption() {
                    self.index_repair.notify_one();
                }
            }
        }
    }

    /// What is wrong with the index, if anything: the last operation's error, else why it is
    /// behind what was published.
    pub fn index_problem(&self) -> Option<String> {
        let last = |m: &Mutex<Option<String>>| m.lock_anyway().clone();
        last(&self.index_error).or_else(|| last(&self.ingest_error))
    }

    /// The pipelines as configured now.
    pub fn workspace(&self) -> Arc<Workspace> {
        self.workspace.read_anyway().clone()
    }

    /// Puts a configuration read again in place; returns the one it replaces.
    pub fn replace_workspace(&self, workspace: Workspace) -> Arc<Workspace> {
        let mut slot = self.workspace.write_anyway();
        std::mem::replace(&mut *slot, Arc::new(workspace))
    }

    /// The pipeline a request is about: the one `name`d (404 if the workspace has no such
    /// pipeline), or the only one; with several and no name, 400 listing them.
    pub fn pipeline(&self, name: Option<&str>) -> Result<Config, ApiError> {
        let workspace = self.workspace();
        match name {
            Some(n) => workspace.get(n).cloned().ok_or_else(|| {
                ApiError::not_found(format!(
                    "no pipeline {n:?}; the pipelines are: {}",
                    workspace.names().join(", ")
                ))
            }),
            None if workspace.pipelines.len() == 1 => Ok(workspace.shared().clone()),
            None => Err(ApiError::bad_request(format!(
                "this dashboard serves {} pipelines: name one with ?pipeline=NAME or \
                 {{\"pipeline\": NAME}} (one of {})",
                workspace.pipelines.len(),
                workspace.names().join(", ")
            ))),
        }
    }

    /// Wakes `pipeline`'s built-in scheduler, if it has one.
    pub fn wake_timer(&self, pipeline: &str) {
        self.schedules.wake(pipeline);
    }

    /// What recording alerts needs now, or `None` when no destination is configured. Called
    /// with the index's lock held, so that whether the alerts are held agrees with the fold
    /// that ends the catch-up (`server::catchup`).
    pub fn alert_context(&self) -> Option<crate::index::AlertContext> {
        let alerts = self.workspace().alerts.clone();
        (!alerts.is_empty()).then(|| crate::index::AlertContext {
            alerts,
            base_url: self.base_url(),
            events_dir: self.events_dir.clone(),
            now: chrono::Utc::now(),
            catching_up: !self.catch_up.is_over(),
        })
    }

    /// `http://<bind>`: where the dashboard's pages are, for links in alerts.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.config.server.bind)
    }

    /// Counts a delivery attempt to `destination` that ended `status`.
    pub fn count_alert(&self, destination: &str, status: &str) {
        let mut counts = self.alert_counts.lock_anyway();
        *counts
            .entry((destination.to_string(), status.to_string()))
            .or_default() += 1;
    }

    /// The path of a run's file as the dashboard reads it (the id is already validated).
    pub fn run_file(&self, id: &RunId) -> PathBuf {
        self.events_dir.join(id.file_name())
    }

    /// Resolves when the dashboard is shutting down.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.clone();
        async move { closed(&mut closing).await }
    }
}

/// Resolves once `closing` turns true, or its sender is gone.
pub async fn closed(closing: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = closing.wait_for(|c| *c).await.is_ok();
}
