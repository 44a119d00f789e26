//! Exit codes, documented in `docs/cli.md` and relied on by schedulers and scripts.

use std::process::ExitCode;

/// The run succeeded (or was skipped by the overlap policy); the command did its job.
pub const SUCCESS: u8 = 0;
/// The pipeline failed or was cancelled.
pub const FAILURE: u8 = 1;
/// Usage or configuration error: nothing was run.
pub const USAGE: u8 = 2;
/// Environment error: a folder, file, lock or tool pipewatch needs is not usable.
pub const ENVIRONMENT: u8 = 3;

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
