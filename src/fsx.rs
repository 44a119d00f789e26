//! Opening files in folders that other local users or processes can write to: `events_dir`
//! and `state_dir`. Every open of a run file, a run's lock, cancel request or process-group
//! record, and the built-in scheduler's state goes through here, so none of them can be
//! turned against pipewatch by a file planted under the expected name:
//!
//! - **No symbolic link is followed** at the last step of the path (`O_NOFOLLOW` on Unix,
//!   `FILE_FLAG_OPEN_REPARSE_POINT` on Windows): a link named like a run file cannot make the
//!   dashboard serve a file outside the folder, nor a link named like a temporary file make a
//!   write land outside it.
//! - **Nothing is waited on**: the open does not block (`O_NONBLOCK` on Unix, where opening a
//!   FIFO for reading otherwise waits for a writer for ever), and what was opened is checked
//!   with `fstat` on the open handle — no window between a check and the open — and refused
//!   unless it is a regular file. Only then is `O_NONBLOCK` cleared.
//! - **Temporary files are new files**: [`replace`] creates its temporary file with
//!   `create_new` (which never opens anything already there, link or not) under a name of
//!   its own, and renames it over the destination (a rename replaces a link, not its
//!   target).
//!
//! A refusal is an `io::Error` carrying a [`NotRegular`] that names the file and what it is
//! ([`not_regular`] finds it); callers skip or ignore such a file and say so with
//! [`warn_ignored`] (once per file: the tailer and the liveness check look again every few
//! seconds).
//!
//! The one file there that is not opened here is the run index (`index.db`): SQLite opens it,
//! with `SQLITE_OPEN_NOFOLLOW`, and `index::schema` moves anything but a regular file aside.
//!
//! Only the last component is guarded: the folders themselves (`events_dir`, `state_dir`) are
//! chosen by whoever writes `pipewatch.toml`, and may be links.
//!
//! The per-OS part (open flags, file-type names, clearing `O_NONBLOCK`, a rename over a file
//! that is open) is in the `os` module at the bottom of this file, and nowhere else.

use std::collections::HashSet;
use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::MutexExt;

/// A file that is not a regular file where one was expected: a FIFO, a symbolic link, a
/// folder, a device or a socket. It was not opened, or was closed at once.
#[derive(Debug, thiserror::Error)]
#[error("{} is {what}, not a regular file", path.display())]
pub struct NotRegular {
    pub path: PathBuf,
    /// What it is instead, for a person: "a FIFO", "a symbolic link", ...
    pub what: &'static str,
}

/// The [`NotRegular`] inside `e`, if `e` is a refusal of this module.
pub fn not_regular(e: &io::Error) -> Option<&NotRegular> {
    e.get_ref()?.downcast_ref::<NotRegular>()
}

/// At most this many files are remembered as warned about; past it, every refusal warns.
const WARNED_MAX: usize = 1024;

/// Logs that a non-regular file was ignored as a `role` ("run file", "run lock", ...): once
/// per path and process, since the callers look again every few seconds.
pub fn warn_ignored(refused: &NotRegular, role: &str) {
    static WARNED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut warned = WARNED.lock_anyway();
    let warned = warned.get_or_insert_with(HashSet::new);
    if warned.contains(&refused.path) {
        return;
    }
    if warned.len() < WARNED_MAX {
        warned.insert(refused.path.clone());
    }
    tracing::warn!("{role} {refused}: ignored, never opened or waited on");
}

fn refuse(path: &Path, what: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegular {
            path: path.to_path_buf(),
            what,
        },
    )
}

/// What a file type is, for a person (`"a FIFO"`), as [`NotRegular::what`] says it.
pub fn describe(file_type: FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a folder"
    } else {
        os::describe_special(file_type)
    }
}

/// Opens an existing regular file for reading; see the module doc.
pub fn open_read(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    open_regular(path, &options)
}

/// Opens a regular file for writing, creating it if it is missing and never truncating it:
/// a lock file, whose content does not matter and whose handle carries the lock.
pub fn open_lock(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    open_regular(path, &options)
}

/// The whole content of a regular file, refusing one larger than `max` bytes (a planted
/// file must not make pipewatch fill its memory).
pub fn read(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_read(path)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes: not read", path.display()),
        ));
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Creates `path` as a new regular file, failing if anything (a file, a link, a FIFO) is
/// there already.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    os::no_follow(&mut options);
    options.open(path)
}

/// Replaces `path` with `bytes`, whole or not at all: written to a new temporary file next to
/// it, then renamed over it. Readers see the old content or the new, never a part; a link at
/// `path` is replaced, not followed.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_then_rename(path, bytes, false)
}

