//! What Linux's `/proc` tells about a process: its start time, its owner, and the boot it
//! belongs to.
//!
//! Linux only (compiled under `#[cfg(target_os = "linux")]`); [`super::process`] is its only
//! caller and the one place that decides what other systems do instead. Every reader returns
//! `None` when the process is gone or its file cannot be read or parsed: a process can end
//! between any two reads, so callers treat `None` as "cannot tell", never as an error.

use std::sync::OnceLock;

/// The fields of `/proc/<pid>/stat` pipewatch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (weird) name) S 17 4242 17 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 \
                    123456 2400000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat { start: 123456 })
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
    }
}
