//! pipewatch: run a data pipeline on a schedule and watch every run live.
//!
//! # Layout
//!
//! The data flows one way, top to bottom; a module uses only the ones above it in the first
//! table (and the leaves `event`, `exit` and `fsx`), never one below. `docs/architecture.md` follows
//! one event along this path, hop by hop.
//!
//! | module | owns |
//! |---|---|
//! | [`event`] | the event (`docs/events.md`), run ids, timestamps: depends on nothing |
//! | [`config`] | `pipewatch.toml`: every key, defaults, validation with file/line/key errors; the schedule |
//! | [`journal`] | the events folder: writing run files (whole lines, `seq` from 0), their names, listing and identity; `missed` records |
//! | [`runner`] | `pipewatch run`: overlap, the stage DAG, retries, timeouts, output capture, run locks, the one `Invocation` |
//! | [`tail`] | reading run files (the only reader) and following the events folder: each line handed on once |
//! | [`cluster`] | `[cluster]` over NATS JetStream: the engine's stream and buckets, forwarding run files, claiming occurrences |
//! | [`alerts`] | alerts: the alert object, the rules (storm suppression, recovery, late, long), the summary after an outage, sending to a webhook, a command or an e-mail |
//! | [`index`] | the run index (SQLite): run and stage summaries, the tailer's checkpoints, rebuilt through the tail reader |
//! | [`bus`] | the event bus: logs of recent events that followers read, with no gap |
//! | [`retention`] | `[retention]`: which runs to remove, removing them (`prune`, hourly in `serve`) |
//! | [`scheduler`] | the OS scheduler backends, the built-in timer, the occurrence auditor |
//! | [`server`] | `pipewatch serve`: ingest (tail → index → bus), the HTTP API and its OpenAPI description, WebSocket/SSE, the page |
//! | [`cli`] | the command line: one module per command, terminal rendering, errors → exit codes |
//!
//! | leaf | owns |
//! |---|---|
//! | [`exit`] | the exit codes every layer's error maps to |
//! | [`fsx`] | opening files in folders others can write to: no link followed, no FIFO waited on, temporary files always new |
//! | [`sync`] | locks a panic elsewhere does not make unusable |

pub mod event;
pub mod exit;
pub mod fsx;
pub mod sync;

pub mod config;
pub mod journal;
pub mod runner;
pub mod tail;
pub mod cluster;
pub mod alerts;
pub mod index;
pub mod bus;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod cli;
