//! Arbitrary text as pipewatch.toml: never a panic; an error names a line inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipewatch::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, std::path::Path::new("/fuzz/pipewatch.toml")) {
        Ok(c) => assert!(!c.stages.is_empty()),
        Err(ConfigError::Invalid { line, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line}");
        }
        Err(_) => {}
    }
});
