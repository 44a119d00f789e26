//! `pipewatch serve`: the dashboard on `[server] bind` (or `--bind`), until Ctrl-C or SIGTERM;
//! `--example` serves the example pipeline and starts one run of it to watch.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::{CliError, init, load_config};
use crate::config::{self, Config};
use crate::exit;
use crate::runner::invocation::Invocation;
use crate::runner::shutdown;
use crate::{bus, server};

/// Where `--example` writes and serves the example pipeline.
const EXAMPLE_DIR: &str = "pipewatch-example";

#[derive(clap::Args)]
pub struct Args {
    /// Listen on this address instead of [server] bind (for example 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Serve the example pipeline from ./pipewatch-example (written there by `init` if
    /// missing) and start one run of it at once.
    #[arg(long, conflicts_with = "config")]
    example: bool,
}

pub fn command(explicit: Option<&Path>, cwd: &Path, args: Args) -> Result<u8, CliError> {
    let mut config = if args.example {
        example_config(cwd)?
    } else {
        load_config(explicit, cwd)?
    };
    if let Some(b) = args.bind {
        config.server.bind = b;
    }
    server::check_bind(config.server.bind, &config.server.token)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        // Listening for the signals before anything else: one sent during start-up is a
        // clean shutdown once the server is up, not an abrupt end.
        let stop = shutdown::signalled();
        let listener = tokio::net::TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let addr = listener.local_addr()?;
        super::out::stdout().line(format_args!("pipewatch dashboard: http://{addr}/"))?;
        let exe = std::env::current_exe()?;
        if args.example {
            start_example_run(&exe, &config)?;
        }
        let options = server::ServeOptions {
            exe,
            ring_bytes: bus::DEFAULT_RING_BYTES,
        };
        server::serve(listener, config, options, async {
            let sig = stop.await;
            tracing::info!("{sig} received");
        })
        .await?;
        Ok(exit::SUCCESS)
    })
}

/// The example's configuration, written by `init` first if it is not there yet.
fn example_config(cwd: &Path) -> Result<Config, CliError> {
    let dir = cwd.join(EXAMPLE_DIR);
    if !dir.join(config::FILE_NAME).exists() {
        init::write_example(&dir)?;
        super::out::stdout().line(format_args!(
            "wrote the example pipeline into {}",
            dir.display()
        ))?;
    }
    Ok(Config::load(&dir.join(config::FILE_NAME))?)
}

/// A first run to watch right away; it runs on its own, like any run.
fn start_example_run(exe: &Path, config: &Config) -> Result<(), CliError> {
    let mut cmd = Invocation::new(exe, &config.path, "manual")
        .from_dashboard(None)
        .command();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot start the example run")?;
    std::thread::spawn(move || child.wait());
    Ok(())
}
