//! The cron backend: one line in the user's crontab, between marker comments.
//!
//! ```text
//! # BEGIN pipewatch <task_name>
//! */15 * * * * '/usr/local/bin/pipewatch' run --config '/srv/etl/pipewatch.toml' --source scheduler
//! # END pipewatch <task_name>
//! ```
//!
//! The crontab is read with `crontab -l` (exit 1 with "no crontab for …" means an empty one)
//! and written back whole with `crontab -` on stdin. Disabling puts `#` before the line,
//! enabling takes it away, uninstalling removes the block. A new block goes first in the
//! crontab, so the user's `SHELL=`/`PATH=` lines further down do not apply to it and the
//! line is always run by `/bin/sh`, which is what its quoting is written for.
//!
//! Invariants: everything outside the block is left byte for byte as it was — comments,
//! environment lines, CRLF line ends, a missing final newline; the edits are pure functions
//! on the text ([`install_block`], [`set_enabled`], [`remove_block`]) and a property test
//! holds them to that. A block whose END marker is missing is never edited (the user must
//! look at it). Paths in the line are single-quoted for `/bin/sh` and `%` is escaped for
//! cron ([`command_text`]).
//!
//! Which configuration a block runs is read back from its line ([`installed`]): the
//! `--config` word of the command, unquoted as cron and `/bin/sh` read it, and the schedule
//! fields before it. Install, uninstall, enable and disable refuse a block that runs another
//! configuration, in the same read of the crontab they edit.
//!
//! Cron knows nothing of runs: the status's `last_run` and `last_result` are always `None`
//! (the dashboard's run history has them), and `next_run` is computed from the schedule
//! in the crontab.
//! Only 5-field expressions and the `@` nicknames can be installed: cron has no seconds.

use std::ops::Range;

use super::exec::{self, Tools};
use super::{Backend, Installed, SchedulerError, Status, Task, fields, path_text, state};
use crate::config;

const BACKEND: &str = "cron";

/// The cron backend for one task.
pub struct Cron {
    task: Task,
    tools: Tools,
}

impl Cron {
    pub fn new(task: Task, tools: Tools) -> Self {
        Cron { task, tools }
    }

    fn read(&self) -> Result<String, SchedulerError> {
        let args = exec::args(["-l"]);
        let out = self.tools.run("crontab", &args, None)?;
        if out.status.success() {
            Ok(out.stdout)
        } else if out.stderr.contains("no crontab for") {
            Ok(String::new())
        } else {
            Err(exec::failed("crontab", &args, &out))
        }
    }

    fn write(&self, text: &str) -> Result<(), SchedulerError> {
        self.tools
            .run_ok("crontab", &exec::args(["-"]), Some(text.as_bytes()))
            .map(|_| ())
    }

    /// Applies `f` to the crontab and writes the result back if it changed — unless the
    /// task's block there runs another configuration: `action` is then refused.
    fn edit(
        &self,
        action: &'static str,
        f: impl FnOnce(&str) -> Result<String, SchedulerError>,
    ) -> Result<Status, SchedulerError> {
        let before = self.read()?;
        let name = &self.task.task_name;
        let mine = installed(&before, name, self.task.schedule.expression())?;
        self.task.check_owner(BACKEND, action, mine.as_ref(), || {
            format!(
                " (or, to remove that task, delete the lines from {:?} to {:?} with `crontab -e`)",
                begin_marker(name),
                end_marker(name)
            )
        })?;
        let after = f(&before)?;
        if after != before {
            self.write(&after)?;
        }
        self.status()
    }
}

impl Backend for Cron {
    fn install(&self) -> Result<Status, SchedulerError> {
        let line = entry_line(&self.task)?;
        let name = self.task.task_name.clone();
        self.edit("install over", |text| install_block(text, &name, &line))
    }

    fn uninstall(&self) -> Result<Status, SchedulerError> {
        self.edit("uninstall", |text| remove_block(text, &self.task.task_name))
    }

