//! Standard output and the notes on standard error, for every command: the one path their
//! text takes out of the process.
//!
//! A reader that stops reading early (`pipewatch runs | head -3`) closes the pipe; the next
//! write fails with a broken pipe. That is not an error of the command: like `ls | head`, the
//! command ends at once with exit code 0 and says nothing. [`Out`]'s writes turn that failure
//! into [`WriteError::Closed`], which [`super::CliError`] carries up to [`super::run()`] as a
//! quiet success; any other write failure stays an error (exit 3). `println!` is not used: it
//! panics on a broken pipe.
//!
//! Notes on stderr ([`note`]) are best effort: when stderr itself is gone there is nobody to
//! tell, so their failures are dropped.

use std::fmt;
use std::io::{self, Write};

/// Writing to stdout failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The reader closed its end: the command ends quietly with exit code 0.
    #[error("stdout was closed by its reader")]
    Closed,
    #[error("cannot write to stdout")]
    Failed(#[source] io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> WriteError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Failed(e)
        }
    }
}

/// Stdout, locked for the command's writes.
pub struct Out(io::StdoutLock<'static>);

/// Stdout for a command's output.
pub fn stdout() -> Out {
    Out(io::stdout().lock())
}

impl Out {
    /// Writes `text` as it is (a rendering that ends its own lines).
    pub fn text(&mut self, text: &str) -> Result<(), WriteError> {
        self.0.write_all(text.as_bytes())?;
        Ok(self.0.flush()?)
    }

    /// Writes `line` and a newline.
    pub fn line(&mut self, line: impl fmt::Display) -> Result<(), WriteError> {
        writeln!(self.0, "{line}")?;
        Ok(self.0.flush()?)
    }

    /// Writes `value` as indented JSON and a newline.
    pub fn json(&mut self, value: &impl serde::Serialize) -> Result<(), WriteError> {
        let text = serde_json::to_string_pretty(value).map_err(io::Error::from)?;
        self.line(text)
    }
}

/// For writers that report plain I/O errors (the `tail` follower); their callers turn the
/// error into a [`WriteError`] with `From`.
impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A line on stderr for the person at the terminal; dropped if stderr cannot be written.
pub fn note(line: impl fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_a_closed_reader_and_anything_else_a_failure() {
        let closed = WriteError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, WriteError::Closed));
        let full = WriteError::from(io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(full, WriteError::Failed(_)));
    }
}
