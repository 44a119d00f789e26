//! A pipeline's overlap lock across hosts: with `[cluster]`, `[pipeline] overlap` (`skip`,
//! `queue`, `replace`) is decided by a key of the engine's bucket [`super::LOCKS`] as well as
//! by the host's own `pipeline.lock` (which still settles the runs of one host).
//!
//! The key is the pipeline's name ([`super::key_token`]); a run holds it from a `create` that
//! succeeds until it deletes it after its final event. Its value names the host and the run
//! ([`Holder`]). A host that dies holding it cannot delete it: the bucket keeps a value for
//! [`LOCK_TTL`] only (its `max_age`), and a living holder rewrites its value every
//! [`REFRESH`] (an `update` at the revision it last wrote), so only a dead host's lock
//! expires.
//!
//! `replace` from another host: the new run writes `replace_by` into the holder's value (an
//! `update` at the holder's revision). The holder's next refresh finds the revision moved,
//! reads the request, and asks its own run to stop (reason `replaced`, as on one host); the
//! new run waits for the key to go.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Engine, LOCKS, key_token};
use crate::config::Cluster;
use crate::event::RunId;

/// How long a lock outlives its last refresh: a dead host's lock is free after this.
pub const LOCK_TTL: Duration = Duration::from_secs(15);

/// How often a living holder rewrites its lock (a few times per [`LOCK_TTL`], so that a slow
/// answer or a leader election does not let it expire).
pub const REFRESH: Duration = Duration::from_secs(3);

/// How long one request to the engine may take here.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long a run waits to reach the engine for its overlap lock: an unreachable engine may
/// delay a run's start by about this much, no more (the policy then holds on this host).
const CONNECT_WITHIN: Duration = Duration::from_millis(750);

/// How often a waiting run (`queue`, `replace`) tries the lock again.
const RETRY: Duration = Duration::from_millis(500);

/// The value of a lock: who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub run_id: String,
    /// When the run took it (RFC 3339).
    pub since: String,
    /// A run on another host asking this one to stop (`overlap = "replace"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_by: Option<String>,
}

/// The answer to one try.
pub enum Take {
    /// This run holds the lock now.
    Taken(EngineLock),
    /// Another run holds it.
    Held { holder: Holder, revision: u64 },
}

/// The engine could not be reached or answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("overlap lock {key} in bucket {LOCKS}: {reason}")]
pub struct LockError {
    pub key: String,
    pub reason: String,
}

/// The bucket, on a connection of its own.
pub struct Locks {
    store: kv::Store,
    key: String,
    host: String,
}

impl Locks {
    /// Connects and finds (or creates) the bucket.
    pub async fn open(cluster: &Cluster, pipeline: &str) -> Result<Locks, LockError> {
        let key = key_token(pipeline);
        let err = |reason: String| LockError {
            key: key.clone(),
            reason,
        };
        let engine = Engine::connect_within(cluster, CONNECT_WITHIN)
            .await
            .map_err(|e| err(e.to_string()))?;
        let store = within(engine.locks())
            .await
            .map_err(&err)?
            .map_err(|e| err(e.to_string()))?;
        Ok(Locks {
            store,
            key,
            host: cluster.host.clone(),
        })
    }

    /// Takes the lock for `run_id` if no run holds it. `on_replace` is called (once) if a run
    /// on another host asks this one to stop.
    pub async fn try_take(
        &self,
        run_id: &RunId,
        on_replace: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<Take, LockError> {
        let mine = Holder {
            host: self.host.clone(),
            run_id: run_id.to_string(),
            since: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            replace_by: None,
        };
        let value = serde_json::to_vec(&mine).unwrap_or_default();
        // A lock released between the create and the read is tried again, a few times.
        for _ in 0..3 {
            match within(self.store.create(&self.key, value.clone().into())).await {
                Ok(Ok(revision)) => return Ok(self.taken(mine, revision, on_replace)),
                Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match self.holder().await? {
                        // Ours: the create was stored, its answer lost.
                        Some((holder, revision)) if holder.run_id == mine.run_id => {
                            return Ok(self.taken(mine, revision, on_replace));
                        }
                        Some((holder, revision)) => return Ok(Take::Held { holder, revision }),
                        None => continue,
                    }
                }
                Ok(Err(e)) => return Err(self.err(e.to_string())),
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(self.err("taken and released again and again".to_string()))
    }

    fn taken(
        &self,
        mine: Holder,
        revision: u64,
        on_replace: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Take {
        Take::Taken(EngineLock::hold(
            self.store.clone(),
            self.key.clone(),
            mine,
            revision,
            on_replace,
        ))
    }

    /// Who holds the lock now, with the revision of its value.
    async fn holder(&self) -> Result<Option<(Holder, u64)>, LockError> {
        let entry = within(self.store.entry(&self.key))
            .await
            .map_err(|e| self.err(e))?
            .map_err(|e| self.err(e.to_string()))?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => Some((parse(&e.value), e.revision)),
            _ => None,
        }))
    }

