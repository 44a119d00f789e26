//! Integration tests: the real `pipewatch` binary in temporary folders, one module per area,
//! all through one harness (`support/`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod browser;
mod cli;
mod cli_config;
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
