//! `pipewatch reindex`: the run index rebuilt from the run files (what `serve` also does by
//! itself when the index is missing or unusable).

use super::CliError;
use crate::config::Config;
use crate::exit;
use crate::index::{self, Index};

pub fn command(config: &Config) -> Result<u8, CliError> {
    let db = index::path(&config.server.state_dir);
    let (mut idx, _) = Index::open_or_reset(&db)?;
    let stats = index::rebuild(&mut idx, &config.server.events_dir)?;
    super::out::stdout().line(format_args!(
        "reindexed {} run files ({} events, {} malformed lines) into {}",
        stats.files,
        stats.events,
        stats.malformed,
        db.display()
    ))?;
    Ok(exit::SUCCESS)
}
