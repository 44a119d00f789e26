//! What wakes the tail thread: [`Notices`], the thread's end, which also holds the one watch
//! on the events folder, and [`Wake`], the handle the dashboard pokes it and stops it with.
//!
//! How notifications reach the thread is the one thing here that differs between systems,
//! and it is all in this folder:
//!
//! - **Linux** (`inotify.rs`): the tail thread waits on its `inotify` descriptor itself,
//!   with `poll`, beside an `eventfd` that [`Wake`] writes. A line appended to a run file
//!   wakes the thread once, with no thread in between: without the `notify` crate's watcher
//!   thread and its hand-over, an event reached its client 0.03–0.17 ms sooner at p99
//!   (`docs/benchmarks.md`, "The tail thread reads `inotify` itself").
//! - **Elsewhere** (`portable.rs`): the `notify` crate's watcher (`ReadDirectoryChangesW` on
//!   Windows, FSEvents or kqueue on the BSDs and macOS) runs its own thread and sends each
//!   notification on a channel the tail thread waits on. On Windows the watch is on the
//!   events folder's parent, so that it holds no handle that would keep a deleted events
//!   folder from being re-created.
//!
//! Either way a notification only says which run file to look at: the tail thread reads the
//! file and decides what is new, so a notification lost, doubled or out of order costs a read,
//! never an event.

use std::path::PathBuf;

#[cfg(target_os = "linux")]
mod inotify;
#[cfg(not(target_os = "linux"))]
mod portable;

#[cfg(target_os = "linux")]
pub(super) use inotify::{Notices, Wake};
#[cfg(not(target_os = "linux"))]
pub(super) use portable::{Notices, Wake};

/// What wakes the tail thread.
#[derive(Debug)]
pub(super) enum Notice {
    /// Something happened to these paths: run files in the events folder, or the folder
    /// itself (named as configured: deleted, moved, or its attributes changed). None: only a
    /// wake-up (batches were given back, [`Spent`](super::Spent)).
    Changed(Vec<PathBuf>),
    /// The watch lost notifications: look at everything.
    Rescan,
    WatchError(String),
    /// [`Tailer::stop`](super::Tailer::stop) was called.
    Stop,
}
