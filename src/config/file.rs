//! The file as written: the TOML shape of `pipewatch.toml` as serde reads it, before any
//! check that serde cannot make.
//!
//! Owns the raw tables (every key optional where the file may leave it out, with the spans
//! validation needs for its messages), the value syntaxes (durations, commands), and turning a
//! byte offset of the text into the line and key a [`ConfigError`] names.
//!
//! Invariants: unknown keys and tables are refused here (`deny_unknown_fields`), so a typo is
//! an error with its line, never a silently ignored setting; nothing here applies a default or
//! resolves a path (that is [`super::validate`]). Called by [`super::Config::parse`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::schedule::Schedule;
use super::{Backend, Catchup, Command, ConfigError, Overlap};

/// Deserializes `text`; a syntax or type error names the line and key it is on.
pub(super) fn read(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        invalid_at(path, text, span.start, &message)
    })
}

/// Builds an [`ConfigError::Invalid`] for the byte offset `at` of `text`: the line is counted
/// from 1 and the key is what stands before `=` on that line (or the table header).
fn invalid_at(path: &Path, text: &str, at: usize, message: &str) -> ConfigError {
    let line = line_of(text, at);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: key_at_line(text, line),
        message: message.to_string(),
    }
}

/// The dotted key written on `line` (from 1): the key before `=` prefixed with the table it
/// is in (`pipeline.timeout`, `stages.timeout`), or the table itself on a header line.
fn key_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().take(line).enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if i + 1 == line {
                return table;
            }
        } else if i + 1 == line {
            key = match t.split_once('=') {
                Some((k, _)) => k.trim().trim_matches('"').to_string(),
                None => t.to_string(),
            };
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

pub(super) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Present in a workspace file, which names its pipeline files instead of holding one.
    pub(super) workspace: Option<Spanned<RawWorkspace>>,
    pub(super) pipeline: Option<Spanned<RawPipeline>>,
    #[serde(default)]
    pub(super) stages: Vec<Spanned<RawStage>>,
    /// Tables are spanned where a pipeline file of a workspace may not have them, so the
    /// error can name their line.
    pub(super) server: Option<Spanned<RawServer>>,
    pub(super) retention: Option<Spanned<RawRetention>>,
    pub(super) scheduler: Option<Spanned<RawScheduler>>,
    /// `[[alerts]]`: read from the workspace file only (`super::alerts`).
    #[serde(default)]
    pub(super) alerts: Vec<Spanned<super::alerts::RawAlert>>,
    /// `[smtp]`: read from the workspace file only, with `[[alerts]]` (`super::smtp`).
    pub(super) smtp: Option<Spanned<super::smtp::RawSmtp>>,
    /// `[cluster]`: shared by every pipeline, like `[server]` (`super::cluster`).
    pub(super) cluster: Option<Spanned<super::cluster::RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkspace {
    #[serde(default)]
    pub(super) pipelines: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPipeline {
    pub(super) name: Option<Spanned<String>>,
    pub(super) schedule: Option<Schedule>,
    pub(super) overlap: Option<Overlap>,
    pub(super) catchup: Option<Catchup>,
    pub(super) catchup_window: Option<Dur>,
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) params: BTreeMap<Spanned<String>, Spanned<super::params::RawParam>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub(super) name: Spanned<String>,
    pub(super) run: Command,
    #[serde(default)]
    pub(super) needs: Vec<Spanned<String>>,
    pub(super) timeout: Option<Dur>,
    pub(super) retries: Option<u32>,
    pub(super) retry_delay: Option<Dur>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) workdir: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) bind: Option<Spanned<String>>,
    pub(super) events_dir: Option<String>,
    pub(super) state_dir: Option<String>,
    pub(super) poll_interval: Option<Dur>,
    pub(super) stream_buffer: Option<Spanned<String>>,
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) max_age: Option<Dur>,
    pub(super) max_runs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScheduler {
    pub(super) backend: Option<Backend>,
    pub(super) task_name: Option<Spanned<String>>,
    pub(super) grace: Option<Dur>,
}

/// A duration written like `30m`, `10s`, `1h30m`, `90d`; `0` means zero.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses a duration as written in the configuration (`250ms`, `10s`, `5m`, `6h`, `90d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write a number and a unit, like \"30s\", \"5m\", \"6h\" or \"90d\"")
    })
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("the command is empty"));
                }
                Ok(Command::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    argv.push(a);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(de::Error::custom(
                        "the argument list is empty or names no program",
                    ));
                }
                Ok(Command::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, err};
    use super::*;

    #[test]
    fn key_at_line_prefixes_the_table() {
        let text = "top = 1\n[pipeline]\nname = \"p\"\n[[stages]]\n\"run\" = \"x\"\n";
        assert_eq!(key_at_line(text, 1), "top");
        assert_eq!(key_at_line(text, 2), "pipeline");
        assert_eq!(key_at_line(text, 3), "pipeline.name");
        assert_eq!(key_at_line(text, 4), "stages");
        assert_eq!(key_at_line(text, 5), "stages.run");
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, text.len() + 10), 6);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        let e = parse_duration("30").unwrap_err();
        assert!(e.starts_with("invalid duration \"30\" ("), "{e}");
        assert!(
            e.ends_with("like \"30s\", \"5m\", \"6h\" or \"90d\""),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, msg) = err(&format!("{MINIMAL}colour = \"red\"\n"));
        assert_eq!(line, 7);
        assert_eq!(key, "stages.colour");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn bad_duration() {
        let (line, key, msg) = err(&format!("{MINIMAL}timeout = \"5 parsecs\"\n"));
        assert_eq!((line, key.as_str()), (7, "stages.timeout"));
        assert!(msg.contains("5 parsecs"), "{msg}");
    }

    #[test]
    fn bad_cron() {
        let (line, key, msg) = err(
            "[pipeline]\nname = \"p\"\nschedule = \"*/15 * * *\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n",
        );
        assert_eq!((line, key.as_str()), (3, "pipeline.schedule"));
        assert!(msg.contains("*/15 * * *"), "{msg}");
    }

    #[test]
    fn empty_command_refused() {
        let (line, key, _) = err("[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = []\n");
        assert_eq!((line, key.as_str()), (5, "stages.run"));
    }
}
