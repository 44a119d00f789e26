//! Why a run stops early, and how the decision reaches every stage.
//!
//! A run is stopped by one of three things: a cancel (a signal, a cancel request file, or a
//! newer run under `overlap = "replace"`), the whole run's `timeout`, or a journal that can no
//! longer be written (checked on every tick, and before every stage starts:
//! [`Watcher::check_journal`]). [`Stop`] is that reason as a type; the text written to the
//! journal (`data.reason`, part of the file format in `docs/events.md`) comes from
//! [`Stop::reason`] and nowhere else, and no decision is taken by comparing that text.
//!
//! Invariants: the first stop wins — once set, the reason never changes ([`Watcher`] only
//! ever sets an empty slot); the slot lives on one watch channel owned by the DAG loop
//! ([`super::dag`]), and every stage task holds a receiver and selects on [`stopped`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

use super::liveness::RunLock;
use super::shutdown;
use crate::journal::Journal;

/// How often the runner looks for a cancel request (and for a failed journal).
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// Why the run is being stopped early.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stop {
    /// Cancelled by a cancel request (`user` from the dashboard, or the request's own
    /// reason) or by a newer run (`replaced`). The text is the journaled reason code.
    Cancel(String),
    /// Cancelled by a signal to `pipewatch run` (its name: `SIGTERM`, `Ctrl-Break`, …);
    /// journaled as reason `interrupted` with the name in `data.interrupted_by`.
    Interrupted(&'static str),
    /// The whole run's timeout expired.
    Timeout,
    /// The journal cannot be written any more.
    Journal,
}

impl Stop {
    /// The journal's `data.reason` for this stop.
    pub(super) fn reason(&self) -> &str {
        match self {
            Stop::Cancel(r) => r,
            Stop::Interrupted(_) => "interrupted",
            Stop::Timeout => "timeout",
            Stop::Journal => "journal",
        }
    }

    /// Whether this stop cancels the run (rather than failing it).
    pub(super) fn is_cancel(&self) -> bool {
        matches!(self, Stop::Cancel(_) | Stop::Interrupted(_))
    }

    /// The signal that interrupted the run, for `data.interrupted_by`.
    pub(super) fn interrupted_by(&self) -> Option<&'static str> {
        match self {
            Stop::Interrupted(sig) => Some(sig),
            _ => None,
        }
    }

    /// Who or what cancelled the run, in words for messages (`None` when not a cancel).
    pub(super) fn cancelled_by(&self) -> Option<String> {
        match self {
            Stop::Cancel(r) if r == "user" => Some("by a user".to_string()),
            Stop::Cancel(r) if r == "replaced" => Some("replaced by a newer run".to_string()),
            Stop::Cancel(r) if r.is_empty() || r == "cancelled" => Some("on request".to_string()),
            Stop::Cancel(r) => Some(r.clone()),
            Stop::Interrupted(sig) => Some(format!("interrupted by {sig}")),
            Stop::Timeout | Stop::Journal => None,
        }
    }
}

/// The receiving end every stage task holds.
pub(super) type StopRx = watch::Receiver<Option<Stop>>;

/// Resolves with the reason once the run is being stopped; never resolves otherwise.
pub(super) async fn stopped(mut rx: StopRx) -> Stop {
    let stop = match rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.clone(),
        Err(_) => None,
    };
    match stop {
        Some(s) => s,
        // The sender lives as long as the run; if it is gone, nothing will ever stop us.
        None => std::future::pending().await,
    }
}

/// Owns the stop slot and watches everything that can fill it: the OS signals, the run's
/// deadline, the cancel request file and the journal's health.
pub(super) struct Watcher {
    tx: watch::Sender<Option<Stop>>,
    deadline: Option<tokio::time::Instant>,
    poll: tokio::time::Interval,
    /// Kept across calls to [`Watcher::next`]: the signal handlers are installed on its first
    /// poll and must stay installed for the whole run, so a signal between two calls is not
    /// lost.
    signal: Pin<Box<dyn Future<Output = &'static str> + Send>>,
    /// The signal future has resolved; polling it again would be an error.
    signal_done: bool,
}

impl Watcher {
    /// A watcher whose run times out `timeout` from now (if any).
    pub(super) fn new(timeout: Option<Duration>) -> Watcher {
        let (tx, _) = watch::channel::<Option<Stop>>(None);
        let mut poll = tokio::time::interval(CANCEL_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watcher {
            tx,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            poll,
            signal: Box::pin(shutdown::signalled()),
            signal_done: false,
        }
    }

    /// A receiver for a stage task.
    pub(super) fn subscribe(&self) -> StopRx {
        self.tx.subscribe()
    }

    /// Why the run is stopping, if it is.
    pub(super) fn current(&self) -> Option<Stop> {
        self.tx.borrow().clone()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Waits for the next thing that can stop the run and records it (if the run is not
    /// already stopping). Cancel-safe: dropping it loses nothing, so it can race other work.
    pub(super) async fn next(&mut self, run_lock: &RunLock, journal: &Journal) {
        let timeout = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let stopping = self.is_stopping();
        tokio::select! {
            sig = &mut self.signal, if !self.signal_done => {
                self.signal_done = true;
                self.set(Stop::Interrupted(sig));
            }
            _ = timeout, if !stopping => self.set(Stop::Timeout),
            _ = self.poll.tick() => {
                if let Some(reason) = run_lock.cancel_requested() {
                    self.set(Stop::Cancel(reason));
                }
                if journal.failure().is_some() {
                    self.set(Stop::Journal);
                }
            }
        }
    }

    /// Stops the run now if its journal has failed; true if the run is stopping, for that or
    /// any other reason. The DAG calls it before every stage it starts: the tick of
    /// [`Watcher::next`] would notice the failure up to [`CANCEL_POLL`] later, time enough for
    /// the next stage to start and run in no journal.
    pub(super) fn check_journal(&self, journal: &Journal) -> bool {
        if journal.failure().is_some() {
            self.set(Stop::Journal);
        }
        self.is_stopping()
    }

    /// Fills the slot unless a stop was already recorded: the first reason wins.
    fn set(&self, stop: Stop) {
        self.tx.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(stop);
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_journaled_words() {
        assert_eq!(Stop::Timeout.reason(), "timeout");
        assert_eq!(Stop::Journal.reason(), "journal");
        assert_eq!(Stop::Cancel("replaced".into()).reason(), "replaced");
        // A cancel whose free text happens to read "timeout" is still a cancel.
        assert_ne!(Stop::Cancel("timeout".into()), Stop::Timeout);
    }

    #[tokio::test]
    async fn the_first_stop_wins_and_reaches_receivers() {
        let w = Watcher::new(None);
        let rx = w.subscribe();
        assert!(!w.is_stopping());
        w.set(Stop::Cancel("replaced".into()));
        w.set(Stop::Timeout);
        assert_eq!(w.current(), Some(Stop::Cancel("replaced".into())));
        assert_eq!(stopped(rx).await, Stop::Cancel("replaced".into()));
    }
}
