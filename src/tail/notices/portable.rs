//! Notices everywhere but Linux: the `notify` crate's watcher thread sends them on a channel
//! (see the [module doc](super)).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::Notice;

/// Sends the tail thread a [`Notice`].
#[derive(Clone)]
pub(in crate::tail) struct Wake {
    tx: mpsc::Sender<Notice>,
}

impl Wake {
    /// Queues `notice`; a tail thread that has ended is not there to take it.
    pub fn send(&self, notice: Notice) {
        let _ = self.tx.send(notice);
    }
}

/// The tail thread's end: the channel, and the watch that sends on it.
pub(in crate::tail) struct Notices {
    rx: mpsc::Receiver<Notice>,
    /// Cloned into each watcher's callback.
    tx: mpsc::Sender<Notice>,
    /// Kept alive for its notifications; dropping it removes the watch.
    watch: Option<RecommendedWatcher>,
}

impl Notices {
    pub fn new() -> std::io::Result<(Notices, Wake)> {
        let (tx, rx) = mpsc::channel();
        let wake = Wake { tx: tx.clone() };
        Ok((
            Notices {
                rx,
                tx,
                watch: None,
            },
            wake,
        ))
    }

    /// Watches `dir`, in place of any watch before.
    pub fn watch(&mut self, dir: &Path) -> Result<(), String> {
        self.watch = None;
        let tx = self.tx.clone();
        let place = WatchPlace::of(dir);
        let target = place.target.clone();
        let mode = place.mode;
        let handler = move |res: notify::Result<notify::Event>| {
            let notice = match res {
                Ok(ev) if ev.need_rescan() => Notice::Rescan,
                // Opens and closes (ours included) say nothing about new data.
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => return,
                Ok(ev) => match place.relevant(ev.paths) {
                    Some(paths) => Notice::Changed(paths),
                    None => return,
                },
                Err(e) => Notice::WatchError(e.to_string()),
            };
            // A closed channel means the tail thread has ended.
            let _ = tx.send(notice);
        };
        let watcher = notify::recommended_watcher(handler)
            .and_then(|mut w| {
                w.watch(&target, mode)?;
                Ok(w)
            })
            .map_err(|e| e.to_string())?;
        self.watch = Some(watcher);
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
        self.rx.try_recv().ok()
    }

    /// The next notice, waiting for one up to `wait`; `None` when the time is up.
    pub fn recv_timeout(&mut self, wait: Duration) -> Option<Notice> {
        // The tail thread holds a sender itself (`tx`), so the channel is never disconnected.
        self.rx.recv_timeout(wait).ok()
    }
}

/// Where the one watch is put, and which of its notifications concern the events folder.
///
/// Everywhere but Windows the watch is on the events folder itself, non-recursive, and every
/// path it reports is in that folder.
///
/// On Windows a watch (`ReadDirectoryChangesW`) holds an open handle on the folder it
/// watches, and a folder deleted while a handle is open is only "delete pending" until the
/// handle closes: its name stays taken, so re-creating it (`pipewatch run`'s first write,
/// a user's script) fails with "already exists" until the tailer notices and lets go. So
/// there the watch is on the folder's parent, recursive, holding nothing open inside it,
/// and what happens elsewhere under the parent is dropped here. A folder with no parent
/// (a drive's root) is watched itself: a root is never deleted.
struct WatchPlace {
    target: PathBuf,
    mode: RecursiveMode,
    /// Set when the watch is on the parent: the events folder as the watch names it (the
    /// notifications' paths start with `target`), and as the configuration names it (what
    /// the tail thread compares with).
    scope: Option<(PathBuf, PathBuf)>,
}

impl WatchPlace {
    #[cfg(not(windows))]
    fn of(dir: &Path) -> WatchPlace {
        WatchPlace {
            target: dir.to_path_buf(),
            mode: RecursiveMode::NonRecursive,
            scope: None,
        }
    }

    #[cfg(windows)]
    fn of(dir: &Path) -> WatchPlace {
        // Absolute, so that a relative folder still has a parent to watch, and the paths the
        // watch reports can be compared with it.
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        match absolute.parent() {
            Some(parent) => WatchPlace {
                target: parent.to_path_buf(),
                mode: RecursiveMode::Recursive,
                scope: Some((absolute.clone(), dir.to_path_buf())),
            },
            None => WatchPlace {
                target: dir.to_path_buf(),
                mode: RecursiveMode::NonRecursive,
                scope: None,
            },
        }
    }

    /// The paths of one notification that concern the events folder: the folder itself
    /// (named as configured) and its direct entries; `None` if nothing does.
    fn relevant(&self, paths: Vec<PathBuf>) -> Option<Vec<PathBuf>> {
        let Some((watched, configured)) = &self.scope else {
            return Some(paths);
        };
        let kept: Vec<PathBuf> = paths
            .into_iter()
            .filter_map(|p| {
                if &p == watched {
                    Some(configured.clone())
                } else if p.parent() == Some(watched.as_path()) {
                    Some(p)
                } else {
                    None
                }
            })
            .collect();
        (!kept.is_empty()).then_some(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch on the parent (Windows) passes on only the events folder and its entries, the
    /// folder under its configured name; elsewhere everything reported is passed on.
    #[test]
    fn a_watch_on_the_parent_keeps_only_the_events_folder() {
        let root = std::path::absolute("root").unwrap();
        let watched = root.join("logs").join("events");
        let configured = PathBuf::from("logs/events");
        let place = WatchPlace {
            target: root.join("logs"),
            mode: RecursiveMode::Recursive,
            scope: Some((watched.clone(), configured.clone())),
        };
        let file = watched.join("pipeline_a.jsonl");
        let elsewhere = root.join("logs").join("other").join("pipeline_b.jsonl");
        let beside = root.join("logs").join("pipeline_c.jsonl");
        assert_eq!(
            place.relevant(vec![file.clone(), elsewhere.clone(), beside.clone()]),
            Some(vec![file.clone()])
        );
        assert_eq!(
            place.relevant(vec![watched.clone()]),
            Some(vec![configured])
        );
        assert_eq!(place.relevant(vec![elsewhere.clone(), beside]), None);

        let here = WatchPlace::of(&watched);
        if cfg!(windows) {
            assert_eq!(here.target, root.join("logs"));
            assert_eq!(here.relevant(vec![elsewhere]), None);
        } else {
            assert_eq!(here.target, watched);
            assert_eq!(
                here.relevant(vec![elsewhere.clone()]),
                Some(vec![elsewhere])
            );
        }
    }
}
