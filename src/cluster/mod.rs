//! Many hosts, one dashboard: `[cluster]` over NATS JetStream (`docs/scale-out.md`).
//!
//! The engine is NATS JetStream, reached through the official `async-nats` client; pipewatch
//! runs no coordinator of its own. What holds across hosts is in the data, not in a leader:
//! each event is one message with `Nats-Msg-Id: <run_id>:<seq>` (the engine drops a repeat),
//! each scheduled occurrence is one key of a key-value bucket, created once.
//!
//! # Layout
//!
//! - this module: [`Engine`], a connection with the stream and the buckets created or checked
//!   ([`Engine::connect`], [`Engine::ensure_stream`]); the names of subjects, message ids and claim
//!   keys ([`subject`], [`msg_id`], [`claim_key`]), each token made safe for a subject.
//! - [`forward`]: runner → JetStream, the run file as the outbox; [`sidecar`]: what the engine
//!   acknowledged of each run file.
//! - [`claim`]: a scheduled run claims its occurrence before it runs (one host runs it).
//! - [`lock`]: a pipeline's overlap lock across hosts, expiring with a dead host.
//!
//! # Names
//!
//! | what | name |
//! |---|---|
//! | the events stream | [`STREAM`], subjects `pipewatch.events.<pipeline>.<run_id>` |
//! | occurrences claimed | key-value bucket [`CLAIMS`], key `<pipeline>.<occurrence>` |
//! | pipelines' overlap locks | key-value bucket [`LOCKS`], key `<pipeline>` |

pub mod forward;
pub mod sidecar;
pub mod claim;
pub mod lock;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::Cluster;
use crate::event::RunId;

/// The stream every host's events go to.
pub const STREAM: &str = "PIPEWATCH_EVENTS";
/// The subjects of [`STREAM`]: `pipewatch.events.<pipeline>.<run_id>`.
pub const SUBJECT_PREFIX: &str = "pipewatch.events";
/// The bucket of claimed occurrences.
pub const CLAIMS: &str = "pipewatch_claims";
/// The bucket of pipelines' overlap locks.
pub const LOCKS: &str = "pipewatch_locks";

/// The window in which the stream drops a message whose `Nats-Msg-Id` it has stored: longer
/// than any forwarder keeps retrying one publish before it asks the stream where it got to.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 3600);

/// How long a claim is kept: an occurrence older than this can no longer be started by any
/// host (a late run's grace is minutes), so its key may go.
pub const CLAIM_TTL: Duration = Duration::from_secs(7 * 86_400);

/// How long connecting may take before the engine counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the engine said, or that it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach NATS at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("cannot read the credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("NATS JetStream: cannot {what}: {reason}")]
    JetStream { what: &'static str, reason: String },
}

impl EngineError {
    pub(crate) fn js(what: &'static str) -> impl FnOnce(String) -> EngineError {
        move |reason| EngineError::JetStream { what, reason }
    }
}

/// Settings of the stream that come from elsewhere in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Events older than this are removed from the stream (`[retention] max_age`); zero keeps
    /// them.
    pub max_age: Duration,
    /// The most bytes it keeps, its oldest events removed first (`[cluster] max_bytes`); -1:
    /// no limit.
    pub max_bytes: i64,
}

impl StreamLimits {
    /// The limits a workspace asks for: the stream keeps events as long as the pipeline that
    /// keeps its runs longest (a pipeline that keeps them forever: forever). Every host and
    /// every dashboard of one workspace computes the same, so none undoes another's setting.
    pub fn of(ws: &crate::config::Workspace) -> StreamLimits {
        let ages = std::iter::once(&ws.retention)
            .chain(ws.pipelines.iter().map(|c| &c.retention))
            .map(|r| r.max_age);
        let max_age = ages
            .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
            .flatten()
            .unwrap_or(Duration::ZERO);
        let max_bytes = ws
            .shared()
            .cluster
            .as_ref()
            .and_then(|c| c.max_bytes)
            .and_then(|b| i64::try_from(b).ok())
            .unwrap_or(-1);
        StreamLimits { max_age, max_bytes }
    }
}

/// A connection to the engine, for one host.
#[derive(Clone)]
pub struct Engine {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub host: String,
    replicas: usize,
}

impl Engine {
    /// Connects to `[cluster] nats` (any of its servers), within [`CONNECT_TIMEOUT`]. Once
    /// connected, the client reconnects by itself.
    pub async fn connect(cluster: &Cluster) -> Result<Engine, EngineError> {
        Engine::connect_within(cluster, CONNECT_TIMEOUT).await
    }

