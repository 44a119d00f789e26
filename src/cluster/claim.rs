//! One run per occurrence across hosts: before a scheduled run of a configuration with
//! `[cluster]` starts, its host claims the occurrence in the engine.
//!
//! The claim is a key-value `create` of `<pipeline>.<occurrence>` ([`super::claim_key`]) in
//! the bucket [`super::CLAIMS`]: JetStream stores it only if the key has no value, so exactly
//! one host's create succeeds however many try and whatever their clocks say. The value names
//! the host and the run id ([`Holder`]). The winner runs; every other host exits without a
//! run. No leader decides anything: a leader change of the bucket's stream only delays the
//! answer, and a create that was stored but whose answer was lost is recognised on the retry
//! by its run id.
//!
//! Which runs claim: those started by a scheduler (`source` `scheduler` or `catchup`, see
//! [`is_scheduled`]). A run started by hand (`cli`, `manual`, a retry) is what someone asked
//! for on this host and is never claimed.
//!
//! Which occurrence ([`occurrence`]): the built-in scheduler passes the one it fires
//! (`run --occurrence`); a run started by an OS scheduler (cron, a systemd timer, Task
//! Scheduler) takes the schedule's latest occurrence at or before its start, however late:
//! an OS that starts a missed task when the machine wakes up is catching up that occurrence,
//! which must not run again if another host ran it on time.
//!
//! When the engine cannot be reached, or gives no answer within [`CLAIM_WITHIN`] (transient
//! errors, such as a stream's leader election, are retried until then), the outcome is
//! [`Outcome::Unreachable`]: the run is recorded `skipped` with reason `engine_unreachable`
//! rather than run on every host at once or silently not at all.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{CLAIMS, Engine, claim_key};
use crate::config::Config;
use crate::config::schedule::Schedule;
use crate::event::RunId;

/// How long a claim may take, connecting included, before the engine counts as unreachable:
/// long enough for a stream to elect a new leader (a few seconds), short enough that a
/// scheduled run is not held up for long.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(15);

/// How long one attempt (find the bucket, create, read the holder) may take.
const ATTEMPT: Duration = Duration::from_secs(3);

/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The reason code of a run skipped because the engine could not be reached to claim it
/// (`data.reason`, `docs/events.md`).
pub const ENGINE_UNREACHABLE: &str = "engine_unreachable";

/// The value of a claim: who holds the occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `[cluster] host` of the host that claimed it.
    pub host: String,
    /// The run it claimed it for.
    pub run_id: String,
    /// When, by that host's clock (RFC 3339).
    pub claimed_at: String,
}

/// What the engine said about a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This run holds the occurrence.
    Won,
    /// Another run holds it.
    Lost(Holder),
    /// No answer: why.
    Unreachable(String),
}

/// What `pipewatch run` does before its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run; with a line to show first, if any.
    Run(Option<String>),
    /// Another host runs this occurrence: no run here. The line to show.
    NotHere(String),
    /// Record the run `skipped` with reason [`ENGINE_UNREACHABLE`]: the line to record.
    Unreachable(String),
}

/// Whether a run with this `source` was started by a scheduler (and so claims its occurrence
/// under `[cluster]`).
pub fn is_scheduled(source: &str) -> bool {
    matches!(source, "scheduler" | "catchup")
}

/// The occurrence a scheduled run is for: `given` by the built-in scheduler, otherwise the
/// schedule's latest occurrence at or before `now` in local time (as an OS scheduler fires
/// it). `None` if the schedule has none.
pub fn occurrence(
    schedule: &Schedule,
    given: Option<DateTime<Utc>>,
    now: DateTime<Local>,
) -> Option<DateTime<Utc>> {
    given.or_else(|| {
        schedule
            .latest_at_or_before(&now)
            .map(|t| t.with_timezone(&Utc))
    })
}

/// Decides whether this run of `config`, started by `source` with run id `run_id`, runs
/// here: a scheduled run of a configuration with `[cluster]` claims its occurrence first;
/// any other run just runs.
pub async fn decide(
    config: &Config,
    source: &str,
    given: Option<DateTime<Utc>>,
    run_id: &RunId,
) -> Decision {
    let Some(cluster) = config.cluster.as_ref() else {
        return Decision::Run(None);
    };
    if !is_scheduled(source) {
        return Decision::Run(None);
    }
    let pipeline = &config.pipeline.name;
    let now = Local::now();
    let Some(at) = occurrence(&config.pipeline.schedule, given, now) else {
        // Nothing to claim: the schedule never fires. Running is what was asked.
        return Decision::Run(Some(format!(
            "the schedule {:?} has no occurrence before now: running unclaimed",
            config.pipeline.schedule.expression()
        )));
    };
    let when = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let late = (now.with_timezone(&Utc) - at).to_std().unwrap_or_default();
    let note = (given.is_none() && late > config.scheduler.grace).then(|| {
        format!(
            "started {}s after the occurrence at {when} (beyond [scheduler] grace): \
             claiming that occurrence",
            late.as_secs()
        )
    });
    match claim(cluster, pipeline, at, run_id).await {
        Outcome::Won => Decision::Run(note),
        Outcome::Lost(holder) => Decision::NotHere(format!(
            "the occurrence at {when} of {pipeline} was claimed by host {} (run {}): \
             not running it here",
            holder.host, holder.run_id
        )),
        Outcome::Unreachable(why) => Decision::Unreachable(format!(
            "not started: the occurrence at {when} could not be claimed ({why})"
        )),
    }
}

