//! Every error a command can end with, each knowing its exit code (`crate::exit`): the
//! layer's error decides, so `main` never has to guess from the message or the type.

use crate::config::ConfigError;
use crate::index::IndexError;
use crate::index::history::HistoryError;
use crate::retention::RetentionError;
use crate::runner::RunError;
use crate::scheduler::SchedulerError;
use crate::server::ServeError;

use super::init::InitError;
use super::tail::FollowError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Run(#[from] RunError),
    /// Writing the answer out (stdout closed, say).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Anything else the environment refused (a port in use, a runtime that cannot start).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        use crate::exit::ENVIRONMENT;
        match self {
            CliError::Config(e) => e.exit_code(),
            CliError::Scheduler(e) => e.exit_code(),
            CliError::Serve(e) => e.exit_code(),
            CliError::Init(e) => e.exit_code(),
            CliError::History(e) => e.exit_code(),
            CliError::Follow(e) => e.exit_code(),
            CliError::Retention(e) => e.exit_code(),
            CliError::Index(_)
            | CliError::Run(_)
            | CliError::Io(_)
            | CliError::Json(_)
            | CliError::Other(_) => ENVIRONMENT,
        }
    }
}