    /// [`Engine::connect`] with another timeout.
    pub async fn connect_within(
        cluster: &Cluster,
        timeout: Duration,
    ) -> Result<Engine, EngineError> {
        let servers = cluster.nats.join(",");
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("pipewatch@{}", cluster.host))
            .connection_timeout(timeout)
            .request_timeout(Some(Duration::from_secs(10)));
        if let Some(path) = &cluster.credentials {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| EngineError::Credentials {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
        let unreachable = |reason: String| EngineError::Unreachable {
            servers: servers.clone(),
            reason,
        };
        let connect = async_nats::connect_with_options(cluster.nats.as_slice(), opts);
        let client = tokio::time::timeout(timeout + Duration::from_millis(250), connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let js = jetstream::new(client.clone());
        Ok(Engine {
            client,
            js,
            host: cluster.host.clone(),
            replicas: cluster.replicas,
        })
    }

    /// The events stream's settings.
    pub fn stream_config(&self, limits: StreamLimits) -> stream::Config {
        stream::Config {
            name: STREAM.to_string(),
            description: Some("pipewatch: every host's run events".to_string()),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            discard: stream::DiscardPolicy::Old,
            // Lets `Engine::last_seq_of` ask any replica for a subject's last message.
            allow_direct: true,
            deny_delete: true,
            ..Default::default()
        }
    }

    /// Creates the events stream, or brings an existing one to [`Engine::stream_config`].
    pub async fn ensure_stream(&self, limits: StreamLimits) -> Result<stream::Stream, EngineError> {
        let config = self.stream_config(limits);
        match self.js.get_stream(STREAM).await {
            Ok(mut s) => {
                let info = s
                    .info()
                    .await
                    .map_err(|e| EngineError::js("read the events stream")(e.to_string()))?;
                let have = &info.config;
                if have.subjects != config.subjects
                    || have.num_replicas != config.num_replicas
                    || have.duplicate_window != config.duplicate_window
                    || have.max_age != config.max_age
                    || have.max_bytes != config.max_bytes
                    || have.storage != config.storage
                {
                    self.js
                        .update_stream(&config)
                        .await
                        .map_err(|e| EngineError::js("update the events stream")(e.to_string()))?;
                }
                Ok(s)
            }
            Err(_) => self
                .js
                .get_or_create_stream(config)
                .await
                .map_err(|e| EngineError::js("create the events stream")(e.to_string())),
        }
    }

    /// The bucket of claimed occurrences, created if missing.
    pub async fn claims(&self) -> Result<kv::Store, EngineError> {
        self.bucket(
            CLAIMS,
            CLAIM_TTL,
            "pipewatch: scheduled occurrences, one host each",
        )
        .await
    }

    /// The bucket of pipelines' overlap locks, created if missing.
    pub async fn locks(&self) -> Result<kv::Store, EngineError> {
        // A value lives `LOCK_TTL` unless its holder rewrites it: a dead host's lock expires.
        self.bucket(
            LOCKS,
            lock::LOCK_TTL,
            "pipewatch: the run holding each pipeline",
        )
        .await
    }

    async fn bucket(
        &self,
        name: &str,
        max_age: Duration,
        description: &str,
    ) -> Result<kv::Store, EngineError> {
        if let Ok(store) = self.js.get_key_value(name).await {
            return Ok(store);
        }
        self.js
            .create_key_value(kv::Config {
                bucket: name.to_string(),
                description: description.to_string(),
                history: 1,
                max_age,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::js("create a key-value bucket")(e.to_string()))
    }
}

/// `s` as one token of a subject or key: letters, digits, `_` and `-` as they are, every other
/// byte as `%XX` (so `.`, `*`, `>` and spaces never split or widen a subject, and two names
/// never meet).
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

/// The subject of a run's events: `pipewatch.events.<pipeline>.<run_id>`.
pub fn subject(pipeline: &str, run_id: &RunId) -> String {
    format!(
        "{SUBJECT_PREFIX}.{}.{}",
        token(pipeline),
        token(run_id.as_str())
    )
}

/// The `Nats-Msg-Id` of a run's event: `<run_id>:<seq>`.
pub fn msg_id(run_id: &RunId, seq: u64) -> String {
    format!("{run_id}:{seq}")
}

/// `s` as one token of a key-value key: [`token`] with `=` as the escape (a key allows
/// letters, digits, `-`, `_`, `/`, `=` and `.`, but not `%`); still one token, still distinct.
pub fn key_token(s: &str) -> String {
    token(s).replace('%', "=")
}

/// The claim key of one occurrence of a pipeline: `<pipeline>.<occurrence>`, the occurrence as
/// its UTC time to the second (`20261203T101500Z`).
pub fn claim_key(pipeline: &str, occurrence: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{}.{}",
        key_token(pipeline),
        occurrence.format("%Y%m%dT%H%M%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_split_a_subject_and_stay_distinct() {
        assert_eq!(token("nightly_etl-2"), "nightly_etl-2");
        assert_eq!(token("a.b"), "a%2Eb");
        assert_eq!(token("a*>b c"), "a%2A%3Eb%20c");
        assert_eq!(token(""), "%");
        assert_ne!(token("a.b"), token("a_b"));
        assert_ne!(token("a%2Eb"), token("a.b"));
        assert_eq!(token("é"), "%C3%A9");
    }

    #[test]
    fn the_stream_keeps_events_as_long_as_the_longest_retention() {
        let limits = |retention: &str| {
            let text = format!(
                "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n{retention}"
            );
            crate::config::Workspace::parse(&text, std::path::Path::new("/p/pipewatch.toml"))
                .map(|ws| StreamLimits::of(&ws).max_age)
                .ok()
        };
        assert_eq!(limits(""), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            limits("[retention]\nmax_age = \"7d\"\n"),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            limits("[retention]\nmax_age = \"0\"\n"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn names_follow_the_contract() {
        let id = RunId::parse("20261203T101500Z-3f9a").expect("valid");
        assert_eq!(
            subject("sales.daily", &id),
            "pipewatch.events.sales%2Edaily.20261203T101500Z-3f9a"
        );
        assert_eq!(msg_id(&id, 7), "20261203T101500Z-3f9a:7");
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:15:00Z")
            .expect("valid")
            .with_timezone(&chrono::Utc);
        assert_eq!(claim_key("etl", at), "etl.20261203T101500Z");
        // A name that is no key as it is becomes one: no `%`, no extra `.`.
        assert_eq!(
            claim_key("Nightly ETL.v2", at),
            "Nightly=20ETL=2Ev2.20261203T101500Z"
        );
        assert_ne!(key_token("a=2Eb"), key_token("a.b"));
    }
}
