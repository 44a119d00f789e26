//! Locks a panic elsewhere does not make unusable, and work that blocks run off the async
//! threads ([`blocking`]).
//!
//! Every lock in pipewatch guards data its holders leave consistent between statements:
//! counters, maps, slots replaced whole, a file's turn. So a lock poisoned by a panic in one
//! request, task or stage is taken anyway: that panic must not take the dashboard or the run
//! down with it.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], poisoned or not.
pub trait MutexExt<T: ?Sized> {
    fn lock_anyway(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_anyway(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], poisoned or not.
pub trait RwLockExt<T: ?Sized> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T>;
    fn write_anyway(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_anyway(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_anyway(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `f`, which blocks (file work that waits on the disk, on a file lock, or on a rename
/// another process holds up), on tokio's blocking threads, so that the async threads go on
/// serving sockets meanwhile. A panic in `f` is the caller's panic.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_with_what_it_guards() {
        let m = Mutex::new(1);
        let rw = RwLock::new(2);
        let _ = std::panic::catch_unwind(|| {
            let _m = m.lock_anyway();
            let _rw = rw.write_anyway();
            panic!("poisons both");
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_anyway() += 1;
        *rw.write_anyway() += 1;
        assert_eq!(*m.lock_anyway(), 2);
        assert_eq!(*rw.read_anyway(), 3);
    }
}