    /// Asks the run holding the lock (at `revision`) to stop: `replace_by` in its value.
    pub async fn request_replace(
        &self,
        mut holder: Holder,
        revision: u64,
        by: &RunId,
    ) -> Result<(), LockError> {
        if holder.replace_by.is_some() {
            return Ok(());
        }
        holder.replace_by = Some(by.to_string());
        let value = serde_json::to_vec(&holder).unwrap_or_default();
        match within(self.store.update(&self.key, value.into(), revision)).await {
            Ok(Ok(_)) => Ok(()),
            // It refreshed meanwhile (or ended): the next try sees where it is.
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(()),
            Ok(Err(e)) => Err(self.err(e.to_string())),
            Err(e) => Err(self.err(e)),
        }
    }

    /// How long a waiting run pauses between tries.
    pub fn retry_every() -> Duration {
        RETRY
    }

    fn err(&self, reason: String) -> LockError {
        LockError {
            key: self.key.clone(),
            reason,
        }
    }
}

/// A lock value, or a stand-in for one pipewatch did not write.
fn parse(value: &[u8]) -> Holder {
    serde_json::from_slice(value).unwrap_or_else(|_| Holder {
        host: "(unknown)".to_string(),
        run_id: String::from_utf8_lossy(value).chars().take(80).collect(),
        since: String::new(),
        replace_by: None,
    })
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(ANSWER_WITHIN, f)
        .await
        .map_err(|_| format!("no answer within {}s", ANSWER_WITHIN.as_secs()))
}

/// The lock, held by this run: refreshed in the background until [`EngineLock::release`].
pub struct EngineLock {
    // Boxed: a store is large, and a lock travels in enums beside small variants.
    store: Box<kv::Store>,
    key: String,
    stop: Arc<Notify>,
    refresher: JoinHandle<u64>,
}

impl EngineLock {
    fn hold(
        store: kv::Store,
        key: String,
        mine: Holder,
        revision: u64,
        on_replace: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> EngineLock {
        let stop = Arc::new(Notify::new());
        let refresher = tokio::spawn(refresh(
            store.clone(),
            key.clone(),
            mine,
            revision,
            on_replace,
            stop.clone(),
        ));
        EngineLock {
            store: Box::new(store),
            key,
            stop,
            refresher,
        }
    }

    /// Stops refreshing and deletes the lock (at the revision last written, so a lock that
    /// expired and was taken by another run meanwhile is left alone).
    pub async fn release(self) {
        self.stop.notify_one();
        let revision = match self.refresher.await {
            Ok(r) => r,
            Err(_) => return,
        };
        match within(self.store.delete_expect_revision(&self.key, Some(revision))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(key = self.key, "cannot release the overlap lock: {e}"),
            Err(e) => tracing::warn!(key = self.key, "cannot release the overlap lock: {e}"),
        }
    }
}

/// Rewrites the lock every [`REFRESH`] until told to stop; returns the revision last
/// written. A value changed by someone else is a `replace` request (passed on once) or, if
/// another run holds it, a lock lost to expiry (logged).
async fn refresh(
    store: kv::Store,
    key: String,
    mut mine: Holder,
    mut revision: u64,
    on_replace: Arc<dyn Fn(&str) + Send + Sync>,
    stop: Arc<Notify>,
) -> u64 {
    loop {
        tokio::select! {
            _ = stop.notified() => return revision,
            _ = tokio::time::sleep(REFRESH) => {}
        }
        let value = serde_json::to_vec(&mine).unwrap_or_default();
        match within(store.update(&key, value.into(), revision)).await {
            Ok(Ok(r)) => revision = r,
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let Ok(Ok(Some(entry))) = within(store.entry(&key)).await else {
                    continue;
                };
                let now = parse(&entry.value);
                if entry.operation == kv::Operation::Put && now.run_id == mine.run_id {
                    // A replace request written at our revision: pass it on, once, and go
                    // on holding the lock until the run has ended.
                    if let (Some(by), None) = (&now.replace_by, &mine.replace_by) {
                        on_replace(by);
                    }
                    mine.replace_by = now.replace_by;
                    revision = entry.revision;
                } else {
                    tracing::warn!(
                        key,
                        holder = now.run_id,
                        "the overlap lock expired while this run held it (the engine was out \
                         of reach for longer than {}s)",
                        LOCK_TTL.as_secs()
                    );
                    return revision;
                }
            }
            // Out of reach for now: try again at the next refresh.
            Ok(Err(e)) => tracing::debug!(key, "cannot refresh the overlap lock: {e}"),
            Err(e) => tracing::debug!(key, "cannot refresh the overlap lock: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_its_holder_and_any_replace_request() {
        let h = Holder {
            host: "etl-01".into(),
            run_id: "r1".into(),
            since: "2026-12-03T10:00:00.000Z".into(),
            replace_by: None,
        };
        let json = serde_json::to_string(&h).expect("json");
        assert!(!json.contains("replace_by"), "{json}");
        assert_eq!(parse(json.as_bytes()), h);
        let asked = Holder {
            replace_by: Some("r2".into()),
            ..h.clone()
        };
        assert_eq!(parse(&serde_json::to_vec(&asked).expect("json")), asked);
        assert_eq!(parse(b"junk").host, "(unknown)");
    }

    #[test]
    fn a_living_holder_refreshes_well_within_the_ttl() {
        assert!(REFRESH * 3 <= LOCK_TTL);
    }
}