    fn enable(&self) -> Result<Status, SchedulerError> {
        self.edit("enable", |text| {
            set_enabled(text, &self.task.task_name, true)
        })
    }

    fn disable(&self) -> Result<Status, SchedulerError> {
        self.edit("disable", |text| {
            set_enabled(text, &self.task.task_name, false)
        })
    }

    fn status(&self) -> Result<Status, SchedulerError> {
        let text = self.read()?;
        let mut s = self.task.status(config::Backend::Cron);
        if let Some(block) = find_block(&text, &self.task.task_name)? {
            s.exists = true;
            s.enabled = block.enabled;
            s.state = if block.enabled {
                state::READY
            } else {
                state::DISABLED
            }
            .to_string();
            let found = read_line(&text[block.range.clone()]);
            if block.enabled {
                // When the crontab fires, not when the configuration says it would.
                s.next_run = found
                    .as_ref()
                    .and_then(|i| i.schedule.as_deref())
                    .and_then(|e| e.parse::<crate::config::schedule::Schedule>().ok())
                    .and_then(|e| e.next_after(&chrono::Local::now()))
                    .map(|t| super::rfc3339(&t));
            }
            let found = with_match(found, self.task.schedule.expression());
            self.task.describe(&mut s, &found);
        }
        Ok(s)
    }
}

/// What the task's block in `text` says about itself; `None` when there is no block.
pub fn installed(
    text: &str,
    task_name: &str,
    expression: &str,
) -> Result<Option<Installed>, SchedulerError> {
    Ok(find_block(text, task_name)?.map(|b| with_match(read_line(&text[b.range]), expression)))
}

/// `found` (or an empty record for a block without a line pipewatch can read), with whether
/// its schedule is the one `expression` would be installed as.
fn with_match(found: Option<Installed>, expression: &str) -> Installed {
    let mut found = found.unwrap_or_default();
    found.schedule_matches = match (&found.schedule, cron_schedule(expression)) {
        (Some(theirs), Ok(ours)) => theirs.split_whitespace().eq(ours.split_whitespace()),
        _ => false,
    };
    found
}

/// The first entry line of a block (commented out or not): its schedule fields and the
/// `--config` of its command. `None` when the block holds no such line.
fn read_line(block: &str) -> Option<Installed> {
    let mut inner = block.split_inclusive('\n').map(bare);
    inner.next();
    let line = inner.find(|l| {
        let l = l.trim_start().trim_start_matches('#').trim();
        !l.is_empty() && !l.starts_with("END pipewatch ") && !l.starts_with("BEGIN pipewatch ")
    })?;
    let line = line.trim_start();
    let line = line.strip_prefix('#').unwrap_or(line).trim_start();
    let (schedule, command) = if line.starts_with('@') {
        line.split_once(char::is_whitespace)?
    } else {
        // Five fields, then the command.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace)?;
            rest = &rest[end..];
        }
        (&line[..line.len() - rest.len()], rest)
    };
    let words = command_words(command)?;
    let config = words
        .iter()
        .position(|w| w == "--config")
        .and_then(|i| words.get(i + 1))
        .filter(|_| words.iter().any(|w| w == "run"))
        .map(std::path::PathBuf::from);
    Some(Installed {
        config,
        schedule: Some(schedule.split_whitespace().collect::<Vec<_>>().join(" ")),
        schedule_matches: false,
    })
}

