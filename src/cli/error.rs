//! The error a command ends with: a layer's error, which knows its exit code
//! ([`crate::exit::Code`]), or glue that failed (a runtime that cannot start, a port in use),
//! which is the environment's. `main` never guesses the code from the message or the type.
//! A reader that closed stdout early ends the command as a quiet success
//! ([`CliError::OutputClosed`], see [`super::out`]).

use std::fmt;

use super::out::WriteError;
use crate::exit::{self, Code};

#[derive(Debug)]
pub enum CliError {
    Failed(Box<dyn Code>),
    Other(anyhow::Error),
    /// Stdout's reader went away (`| head`): nothing more to say, exit code 0.
    OutputClosed,
}

impl From<WriteError> for CliError {
    fn from(e: WriteError) -> CliError {
        match e {
            WriteError::Closed => CliError::OutputClosed,
            e @ WriteError::Failed(_) => CliError::Other(e.into()),
        }
    }
}

impl<E: Code> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError::Failed(Box::new(e))
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> CliError {
        CliError::Other(e)
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(e) => e.exit_code(),
            CliError::Other(_) => exit::ENVIRONMENT,
            CliError::OutputClosed => exit::SUCCESS,
        }
    }
}

/// The error and its causes, `: `-separated.
impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Failed(e) => {
                write!(f, "{e}")?;
                let mut cause = e.source();
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
            CliError::Other(e) => write!(f, "{e:#}"),
            CliError::OutputClosed => write!(f, "stdout was closed by its reader"),
        }
    }
}