/// Claims occurrence `at` of `pipeline` for run `run_id` of this host, within
/// [`CLAIM_WITHIN`].
pub async fn claim(
    cluster: &crate::config::Cluster,
    pipeline: &str,
    at: DateTime<Utc>,
    run_id: &RunId,
) -> Outcome {
    let deadline = Instant::now() + CLAIM_WITHIN;
    let engine = match Engine::connect(cluster).await {
        Ok(engine) => engine,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let key = claim_key(pipeline, at);
    let mine = Holder {
        host: cluster.host.clone(),
        run_id: run_id.to_string(),
        claimed_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let value = serde_json::to_vec(&mine).unwrap_or_default();
    let mut pause = Duration::from_millis(100);
    loop {
        // No attempt outlasts the deadline.
        let within = ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
        let why = match tokio::time::timeout(within, attempt(&engine, &key, value.clone(), &mine))
            .await
        {
            Ok(Ok(outcome)) => return outcome,
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {} ms", within.as_millis()),
        };
        tracing::debug!(key, "claim: {why}; retrying");
        if Instant::now() + pause >= deadline {
            return Outcome::Unreachable(format!(
                "key {key} of bucket {CLAIMS} at {}: {why}",
                cluster.nats.join(",")
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One try: create the key; if it exists, read who holds it. An error is worth retrying.
async fn attempt(
    engine: &Engine,
    key: &str,
    value: Vec<u8>,
    mine: &Holder,
) -> Result<Outcome, String> {
    let store = engine.claims().await.map_err(|e| e.to_string())?;
    match store.create(key, value.into()).await {
        Ok(_) => Ok(Outcome::Won),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let held = store
                .get(key)
                .await
                .map_err(|e| format!("cannot read the claim: {e}"))?
                .ok_or_else(|| "the claim exists but has no value yet".to_string())?;
            Ok(holder_outcome(&held, mine))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Who holds a claim whose value is `held`: this run (its own create, stored before an
/// earlier attempt lost the answer) or another.
fn holder_outcome(held: &[u8], mine: &Holder) -> Outcome {
    match serde_json::from_slice::<Holder>(held) {
        Ok(h) if h.run_id == mine.run_id && h.host == mine.host => Outcome::Won,
        Ok(h) => Outcome::Lost(h),
        // Not a value pipewatch writes: someone holds it all the same.
        Err(_) => Outcome::Lost(Holder {
            host: "(unknown)".to_string(),
            run_id: String::from_utf8_lossy(held).chars().take(80).collect(),
            claimed_at: String::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn local(h: u32, m: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 12, 3, h, m, s)
            .single()
            .expect("an unambiguous local time")
    }

    #[test]
    fn only_scheduler_starts_claim() {
        assert!(is_scheduled("scheduler"));
        assert!(is_scheduled("catchup"));
        for s in ["cli", "manual", "retry", "api", ""] {
            assert!(!is_scheduled(s), "{s}");
        }
    }

    #[test]
    fn the_given_occurrence_wins_else_the_latest_at_or_before_now() {
        let every_15: Schedule = "*/15 * * * *".parse().expect("schedule");
        let given = Utc.with_ymd_and_hms(2026, 12, 3, 1, 2, 3).unwrap();
        assert_eq!(
            occurrence(&every_15, Some(given), local(10, 7, 0)),
            Some(given)
        );
        // Fired on time, a moment late, and an hour late (an OS catching up after a sleep).
        let at = |t| occurrence(&every_15, None, t);
        assert_eq!(at(local(10, 15, 0)), Some(local(10, 15, 0).to_utc()));
        assert_eq!(at(local(10, 15, 1)), Some(local(10, 15, 0).to_utc()));
        assert_eq!(at(local(11, 14, 59)), Some(local(11, 0, 0).to_utc()));
    }

    #[test]
    fn a_claim_is_ours_only_with_our_run_id_and_host() {
        let mine = Holder {
            host: "etl-01".into(),
            run_id: "20261203T101500Z-aaaa".into(),
            claimed_at: "2026-12-03T10:15:00.001Z".into(),
        };
        let json = |h: &Holder| serde_json::to_vec(h).expect("json");
        assert_eq!(holder_outcome(&json(&mine), &mine), Outcome::Won);
        let other = Holder {
            host: "etl-02".into(),
            ..mine.clone()
        };
        assert_eq!(
            holder_outcome(&json(&other), &mine),
            Outcome::Lost(other.clone())
        );
        match holder_outcome(b"not json", &mine) {
            Outcome::Lost(h) => assert_eq!(h.run_id, "not json"),
            o => panic!("{o:?}"),
        }
    }
}
