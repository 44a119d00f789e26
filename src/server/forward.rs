//! `serve` with `[cluster]`: the events this host's runs left unpublished are sent to NATS
//! JetStream, at start and then continuously (`cluster::forward`). Files a run is forwarding
//! itself at the moment are left to it.

use std::sync::Arc;

use super::state::AppState;
use crate::cluster::forward;

/// Drains the events folder until the dashboard closes; nothing without `[cluster]`.
pub async fn run(state: Arc<AppState>) {
    let workspace = state.workspace();
    let Some(cluster) = workspace.shared().cluster.clone() else {
        return;
    };
    let folders = forward::Folders::of(&workspace);
    let limits = crate::cluster::StreamLimits::of(&workspace);
    let closing = state.closing.clone();
    forward::drain_until(cluster, folders, limits, true, closing).await;
}
