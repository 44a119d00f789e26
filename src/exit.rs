//! Exit codes, documented in `docs/cli.md` and relied on by schedulers and scripts, and the
//! [`Code`] every layer's error implements to say which one it ends a command with.

/// The run succeeded (or was skipped by the overlap policy); the command did its job.
pub const SUCCESS: u8 = 0;
/// The pipeline failed or was cancelled.
pub const FAILURE: u8 = 1;
/// Usage or configuration error: nothing was run.
pub const USAGE: u8 = 2;
/// Environment error: a folder, file, lock or tool pipewatch needs is not usable.
pub const ENVIRONMENT: u8 = 3;

/// An error that knows the exit code it ends a command with: [`USAGE`] when the user asked for
/// something wrong, [`ENVIRONMENT`] when the machine is at fault.
pub trait Code: std::error::Error + Send + Sync + 'static {
    fn exit_code(&self) -> u8;
}

/// Writing an answer out (stdout closed, say) or a file that cannot be read.
impl Code for std::io::Error {
    fn exit_code(&self) -> u8 {
        ENVIRONMENT
    }
}

/// Printing JSON fails only when the output cannot be written.
impl Code for serde_json::Error {
    fn exit_code(&self) -> u8 {
        ENVIRONMENT
    }
}
