//! The built-in scheduler's loop (only when `[scheduler] backend = "builtin"`): fires
//! `pipewatch run --source scheduler` at each occurrence of the schedule while enabled.
//!
//! At start, and after any stretch it could not fire (suspend, a clock jump forward), it
//! applies `catchup` / `catchup_window` to the occurrences it missed ([`plan_catchup`]): runs
//! them with `--source catchup` or records them as `missed` ([`record_missed`]). Each
//! occurrence is handled once: the last one handled is persisted in the [`State`] before its
//! run starts, so neither a restart (even `kill -9`) nor a clock jump back fires it again.
//!
//! The loop reads the time only from its [`Clock`] and starts runs only through its
//! [`Launcher`]: `serve` passes the wall clock and the dashboard's launcher; tests pass a
//! manual clock and a launcher that records, and cover hours in milliseconds.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::State;
use super::plan::plan_catchup;
use crate::config::schedule::Schedule;
use crate::config::{Catchup, Config};
use crate::event::RunId;
use crate::journal::missed::record_missed;
use crate::scheduler::clock::Clock;
use crate::sync::blocking;

/// An occurrence fired this late is still on time (not a catch-up).
const ON_TIME: Duration = Duration::from_secs(60);

/// The longest the loop sleeps at once, so a wall-clock jump is noticed soon.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// How the loop starts a run: the dashboard's "Run now" path, in `serve`.
pub trait Launcher: Send + Sync + 'static {
    /// Starts `pipewatch run --source SOURCE --occurrence OCCURRENCE` (the occurrence of the
    /// schedule it is for, which a run under `[cluster]` claims). Resolves once the process is
    /// started, with its run id and a handle that resolves when it has exited; an error says
    /// why it could not start.
    fn launch(
        &self,
        source: &'static str,
        occurrence: DateTime<Utc>,
    ) -> impl Future<Output = Result<(RunId, JoinHandle<()>), String>> + Send;
}

/// What the loop needs from the configuration.
#[derive(Debug, Clone)]
pub struct Timer {
    pub schedule: Schedule,
    pub catchup: Catchup,
    pub catchup_window: Duration,
    pub state_dir: PathBuf,
    pub events_dir: PathBuf,
    pub pipeline: String,
}

impl Timer {
    pub fn from_config(config: &Config) -> Timer {
        Timer {
            schedule: config.pipeline.schedule.clone(),
            catchup: config.pipeline.catchup,
            catchup_window: config.pipeline.catchup_window,
            state_dir: config.pipeline_state_dir.clone(),
            events_dir: config.server.events_dir.clone(),
            pipeline: config.pipeline.name.clone(),
        }
    }

    /// The state, read on a blocking thread like every file this loop touches: a write of
    /// it waits for the state's lock, the disk (`fsync`) and, on Windows, for a reader to let
    /// go of the file, and the loop shares the async threads with every socket.
    async fn load(&self) -> State {
        let dir = self.state_dir.clone();
        blocking(move || load_or_off(&dir)).await
    }

    /// Changes the fields the loop owns on a fresh copy of the state, read and written under
    /// the state's lock, so that an enable or disable written meanwhile (by the API or
    /// `pipewatch scheduler`) is never overwritten.
    async fn update(&self, change: impl FnOnce(&mut State) + Send + 'static) {
        let dir = self.state_dir.clone();
        blocking(move || {
            let _lock = State::lock(&dir)
                .inspect_err(|e| tracing::error!("{e}"))
                .ok();
            let mut s = load_or_off(&dir);
            change(&mut s);
            if let Err(e) = s.save(&dir) {
                tracing::error!("{e}");
            }
        })
        .await;
    }

    async fn missed(&self, at: DateTime<Utc>) {
        let (events_dir, pipeline) = (self.events_dir.clone(), self.pipeline.clone());
        blocking(move || {
            record_missed(&events_dir, &pipeline, at, "the scheduler was not running");
        })
        .await;
    }

