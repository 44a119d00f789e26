//! Integration tests: the real `pipewatch` binary in temporary folders, one module per area,
//! all through one harness (`support/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

// The receivers and the failing stage are written for a POSIX shell.
#[cfg(unix)]
mod alerts;
#[cfg(unix)]
mod alerts_summary;
// Uses the alerts tests' sink, a POSIX-shell stage and a stand-in `systemctl`.
#[cfg(unix)]
mod alerts_overdue;
// The SMTP server is a Python script; the failing stage is written for a POSIX shell.
#[cfg(unix)]
mod alerts_email;
mod browser;
mod cli;
mod cli_config;
mod cluster;
// The [cluster] tests whose stages are POSIX shell scripts.
#[cfg(unix)]
mod cluster_claim;
#[cfg(unix)]
mod cluster_e2e;
#[cfg(unix)]
mod cluster_forward;
mod cluster_host;
mod cluster_serve;
mod example;
mod faults;
mod openapi;
mod operating;
mod runner;
mod scheduler;
mod security;
mod server;
mod streams;
mod workspace;