/// The words of a crontab command as cron and `/bin/sh` read them: cron turns `\%` into `%`,
/// then sh joins single-quoted, double-quoted and backslash-escaped pieces into words. The
/// reverse of [`command_text`] for what pipewatch writes; `None` for what it cannot read
/// (an unescaped `%`, an open quote, a `$` or backquote that sh would expand).
pub fn command_words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Cron: `\%` is a `%` for sh; a bare `%` ends the command.
            '\\' if chars.peek() == Some(&'%') => {
                chars.next();
                word.get_or_insert_default().push('%');
            }
            '%' => return None,
            '\'' => {
                let w = word.get_or_insert_default();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        '\\' if chars.peek() == Some(&'%') => {
                            chars.next();
                            w.push('%');
                        }
                        '%' => return None,
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_default().push(chars.next()?),
            '"' | '$' | '`' => return None,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// `# BEGIN pipewatch <task_name>`
pub fn begin_marker(task_name: &str) -> String {
    format!("# BEGIN pipewatch {task_name}")
}

/// `# END pipewatch <task_name>`
pub fn end_marker(task_name: &str) -> String {
    format!("# END pipewatch {task_name}")
}

/// The crontab line for `task`: the schedule, then the command.
pub fn entry_line(task: &Task) -> Result<String, SchedulerError> {
    let when = cron_schedule(task.schedule.expression())?;
    let inv = task.invocation()?;
    let exe = path_text(BACKEND, &inv.exe)?;
    let config = path_text(BACKEND, &inv.config)?;
    // A pipeline of a workspace is named after `run`: its name is letters, digits, `_` and
    // `-` only (checked with the configuration), so it needs no quoting.
    let pipeline = inv
        .pipeline
        .as_deref()
        .map(|p| format!(" {p}"))
        .unwrap_or_default();
    Ok(format!(
        "{when} {} run{pipeline} --config {} --source scheduler",
        command_text(exe),
        command_text(config)
    ))
}

/// The schedule part of the line. Nicknames and plain expressions stay as written; an
/// expression whose day fields start with `*` but are not just `*` (`*/2`) is rewritten as
/// lists, because Vixie cron treats such a field as unrestricted (so its day rule becomes
/// AND) where croner — and so the built-in scheduler and the other backends — uses OR.
pub fn cron_schedule(expression: &str) -> Result<String, SchedulerError> {
    let refuse = |reason: String| SchedulerError::Unsupported {
        backend: BACKEND,
        expression: expression.to_string(),
        reason,
    };
    let f = fields::parse(expression).map_err(refuse)?;
    if f.seconds.is_some() {
        return Err(refuse(
            "cron has no seconds field; use a 5-field expression, or the builtin or systemd backend"
                .to_string(),
        ));
    }
    let text = expression.trim();
    if text.starts_with('@') {
        return Ok(text.to_ascii_lowercase());
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    let risky = |p: &str| p != "*" && p.contains('*') || p.contains('?');
    if !risky(parts[2]) && !risky(parts[4]) {
        return Ok(parts.join(" "));
    }
    let list = |set: &std::collections::BTreeSet<u8>| {
        fields::runs(set)
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let day = if f.days_star {
        "*".to_string()
    } else {
        list(&f.days)
    };
    let weekday = if f.weekdays_star {
        "*".to_string()
    } else {
        list(&f.weekdays)
    };
    Ok(format!(
        "{} {} {day} {} {weekday}",
        parts[0], parts[1], parts[3]
    ))
}

/// Quotes `s` as one word for `/bin/sh` and escapes it for cron.
///
/// For sh: inside single quotes nothing is special but `'`, which becomes `'\''` (close,
/// an escaped quote, reopen). For cron: an unescaped `%` ends the command (the rest becomes
/// stdin), and cron turns `\%` into `%` before sh sees the line. Cron has no way to write a
/// `\` right before a `%`, so there the quote is closed and reopened (`''`) between them.
pub fn command_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    let mut prev = None;
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '%' => {
                if prev == Some('\\') {
                    out.push_str("''");
                }
                out.push_str("\\%");
            }
            c => out.push(c),
        }
        prev = Some(c);
    }
    out.push('\'');
    out
}

/// The block as found in a crontab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Bytes from the start of the BEGIN line to the end of the END line's terminator.
    pub range: Range<usize>,
    /// Whether some line inside is not commented out.
    pub enabled: bool,
}