    /// Runs the loop until `shutdown` resolves. `wake` is notified when the state changed
    /// (enabled or disabled through the API), so the change applies at once.
    pub async fn run(
        self,
        clock: impl Clock,
        launcher: Arc<impl Launcher>,
        wake: Arc<Notify>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        if self.load().await.last_occurrence.is_none() {
            // First start: nothing was expected before now.
            let now = clock.now();
            self.update(move |s| {
                s.last_occurrence = Some(now);
                if s.enabled {
                    s.enabled_since = Some(now);
                }
            })
            .await;
        }
        tracing::info!(schedule = %self.schedule.expression(), "built-in scheduler started");
        loop {
            let now = clock.now();
            if self.handle_due(now, &clock, launcher.as_ref()).await {
                continue;
            }
            let last = self.load().await.last_occurrence.unwrap_or(now);
            let next = self.schedule.next_after(&now.max(last));
            let wait = next
                .and_then(|n| (n - now).to_std().ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                _ = wake.notified() => {}
                _ = clock.sleep(wait) => {}
            }
        }
    }

    /// Handles the occurrences due at `now`, if any: passes over them while disabled, catches
    /// up the late ones, fires the one on time. Returns whether there were any.
    async fn handle_due(
        &self,
        now: DateTime<Utc>,
        clock: &impl Clock,
        launcher: &impl Launcher,
    ) -> bool {
        let s = self.load().await;
        let last = s.last_occurrence.unwrap_or(now);
        let due = self.schedule.occurrences(last, now);
        let Some(&newest) = due.last() else {
            return false;
        };
        if !s.enabled {
            // Occurrences while disabled are not expected: pass over them.
            self.update(move |s| s.last_occurrence = Some(newest)).await;
            return true;
        }
        let on_time = (now - newest).to_std().unwrap_or_default() <= ON_TIME;
        let mut late = due;
        if on_time {
            late.pop();
        }
        if !late.is_empty() {
            self.catch_up(late, now, on_time, clock, launcher).await;
        }
        if on_time {
            self.update(move |s| s.last_occurrence = Some(newest)).await;
            self.fire(clock, launcher, "scheduler", newest, false).await;
        }
        true
    }

    /// Occurrences that could not be fired on time go through the catch-up policy.
    async fn catch_up(
        &self,
        late: Vec<DateTime<Utc>>,
        now: DateTime<Utc>,
        on_time: bool,
        clock: &impl Clock,
        launcher: &impl Launcher,
    ) {
        let Some(&until) = late.last() else {
            return;
        };
        // With an on-time occurrence about to run, `last` has its run: the late ones are only
        // recorded.
        let policy = match (self.catchup, on_time) {
            (Catchup::Last, true) => Catchup::None,
            (policy, _) => policy,
        };
        let plan = plan_catchup(late, now, policy, self.catchup_window);
        for &at in &plan.missed {
            self.missed(at).await;
        }
        for &at in &plan.run {
            // Handled before it runs: a dashboard killed during the run must not run this
            // occurrence again when it comes back.
            self.update(move |s| s.last_occurrence = Some(at)).await;
            self.fire(clock, launcher, "catchup", at, true).await;
        }
        self.update(move |s| s.last_occurrence = Some(until)).await;
    }

    /// Starts the scheduled run of occurrence `at`; with `wait`, until it has exited
    /// (catch-up runs one after another).
    async fn fire(
        &self,
        clock: &impl Clock,
        launcher: &impl Launcher,
        source: &'static str,
        at: DateTime<Utc>,
        wait: bool,
    ) {
        match launcher.launch(source, at).await {
            Ok((id, exited)) => {
                tracing::info!(run_id = %id, source, occurrence = %at, "scheduled run started");
                let (started, id) = (clock.now(), id.to_string());
                self.update(move |s| {
                    s.last_run = Some(started);
                    s.last_run_id = Some(id);
                })
                .await;
                if wait {
                    let _ = exited.await;
                }
            }
            Err(e) => tracing::error!("cannot start the scheduled run: {e}"),
        }
    }
}

