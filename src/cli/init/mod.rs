//! `pipewatch init`: an example configuration written into the current folder — one pipeline
//! (`pipeline.rs`), or with `--workspace` a workspace of three (`workspace.rs`) — and
//! `serve --example`'s copy of it in the user's data folder.
//!
//! Both examples need nothing but what every machine has: POSIX `sh` on Linux and macOS,
//! `cmd.exe` on Windows. Their scripts pace their steps by [`STEP_SECONDS_VAR`], so that
//! `serve --example` can make its first run slow enough to watch.
//!
//! Existing files are never overwritten: if any target exists, nothing is written and the
//! error names every one that does.

mod pipeline;
mod workspace;

use std::path::{Path, PathBuf};

/// `init` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} already {}; pipewatch init never overwrites files (remove {} or init in another folder)",
        joined(.0),
        if .0.len() == 1 { "exists" } else { "exist" },
        if .0.len() == 1 { "it" } else { "them" }
    )]
    Exists(Vec<PathBuf>),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn joined(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

impl crate::exit::Code for InitError {
    fn exit_code(&self) -> u8 {
        match self {
            InitError::Exists(_) => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// The environment variable the examples' stages read for the seconds each of their steps
/// takes: unset, a run takes a few seconds; `serve --example` sets it for its first runs, to
/// be watched.
pub const STEP_SECONDS_VAR: &str = "EXAMPLE_STEP_SECONDS";

#[derive(clap::Args)]
pub struct Args {
    /// Write a workspace of three pipelines (pipelines/*.toml: a 15-minute sync, an hourly
    /// report, a nightly export) instead of one pipeline.
    #[arg(long)]
    workspace: bool,
}

/// Writes the one-pipeline example into `dir`; returns the files written.
pub fn write_example(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    write(dir, pipeline::files())
}

/// Writes the example workspace into `dir`; returns the files written.
pub fn write_workspace_example(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    write(dir, workspace::files())
}

/// Writes `files` (paths relative to `dir`), or nothing if any of them exists.
fn write(dir: &Path, files: Vec<(PathBuf, String)>) -> Result<Vec<PathBuf>, InitError> {
    let files: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|(p, body)| (dir.join(p), body))
        .collect();
    let existing: Vec<PathBuf> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.clone())
        .collect();
    if !existing.is_empty() {
        return Err(InitError::Exists(existing));
    }
    let mut written = Vec::new();
    for (path, body) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| InitError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // create_new: a file that appeared since the check above is still not overwritten.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()));
        result.map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// `pipewatch init [--workspace]`: writes the example into `dir` and says what to do next.
pub fn command(dir: &Path, args: Args) -> Result<u8, super::CliError> {
    let files = if args.workspace {
        write_workspace_example(dir)?
    } else {
        write_example(dir)?
    };
    let mut out = super::out::stdout();
    for f in &files {
        out.line(format_args!(
            "wrote {}",
            f.strip_prefix(dir).unwrap_or(f).display()
        ))?;
    }
    if args.workspace {
        let names = workspace::names();
        out.line(format_args!(
            "next: pipewatch run {}   (or {}; pipewatch pipelines lists them, pipewatch serve watches them live)",
            names[0],
            names[1..].join(", ")
        ))?;
    } else {
        out.line("next: pipewatch run   (or pipewatch serve to watch it live)")?;
    }
    Ok(crate::exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FILE_NAME;

    #[test]
    fn never_overwrites_and_names_every_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "mine").unwrap();
        assert!(matches!(
            write_example(dir.path()),
            Err(InitError::Exists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "mine"
        );
        assert!(!dir.path().join("pipeline").exists());

        std::fs::create_dir(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines").join("sync.toml"), "mine").unwrap();
        let err = write_workspace_example(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(FILE_NAME) && text.contains("sync.toml"),
            "{text}"
        );
        assert!(text.contains("already exist;"), "{text}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("pipelines"))
                .unwrap()
                .count(),
            1
        );
    }
}
