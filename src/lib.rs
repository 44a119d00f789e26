//! pipewatch: run a data pipeline on a schedule and watch every run live.
//!
//! # Layout
//!
//! The data flows one way: runner → journal (a JSONL file per run) → tail → bus →
//! WebSocket/API → page. A module does not reach back up that chain.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | `pipewatch.toml`: every key, defaults, validation with file/line/key errors |
//! | [`schedule`] | the cron expression: parsing, next occurrences |
//! | [`scheduler`] | the OS scheduler backends (cron, systemd, Task Scheduler): install, enable, status |
//! | [`event`] | the event format (contract §3), run ids |
//! | [`journal`] | the events folder: appending events to a run's file (whole lines, `seq` from 0); run files' names, listing and identity |
//! | [`index`] | the run index (SQLite): run and stage summaries for the API, the tailer's checkpoints, rebuilt through the tail reader |
//! | [`runner`] | `pipewatch run`: overlap, the stage DAG, retries, timeouts, cancellation |
//! | [`process`] | starting a stage and killing its whole process tree (the per-OS code) |
//! | [`liveness`] | run locks (is a runner alive?), cancel requests, the overlap lock |
//! | [`announce`] | the best-effort "run started" notification to the dashboard |
//! | [`progress`] | the terminal view of a run (live, plain or quiet) |
//! | [`shutdown`] | Ctrl-C / SIGTERM / Ctrl-Break as one future |
//! | [`bus`] | the event bus: ring buffer + broadcast, subscribe with no gap |
//! | [`tail`] | the one reader of run files (complete lines, the line cap, checkpoints) and the tailer that follows the folder |
//! | [`server`] | `pipewatch serve`: ingest, API, WebSocket/SSE, the built-in scheduler loop |
//! | [`init`] | `pipewatch init`: the example configuration and pipeline |
//! | [`history`] | `pipewatch runs`: the run index read directly, caught up with the files |
//! | [`follow`] | `pipewatch tail`: one run's events, through the dashboard or from its file |
//! | [`doctor`] | `pipewatch doctor`: the troubleshooting checks, each with its fix |
//! | [`retention`] | `[retention]`: which runs to remove, removing them (`prune`, hourly in `serve`) |
//! | [`term`] | terminal output: colour only on a terminal and without `NO_COLOR`, times, durations |
//! | [`exit`] | exit codes |

pub mod bus;
pub mod cli;
pub mod config;
pub mod event;
pub mod exit;
pub mod index;
pub mod journal;
pub mod retention;
pub mod runner;
pub mod scheduler;
pub mod server;
pub mod tail;
