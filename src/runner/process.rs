//! Starting a stage's command and stopping its whole process tree — the one place with
//! per-OS process code.
//!
//! Each stage runs in its own process group on Unix and its own job object on Windows, so a
//! timeout or a cancel kills the stage's grandchildren too, and leftovers a stage started in
//! the background are killed when it exits. Commands are built as argument lists: a `run`
//! string goes to the platform shell as one argument (`sh -c STRING`, `cmd /d /s /c STRING`),
//! an argv list is run as given; nothing is pasted into a command line.
//!
//! A process can leave its group (`setsid`, as daemons do, or `setpgid`); killing the group
//! then misses it, and it lives on holding the stage's output pipe. On Linux the runner makes
//! itself a *child subreaper* ([`adopt_orphans`]): a process whose parent dies is re-parented
//! to the runner instead of to init, so everything a stage started is, at worst, the runner's
//! own child. When a stage's attempt ends, [`kill_escaped`] kills (and reaps) the runner's
//! children that were started for that stage — told by the `PIPEWATCH_STAGE` every stage
//! process and its descendants inherit — and at the end of the run every child left. cgroups
//! would hold a whole tree without that, but creating one needs root or a delegated subtree
//! (systemd's `Delegate=`), which a plain `pipewatch run` from cron does not have; the
//! subreaper needs no privilege (Linux 3.4+). Limits: a process that clears its environment
//! is only caught at the end of the run; one whose parent is still alive (not re-parented) is
//! caught once that parent is killed; on other Unixes there is no subreaper, and a process that
//! left the group escapes (the runner stops reading its output after a grace period). On
//! Windows a stage's job object holds every descendant, with no way out short of an explicit
//! breakaway.
//!
//! The identity of a stage's group leader ([`identity`], [`confirm`]) lets a later process
//! tell whether a recorded group is still the stage's before killing it (`groups.rs`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop};

use super::groups::{Identity, StageGroup};
#[cfg(target_os = "linux")]
use super::procfs;
use crate::config::Command;

/// The program and arguments a stage's `run` becomes.
pub fn argv(run: &Command) -> (OsString, Vec<OsString>) {
    match run {
        Command::Argv(v) => {
            let mut it = v.iter().map(OsString::from);
            let program = it.next().unwrap_or_default();
            (program, it.collect())
        }
        Command::Shell(s) => shell(s),
    }
}

#[cfg(unix)]
fn shell(script: &str) -> (OsString, Vec<OsString>) {
    ("sh".into(), vec!["-c".into(), script.into()])
}

#[cfg(windows)]
fn shell(script: &str) -> (OsString, Vec<OsString>) {
    let comspec = std::env::var_os("ComSpec").unwrap_or_else(|| "cmd.exe".into());
    (
        comspec,
        vec!["/d".into(), "/s".into(), "/c".into(), script.into()],
    )
}

