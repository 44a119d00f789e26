//! Integration tests: the real `pipewatch` binary in temporary folders.

mod support;

mod cli_config;
mod runner;
