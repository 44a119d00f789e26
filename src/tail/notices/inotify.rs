//! Notices on Linux: the tail thread polls its own `inotify` descriptor (see the
//! [module doc](super)).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};

use super::Notice;

/// What the watch asks to hear about: a file's data changed (an append, a truncation), a file
/// was created, removed or renamed in or out, a file's or the folder's attributes changed, and
/// the folder itself was deleted or moved. Opens, reads and closes (ours included) are left
/// out: they say nothing about new data.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// Sends the tail thread a [`Notice`] and wakes it out of its `poll`.
#[derive(Clone)]
pub(in crate::tail) struct Wake {
    tx: mpsc::Sender<Notice>,
    ping: Arc<EventFd>,
}

impl Wake {
    /// Queues `notice`; a tail thread that has ended is not there to take it.
    pub fn send(&self, notice: Notice) {
        if self.tx.send(notice).is_ok() {
            // Nonblocking: a counter that cannot grow (2^64 - 2 unread wakes) has woken the
            // thread already.
            let _ = self.ping.write(1);
        }
    }
}

/// The one watch: the `inotify` instance and the folder as configured. Dropping it closes the
/// instance, which removes the watch and whatever it had queued.
struct Watch {
    inotify: Inotify,
    dir: PathBuf,
}

/// The tail thread's end: its queued notices, the eventfd [`Wake`] writes, and the watch.
pub(in crate::tail) struct Notices {
    rx: mpsc::Receiver<Notice>,
    ping: Arc<EventFd>,
    watch: Option<Watch>,
    /// Taken from the channel or the watch, not yet handed out.
    pending: VecDeque<Notice>,
}

impl Notices {
    pub fn new() -> std::io::Result<(Notices, Wake)> {
        let ping = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Arc::new)
            .map_err(std::io::Error::from)?;
        let (tx, rx) = mpsc::channel();
        let wake = Wake {
            tx,
            ping: ping.clone(),
        };
        let notices = Notices {
            rx,
            ping,
            watch: None,
            pending: VecDeque::new(),
        };
        Ok((notices, wake))
    }

    /// Watches `dir` (not recursively), in place of any watch before.
    pub fn watch(&mut self, dir: &Path) -> Result<(), String> {
        self.watch = None;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("inotify: {e}"))?;
        inotify
            .add_watch(dir, mask())
            .map_err(|e| format!("inotify watch: {e}"))?;
        self.watch = Some(Watch {
            inotify,
            dir: dir.to_path_buf(),
        });
        Ok(())
    }

    pub fn unwatch(&mut self) {
        self.watch = None;
    }

    pub fn watching(&self) -> bool {
        self.watch.is_some()
    }

    /// The next notice already there, without waiting.
    pub fn try_recv(&mut self) -> Option<Notice> {
        if self.pending.is_empty() {
            self.take_ready();
        }
        self.pending.pop_front()
    }

    /// The next notice, waiting for one up to `wait`; `None` when the time is up.
    pub fn recv_timeout(&mut self, wait: Duration) -> Option<Notice> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(notice) = self.try_recv() {
                return Some(notice);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.wait(left);
        }
    }

    /// Sleeps until the watch or a [`Wake`] has something, or `left` has passed.
    fn wait(&self, left: Duration) {
        // Rounded up: a timeout rounded down to 0 ms would spin until the deadline.
        let millis = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let ping = PollFd::new(self.ping.as_fd(), PollFlags::POLLIN);
        let watch = self.watch.as_ref().map(|w| w.inotify.as_fd());
        let mut fds = [
            ping,
            PollFd::new(watch.unwrap_or(self.ping.as_fd()), PollFlags::POLLIN),
        ];
        // Without a watch, only the eventfd is polled (the second slot is not passed).
        let used = if watch.is_some() { 2 } else { 1 };
        match poll(&mut fds[..used], timeout) {
            Ok(_) => {
                // Reset once it has woken the wait: the caller then reads the channel, so
                // a notice sent after this wakes the next `poll`.
                if fds[0].any().unwrap_or(false) {
                    let _ = self.ping.read();
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                // Not expected (poll fails on bad arguments or no memory); a short sleep keeps
                // a persistent failure from spinning, and the scans go on.
                tracing::warn!("tailer: waiting for notifications failed: {e}");
                std::thread::sleep(left.min(Duration::from_millis(100)));
            }
        }
    }

    /// Moves what is ready into `pending`: the channel's notices, then the watch's.
    fn take_ready(&mut self) {
        self.pending.extend(self.rx.try_iter());
        let Some(w) = &self.watch else {
            return;
        };
        loop {
            match w.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    let dir = &w.dir;
                    self.pending
                        .extend(events.into_iter().map(|e| notice_of(dir, e)));
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // The tail thread rescans; the next scan watches the folder again.
                    self.pending
                        .push_back(Notice::WatchError(format!("inotify: {e}")));
                    self.watch = None;
                    return;
                }
            }
        }
    }
}

/// What one `inotify` event on `dir` tells the tail thread.
fn notice_of(dir: &Path, event: InotifyEvent) -> Notice {
    if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
        return Notice::Rescan;
    }
    match event.name {
        Some(name) => Notice::Changed(vec![dir.join(name)]),
        // The folder itself: deleted, moved, its attributes changed, or its watch gone
        // (`IN_IGNORED`).
        None => Notice::Changed(vec![dir.to_path_buf()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes notices until `want` says it has what it waits for, or fails after 10 s.
    fn until(notices: &mut Notices, mut want: impl FnMut(&Notice) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no such notice within 10 s");
            if let Some(n) = notices.recv_timeout(left)
                && want(&n)
            {
                return;
            }
        }
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_wait() {
        let (mut notices, wake) = Notices::new().unwrap();
        assert!(notices.recv_timeout(Duration::from_millis(20)).is_none());
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            wake.send(Notice::Stop);
        });
        let asked = Instant::now();
        let notice = notices.recv_timeout(Duration::from_secs(3600));
        assert!(matches!(notice, Some(Notice::Stop)), "{notice:?}");
        assert!(asked.elapsed() < Duration::from_secs(10));
        sender.join().unwrap();
        // Taken once: the wait after it times out.
        assert!(notices.recv_timeout(Duration::from_millis(20)).is_none());
    }

    #[test]
    fn the_watch_names_the_files_and_the_folder_as_configured() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("events");
        std::fs::create_dir(&dir).unwrap();
        let (mut notices, _wake) = Notices::new().unwrap();
        notices.watch(&dir).unwrap();
        assert!(notices.watching());

        let file = dir.join("pipeline_a.jsonl");
        std::fs::write(&file, "{}\n").unwrap();
        until(
            &mut notices,
            |n| matches!(n, Notice::Changed(p) if p == std::slice::from_ref(&file)),
        );

        std::fs::remove_file(&file).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        until(
            &mut notices,
            |n| matches!(n, Notice::Changed(p) if p == std::slice::from_ref(&dir)),
        );

        // A folder that is not there cannot be watched, and says why.
        let err = notices.watch(&dir).unwrap_err();
        assert!(err.contains("inotify"), "{err}");
        assert!(!notices.watching());
    }
}
