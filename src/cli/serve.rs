//! `pipewatch serve`: the dashboard on `[server] bind` (or `--bind`), until Ctrl-C or SIGTERM;
//! `--example` serves the example workspace and starts one run of each of its pipelines to
//! watch.
//!
//! The example lives in the user's data folder ([`example_dir`]), not in the current folder:
//! started from a checkout it would otherwise leave an untracked folder behind. The folder is
//! the same on every start, so a second `serve --example` serves the same example and its
//! history. A folder that already holds a `pipewatch.toml` is served as it is: one written by
//! an earlier version holds the one-pipeline example, and keeps serving it (with its history)
//! until the user removes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{CliError, init, load_workspace};
use crate::config::{self, Config, Workspace};
use crate::exit;
use crate::runner::invocation::Invocation;
use crate::runner::shutdown;
use crate::server;

/// Seconds per step of the example's stages in the first runs of `serve --example`: 15 to
/// 30 s a run, long enough to open the page and watch it (read by the example's scripts;
/// unset, as in a plain `pipewatch run`, a step takes a fraction of a second).
const EXAMPLE_STEP_SECONDS: &str = "3";

#[derive(clap::Args)]
pub struct Args {
    /// Listen on this address instead of [server] bind (for example 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Serve the example workspace of three pipelines from the user's data folder
    /// (pipewatch/example in it; written there if missing, the path is printed) and start one
    /// run of each at once, slow enough to watch (15 to 30 s).
    #[arg(long, conflicts_with = "config")]
    example: bool,
}

pub fn command(explicit: Option<&Path>, cwd: &Path, args: Args) -> Result<u8, CliError> {
    let mut workspace = if args.example {
        example_workspace()?
    } else {
        load_workspace(explicit, cwd)?
    };
    if let Some(b) = args.bind {
        for c in &mut workspace.pipelines {
            c.server.bind = b;
        }
    }
    let config = workspace.shared().clone();
    server::check_bind(config.server.bind, &config.server.token)?;
    let rt = tokio::runtime::Runtime::new()?;
    let served = rt.block_on(async move {
        // Listening for the signals before anything else: one sent during start-up is a
        // clean shutdown once the server is up, not an abrupt end.
        let stop = shutdown::stop_signalled();
        let hangups = shutdown::Hangups::new();
        let listener = tokio::net::TcpListener::bind(config.server.bind)
            .await
            .map_err(|e| listen_error(config.server.bind, &config.path, e))?;
        let addr = listener.local_addr()?;
        super::out::stdout().line(format_args!("pipewatch dashboard: http://{addr}/"))?;
        let exe = std::env::current_exe()?;
        if args.example {
            for config in &workspace.pipelines {
                start_example_run(&exe, config)?;
            }
        }
        let options = server::ServeOptions {
            exe,
            ring_bytes: config.server.stream_buffer,
            hangups: Some(hangups),
        };
        server::serve(listener, workspace, options, async {
            let sig = stop.await;
            tracing::info!("{sig} received");
        })
        .await?;
        Ok(exit::SUCCESS)
    });
    // Everything serve commits is done when it returns; an alert delivery still under way (a
    // slow webhook or command, on a blocking thread) is not waited for: its row stays
    // `retrying` and the next start sends it again, with the same Idempotency-Key.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Why the dashboard cannot listen, with what to do when the address is taken.
fn listen_error(bind: SocketAddr, config: &Path, e: std::io::Error) -> anyhow::Error {
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        let other = SocketAddr::new(bind.ip(), bind.port().wrapping_add(1).max(1024));
        format!(
            "; another program (perhaps another pipewatch serve) listens there. Choose a free \
             address with --bind (like --bind {other}), or set [server] bind in {}: \
             pipewatch run and pipewatch tail look for the dashboard at [server] bind, so only \
             that keeps them talking to this one",
            config.display()
        )
    } else {
        String::new()
    };
    anyhow::anyhow!("cannot listen on {bind}: {e}{hint}")
}

/// The example's folder: `pipewatch/example` in the user's data folder
/// (`$XDG_DATA_HOME` or `~/.local/share` on Linux and the BSDs, `~/Library/Application
/// Support` on macOS, `%LOCALAPPDATA%` on Windows).
pub fn example_dir() -> Result<PathBuf, CliError> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let data = if cfg!(windows) {
        var("LOCALAPPDATA").or_else(|| var("APPDATA"))
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Application Support"))
    } else {
        var("XDG_DATA_HOME").or_else(|| var("HOME").map(|h| h.join(".local").join("share")))
    };
    let data = data.ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find a folder for the example pipeline: {} is not set to an absolute path \
             (or write it anywhere with pipewatch init and serve it with pipewatch serve)",
            if cfg!(windows) {
                "LOCALAPPDATA"
            } else {
                "HOME"
            }
        )
    })?;
    Ok(data.join("pipewatch").join("example"))
}

/// The example's workspace: written by `init --workspace` first if the folder has no
/// configuration yet, else what is there (an earlier version's one-pipeline example too).
fn example_workspace() -> Result<Workspace, CliError> {
    let dir = example_dir()?;
    let path = dir.join(config::FILE_NAME);
    let mut out = super::out::stdout();
    if path.exists() {
        let workspace = Workspace::load(&path)?;
        let what = if workspace.is_workspace {
            "workspace"
        } else {
            "pipeline"
        };
        out.line(format_args!(
            "serving the example {what} in {}",
            dir.display()
        ))?;
        Ok(workspace)
    } else {
        init::write_workspace_example(&dir)?;
        out.line(format_args!(
            "wrote the example workspace into {} (edit it there; pipewatch serve --example serves it again)",
            dir.display()
        ))?;
        Ok(Workspace::load(&path)?)
    }
}

/// A first run of one pipeline to watch right away; it runs on its own, like any run.
fn start_example_run(exe: &Path, config: &Config) -> Result<(), CliError> {
    let mut cmd = Invocation::of(exe, config, "manual")
        .from_dashboard(None)
        .command();
    // A test (or a user in a hurry) may set its own pace.
    if std::env::var_os(init::STEP_SECONDS_VAR).is_none() {
        cmd.env(init::STEP_SECONDS_VAR, EXAMPLE_STEP_SECONDS);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("cannot start the example run")?;
    std::thread::spawn(move || child.wait());
    Ok(())
}
