//! Starting a stage's command and stopping its whole process tree — the one place with
//! per-OS process code.
//!
//! Each stage runs in its own process group on Unix and its own job object on Windows, so a
//! timeout or a cancel kills the stage's grandchildren too, and leftovers a stage started in
//! the background are killed when it exits. Commands are built as argument lists: a `run`
//! string goes to the platform shell as one argument (`sh -c STRING`, `cmd /d /s /c STRING`),
//! an argv list is run as given; nothing is pasted into a command line.
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