/// Lines with their terminators, and where each starts.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').scan(0, |at, l| {
        let start = *at;
        *at += l.len();
        Some((start, l))
    })
}

fn bare(line: &str) -> &str {
    let l = line.strip_suffix('\n').unwrap_or(line);
    l.strip_suffix('\r').unwrap_or(l)
}

/// Finds the task's block; a BEGIN marker without its END is an error.
pub fn find_block(text: &str, task_name: &str) -> Result<Option<Block>, SchedulerError> {
    let (begin, end) = (begin_marker(task_name), end_marker(task_name));
    let mut start = None;
    let mut enabled = false;
    for (at, line) in lines(text) {
        let l = bare(line);
        match start {
            None if l == begin => start = Some(at),
            None => {}
            Some(s) if l == end => {
                return Ok(Some(Block {
                    range: s..at + line.len(),
                    enabled,
                }));
            }
            Some(_) => enabled |= !l.trim().is_empty() && !l.trim_start().starts_with('#'),
        }
    }
    match start {
        Some(_) => Err(SchedulerError::InvalidValue {
            backend: BACKEND,
            what: "the crontab".to_string(),
            reason: format!(
                "it has {begin:?} but no {end:?} after it; fix it with `crontab -e` first"
            ),
        }),
        None => Ok(None),
    }
}

/// The crontab with the task's block holding `line`, enabled: replaced where it is, or put
/// first.
pub fn install_block(text: &str, task_name: &str, line: &str) -> Result<String, SchedulerError> {
    let block = format!(
        "{}\n{line}\n{}\n",
        begin_marker(task_name),
        end_marker(task_name)
    );
    Ok(match find_block(text, task_name)? {
        Some(b) => format!("{}{block}{}", &text[..b.range.start], &text[b.range.end..]),
        None => format!("{block}{text}"),
    })
}

/// The crontab with the task's lines commented out (`enabled = false`) or not.
pub fn set_enabled(text: &str, task_name: &str, enabled: bool) -> Result<String, SchedulerError> {
    let b = find_block(text, task_name)?.ok_or_else(|| SchedulerError::NotInstalled {
        backend: BACKEND,
        task_name: task_name.to_string(),
    })?;
    let inner = &text[b.range.clone()];
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str(&text[..b.range.start]);
    let all: Vec<&str> = inner.split_inclusive('\n').collect();
    let last = all.len().saturating_sub(1);
    for (i, line) in all.iter().enumerate() {
        let body = bare(line);
        let inside = i != 0 && i != last && !body.trim().is_empty();
        if !inside {
            out.push_str(line);
        } else if enabled {
            out.push_str(line.strip_prefix('#').unwrap_or(line));
        } else if body.starts_with('#') {
            out.push_str(line);
        } else {
            out.push('#');
            out.push_str(line);
        }
    }
    out.push_str(&text[b.range.end..]);
    Ok(out)
}

