//! The alerts (`docs/alerts.md`): `GET /api/alerts`, the outbox's history newest first,
//! `GET /api/alerts/destinations`, the destinations as configured (shown safely) with their
//! alerts counted by status, and `POST /api/alerts/{name}/test`, a test alert sent to one
//! destination at once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::alerts::{self, send};
use crate::config::{Alert, Destination, Format};
use crate::index::AlertRecord;
use crate::server::error::{ApiError, ErrorBody, parse_u64};
use crate::server::extract::{Path, Query};
use crate::server::state::AppState;

/// The query of `GET /api/alerts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertsQuery {
    /// How many alerts: 1 to 1000 (a number outside is taken as the nearest of those).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000, default = 50)]
    limit: Option<String>,
}

/// The alerts recorded, newest first, with their delivery.
#[utoipa::path(
    get,
    path = "/api/alerts",
    operation_id = "listAlerts",
    tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, description = "Alerts, newest first: one per alert and destination.",
            body = Vec<AlertRecord>),
        (status = 400, description = "A `limit` that is not a whole number.", body = ErrorBody),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn list_alerts(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AlertsQuery>,
) -> Result<Json<Vec<AlertRecord>>, ApiError> {
    let limit = parse_u64("limit", q.limit.as_deref())?
        .unwrap_or(50)
        .clamp(1, 1000) as usize;
    Ok(Json(
        state.with_index(move |idx| idx.list_alerts(limit)).await?,
    ))
}

/// One `[[alerts]]` destination, as the dashboard shows it: nothing secret in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationInfo {
    /// The `[[alerts]]` name.
    pub name: String,
    /// How it is reached: `webhook`, `email` or `command` (a client reads it rather than
    /// assuming those are all there are).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it is reached, shown safely: a webhook's scheme and host only (its path often is
    /// its secret), an e-mail's recipients, a command's program.
    pub target: String,
    /// A webhook's body: `json` or `slack`.
    pub format: String,
    /// What it is told about (`on`).
    pub on: Vec<String>,
    /// The pipeline names or globs it watches.
    pub pipelines: Vec<String>,
    /// Its alerts in the history, by status.
    pub counts: AlertCounts,
}

/// A destination's alerts in the history, by status (`GET /api/alerts` lists them).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct AlertCounts {
    pub sent: u64,
    pub retrying: u64,
    pub failed: u64,
    pub held: u64,
    pub summarized: u64,
}

/// What a destination's `type` and `target` are.
fn reached(dest: &Destination) -> (&'static str, String) {
    match dest {
        Destination::Webhook(url) => ("webhook", send::shown_url(url)),
        Destination::Command(argv) => ("command", argv.first().cloned().unwrap_or_default()),
        Destination::Email { to, .. } => (
            "email",
            to.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
}

impl DestinationInfo {
    fn of(dest: &Alert, counts: &[(String, String, u64)]) -> DestinationInfo {
        let (kind, target) = reached(&dest.destination);
        let mut c = AlertCounts::default();
        for (_, status, n) in counts.iter().filter(|(d, _, _)| *d == dest.name) {
            match status.as_str() {
                "sent" => c.sent = *n,
                "retrying" => c.retrying = *n,
                "failed" => c.failed = *n,
                "held" => c.held = *n,
                "summarized" => c.summarized = *n,
                _ => {}
            }
        }
        DestinationInfo {
            name: dest.name.clone(),
            kind: kind.to_string(),
            target,
            format: match dest.format {
                Format::Json => "json",
                Format::Slack => "slack",
            }
            .to_string(),
            on: dest.on.iter().map(|k| k.as_str().to_string()).collect(),
            pipelines: dest.pipelines.clone(),
            counts: c,
        }
    }
}

/// The alert destinations, in configuration order, with their alerts counted.
#[utoipa::path(
    get,
    path = "/api/alerts/destinations",
    operation_id = "listAlertDestinations",
    tag = "alerts",
    responses(
        (status = 200, description = "The `[[alerts]]` destinations, in configuration order \
            (a webhook shown as its scheme and host only).", body = Vec<DestinationInfo>),
        (status = 503, description = "The run index is unavailable.", body = ErrorBody),
    ),
)]
pub async fn list_destinations(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<DestinationInfo>>, ApiError> {
    let counts = state.with_index(|idx| idx.count_alerts()).await?;
    Ok(Json(
        state
            .workspace()
            .alerts
            .iter()
            .map(|d| DestinationInfo::of(d, &counts))
            .collect(),
    ))
}

/// The outcome of a test alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// The destination.
    pub name: String,
    /// The test alert's id (its `Idempotency-Key`).
    pub id: String,
    /// Always `sent`: a failed delivery is a 502.
    pub status: String,
}

/// Send a test alert to one destination now.
///
/// The alert (kind `test`) is sent once, not recorded in the history nor retried; the
/// answer waits for the destination.
#[utoipa::path(
    post,
    path = "/api/alerts/{name}/test",
    operation_id = "testAlert",
    tag = "alerts",
    params(("name" = String, Path, description = "The `[[alerts]]` destination.")),
    responses(
        (status = 200, description = "The destination took the test alert.", body = TestSent),
        (status = 404, description = "No such destination.", body = ErrorBody),
        (status = 502, description = "The destination refused it or could not be reached \
            (the message says why).", body = ErrorBody),
    ),
)]
pub async fn test_alert(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<TestSent>, ApiError> {
    let workspace = state.workspace();
    let Some(dest) = workspace.alerts.iter().find(|a| a.name == name).cloned() else {
        let names: Vec<&str> = workspace.alerts.iter().map(|a| a.name.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no alert destination {name:?}; the destinations are: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let alert = alerts::test_alert(&dest.name, &state.base_url(), chrono::Utc::now());
    let id = alert.id.clone();
    let sent = tokio::task::spawn_blocking(move || send::send(&dest, &alert))
        .await
        .unwrap_or_else(|e| Err(format!("the delivery task failed: {e}")));
    match sent {
        Ok(()) => Ok(Json(TestSent {
            name,
            id,
            status: "sent".to_string(),
        })),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the test alert to {name:?} was not delivered: {e}"),
        )),
    }
}
