//! `pipewatch forward`: the events this host's runs left unpublished sent to NATS JetStream
//! (`[cluster]`), oldest run first (`cluster::forward`).

use super::CliError;
use crate::cluster::Engine;
use crate::cluster::forward::{self, Folders, ForwardError, Forwarder};
use crate::config::Workspace;
use crate::exit;
use crate::runner::shutdown;

#[derive(clap::Args)]
pub struct Args {
    /// Keep forwarding what runs write, until interrupted.
    #[arg(long)]
    follow: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

/// Exit code 0 once every run file is in the stream (with `--follow`: once interrupted); an
/// engine that cannot be reached is an environment error.
pub fn command(ws: &Workspace, args: Args) -> Result<u8, CliError> {
    let Some(cluster) = ws.shared().cluster.clone() else {
        return Err(ForwardError::NoCluster {
            path: ws.path.clone(),
        }
        .into());
    };
    let folders = Folders::of(ws);
    let limits = crate::cluster::StreamLimits::of(ws);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if args.follow {
            let stop = shutdown::stop_signalled();
            let engine = Engine::connect(&cluster)
                .await
                .map_err(ForwardError::from)?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            let drain = tokio::spawn(forward::drain_with(engine, folders, limits, false, rx));
            stop.await;
            let _ = tx.send(true);
            let _ = drain.await;
            return Ok(exit::SUCCESS);
        }
        let engine = Engine::connect(&cluster)
            .await
            .map_err(ForwardError::from)?;
        let mut fwd = Forwarder::new(engine, folders, limits);
        fwd.drain_patiently().await?;
        let t = fwd.totals;
        if !args.quiet {
            super::out::stdout().line(format_args!(
                "forwarded {} events of {} runs to NATS; {} sent again were dropped as repeats",
                t.published, t.runs, t.duplicates
            ))?;
        }
        Ok(exit::SUCCESS)
    })
}