/// The crontab without the task's block (unchanged when there is none).
pub fn remove_block(text: &str, task_name: &str) -> Result<String, SchedulerError> {
    Ok(match find_block(text, task_name)? {
        Some(b) => format!("{}{}", &text[..b.range.start], &text[b.range.end..]),
        None => text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_support::{HOSTILE as HOSTILE_WORD, task};
    use proptest::prelude::*;

    const LINE: &str =
        "*/15 * * * * '/usr/bin/pipewatch' run --config '/etc/p.toml' --source scheduler";

    #[test]
    fn install_puts_the_block_first_and_leaves_the_rest() {
        let user =
            "MAILTO=ops@example.com\r\n# nightly\r\n0 3 * * * /usr/bin/backup % x\r\nPATH=/bin";
        let t = install_block(user, "Pipeline Runner", LINE).unwrap();
        assert_eq!(
            t,
            format!(
                "# BEGIN pipewatch Pipeline Runner\n{LINE}\n# END pipewatch Pipeline Runner\n{user}"
            )
        );
        let off = set_enabled(&t, "Pipeline Runner", false).unwrap();
        assert!(off.contains(&format!("\n#{LINE}\n")));
        assert_eq!(
            find_block(&off, "Pipeline Runner")
                .unwrap()
                .map(|b| b.enabled),
            Some(false)
        );
        // Disabling twice does not stack `#`s.
        assert_eq!(set_enabled(&off, "Pipeline Runner", false).unwrap(), off);
        let on = set_enabled(&off, "Pipeline Runner", true).unwrap();
        assert_eq!(on, t);
        assert_eq!(remove_block(&on, "Pipeline Runner").unwrap(), user);
    }

    #[test]
    fn reinstall_replaces_the_block_where_the_user_moved_it() {
        let t = "A=1\n# BEGIN pipewatch p\n#old line\n# END pipewatch p\nB=2\n";
        let t2 = install_block(t, "p", LINE).unwrap();
        assert_eq!(
            t2,
            format!("A=1\n# BEGIN pipewatch p\n{LINE}\n# END pipewatch p\nB=2\n")
        );
    }

    #[test]
    fn other_tasks_blocks_are_not_ours() {
        let t = "# BEGIN pipewatch other\n* * * * * x\n# END pipewatch other\n";
        assert_eq!(find_block(t, "p").unwrap(), None);
        assert_eq!(find_block(t, "othe").unwrap(), None);
        let mine = install_block(t, "p", LINE).unwrap();
        assert!(mine.ends_with(t));
        assert!(matches!(
            set_enabled(t, "p", true),
            Err(SchedulerError::NotInstalled { .. })
        ));
    }

    #[test]
    fn a_damaged_block_is_not_edited() {
        let t = "# BEGIN pipewatch p\n* * * * * x\n";
        assert!(install_block(t, "p", LINE).is_err());
        assert!(remove_block(t, "p").is_err());
    }

    #[test]
    fn schedules_cron_accepts_and_refuses() {
        for (expr, want) in [
            ("*/15 * * * *", Some("*/15 * * * *")),
            ("0 9-17 * * mon-fri", Some("0 9-17 * * mon-fri")),
            ("@hourly", Some("@hourly")),
            ("@DAILY", Some("@daily")),
            ("@weekly", Some("@weekly")),
            ("@monthly", Some("@monthly")),
            ("@yearly", Some("@yearly")),
            (
                "0 0 */2 * 1",
                Some("0 0 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * 1"),
            ),
            ("0 0 ? * 1", Some("0 0 * * 1")),
            ("0 12 1 * */2", Some("0 12 1 * 0,2,4,6")),
            ("*/10 * * * * *", None),
            ("0 0 L * *", None),
            ("0 0 * * 5#2", None),
        ] {
            let got = cron_schedule(expr).ok();
            assert_eq!(got.as_deref(), want, "{expr}");
        }
        let err = cron_schedule("*/10 * * * * *").unwrap_err().to_string();
        assert!(err.contains("no seconds field"), "{err}");
    }

    // The crontab line holds Unix paths: on Windows the test task's paths are not absolute.
    #[cfg(unix)]
    #[test]
    fn entry_line_quotes_hostile_paths() {
        let line = entry_line(&task("*/15 * * * *")).unwrap();
        assert!(line.starts_with("*/15 * * * * '/opt/it'\\''s"), "{line}");
        assert!(line.ends_with(" --source scheduler"));
        assert!(!line.contains('\n'));
        // Every % is escaped for cron.
        let b = line.as_bytes();
        for (i, c) in b.iter().enumerate() {
            if *c == b'%' {
                assert_eq!(b[i - 1], b'\\', "{line}");
            }
        }
    }

    // Unix paths, as `entry_line_quotes_hostile_paths`.
    #[cfg(unix)]
    #[test]
    fn the_block_says_which_configuration_it_runs() {
        let t = task("*/15 * * * *");
        let line = entry_line(&t).unwrap();
        let text = install_block("MAILTO=x\n", &t.task_name, &line).unwrap();
        let found = installed(&text, &t.task_name, "*/15 * * * *")
            .unwrap()
            .unwrap();
        assert_eq!(found.config.as_deref(), Some(t.config_path.as_path()));
        assert_eq!(found.schedule.as_deref(), Some("*/15 * * * *"));
        assert!(found.schedule_matches);
        // Disabled, it still says so; another schedule in the configuration is a mismatch.
        let off = set_enabled(&text, &t.task_name, false).unwrap();
        let found = installed(&off, &t.task_name, "*/5 * * * *")
            .unwrap()
            .unwrap();
        assert_eq!(found.config.as_deref(), Some(t.config_path.as_path()));
        assert!(!found.schedule_matches);
        assert_eq!(
            crate::scheduler::Owner::This,
            t.owner(&found),
            "the same file"
        );
        assert_eq!(installed("", &t.task_name, "@daily").unwrap(), None);
    }

    #[test]
    fn a_block_of_another_configuration_or_of_none_is_refused() {
        let mut t = task("@daily");
        t.config_path = std::env::temp_dir().join("b").join("pipewatch.toml");
        let theirs = "# BEGIN pipewatch p\n@daily '/usr/bin/pipewatch' run --config '/srv/a/pipewatch.toml' --source scheduler\n# END pipewatch p\n";
        let found = installed(theirs, "p", "@daily").unwrap().unwrap();
        let err = t
            .check_owner(BACKEND, "install over", Some(&found), String::new)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/srv/a/pipewatch.toml") && err.contains("task_name"),
            "{err}"
        );
        assert!(err.contains(&t.config_path.display().to_string()), "{err}");
        // Edited by hand: nothing says whose it is.
        let hand = "# BEGIN pipewatch p\n0 3 * * * /usr/local/bin/etl.sh\n# END pipewatch p\n";
        let found = installed(hand, "p", "@daily").unwrap().unwrap();
        assert_eq!(found.config, None);
        assert_eq!(found.schedule.as_deref(), Some("0 3 * * *"));
        let err = t
            .check_owner(BACKEND, "uninstall", Some(&found), String::new)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no pipewatch configuration"), "{err}");
        // An empty block holds no line at all.
        let empty = "# BEGIN pipewatch p\n# END pipewatch p\n";
        assert_eq!(
            installed(empty, "p", "@daily").unwrap().unwrap().config,
            None
        );
    }

    #[test]
    fn command_words_read_back_what_command_text_writes() {
        for w in [
            HOSTILE_WORD,
            "",
            "%",
            "\\%",
            "\\\\%%",
            "'",
            "''",
            "a b",
            "\\",
        ] {
            let line = format!(
                "{} run --config {}",
                command_text("/bin/x"),
                command_text(w)
            );
            let words = command_words(&line).unwrap();
            assert_eq!(words, ["/bin/x", "run", "--config", w], "{line}");
        }
        assert_eq!(command_words("echo 50% done"), None);
        assert_eq!(command_words("'open"), None);
        assert_eq!(command_words("echo $HOME"), None);
    }

    #[test]
    fn a_path_with_a_line_break_is_refused() {
        let mut t = task("@daily");
        t.config_path = "/srv/a\nb/pipewatch.toml".into();
        assert!(matches!(
            entry_line(&t),
            Err(SchedulerError::InvalidValue { .. })
        ));
    }

    /// What Vixie/Debian cron does to the command before `sh -c` (do_command.c): `\%` becomes
    /// `%`, an unescaped `%` ends the command; every other `\` stays.
    fn cron_unescape(line: &str) -> String {
        let mut out = String::new();
        let mut escaped = false;
        for c in line.chars() {
            if escaped {
                if c == '%' {
                    out.pop();
                }
                out.push(c);
                escaped = false;
                continue;
            }
            if c == '\\' {
                escaped = true;
                out.push(c);
                continue;
            }
            if c == '%' {
                break;
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn cron_unescape_model() {
        assert_eq!(cron_unescape(r"a\%b"), "a%b");
        assert_eq!(cron_unescape(r"a%b"), "a");
        assert_eq!(cron_unescape(r"a\\%b"), r"a\\");
        assert_eq!(cron_unescape(r"a\b"), r"a\b");
    }

    #[cfg(unix)]
    #[test]
    fn hostile_words_survive_cron_and_sh() {
        let words = [
            crate::scheduler::test_support::HOSTILE,
            "'",
            "''",
            "%",
            "\\%",
            "\\\\%%",
            "a\\",
            "$(id)",
            "`id`",
            "; rm -rf x",
            " lead and trail ",
            "",
            "ünï 漢字 %s %n",
            "*",
        ];
        // The format itself is escaped like the rest (it is one more word).
        let mut cmd = format!("printf {}", command_text("[%s]\\n"));
        for w in words {
            cmd.push(' ');
            cmd.push_str(&command_text(w));
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cron_unescape(&cmd))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: String = words.iter().map(|w| format!("[{w}]\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }

    fn user_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("MAILTO=\"\"".to_string()),
            Just("SHELL=/bin/bash".to_string()),
            Just("# a comment".to_string()),
            Just(String::new()),
            Just("   ".to_string()),
            Just("#*/5 * * * * disabled by hand".to_string()),
            Just("0 3 * * * /usr/bin/backup --to '/mnt/x' 2>&1 | logger %".to_string()),
            Just("# BEGIN pipewatch other".to_string()),
            Just("# END pipewatch other".to_string()),
            Just("# BEGIN pipewatch Pipeline Runner2".to_string()),
            Just("@reboot /usr/bin/true".to_string()),
            "[ -~ü漢\t]{0,40}",
        ]
    }

    fn crontab() -> impl Strategy<Value = String> {
        (
            prop::collection::vec((user_line(), prop_oneof![Just("\n"), Just("\r\n")]), 0..12),
            any::<bool>(),
        )
            .prop_map(|(lines, final_newline)| {
                let mut t: String = lines.iter().map(|(l, end)| format!("{l}{end}")).collect();
                if !final_newline && !t.is_empty() {
                    t.pop();
                    if t.ends_with('\r') {
                        t.pop();
                    }
                }
                t
            })
            .prop_filter("no marker of the task under test", |t| {
                !t.contains("# BEGIN pipewatch Pipeline Runner\n")
                    && !t.contains("# BEGIN pipewatch Pipeline Runner\r")
                    && !t.ends_with("# BEGIN pipewatch Pipeline Runner")
            })
    }

    proptest! {
        #[test]
        fn unrelated_lines_survive_every_edit(user in crontab()) {
            let name = "Pipeline Runner";
            let outside = |t: &str| -> String {
                let b = find_block(t, name).unwrap().unwrap();
                format!("{}{}", &t[..b.range.start], &t[b.range.end..])
            };
            let installed = install_block(&user, name, LINE).unwrap();
            prop_assert_eq!(outside(&installed), user.clone());
            prop_assert!(find_block(&installed, name).unwrap().unwrap().enabled);
            let off = set_enabled(&installed, name, false).unwrap();
            prop_assert_eq!(outside(&off), user.clone());
            prop_assert!(!find_block(&off, name).unwrap().unwrap().enabled);
            let on = set_enabled(&off, name, true).unwrap();
            prop_assert_eq!(&on, &installed);
            let again = install_block(&on, name, LINE).unwrap();
            prop_assert_eq!(&again, &installed);
            prop_assert_eq!(remove_block(&on, name).unwrap(), user);
        }
    }
}