/// Builds the command for a stage: its argv, working directory and environment (inherited,
/// plus `env`), with stdin closed and stdout/stderr piped.
pub fn build(run: &Command, workdir: &Path, env: &BTreeMap<String, String>) -> CommandWrap {
    let (program, args) = argv(run);
    let shell_script = matches!(run, Command::Shell(_));
    let mut cmd = CommandWrap::with_new(program, |c| {
        add_args(c, &args, shell_script);
        c.current_dir(workdir)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    #[cfg(unix)]
    cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    cmd.wrap(process_wrap::tokio::JobObject);
    cmd.wrap(KillOnDrop);
    cmd
}

#[cfg(unix)]
fn add_args(c: &mut tokio::process::Command, args: &[OsString], _shell: bool) {
    c.args(args);
}

#[cfg(windows)]
fn add_args(c: &mut tokio::process::Command, args: &[OsString], shell: bool) {
    // cmd.exe does not parse its command line by the C runtime's rules: with `/s /c` it takes
    // everything after `/c`, strips one pair of outer quotes and runs the rest. So the script
    // is passed verbatim inside quotes instead of being escaped for the C runtime.
    match args.split_last() {
        Some((script, flags)) if shell => {
            c.args(flags);
            let mut raw = OsString::from("\"");
            raw.push(script);
            raw.push("\"");
            c.raw_arg(raw);
        }
        _ => {
            c.args(args);
        }
    }
}

/// Starts the command.
pub fn spawn(cmd: &mut CommandWrap) -> std::io::Result<Box<dyn ChildWrapper>> {
    cmd.spawn()
}

/// Waits for the stage's own process to exit — not for the rest of its group. The group
/// wrapper's `wait` also reaps the group's other processes, waiting for them all: with the
/// runner a subreaper, a process the stage left running in the background becomes the
/// runner's child when the stage exits, and the stage would be waited for until that one
/// ended too. The rest of the group is killed with [`kill_tree`] and then reaped by the
/// wrapper's `wait`.
pub async fn wait_main(child: &mut Box<dyn ChildWrapper>) -> std::io::Result<ExitStatus> {
    main_process(child.as_mut()).wait().await
}

/// The innermost child of the wrapper chain: the stage's process itself (the one child whose
/// `inner` is itself).
fn main_process(mut child: &mut dyn ChildWrapper) -> &mut dyn ChildWrapper {
    // The chain is as long as the wrappers `build` adds; the bound only guards the loop.
    for _ in 0..8 {
        let here: *const dyn ChildWrapper = &*child;
        if std::ptr::addr_eq(child.inner() as *const dyn ChildWrapper, here) {
            return child;
        }
        child = child.inner_mut();
    }
    child
}

/// Kills every process of the stage's group or job (the main process and anything it left).
/// Errors are ignored: the group may already be empty.
pub fn kill_tree(child: &mut Box<dyn ChildWrapper>) {
    let _ = child.start_kill();
}

/// Kills a process group left behind by a runner that died; true if it still existed.
#[cfg(unix)]
pub fn kill_group(pgid: u32) -> bool {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    match i32::try_from(pgid) {
        Ok(p) if p > 1 => killpg(Pid::from_raw(p), Signal::SIGKILL).is_ok(),
        _ => false,
    }
}

/// On Windows a stage's job object closes, killing its processes, when the runner dies.
#[cfg(not(unix))]
pub fn kill_group(_pgid: u32) -> bool {
    false
}

/// The identity of the process `pid` (a stage's process, leading its group): its start time
/// in this boot. `None` where the system does not say (see `groups.rs`).
#[cfg(target_os = "linux")]
pub fn identity(pid: u32) -> Option<Identity> {
    Some(Identity {
        start: procfs::stat(pid)?.start,
        boot: procfs::boot_id()?.to_string(),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn identity(_pid: u32) -> Option<Identity> {
    None
}

/// Whether a recorded group is still the stage's: its leader exists, started when recorded in
/// this boot, and runs as the same user as this process. Otherwise, why not.
#[cfg(target_os = "linux")]
pub fn confirm(group: &StageGroup) -> Result<(), String> {
    let pgid = group.pgid;
    let Some(id) = &group.identity else {
        return Err(
            "the record says nothing about its leader (an older pipewatch wrote it, or \
                    it was not written by pipewatch): the id may be another process's now"
                .into(),
        );
    };
    match procfs::boot_id() {
        Some(boot) if boot == id.boot => {}
        Some(_) => return Err("the machine has restarted since it was recorded".into()),
        None => return Err("this system's boot id cannot be read".into()),
    }
    let Some(leader) = procfs::stat(pgid) else {
        return Err(format!(
            "its leader, process {pgid}, has exited: the id may be another process's by now"
        ));
    };
    if leader.start != id.start {
        return Err(format!(
            "process {pgid} is not the stage's process (it started at tick {}, the stage's at \
             tick {}): its id was reused",
            leader.start, id.start
        ));
    }
    match (procfs::uid(pgid), procfs::uid(std::process::id())) {
        (Some(theirs), Some(ours)) if theirs == ours => Ok(()),
        (Some(theirs), _) => Err(format!(
            "process {pgid} runs as another user (uid {theirs})"
        )),
        (None, _) => Err(format!("the owner of process {pgid} cannot be read")),
    }
}

/// Other Unixes: no portable way to read a process's start time, so no group can be confirmed
/// and none is killed (a stage left by a runner killed outright keeps running there).
#[cfg(all(unix, not(target_os = "linux")))]
pub fn confirm(_group: &StageGroup) -> Result<(), String> {
    Err("this system gives no way to confirm the process is still the stage's".into())
}

/// Windows: nothing to confirm, [`kill_group`] kills nothing (the job objects did it).
#[cfg(windows)]
pub fn confirm(_group: &StageGroup) -> Result<(), String> {
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants (Linux's child subreaper; see
/// the module doc). Call once, before the first stage starts; elsewhere it does nothing.
pub fn adopt_orphans() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become the reaper of the stages' orphans: {e}");
    }
}

/// How many times [`kill_escaped`] looks again for processes orphaned by those it killed.
#[cfg(target_os = "linux")]
const ESCAPED_ROUNDS: usize = 10;

/// Kills and reaps the processes that left a stage's group and were re-parented to this
/// process (see the module doc): those started for `stage` when one is given (only call it
/// once that stage's own process has been waited for), or every child of this process when
/// `None` (only once no stage is running: then every child is one). Blocking (it waits a
/// moment for the killed to die): call it off the async worker threads. Returns how many
/// processes it killed. Does nothing where there is no subreaper.
#[cfg(target_os = "linux")]
pub fn kill_escaped(stage: Option<&str>) -> usize {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let me = std::process::id();
    let mut killed = 0;
    for _ in 0..ESCAPED_ROUNDS {
        let found: Vec<(u32, procfs::Stat)> = procfs::children(me)
            .into_iter()
            .filter(|(pid, st)| match stage {
                // A zombie's environment is gone; one of a stage's is reaped below once
                // killed, any other at the end of the run.
                Some(s) => {
                    st.state != 'Z'
                        && procfs::env_var(*pid, "PIPEWATCH_STAGE").as_deref() == Some(s)
                }
                None => true,
            })
            .collect();
        if found.is_empty() {
            break;
        }
        for (pid, st) in &found {
            let Ok(raw) = i32::try_from(*pid) else {
                continue;
            };
            if st.state == 'Z' {
                continue;
            }
            // A process that made itself a group (or session) leader takes its group along;
            // anything it orphans comes back to us and is found in the next round.
            let _ = if st.pgrp == *pid {
                killpg(Pid::from_raw(raw), Signal::SIGKILL)
            } else {
                kill(Pid::from_raw(raw), Signal::SIGKILL)
            };
            killed += 1;
            tracing::warn!(
                pid,
                stage = stage.unwrap_or("-"),
                "killed a process that had left its stage's process group"
            );
        }
        reap(found.iter().map(|(pid, _)| *pid));
    }
    killed
}

#[cfg(not(target_os = "linux"))]
pub fn kill_escaped(_stage: Option<&str>) -> usize {
    0
}

/// Waits (a moment, at most) for each of these children of this process to end, and reaps it.
#[cfg(target_os = "linux")]
fn reap(pids: impl Iterator<Item = u32>) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);
    let deadline = std::time::Instant::now() + PATIENCE;
    for pid in pids.filter_map(|p| i32::try_from(p).ok()) {
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                // Reaped, not ours (any more), or out of patience: the next sweep sees it.
                _ => break,
            }
        }
    }
}

/// How a process ended, as journaled: the exit code, or the signal that killed it.
pub fn describe(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        (status.code(), status.signal())
    }
    #[cfg(not(unix))]
    {
        (status.code(), None)
    }
}