/// [`replace`], with the content on disk (`fsync`) before the rename: for state that must
/// survive a power cut (the user's choice to disable a schedule).
pub fn replace_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_then_rename(path, bytes, true)
}

/// Tells apart the temporary files of one process (two threads may replace the same file).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn write_then_rename(path: &Path, bytes: &[u8], durably: bool) -> io::Result<()> {
    // A name of this process's own, so two writers never share (and truncate, or rename
    // half-written) one temporary file. The process id may be reused: what a process that
    // died left behind under this name is removed (removing a link removes the link) and
    // the creation tried once more.
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(name);
    let mut file = match create_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create_new(&tmp)?
        }
        other => other?,
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| if durably { file.sync_all() } else { Ok(()) });
    drop(file);
    match written.and_then(|()| os::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Opens `path` with `options` plus the module's guards: no link followed, no wait, regular
/// files only.
fn open_regular(path: &Path, options: &OpenOptions) -> io::Result<File> {
    let mut options = options.clone();
    os::no_follow_no_wait(&mut options);
    let file = options.open(path).map_err(|e| explain(path, e))?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(refuse(path, describe(file_type)));
    }
    os::wait_again(&file)?;
    Ok(file)
}

/// An open refused because of what the file is (a link not followed, a FIFO with no reader
/// opened for writing) becomes a [`NotRegular`]; any other error is returned as it is.
fn explain(path: &Path, e: io::Error) -> io::Error {
    if !os::may_be_not_regular(&e) {
        return e;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => refuse(path, describe(meta.file_type())),
        _ => e,
    }
}

#[cfg(unix)]
mod os {
    //! Unix: `O_NOFOLLOW` and `O_NONBLOCK` at open; `O_NONBLOCK` cleared again once the file
    //! is known to be regular.

    use std::fs::{File, FileType, OpenOptions};
    use std::io;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::path::Path;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};

    pub fn no_follow(options: &mut OpenOptions) {
        options.custom_flags(OFlag::O_NOFOLLOW.bits());
    }

    pub fn no_follow_no_wait(options: &mut OpenOptions) {
        options.custom_flags(OFlag::O_NOFOLLOW.bits() | OFlag::O_NONBLOCK.bits());
    }

    /// Regular files ignore `O_NONBLOCK` on Linux, but not on every system or file system:
    /// the handle goes back to ordinary blocking I/O.
    pub fn wait_again(file: &File) -> io::Result<()> {
        let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
        fcntl(file, FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)))?;
        Ok(())
    }

    /// `ELOOP` (a link at the last step, with `O_NOFOLLOW`), `EMLINK` (the same on FreeBSD),
    /// `ENXIO` (a FIFO with no reader, or a socket, opened for writing without waiting).
    pub fn may_be_not_regular(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(nix::libc::ELOOP | nix::libc::EMLINK | nix::libc::ENXIO)
        )
    }

    /// A rename replaces the destination even while it is open.
    pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    pub fn describe_special(file_type: FileType) -> &'static str {
        if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_block_device() || file_type.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        }
    }
}

#[cfg(windows)]
mod os {
    //! Windows: `FILE_FLAG_OPEN_REPARSE_POINT` opens a link (or junction) itself, which the
    //! type check then refuses. Nothing in a folder blocks an open (named pipes live outside
    //! the file system's folders), so there is no wait to avoid.

    use std::fs::{File, FileType, OpenOptions};
    use std::io;
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// `FILE_FLAG_OPEN_REPARSE_POINT` (winbase.h).
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

    /// `ERROR_ACCESS_DENIED` and `ERROR_SHARING_VIOLATION` (winerror.h): what a rename over
    /// a file that another handle has open is refused with.
    const IN_USE: [i32; 2] = [5, 32];

    /// How long a refused rename is tried again. Whoever has the destination open (a reader
    /// of the scheduler's state, the dashboard's timer every tick) holds it for the moment
    /// of one read.
    const RENAME_PATIENCE: Duration = Duration::from_secs(2);

    /// A rename over a file that is open is refused where the rename cannot use POSIX
    /// semantics (older Windows, some file systems, Wine), until the other handle is closed:
    /// it is tried again, with growing pauses, for up to [`RENAME_PATIENCE`]. A refusal that
    /// outlasts it (a file that really is read-only) is returned as it is.
    pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
        let deadline = Instant::now() + RENAME_PATIENCE;
        let mut pause = Duration::from_millis(1);
        loop {
            match std::fs::rename(from, to) {
                Err(e)
                    if e.raw_os_error().is_some_and(|code| IN_USE.contains(&code))
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    pub fn no_follow(options: &mut OpenOptions) {
        options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
    }

    pub fn no_follow_no_wait(options: &mut OpenOptions) {
        no_follow(options);
    }

    pub fn wait_again(_file: &File) -> io::Result<()> {
        Ok(())
    }

    pub fn may_be_not_regular(_e: &io::Error) -> bool {
        false
    }

    pub fn describe_special(_file_type: FileType) -> &'static str {
        "not a regular file"
    }
}

#[cfg(not(any(unix, windows)))]
mod os {
    //! Elsewhere: no flag to ask for; the type of what was opened is still checked.

