//! The `pipewatch` binary: parses the command line and hands it to [`pipewatch::cli::run`],
//! which runs the command and maps its outcome to an exit code (`pipewatch::exit`).

use std::process::ExitCode;

use clap::Parser;

/// Memory crosses threads on the dashboard's hot path: an event's encodings, made by the
/// ingest task, are freed by whichever socket writer or ring eviction lets go of them last.
/// glibc's allocator serializes frees from another thread on its arena lock (a third of the
/// dashboard's CPU at high ingest rates, measured when ingest still freed the tailer's
/// batches, which the tail thread now frees itself: `tail::Spent`); mimalloc frees across
/// threads without it. Built without asking for transparent huge pages (its `no_thp`
/// feature): each first touch of 2 MiB made the kernel clear all of it, and the dashboard's
/// memory was a quarter to two fifths more (`docs/benchmarks.md`, "No huge pages for the
/// allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pipewatch::cli::run(pipewatch::cli::Cli::parse())
}
