//! The lines of `runs/<run_id>.groups`: the process group of each running stage and what
//! proves, later, that the group is still that stage's.
//!
//! A runner killed outright cannot stop its stages, so it keeps this record for whoever finds
//! its lock released ([`super::liveness::reap_orphans`]). A process group id is a pid, and pids
//! are reused: by the time the record is read, the stage may have ended and its id been given
//! to an unrelated process; and anyone who can write the state folder can write a record. So
//! each line carries the identity of the group's leader (the stage's own process), and a group
//! is killed only when its leader is still that process.
//!
//! Format, one group a line (readers ignore keys they do not know):
//!
//! ```text
//! <pgid> start=<ticks> boot=<boot id>
//! ```
//!
//! `start` is the leader's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot)
//! and `boot` the boot it counts from (`/proc/sys/kernel/random/boot_id`). On systems without
//! `/proc` (other Unixes) the line is the bare `<pgid>`, as every line was before identities
//! were recorded.
//!
//! The decision ([`reap`]): a group is killed only when its leader exists, started at the
//! recorded time in the same boot, and runs as the same user as the reaper. Anything else —
//! the leader gone, another start time, another boot, another user, a line with no identity
//! (an older record, or another Unix), a line that does not parse — is logged and left alone:
//! a stage left running is a smaller harm than a stranger killed.

use std::fmt;

use super::process;
use crate::event::RunId;

/// A running stage's process group, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StageGroup {
    /// The group id: the pid of the stage's process, which leads the group.
    pub pgid: u32,
    /// Who that leader is; `None` where it cannot be told (see the module doc).
    pub identity: Option<Identity>,
}

/// What tells a process from a later one with the same pid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Identity {
    /// Start time, in clock ticks since boot.
    pub start: u64,
    /// The boot the start time counts from.
    pub boot: String,
}

impl StageGroup {
    /// The group led by `pid`, a stage process just started (and not yet waited for, so its
    /// identity is still there to read even if it has already exited).
    pub fn led_by(pid: u32) -> StageGroup {
        StageGroup {
            pgid: pid,
            identity: process::identity(pid),
        }
    }

    /// Reads one line of the record; `None` if it names no group.
    pub fn parse(line: &str) -> Option<StageGroup> {
        let mut words = line.split_whitespace();
        let pgid = words.next()?.parse().ok()?;
        let (mut start, mut boot) = (None, None);
        for word in words {
            match word.split_once('=') {
                Some(("start", v)) => start = v.parse().ok(),
                Some(("boot", v)) if !v.is_empty() => boot = Some(v.to_string()),
                _ => {}
            }
        }
        let identity = match (start, boot) {
            (Some(start), Some(boot)) => Some(Identity { start, boot }),
            _ => None,
        };
        Some(StageGroup { pgid, identity })
    }
}

impl fmt::Display for StageGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.pgid)?;
        if let Some(id) = &self.identity {
            write!(f, " start={} boot={}", id.start, id.boot)?;
        }
        Ok(())
    }
}

/// Kills the group one record line names if, and only if, it is still the stage's (see the
/// module doc); logs what it did or why it did not. True if the group was signalled.
pub fn reap(run_id: &RunId, line: &str) -> bool {
    let Some(group) = StageGroup::parse(line) else {
        tracing::warn!(%run_id, line, "not killed: the stage group record does not parse");
        return false;
    };
    let pgid = group.pgid;
    match process::confirm(&group) {
        Ok(()) => {
            let killed = process::kill_group(pgid);
            if killed {
                tracing::warn!(%run_id, pgid, "killed a stage left running by a dead runner");
            }
            killed
        }
        Err(why) => {
            tracing::warn!(
                %run_id,
                pgid,
                "not killing the process group a dead runner recorded: {why}"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_old_or_odd_lines_have_no_identity() {
        let g = StageGroup {
            pgid: 4242,
            identity: Some(Identity {
                start: 123456,
                boot: "e7f4-2795".into(),
            }),
        };
        assert_eq!(g.to_string(), "4242 start=123456 boot=e7f4-2795");
        assert_eq!(StageGroup::parse(&g.to_string()), Some(g));
        // An older record, or another Unix: the bare group id.
        let bare = StageGroup::parse("4242").unwrap();
        assert_eq!((bare.pgid, bare.identity), (4242, None));
        // Half an identity, or a forged one that does not parse, is no identity.
        assert_eq!(StageGroup::parse("4242 start=1").unwrap().identity, None);
        assert_eq!(
            StageGroup::parse("4242 start=x boot=b").unwrap().identity,
            None
        );
        // Keys a later version may add are ignored.
        assert!(
            StageGroup::parse("4242 start=1 boot=b uid=0")
                .unwrap()
                .identity
                .is_some()
        );
        assert_eq!(StageGroup::parse("not a group"), None);
        assert_eq!(StageGroup::parse(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_leader_with_the_recorded_identity_is_confirmed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let ours = StageGroup::led_by(pid);
        assert!(process::confirm(&ours).is_ok(), "{ours}");
        let mut reused = ours.clone();
        if let Some(id) = reused.identity.as_mut() {
            id.start += 1;
        }
        assert!(process::confirm(&reused).is_err());
        let mut rebooted = ours.clone();
        if let Some(id) = rebooted.identity.as_mut() {
            id.boot = "another-boot".into();
        }
        assert!(process::confirm(&rebooted).is_err());
        let bare = StageGroup {
            pgid: pid,
            identity: None,
        };
        assert!(process::confirm(&bare).is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(process::confirm(&ours).is_err(), "a leader that is gone");
    }
}
