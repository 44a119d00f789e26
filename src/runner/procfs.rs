//! What Linux's `/proc` tells about a process: its parent, group, state and start time, its
//! owner, the stage it was started for, and the boot it belongs to.
//!
//! Linux only (compiled under `#[cfg(target_os = "linux")]`); [`super::process`] is its only
//! caller and the one place that decides what other systems do instead. Every reader returns
//! `None` when the process is gone or its file cannot be read or parsed: a process can end
//! between any two reads, so callers treat `None` as "cannot tell", never as an error.

use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` pipewatch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (a zombie: dead, not yet reaped), …
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: u32,
    /// Field 5: the process group.
    pub pgrp: u32,
    /// Field 22: when the process started, in clock ticks since boot. With the boot id, this
    /// tells one process from a later one that got the same pid.
    pub start: u64,
}

/// Reads `/proc/<pid>/stat`.
pub(super) fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `stat` line. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3, so field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
    })
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): start times count from boot, so they
/// only compare within one. Read once per process.
pub(super) fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// The real user id a process runs as (the first number of `Uid:` in `/proc/<pid>/status`).
pub(super) fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The processes whose parent is `parent`, with their `stat`.
pub(super) fn children(parent: u32) -> Vec<(u32, Stat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .filter(|(_, st)| st.ppid == parent)
        .collect()
}

/// The value of `name` in the environment a process was started with
/// (`/proc/<pid>/environ`; empty for a zombie, unreadable for another user's process).
pub(super) fn env_var(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (weird) name) S 17 4242 17 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 \
                    123456 2400000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 17,
                pgrp: 4242,
                start: 123456
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 17"), None);
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = std::process::id();
        let st = stat(me).unwrap();
        assert_eq!(st.start, stat(me).unwrap().start);
        assert!(boot_id().is_some());
        assert!(uid(me).is_some());
        assert_eq!(env_var(me, "PIPEWATCH_NO_SUCH_VARIABLE"), None);
        let parent = std::os::unix::process::parent_id();
        assert!(children(parent).iter().any(|(pid, _)| *pid == me));
    }
}
