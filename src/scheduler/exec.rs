//! The one place that runs the OS scheduler tools (`crontab`, `systemctl`, `schtasks`).
//!
//! Backends build a program name and an argument list; this module runs it and hands back
//! its output. Invariants: a command is always a program plus separate arguments — never a
//! string for a shell — so a task name or path reaches the tool as one argument, unchanged;
//! the program is looked up on `PATH` (the process's, or the one given to [`Tools::new`], which
//! is how tests put stand-ins first); a program that is not there becomes
//! [`SchedulerError::ToolMissing`], and a non-zero exit (through [`Tools::run_ok`])
//! [`SchedulerError::ToolFailed`] with the arguments and the tail of stderr, which is what the
//! API shows in its 503.
//!
//! Calls block: callers on the async runtime use `spawn_blocking`.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

use super::SchedulerError;

/// How much of a failing tool's stderr an error keeps (its end: that is where tools say why).
const STDERR_TAIL: usize = 2000;

/// What a tool printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs external tools, looked up on a `PATH`.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    path: Option<OsString>,
}

impl Tools {
    /// `path`: the `PATH` to look tools up on; `None` uses this process's.
    pub fn new(path: Option<OsString>) -> Self {
        Tools { path }
    }

    /// Runs `program args…`, writing `stdin` to it when given, and returns its output
    /// whatever its exit status.
    pub fn run(
        &self,
        program: &str,
        args: &[OsString],
        stdin: Option<&[u8]>,
    ) -> Result<Output, SchedulerError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            // Messages we match on ("no crontab for …") and dates we parse must not be
            // translated.
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = &self.path {
            // With PATH set on the command, std looks the program up on this PATH.
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SchedulerError::ToolMissing {
                tool: program.to_string(),
            },
            _ => SchedulerError::Spawn {
                tool: program.to_string(),
                source: e,
            },
        })?;
        let input = child.stdin.take();
        // Feed stdin on its own thread while this one drains stdout and stderr: a tool that
        // writes before it has read everything would otherwise deadlock on a full pipe.
        let out = std::thread::scope(|s| {
            if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
                s.spawn(move || {
                    // A tool that exits without reading all of it reports that itself.
                    let _ = pipe.write_all(bytes);
                });
            }
            child.wait_with_output()
        })
        .map_err(|e| SchedulerError::Spawn {
            tool: program.to_string(),
            source: e,
        })?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Like [`Tools::run`], but a non-zero exit is [`SchedulerError::ToolFailed`].
    pub fn run_ok(
        &self,
        program: &str,
        args: &[OsString],
        stdin: Option<&[u8]>,
    ) -> Result<Output, SchedulerError> {
        let out = self.run(program, args, stdin)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(failed(program, args, &out))
        }
    }
}

/// The error for `program args` having ended with `out`.
pub fn failed(program: &str, args: &[OsString], out: &Output) -> SchedulerError {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    SchedulerError::ToolFailed {
        tool: program.to_string(),
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        status: out.status.to_string(),
        stderr: tail(text.trim(), STDERR_TAIL).to_string(),
    }
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Builds an argument list from anything string-like.
pub fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named() {
        let tools = Tools::new(Some(OsString::from("/nonexistent-pipewatch-dir")));
        match tools.run("pipewatch-no-such-tool", &[], None) {
            Err(SchedulerError::ToolMissing { tool }) => {
                assert_eq!(tool, "pipewatch-no-such-tool")
            }
            other => panic!("expected ToolMissing, got {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn stdin_reaches_the_tool_and_failures_carry_stderr() {
        let tools = Tools::default();
        let out = tools
            .run_ok("cat", &[], Some(b"hello\n".as_slice()))
            .unwrap();
        assert_eq!(out.stdout, "hello\n");
        let err = tools
            .run_ok("sh", &args(["-c", "echo oops >&2; exit 3", "a b"]), None)
            .unwrap_err();
        match err {
            SchedulerError::ToolFailed {
                tool, args, stderr, ..
            } => {
                assert_eq!(tool, "sh");
                assert_eq!(args, vec!["-c", "echo oops >&2; exit 3", "a b"]);
                assert_eq!(stderr, "oops");
            }
            other => panic!("expected ToolFailed, got {other:?}"),
        }
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
    }
}
