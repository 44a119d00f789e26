//! The clock the scheduler's loops read and sleep on.
//!
//! Both loops (the built-in timer and the occurrence auditor) take a [`Clock`] rather than
//! calling `Utc::now()` and `tokio::time::sleep` themselves: in `serve` it is the
//! [`SystemClock`]; in tests a manual clock that moves only when the loop sleeps, so a test
//! says "an hour later" and runs in milliseconds, with no real sleep and no race with the
//! wall clock.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// What time it is, and waiting for time to pass.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// The wall clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

#[cfg(test)]
pub mod manual {
    //! A clock for tests: it stands still until the loop under test sleeps, then jumps
    //! forward by the whole sleep. A test ends the loop with [`ManualClock::reached`].

    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;

    #[derive(Clone)]
    pub struct ManualClock {
        now: Arc<watch::Sender<DateTime<Utc>>>,
    }

    impl ManualClock {
        pub fn at(t: DateTime<Utc>) -> ManualClock {
            ManualClock {
                now: Arc::new(watch::channel(t).0),
            }
        }

        /// Resolves once the clock is at or past `t`: the loop's shutdown in a test.
        pub fn reached(&self, t: DateTime<Utc>) -> impl Future<Output = ()> + Send + 'static {
            let mut rx = self.now.subscribe();
            async move {
                let _ = rx.wait_for(|now| *now >= t).await;
            }
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.borrow()
        }

        fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
            let step = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            self.now.send_modify(|now| *now += step);
            tokio::task::yield_now()
        }
    }
}