    use std::fs::{File, FileType, OpenOptions};
    use std::io;
    use std::path::Path;

    pub fn no_follow(_options: &mut OpenOptions) {}

    pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    pub fn no_follow_no_wait(_options: &mut OpenOptions) {}

    pub fn wait_again(_file: &File) -> io::Result<()> {
        Ok(())
    }

    pub fn may_be_not_regular(_e: &io::Error) -> bool {
        false
    }

    pub fn describe_special(_file_type: FileType) -> &'static str {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "hello\n").unwrap();
        assert_eq!(read_to_string(&p, 6).unwrap(), "hello\n");
        let too_big = read(&p, 5).unwrap_err();
        assert_eq!(too_big.kind(), io::ErrorKind::InvalidData);
        assert!(
            too_big.to_string().contains("larger than 5 bytes"),
            "{too_big}"
        );
        let missing = open_read(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(not_regular(&missing).is_none());
        // A folder opens on Unix (for reading) but is no regular file. (Windows refuses to
        // open one without a flag pipewatch never gives.)
        #[cfg(unix)]
        {
            let e = open_read(dir.path()).unwrap_err();
            assert_eq!(not_regular(&e).unwrap().what, "a folder", "{e}");
        }
    }

    #[test]
    fn replace_writes_whole_files_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        replace(&p, b"one").unwrap();
        replace_durably(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        // A lock file is created once and reopened, never truncated.
        let lock = dir.path().join("x.lock");
        std::fs::write(&lock, "keep").unwrap();
        drop(open_lock(&lock).unwrap());
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "keep");
        assert_eq!(
            create_new(&lock).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    }

    /// A reader that has the file open for a moment (the dashboard's timer reads the
    /// scheduler's state every tick, the API on each request) neither makes a replace fail
    /// nor ever finds the file missing or part-written. On Windows a rename over an open file
    /// can be refused until the reader closes it.
    #[test]
    fn a_file_read_all_the_while_is_still_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scheduler.json");
        replace(&p, b"0").unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (p, done) = (p.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(Ordering::Relaxed) {
                    let text = read_to_string(&p, 64).unwrap();
                    assert!(text.parse::<u32>().is_ok_and(|n| n <= 200), "{text:?}");
                    reads += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                reads
            })
        };
        for i in 1..=200 {
            replace_durably(&p, i.to_string().as_bytes()).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "200");
    }

    #[cfg(unix)]
    #[test]
    fn fifos_are_refused_at_once_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipeline_r.jsonl");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Each of these waited for a writer (or a reader) for ever.
        for e in [
            open_read(&fifo).unwrap_err(),
            read(&fifo, 10).unwrap_err(),
            open_lock(&fifo).unwrap_err(),
        ] {
            let refused = not_regular(&e).unwrap_or_else(|| panic!("{e}"));
            assert_eq!(refused.what, "a FIFO");
            assert!(e.to_string().contains("pipeline_r.jsonl"), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_are_never_followed_for_reading_or_writing() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        let link = dir.path().join("pipeline_r.jsonl");
        symlink(&secret, &link).unwrap();
        for e in [
            open_read(&link).unwrap_err(),
            read(&link, 100).unwrap_err(),
            open_lock(&link).unwrap_err(),
        ] {
            assert_eq!(
                not_regular(&e).map(|n| n.what),
                Some("a symbolic link"),
                "{e}"
            );
        }
        assert_eq!(
            create_new(&link).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );

        // A link at the destination is replaced, not written through.
        let dest = dir.path().join("r.cancel");
        symlink(&secret, &dest).unwrap();
        replace(&dest, b"stop").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert!(std::fs::symlink_metadata(&dest).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "stop");

        // A link (or a stale file) under the temporary name of a dead process with this
        // process's id is removed, not written through.
        let next = TMP_COUNTER.load(Ordering::Relaxed);
        let tmp = format!("r.cancel.{}-{next}.tmp", std::process::id());
        symlink(&secret, dir.path().join(tmp)).unwrap();
        replace(&dest, b"again").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "again");
    }

    #[test]
    fn describe_names_file_types() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        assert_eq!(describe(meta.file_type()), "a folder");
    }
}