/// The state in `dir`; an unreadable one (said in the log) is a disabled schedule: it must
/// not fire runs the user may have disabled.
fn load_or_off(dir: &Path) -> State {
    State::load(dir).unwrap_or_else(|e| {
        tracing::error!("{e}");
        State {
            enabled: false,
            ..State::default()
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::TimeZone;

    use super::*;
    use crate::scheduler::clock::manual::ManualClock;

    /// Records every launch with the clock's time, and the occurrence it was for; each run
    /// exits at once.
    struct Recorder {
        clock: ManualClock,
        fired: Mutex<Vec<(&'static str, DateTime<Utc>)>>,
        occurrences: Mutex<Vec<DateTime<Utc>>>,
    }

    impl Launcher for Recorder {
        async fn launch(
            &self,
            source: &'static str,
            occurrence: DateTime<Utc>,
        ) -> Result<(RunId, JoinHandle<()>), String> {
            let at = self.clock.now();
            self.fired.lock().unwrap().push((source, at));
            self.occurrences.lock().unwrap().push(occurrence);
            Ok((RunId::generate(at), tokio::spawn(async {})))
        }
    }

    struct Setup {
        /// Holds the state and events folders for the test's life.
        _dir: tempfile::TempDir,
        timer: Timer,
        clock: ManualClock,
        recorder: Arc<Recorder>,
    }

    fn setup(schedule: &str, catchup: Catchup, start: DateTime<Utc>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(start);
        let timer = Timer {
            schedule: schedule.parse().unwrap(),
            catchup,
            catchup_window: Duration::from_secs(6 * 3600),
            state_dir: dir.path().join("state"),
            events_dir: dir.path().join("events"),
            pipeline: "p".into(),
        };
        let recorder = Arc::new(Recorder {
            clock: clock.clone(),
            fired: Mutex::new(Vec::new()),
            occurrences: Mutex::new(Vec::new()),
        });
        Setup {
            _dir: dir,
            timer,
            clock,
            recorder,
        }
    }

    impl Setup {
        /// Runs the loop until the clock reaches `until` (a dashboard up until then).
        async fn run_until(&self, until: DateTime<Utc>) {
            let stop = self.clock.reached(until);
            self.timer
                .clone()
                .run(
                    self.clock.clone(),
                    self.recorder.clone(),
                    Arc::new(Notify::new()),
                    stop,
                )
                .await;
        }

        fn fired(&self) -> Vec<(&'static str, DateTime<Utc>)> {
            self.recorder.fired.lock().unwrap().clone()
        }

        fn occurrences(&self) -> Vec<DateTime<Utc>> {
            self.recorder.occurrences.lock().unwrap().clone()
        }

        /// The state as the API or a previous dashboard left it.
        fn saved(&self, enabled: bool, last_occurrence: DateTime<Utc>) {
            let state = State {
                enabled,
                last_occurrence: Some(last_occurrence),
                ..State::default()
            };
            state.save(&self.timer.state_dir).unwrap();
        }

        fn state(&self) -> State {
            State::load(&self.timer.state_dir).unwrap()
        }

        fn missed_files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.timer.events_dir)
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        }
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, m, s).unwrap()
    }

    /// The loop's file work waits on a blocking thread: while it waits for the state's lock
    /// (held by the API or `pipewatch scheduler` for a write that the disk, or on Windows a
    /// reader of the file, holds up), the async threads it shares with every socket go on.
    #[tokio::test]
    async fn waiting_for_the_state_lock_leaves_the_async_threads_free() {
        let s = setup("*/15 * * * *", Catchup::Last, t(9, 0, 30));
        let held = State::lock(&s.timer.state_dir).unwrap();
        let (ran, ran_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // Lets go once the async side says it ran, or after 10 s if it never does.
            let by_signal = ran_rx.recv_timeout(Duration::from_secs(10)).is_ok();
            drop(held);
            by_signal
        });
        let stop = s.clock.reached(t(9, 30, 30));
        let timer = tokio::spawn(s.timer.clone().run(
            s.clock.clone(),
            s.recorder.clone(),
            Arc::new(Notify::new()),
            stop,
        ));
        // The loop starts (this test's runtime has one thread) and waits for the lock.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        ran.send(()).unwrap();
        assert!(
            holder.join().unwrap(),
            "the loop held the async thread up while it waited for the state's lock"
        );
        timer.await.unwrap();
        let occurrences = s.occurrences();
        assert_eq!(occurrences, [t(9, 15, 0), t(9, 30, 0)]);
    }

    #[tokio::test]
    async fn fires_each_occurrence_on_time_while_enabled() {
        let s = setup("*/15 * * * *", Catchup::Last, t(9, 0, 30));
        s.run_until(t(10, 0, 30)).await;
        let fired = s.fired();
        assert_eq!(
            fired,
            vec![
                ("scheduler", t(9, 15, 0)),
                ("scheduler", t(9, 30, 0)),
                ("scheduler", t(9, 45, 0)),
                ("scheduler", t(10, 0, 0)),
            ]
        );
        assert_eq!(
            s.occurrences(),
            vec![t(9, 15, 0), t(9, 30, 0), t(9, 45, 0), t(10, 0, 0)],
            "each run is told the occurrence it is for"
        );
        let state = s.state();
        assert_eq!(state.last_occurrence, Some(t(10, 0, 0)));
        assert_eq!(state.last_run, Some(t(10, 0, 0)));
        assert_eq!(
            state.enabled_since,
            Some(t(9, 0, 30)),
            "a fresh setup is on from its first start"
        );
        assert!(s.missed_files().is_empty());
    }

    #[tokio::test]
    async fn a_disabled_schedule_fires_nothing_and_expects_nothing() {
        let s = setup("* * * * *", Catchup::All, t(9, 0, 0));
        s.saved(false, t(9, 0, 0));
        // An hour of a per-minute schedule while disabled.
        s.run_until(t(10, 0, 30)).await;
        assert!(s.fired().is_empty(), "{:?}", s.fired());
        assert!(s.missed_files().is_empty());
        let state = s.state();
        assert!(!state.enabled);
        assert_eq!(
            state.last_occurrence,
            Some(t(10, 0, 0)),
            "passed over, not expected"
        );

        // Enabled again: the next occurrence fires, the hour off is not caught up.
        s.saved(true, t(10, 0, 0));
        s.run_until(t(10, 1, 30)).await;
        assert_eq!(s.fired(), vec![("scheduler", t(10, 1, 0))]);
    }

    #[tokio::test]
    async fn a_clock_jump_back_fires_no_occurrence_twice_across_restarts() {
        // Every 2 s. The state says occurrences up to 6 s from now were handled already: what
        // a dashboard sees after the clock went back 6 s.
        let start = t(9, 0, 0);
        let handled = start + chrono::Duration::seconds(6);
        let s = setup("*/2 * * * * *", Catchup::Last, start);
        s.saved(true, handled);
        // Up for 5 s, restarted, up for 5 s more, restarted again.
        s.run_until(start + chrono::Duration::seconds(5)).await;
        s.run_until(start + chrono::Duration::seconds(10)).await;
        let end = start + chrono::Duration::seconds(20);
        s.run_until(end).await;
        let fired: Vec<DateTime<Utc>> = s.fired().into_iter().map(|(_, at)| at).collect();
        assert!(
            fired.iter().all(|at| *at > handled),
            "occurrences at or before {handled} fired again: {fired:?}"
        );
        let mut expected = Vec::new();
        let mut at = handled + chrono::Duration::seconds(2);
        // (The loop stops when the clock reaches `end`, before that occurrence.)
        while at < end {
            expected.push(at);
            at += chrono::Duration::seconds(2);
        }
        assert_eq!(fired, expected, "each later occurrence exactly once");
    }

    #[tokio::test]
    async fn catch_up_after_days_down_runs_the_last_records_the_rest_once() {
        // Down for three days with a 15-minute schedule: the occurrences in the 6 h window
        // and before it are recorded missed, the newest is run, once, across restarts.
        let now = t(9, 5, 0);
        let s = setup("*/15 * * * *", Catchup::Last, now);
        let down_since = now - chrono::Duration::days(3);
        s.saved(true, down_since);
        s.run_until(now + chrono::Duration::seconds(30)).await;
        let expected = s.timer.schedule.occurrences(down_since, now);
        let fired = s.fired();
        assert_eq!(fired, vec![("catchup", now)], "one catch-up run, for 09:00");
        assert_eq!(s.occurrences(), vec![t(9, 0, 0)]);
        let missed = s.missed_files();
        assert_eq!(
            missed.len(),
            expected.len() - 1,
            "every other occurrence recorded"
        );
        assert_eq!(
            missed.first().map(String::as_str),
            Some(format!("pipeline_{}.jsonl", audit_id(expected[0])).as_str())
        );
        // Restarted twice: nothing recorded or fired again.
        s.run_until(now + chrono::Duration::seconds(40)).await;
        s.run_until(now + chrono::Duration::seconds(50)).await;
        assert_eq!(s.fired(), fired);
        assert_eq!(s.missed_files(), missed);
    }

    fn audit_id(at: DateTime<Utc>) -> RunId {
        crate::journal::missed::missed_run_id(at)
    }
}
