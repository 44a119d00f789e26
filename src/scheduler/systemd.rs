//! The systemd backend: a `pipewatch-<slug>.service` (the run) and a `.timer` (the schedule),
//! as user units in `~/.config/systemd/user` (`systemctl --user`) or, with `system`, system
//! units in `/etc/systemd/system`.
//!
//! What the settings become:
//! - `schedule` → one `OnCalendar=` line, or two when cron's day-of-month and day-of-week
//!   are both restricted (cron fires when *either* matches; one systemd line would need
//!   both). A seconds field is supported: systemd has one. `AccuracySec=1s`, because the
//!   default (1 min) lets systemd fire up to a minute late to batch wake-ups.
//! - `catchup` → `Persistent=true` for `last` and `all` (systemd starts one run at boot or
//!   when enabled for any number of missed occurrences), `false` for `none`.
//! - `overlap` → nothing to write: systemd never starts a unit that is still active, so an
//!   occurrence while a run goes on is dropped — `skip`, natively. `queue`, `parallel` and
//!   `replace` cannot reach `pipewatch run` from a timer (the start is dropped before it);
//!   pipewatch's own policy applies to the runs it starts itself (manual runs).
//! - `timeout` → `TimeoutStartSec=` on the `Type=oneshot` service, a minute longer than the
//!   run's timeout so that `pipewatch run` ends the run itself and journals why; systemd's
//!   limit is the backstop. No timeout → `infinity`.
//!
//! Which configuration the units run is read back from the unit files ([`read_units`]): the
//! `--config` word of the service's `ExecStart=`, and the timer's `OnCalendar=` lines with the
//! cron expression they were made from (a `# pipewatch schedule:` comment). Install,
//! uninstall, enable and disable refuse units that run another configuration.
//!
//! Invariants: unit texts are pure functions ([`service_unit`], [`timer_unit`],
//! [`on_calendar`]), every `ExecStart=` word is quoted per systemd.syntax(7)
//! ([`exec_word`]), and unit files are written whole (tmp + rename) before `daemon-reload`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, TimeZone, Utc};

use super::exec::{self, Tools};
use super::fields::{self, Fields};
use super::{
    Backend, Installed, OsOptions, SchedulerError, Status, Task, path_text, rfc3339, state,
    write_atomic,
};
use crate::config::{self, Catchup};

const BACKEND: &str = "systemd";
const WEEKDAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// The systemd backend for one task.
pub struct Systemd {
    task: Task,
    tools: Tools,
    system: bool,
    unit_dir: Option<PathBuf>,
}

impl Systemd {
    pub fn new(task: Task, tools: Tools, opts: &OsOptions) -> Self {
        Systemd {
            task,
            tools,
            system: opts.system,
            unit_dir: opts.unit_dir.clone(),
        }
    }

    fn dir(&self) -> Result<PathBuf, SchedulerError> {
        if let Some(d) = &self.unit_dir {
            return Ok(d.clone());
        }
        if self.system {
            return Ok(PathBuf::from("/etc/systemd/system"));
        }
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
            .ok_or_else(|| SchedulerError::InvalidValue {
                backend: BACKEND,
                what: "the user unit folder".to_string(),
                reason: "neither XDG_CONFIG_HOME nor HOME is set".to_string(),
            })?;
        Ok(config_home.join("systemd").join("user"))
    }

    fn unit(&self, suffix: &str) -> String {
        format!("{}.{suffix}", task_unit(&self.task))
    }

    fn ctl(&self, args: &[&str]) -> Result<exec::Output, SchedulerError> {
        self.tools
            .run_ok("systemctl", &systemctl_args(self.system, args), None)
    }

    /// What the task's unit files say about themselves; `None` when its timer is not in the
    /// unit folder.
    fn installed(&self) -> Result<Option<Installed>, SchedulerError> {
        let dir = self.dir()?;
        let read = |suffix: &str| {
            let path = dir.join(self.unit(suffix));
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(SchedulerError::Io { path, source }),
            }
        };
        let Some(timer) = read("timer")? else {
            return Ok(None);
        };
        let service = read("service")?.unwrap_or_default();
        Ok(Some(read_units(
            &service,
            &timer,
            self.task.schedule.expression(),
        )))
    }

    /// Refuses `action` on units that run another configuration; `Ok(false)` when the timer
    /// is not there.
    fn check_owner(&self, action: &'static str) -> Result<bool, SchedulerError> {
        let found = self.installed()?;
        self.task.check_owner(BACKEND, action, found.as_ref(), || {
            let dir = self.dir().unwrap_or_default();
            format!(
                " (or, to remove that task, delete {} and {} and run `systemctl {} daemon-reload`)",
                dir.join(self.unit("timer")).display(),
                dir.join(self.unit("service")).display(),
                if self.system { "--system" } else { "--user" }
            )
        })?;
        Ok(found.is_some())
    }

    fn require_installed(&self, action: &'static str) -> Result<(), SchedulerError> {
        if self.check_owner(action)? {
            Ok(())
        } else {
            Err(SchedulerError::NotInstalled {
                backend: BACKEND,
                task_name: self.task.task_name.clone(),
            })
        }
    }
}

impl Systemd {
    /// Puts the unit files back as they were before a failed install (removing the new ones),
    /// and has systemd read them again if it read the new ones. Best effort: what cannot be
    /// undone is logged with its path.
    fn roll_back(&self, units: &[(PathBuf, String)], before: &[Option<Vec<u8>>], reloaded: bool) {
        for ((path, _), old) in units.iter().zip(before) {
            let undone = match old {
                Some(bytes) => write_atomic(path, bytes).map_err(|e| e.to_string()),
                None => match std::fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(e) = undone {
                tracing::warn!(path = %path.display(), "cannot undo a failed install: {e}");
            }
        }
        if reloaded && let Err(e) = self.ctl(&["daemon-reload"]) {
            tracing::warn!("daemon-reload after undoing a failed install: {e}");
        }
    }
}

impl Backend for Systemd {
    fn install(&self) -> Result<Status, SchedulerError> {
        // Build both texts first: a refused schedule leaves nothing half-installed.
        let service = service_unit(&self.task)?;
        let timer = timer_unit(&self.task)?;
        self.check_owner("install over")?;
        let dir = self.dir()?;
        std::fs::create_dir_all(&dir).map_err(|source| SchedulerError::Io {
            path: dir.clone(),
            source,
        })?;
        let units = [
            (dir.join(self.unit("service")), service),
            (dir.join(self.unit("timer")), timer),
        ];
        // What was there before (a reinstall), to put back if systemd does not take the new
        // units: a failed install leaves things as they were, never half-installed.
        let before: Vec<Option<Vec<u8>>> = units
            .iter()
            .map(|(path, _)| std::fs::read(path).ok())
            .collect();
        let mut reloaded = false;
        let result = (|| {
            for (path, text) in &units {
                write_atomic(path, text.as_bytes())?;
            }
            self.ctl(&["daemon-reload"])?;
            reloaded = true;
            self.ctl(&["enable", "--now", &self.unit("timer")])
        })();
        if let Err(e) = result {
            self.roll_back(&units, &before, reloaded);
            return Err(e);
        }
        self.status()
    }

    fn uninstall(&self) -> Result<Status, SchedulerError> {
        let dir = self.dir()?;
        if self.check_owner("uninstall")? {
            self.ctl(&["disable", "--now", &self.unit("timer")])?;
        }
        for suffix in ["timer", "service"] {
            let path = dir.join(self.unit(suffix));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SchedulerError::Io { path, source }),
            }
        }
        self.ctl(&["daemon-reload"])?;
        self.status()
    }

    fn enable(&self) -> Result<Status, SchedulerError> {
        self.require_installed("enable")?;
        self.ctl(&["enable", "--now", &self.unit("timer")])?;
        self.status()
    }

    fn disable(&self) -> Result<Status, SchedulerError> {
        self.require_installed("disable")?;
        self.ctl(&["disable", "--now", &self.unit("timer")])?;
        self.status()
    }

    fn status(&self) -> Result<Status, SchedulerError> {
        let timer = parse_show(
            &self
                .ctl(&[
                    "show",
                    &self.unit("timer"),
                    "--property=LoadState,UnitFileState,ActiveState,NextElapseUSecRealtime,LastTriggerUSec",
                    "--timestamp=utc",
                ])?
                .stdout,
        );
        let service = if timer.get("LoadState").is_some_and(|s| s != "not-found") {
            parse_show(
                &self
                    .ctl(&[
                        "show",
                        &self.unit("service"),
                        "--property=ActiveState,Result,ExecMainStatus",
                        "--timestamp=utc",
                    ])?
                    .stdout,
            )
        } else {
            BTreeMap::new()
        };
        let mut s = status_from(&self.task, &timer, &service);
        if s.exists {
            // Loaded from elsewhere than the unit folder: nothing says what it runs.
            let found = self.installed()?.unwrap_or_default();
            self.task.describe(&mut s, &found);
        }
        Ok(s)
    }
}

/// What a service and timer unit say about themselves: the `--config` of `ExecStart=`, the
/// recorded cron expression (else the `OnCalendar=` values), and whether the `OnCalendar=`
/// lines are those `expression` would be installed as.
pub fn read_units(service: &str, timer: &str, expression: &str) -> Installed {
    let values = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|l| l.trim_start().strip_prefix('='))
            .map(|v| v.trim().to_string())
            .collect()
    };
    let config = values(service, "ExecStart")
        .first()
        .and_then(|v| exec_words(v))
        .and_then(|words| {
            let at = words.iter().position(|w| w == "--config")?;
            words.get(at + 1).map(PathBuf::from)
        });
    let calendars = values(timer, "OnCalendar");
    let recorded = timer
        .lines()
        .find_map(|l| l.trim().strip_prefix(SCHEDULE_COMMENT))
        .map(|e| e.trim().to_string());
    let schedule = recorded.or_else(|| (!calendars.is_empty()).then(|| calendars.join("; ")));
    Installed {
        config,
        schedule,
        schedule_matches: on_calendar(expression).is_ok_and(|ours| ours == calendars),
    }
}

/// The comment in the timer that records the cron expression it was made from.
const SCHEDULE_COMMENT: &str = "# pipewatch schedule:";

/// The words of an `ExecStart=` value, unquoted per systemd.syntax(7): the reverse of
/// [`exec_word`] (double or single quotes, `\` escapes, `$$` and `%%`). `None` for what
/// pipewatch does not write (an open quote, a lone `$` or `%`).
pub fn exec_words(value: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' if quote == Some(c) => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            '\\' => word.get_or_insert_default().push(chars.next()?),
            '$' | '%' => {
                if chars.next()? != c {
                    return None;
                }
                word.get_or_insert_default().push(c);
            }
            c if c.is_whitespace() && quote.is_none() => words.extend(word.take()),
            c => word.get_or_insert_default().push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    words.extend(word);
    Some(words)
}

/// The units' name without suffix: `pipewatch-<pipeline>` for a pipeline of a workspace
/// (its name is already safe in a unit name), else from the task name ([`unit_name`]).
fn task_unit(task: &Task) -> String {
    match &task.pipeline {
        Some(p) => format!("pipewatch-{p}"),
        None => unit_name(&task.task_name),
    }
}

/// `pipewatch-<slug>`: the task name lower-cased, every run of characters outside
/// `[a-z0-9]` made one `-` (unit names allow few characters, and a file name must not be
/// able to climb out of the unit folder).
pub fn unit_name(task_name: &str) -> String {
    let mut slug = String::new();
    for c in task_name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "pipewatch".to_string()
    } else {
        format!("pipewatch-{slug}")
    }
}

/// `systemctl --user|--system ARGS…`
pub fn systemctl_args(system: bool, args: &[&str]) -> Vec<OsString> {
    let scope = if system { "--system" } else { "--user" };
    std::iter::once(scope)
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

/// One word of `ExecStart=`, per systemd.syntax(7): double-quoted, with `\` and `"` escaped
/// by `\`, `$` written `$$` (no variable expansion) and `%` written `%%` (no specifier).
pub fn exec_word(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A free-text setting (`Description=`): specifiers escaped, and no trailing `\`, which
/// would continue the setting on the next line.
fn text_value(s: &str) -> String {
    s.replace('%', "%%").trim_end_matches('\\').to_string()
}

/// The `.service` unit.
pub fn service_unit(task: &Task) -> Result<String, SchedulerError> {
    let inv = task.invocation()?;
    let exe = path_text(BACKEND, &inv.exe)?;
    // systemd refuses these in the executable's own path ("special characters"), and does not
    // unescape `$$` there: no quoting can carry them, so say so rather than install a unit
    // that will never start.
    if exe.contains(['\'', '"', '\\', '$']) {
        return Err(SchedulerError::InvalidValue {
            backend: BACKEND,
            what: format!("the executable path {exe:?}"),
            reason: "systemd cannot start a program whose path contains ', \", \\ or $; \
                     install pipewatch in a plain folder (e.g. /usr/local/bin)"
                .to_string(),
        });
    }
    let mut words = vec![exec_word(exe)];
    for a in inv.args() {
        words.push(exec_word(path_text(BACKEND, Path::new(&a))?));
    }
    let timeout = match task.timeout {
        Some(t) => (t.as_secs() + 60).to_string(),
        None => "infinity".to_string(),
    };
    Ok(format!(
        "# Written by `pipewatch scheduler install`; reinstall rather than edit.\n\
         [Unit]\n\
         Description=pipewatch run: {}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={}\n\
         TimeoutStartSec={timeout}\n",
        text_value(&task.task_name),
        words.join(" "),
    ))
}

/// The `.timer` unit.
pub fn timer_unit(task: &Task) -> Result<String, SchedulerError> {
    let calendars = on_calendar(task.schedule.expression())?;
    let mut on = String::new();
    for c in &calendars {
        on.push_str("OnCalendar=");
        on.push_str(c);
        on.push('\n');
    }
    let persistent = !matches!(task.catchup, Catchup::None);
    // A line break would end the comment; croner accepts none, so this is only a guard.
    let expression = task.schedule.expression().replace(char::is_control, " ");
    Ok(format!(
        "# Written by `pipewatch scheduler install`; reinstall rather than edit.\n\
         {SCHEDULE_COMMENT} {expression}\n\
         [Unit]\n\
         Description=pipewatch schedule: {}\n\
         \n\
         [Timer]\n\
         {on}\
         AccuracySec=1s\n\
         Persistent={persistent}\n\
         Unit={}.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        text_value(&task.task_name),
        task_unit(task),
    ))
}

/// The `OnCalendar=` values (`DOW YYYY-MM-DD HH:MM:SS`) that fire when the cron expression
/// does.
pub fn on_calendar(expression: &str) -> Result<Vec<String>, SchedulerError> {
    let f = fields::parse(expression).map_err(|reason| SchedulerError::Unsupported {
        backend: BACKEND,
        expression: expression.to_string(),
        reason,
    })?;
    Ok(calendars(&f))
}

fn calendars(f: &Fields) -> Vec<String> {
    let time = format!(
        "{}:{}:{}",
        component(&f.hours, 0, 23),
        component(&f.minutes, 0, 59),
        f.seconds
            .as_ref()
            .map_or_else(|| "00".to_string(), |s| component(s, 0, 59))
    );
    let month = component(&f.months, 1, 12);
    let by_weekday = format!("{} *-{month}-* {time}", weekdays(&f.weekdays));
    let by_day = format!("*-{month}-{} {time}", component(&f.days, 1, 31));
    match (f.days_star, f.weekdays_star) {
        (true, true) => vec![format!("*-{month}-* {time}")],
        (true, false) => vec![by_weekday],
        (false, true) => vec![by_day],
        // cron's OR of the two day fields: one line each; systemd fires when any matches.
        (false, false) => vec![by_weekday, by_day],
    }
}

/// One date or time component: `*`, `a/step` (repeats to the end of the range), or a list
/// of values and `a..b` ranges.
fn component(set: &std::collections::BTreeSet<u8>, min: u8, max: u8) -> String {
    if fields::is_full(set, min, max) {
        return "*".to_string();
    }
    let first = set.first().copied().unwrap_or(min);
    let last = set.last().copied().unwrap_or(min);
    if let Some(step) = fields::step_of(set)
        && set.len() >= 3
        && step > 1
        && u16::from(last) + u16::from(step) > u16::from(max)
    {
        return format!("{first:02}/{step}");
    }
    fields::runs(set)
        .iter()
        .map(|&(a, b)| match b - a {
            0 => format!("{a:02}"),
            1 => format!("{a:02},{b:02}"),
            _ => format!("{a:02}..{b:02}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Cron weekdays (0 = Sunday) as systemd names, Monday first.
fn weekdays(set: &std::collections::BTreeSet<u8>) -> String {
    let monday_first: std::collections::BTreeSet<u8> = set.iter().map(|d| (d + 6) % 7).collect();
    fields::runs(&monday_first)
        .iter()
        .map(|&(a, b)| match b - a {
            0 => WEEKDAY_NAMES[usize::from(a)].to_string(),
            1 => format!(
                "{},{}",
                WEEKDAY_NAMES[usize::from(a)],
                WEEKDAY_NAMES[usize::from(b)]
            ),
            _ => format!(
                "{}..{}",
                WEEKDAY_NAMES[usize::from(a)],
                WEEKDAY_NAMES[usize::from(b)]
            ),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `Key=Value` lines of `systemctl show`.
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A `systemctl show --timestamp=utc` time (`Sun 2026-11-29 10:30:00 UTC`, or `@SECONDS`)
/// as RFC 3339; empty, `n/a` and `0` mean none.
pub fn parse_timestamp(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() || v == "n/a" || v == "0" {
        return None;
    }
    if let Some(secs) = v.strip_prefix('@') {
        let secs: i64 = secs.split('.').next()?.parse().ok()?;
        return Utc.timestamp_opt(secs, 0).single().map(|t| rfc3339(&t));
    }
    let naive = NaiveDateTime::parse_from_str(v, "%a %Y-%m-%d %H:%M:%S UTC").ok()?;
    Some(rfc3339(&Utc.from_utc_datetime(&naive)))
}

/// The status from the timer's and the service's `systemctl show` properties.
pub fn status_from(
    task: &Task,
    timer: &BTreeMap<String, String>,
    service: &BTreeMap<String, String>,
) -> Status {
    fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> &'a str {
        m.get(k).map(String::as_str).unwrap_or("")
    }
    let mut s = task.status(config::Backend::Systemd);
    let load = get(timer, "LoadState");
    s.exists = !load.is_empty() && load != "not-found";
    if !s.exists {
        return s;
    }
    s.enabled = get(timer, "UnitFileState").starts_with("enabled");
    let running = matches!(
        get(service, "ActiveState"),
        "activating" | "active" | "reloading" | "deactivating"
    );
    s.state = if running {
        state::RUNNING
    } else if s.enabled {
        state::READY
    } else {
        state::DISABLED
    }
    .to_string();
    if s.enabled {
        s.next_run = parse_timestamp(get(timer, "NextElapseUSecRealtime"));
    }
    s.last_run = parse_timestamp(get(timer, "LastTriggerUSec"));
    if s.last_run.is_some() {
        let (result, code) = (get(service, "Result"), get(service, "ExecMainStatus"));
        s.last_result = Some(if running {
            "running".to_string()
        } else if result == "success" && (code.is_empty() || code == "0") {
            "success".to_string()
        } else {
            format!("failure: {result}, exit status {code}")
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_support::{HOSTILE, task};
    use chrono::{Datelike, Duration as ChronoDuration, Timelike};
    use proptest::prelude::*;

    /// cron → OnCalendar, including refusals (`None`).
    const TABLE: &[(&str, Option<&[&str]>)] = &[
        ("* * * * *", Some(&["*-*-* *:*:00"])),
        ("*/15 * * * *", Some(&["*-*-* *:00/15:00"])),
        ("*/5 * * * *", Some(&["*-*-* *:00/5:00"])),
        ("*/7 * * * *", Some(&["*-*-* *:00/7:00"])),
        ("5-59/15 * * * *", Some(&["*-*-* *:05/15:00"])),
        ("0 * * * *", Some(&["*-*-* *:00:00"])),
        ("30 2 * * *", Some(&["*-*-* 02:30:00"])),
        ("0 9-17 * * *", Some(&["*-*-* 09..17:00:00"])),
        ("0 9-17 * * 1-5", Some(&["Mon..Fri *-*-* 09..17:00:00"])),
        ("0 */2 * * *", Some(&["*-*-* 00/2:00:00"])),
        ("0 8,12,18 * * *", Some(&["*-*-* 08,12,18:00:00"])),
        ("0,30 8-9 * * *", Some(&["*-*-* 08,09:00,30:00"])),
        ("15 10 * * sat,sun", Some(&["Sat,Sun *-*-* 10:15:00"])),
        ("15 10 * * 0", Some(&["Sun *-*-* 10:15:00"])),
        ("15 10 * * 7", Some(&["Sun *-*-* 10:15:00"])),
        ("15 10 * * 5-7", Some(&["Fri..Sun *-*-* 10:15:00"])),
        ("0 0 1 * *", Some(&["*-*-01 00:00:00"])),
        ("0 0 1,15 * *", Some(&["*-*-01,15 00:00:00"])),
        ("0 0 */2 * *", Some(&["*-*-01/2 00:00:00"])),
        ("0 0 1 1 *", Some(&["*-01-01 00:00:00"])),
        ("0 0 1 */3 *", Some(&["*-01/3-01 00:00:00"])),
        ("0 6 * jan-mar *", Some(&["*-01..03-* 06:00:00"])),
        (
            "0 0 13 * 5",
            Some(&["Fri *-*-* 00:00:00", "*-*-13 00:00:00"]),
        ),
        (
            "0 0 1-7 * mon",
            Some(&["Mon *-*-* 00:00:00", "*-*-01..07 00:00:00"]),
        ),
        ("0 0 ? * wed", Some(&["Wed *-*-* 00:00:00"])),
        ("@hourly", Some(&["*-*-* *:00:00"])),
        ("@daily", Some(&["*-*-* 00:00:00"])),
        ("@weekly", Some(&["Sun *-*-* 00:00:00"])),
        ("@monthly", Some(&["*-*-01 00:00:00"])),
        ("@yearly", Some(&["*-01-01 00:00:00"])),
        ("*/20 * * * * *", Some(&["*-*-* *:*:00/20"])),
        ("30 0 12 * * *", Some(&["*-*-* 12:00:30"])),
        ("0 0 L * *", None),
        ("0 0 15W * *", None),
        ("0 0 * * 5#3", None),
        ("0 0 * * 5L", None),
        ("0 0 30 2 *", None),
        ("0 0 31 4,6,9,11 *", None),
    ];

    #[test]
    fn translation_table() {
        assert!(TABLE.len() >= 30);
        for (expr, want) in TABLE {
            match (on_calendar(expr), want) {
                (Ok(got), Some(want)) => assert_eq!(&got, want, "{expr}"),
                (Err(e), None) => {
                    let msg = e.to_string();
                    assert!(msg.contains(expr) && msg.contains("systemd"), "{msg}");
                }
                (got, want) => panic!("{expr}: got {got:?}, want {want:?}"),
            }
        }
    }

    // --- a small evaluator of the OnCalendar values generated above -----------------------

    fn matches_component(spec: &str, v: u32, max: u32) -> bool {
        if spec == "*" {
            return true;
        }
        spec.split(',').any(|item| {
            if let Some((a, s)) = item.split_once('/') {
                let (a, s): (u32, u32) = (a.parse().unwrap(), s.parse().unwrap());
                v >= a && v <= max && (v - a).is_multiple_of(s)
            } else if let Some((a, b)) = item.split_once("..") {
                (a.parse().unwrap()..=b.parse().unwrap()).contains(&v)
            } else {
                item.parse::<u32>().unwrap() == v
            }
        })
    }

    fn matches_weekday(spec: &str, monday0: u32) -> bool {
        let idx = |n: &str| WEEKDAY_NAMES.iter().position(|w| *w == n).unwrap() as u32;
        spec.split(',').any(|item| match item.split_once("..") {
            Some((a, b)) => (idx(a)..=idx(b)).contains(&monday0),
            None => idx(item) == monday0,
        })
    }

    /// Whether one `[DOW ]Y-M-D H:M:S` value fires at `t`.
    fn fires(calendar: &str, t: &NaiveDateTime) -> bool {
        let parts: Vec<&str> = calendar.split(' ').collect();
        let (dow, date, time) = match parts.as_slice() {
            [d, date, time] => (Some(*d), *date, *time),
            [date, time] => (None, *date, *time),
            _ => panic!("bad calendar {calendar}"),
        };
        let d: Vec<&str> = date.split('-').collect();
        let h: Vec<&str> = time.split(':').collect();
        assert_eq!(d[0], "*");
        dow.is_none_or(|w| matches_weekday(w, t.weekday().num_days_from_monday()))
            && matches_component(d[1], t.month(), 12)
            && matches_component(d[2], t.day(), 31)
            && matches_component(h[0], t.hour(), 23)
            && matches_component(h[1], t.minute(), 59)
            && matches_component(h[2], t.second(), 59)
    }

    /// Both sides' firing instants over a week from `start`: croner's through
    /// `Schedule::next_after`, ours by testing every minute (every second for 6 fields).
    fn same_week(expr: &str, start: NaiveDateTime) -> Result<(), String> {
        let schedule: crate::config::schedule::Schedule = expr.parse()?;
        let cals = on_calendar(expr).map_err(|e| e.to_string())?;
        let end = start + ChronoDuration::days(7);
        let mut want = Vec::new();
        let mut t = Utc.from_utc_datetime(&start) - ChronoDuration::seconds(1);
        while let Some(n) = schedule.next_after(&t) {
            if n.naive_utc() >= end {
                break;
            }
            want.push(n.naive_utc());
            t = n;
        }
        let step = if expr.split_whitespace().count() == 6 {
            1
        } else {
            60
        };
        let mut got = Vec::new();
        let mut t = start;
        while t < end {
            if cals.iter().any(|c| fires(c, &t)) {
                got.push(t);
            }
            t += ChronoDuration::seconds(step);
        }
        if got == want {
            Ok(())
        } else {
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            Err(format!(
                "{expr} -> {cals:?}: {} vs croner {} firings; first difference at {first_diff:?}",
                got.len(),
                want.len()
            ))
        }
    }

    fn starts() -> Vec<NaiveDateTime> {
        // A week across a month end (and February's), one across a year end, one in mid-month.
        [
            "2026-02-25T00:00:00",
            "2026-12-28T13:07:00",
            "2027-07-10T05:00:00",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
    }

    #[test]
    fn the_table_fires_like_croner_over_a_week() {
        for (expr, want) in TABLE {
            if want.is_some() {
                for s in starts() {
                    same_week(expr, s).unwrap();
                }
            }
        }
    }

    fn field_text(min: u8, max: u8) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=(max - min + 1).min(13)).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max, 1u8..8).prop_map(|(a, b, s)| format!(
                "{}-{}/{s}",
                a.min(b),
                a.max(b)
            )),
        ];
        prop::collection::vec(item, 1..3).prop_map(|v| v.join(","))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn on_calendar_fires_like_croner(
            min in field_text(0, 59),
            hour in field_text(0, 23),
            day in field_text(1, 31),
            month in field_text(1, 12),
            weekday in field_text(0, 7),
            start in 0usize..3,
        ) {
            let expr = format!("{min} {hour} {day} {month} {weekday}");
            // croner refuses a few things we generate (`*` inside a list); so do we.
            if expr.parse::<crate::config::schedule::Schedule>().is_ok() && on_calendar(&expr).is_ok() {
                prop_assert_eq!(same_week(&expr, starts()[start]), Ok(()));
            }
        }
    }

    // systemd-analyze is a Linux tool: on Windows there is nothing to check with (and under
    // PIPEWATCH_REQUIRE_TOOLS=1 its absence would be a failure).
    #[cfg(unix)]
    #[test]
    fn systemd_analyze_accepts_every_generated_line() {
        if !systemd_analyze("systemd_analyze_accepts_every_generated_line") {
            return;
        }
        for (expr, want) in TABLE {
            if want.is_none() {
                continue;
            }
            for cal in on_calendar(expr).unwrap() {
                let out = std::process::Command::new("systemd-analyze")
                    .args(["calendar", &cal])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{expr} -> {cal}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Whether `systemd-analyze` is there; a missing one skips `test` loudly, or fails it
    /// under `PIPEWATCH_REQUIRE_TOOLS=1` (as in CI).
    #[cfg(unix)]
    fn systemd_analyze(test: &str) -> bool {
        let found = std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("PIPEWATCH_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
                "systemd-analyze is required (PIPEWATCH_REQUIRE_TOOLS=1) but missing"
            );
            eprintln!("SKIPPED {test}: systemd-analyze not on PATH");
        }
        found
    }

    /// The generated units pass `systemd-analyze verify` (where systemd is installed).
    #[cfg(unix)]
    #[test]
    fn systemd_analyze_verifies_the_units() {
        if !systemd_analyze("systemd_analyze_verifies_the_units") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // ExecStart must name an executable that exists for verify to accept it. Spaces, `%`
        // and non-ASCII in its path are fine; the configuration's path may hold anything.
        let exe = dir.path().join("pipe watch 100% é");
        std::fs::copy("/bin/true", &exe).unwrap();
        let config = dir.path().join("it's \"$HOME\" `x`; 50%.toml");
        std::fs::write(&config, "").unwrap();
        let mut bad = task("*/15 * * * *");
        bad.exe = Some(dir.path().join("pipe'watch"));
        assert!(matches!(
            service_unit(&bad),
            Err(SchedulerError::InvalidValue { .. })
        ));
        for (expr, timeout) in [
            ("*/15 * * * *", None),
            ("0 9-17 * * 1-5", Some(90)),
            ("0 2 1,15 * MON", None),
        ] {
            let mut t = task(expr);
            t.task_name = "Nightly ETL".to_string();
            t.exe = Some(exe.clone());
            t.config_path = config.clone();
            t.timeout = timeout.map(std::time::Duration::from_secs);
            let name = unit_name(&t.task_name);
            let service = dir.path().join(format!("{name}.service"));
            let timer = dir.path().join(format!("{name}.timer"));
            std::fs::write(&service, service_unit(&t).unwrap()).unwrap();
            std::fs::write(&timer, timer_unit(&t).unwrap()).unwrap();
            let out = std::process::Command::new("systemd-analyze")
                .arg("verify")
                .arg(&timer)
                .arg(&service)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Outside a booted systemd, verify also complains about the machine itself
            // (missing default units, no bus); only lines naming our units count.
            let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(&name)).collect();
            assert!(ours.is_empty(), "{expr}: {}", ours.join("\n"));
        }
    }

    // The units hold Unix paths: on Windows the test task's paths are not absolute.
    #[cfg(unix)]
    #[test]
    fn unit_texts() {
        let mut t = task("*/15 * * * *");
        t.task_name = "Pipeline Runner".to_string();
        t.exe = Some("/usr/local/bin/pipewatch".into());
        t.config_path = "/srv/etl/pipewatch.toml".into();
        assert_eq!(
            service_unit(&t).unwrap(),
            "# Written by `pipewatch scheduler install`; reinstall rather than edit.\n\
             [Unit]\n\
             Description=pipewatch run: Pipeline Runner\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=\"/usr/local/bin/pipewatch\" \"run\" \"--config\" \"/srv/etl/pipewatch.toml\" \"--source\" \"scheduler\"\n\
             TimeoutStartSec=1860\n"
        );
        assert_eq!(
            timer_unit(&t).unwrap(),
            "# Written by `pipewatch scheduler install`; reinstall rather than edit.\n\
             # pipewatch schedule: */15 * * * *\n\
             [Unit]\n\
             Description=pipewatch schedule: Pipeline Runner\n\
             \n\
             [Timer]\n\
             OnCalendar=*-*-* *:00/15:00\n\
             AccuracySec=1s\n\
             Persistent=true\n\
             Unit=pipewatch-pipeline-runner.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n"
        );
        t.catchup = Catchup::None;
        t.timeout = None;
        assert!(timer_unit(&t).unwrap().contains("Persistent=false\n"));
        assert!(
            service_unit(&t)
                .unwrap()
                .contains("TimeoutStartSec=infinity\n")
        );
    }

    // As `unit_texts`: Unix paths.
    #[cfg(unix)]
    #[test]
    fn hostile_values_are_quoted_and_named_safely() {
        // systemd cannot start a program whose own path holds quotes, `\` or `$`: refused.
        let t = task("@daily");
        assert!(matches!(
            service_unit(&t),
            Err(SchedulerError::InvalidValue { .. })
        ));
        // Everything else reaches it quoted: the configuration's path may hold anything.
        let mut t = task("@daily");
        t.exe = Some("/opt/100% ünï 漢字/pipewatch".into());
        let service = service_unit(&t).unwrap();
        let exec = service
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap();
        assert!(
            exec.starts_with("ExecStart=\"/opt/100%% ünï 漢字/pipewatch\" \"run\" \"--config\" "),
            "{exec}"
        );
        let config = t.invocation().unwrap().config;
        let word = exec_word(&config.to_string_lossy());
        assert!(exec.contains(&word), "{exec}");
        assert_eq!(systemd_unquote(&word), config.to_string_lossy());
        assert!(word.contains("$$(touch x)"), "{word}");
        assert_eq!(service.lines().count(), 8, "{service}");
        let name = unit_name(&t.task_name);
        assert_eq!(name, "pipewatch-pipeline-it-s-q-touch-x-id-100-back-x-n");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert_eq!(unit_name("../.."), "pipewatch");
        // The unit name reaches systemctl as one argument.
        let args = systemctl_args(false, &["enable", "--now", &format!("{name}.timer")]);
        assert_eq!(args.len(), 4);
        assert_eq!(args[3], OsString::from(format!("{name}.timer")));
    }

    /// Reverses `exec_word` the way systemd's unquoting does, to prove the round trip.
    fn systemd_unquote(word: &str) -> String {
        let inner = &word[1..word.len() - 1];
        let mut out = String::new();
        let mut it = inner.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\\' => out.push(it.next().unwrap()),
                '$' | '%' => {
                    assert_eq!(it.next(), Some(c), "lone {c} in {word}");
                    out.push(c);
                }
                '"' => panic!("unescaped quote in {word}"),
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn exec_words_round_trip() {
        for w in [
            HOSTILE, "", "\\", "\"", "$$", "%%", "a b", "$HOME", "%h", "\\\"",
        ] {
            assert_eq!(systemd_unquote(&exec_word(w)), w);
            let line = format!("{} {}", exec_word("/bin/x"), exec_word(w));
            assert_eq!(exec_words(&line).unwrap(), ["/bin/x", w], "{line}");
        }
        assert_eq!(exec_words("\"open"), None);
        assert_eq!(exec_words("\"$HOME\""), None);
    }

    // The test task's paths are Unix paths (on Windows they are not absolute).
    #[cfg(unix)]
    #[test]
    fn the_units_say_which_configuration_they_run() {
        let mut t = task("0 0 13 * 5");
        t.exe = Some("/opt/pipewatch".into());
        let (service, timer) = (service_unit(&t).unwrap(), timer_unit(&t).unwrap());
        let found = read_units(&service, &timer, "0 0 13 * 5");
        assert_eq!(found.config.as_deref(), Some(t.config_path.as_path()));
        assert_eq!(found.schedule.as_deref(), Some("0 0 13 * 5"));
        assert!(found.schedule_matches);
        // The same times written another way match; other times do not.
        assert!(read_units(&service, &timer, "0 0 13 * fri").schedule_matches);
        assert!(!read_units(&service, &timer, "0 1 13 * 5").schedule_matches);
        // Units without the comment (an earlier pipewatch) show their OnCalendar= values.
        let old: String = timer
            .lines()
            .filter(|l| !l.starts_with(SCHEDULE_COMMENT))
            .map(|l| format!("{l}\n"))
            .collect();
        let found = read_units(&service, &old, "0 0 13 * 5");
        assert_eq!(
            found.schedule.as_deref(),
            Some("Fri *-*-* 00:00:00; *-*-13 00:00:00")
        );
        assert!(found.schedule_matches);
        // No service file: nothing says what runs.
        assert_eq!(read_units("", &timer, "@daily").config, None);
    }

    #[test]
    fn status_parsing() {
        let t = task("*/15 * * * *");
        let timer = parse_show(
            "LoadState=loaded\nUnitFileState=enabled\nActiveState=active\n\
             NextElapseUSecRealtime=Sun 2026-11-29 10:30:00 UTC\nLastTriggerUSec=Sun 2026-11-29 10:15:00 UTC\n",
        );
        let service = parse_show("ActiveState=inactive\nResult=success\nExecMainStatus=0\n");
        let s = status_from(&t, &timer, &service);
        assert!(s.exists && s.enabled);
        assert_eq!(s.state, "ready");
        assert_eq!(s.next_run.as_deref(), Some("2026-11-29T10:30:00+00:00"));
        assert_eq!(s.last_run.as_deref(), Some("2026-11-29T10:15:00+00:00"));
        assert_eq!(s.last_result.as_deref(), Some("success"));

        let failed = parse_show("ActiveState=failed\nResult=exit-code\nExecMainStatus=1\n");
        let s = status_from(&t, &timer, &failed);
        assert_eq!(
            s.last_result.as_deref(),
            Some("failure: exit-code, exit status 1")
        );

        let running = parse_show("ActiveState=activating\nResult=success\nExecMainStatus=0\n");
        assert_eq!(status_from(&t, &timer, &running).state, "running");

        let off = parse_show(
            "LoadState=loaded\nUnitFileState=disabled\nActiveState=inactive\n\
             NextElapseUSecRealtime=\nLastTriggerUSec=n/a\n",
        );
        let s = status_from(&t, &off, &service);
        assert!(s.exists && !s.enabled);
        assert_eq!(
            (s.state.as_str(), s.next_run, s.last_run, s.last_result),
            ("disabled", None, None, None)
        );

        let missing = parse_show("LoadState=not-found\nUnitFileState=\nActiveState=inactive\n");
        let s = status_from(&t, &missing, &BTreeMap::new());
        assert!(!s.exists && !s.enabled);
        assert_eq!(s.state, "missing");
        assert_eq!(
            parse_timestamp("@1700000000").as_deref(),
            Some("2023-11-14T22:13:20+00:00")
        );
    }

    /// A stand-in `systemctl` first on PATH: records each call's arguments (one per line,
    /// then `--`) and answers `show` like the real one.
    #[cfg(unix)]
    #[test]
    fn systemctl_call_flow() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let units = dir.path().join("units");
        std::fs::create_dir(&bin).unwrap();
        let log = dir.path().join("calls.log");
        let script = format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\n' "$a" >> '{log}'; done
echo -- >> '{log}'
case "$*" in
  *"show "*.timer*) printf 'LoadState=loaded\nUnitFileState=enabled\nActiveState=active\nNextElapseUSecRealtime=Sun 2026-11-29 10:30:00 UTC\nLastTriggerUSec=Sun 2026-11-29 10:15:00 UTC\n' ;;
  *"show "*.service*) printf 'ActiveState=inactive\nResult=success\nExecMainStatus=0\n' ;;
esac
exit 0
"#,
            log = log.display()
        );
        let path = bin.join("systemctl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut t = task("*/15 * * * *");
        t.exe = Some("/usr/local/bin/pipewatch".into());
        let name = unit_name(&t.task_name);
        let opts = OsOptions {
            unit_dir: Some(units.clone()),
            tool_path: Some(
                std::env::join_paths([bin.as_os_str(), "/usr/bin".as_ref(), "/bin".as_ref()])
                    .unwrap(),
            ),
            ..OsOptions::default()
        };
        let b = Systemd::new(t, Tools::new(opts.tool_path.clone()), &opts);
        assert!(matches!(
            b.enable(),
            Err(SchedulerError::NotInstalled { .. })
        ));
        let s = b.install().unwrap();
        assert!(s.exists && s.enabled);
        assert_eq!(s.last_result.as_deref(), Some("success"));
        assert!(units.join(format!("{name}.service")).exists());
        assert!(units.join(format!("{name}.timer")).exists());
        b.disable().unwrap();
        b.enable().unwrap();
        b.uninstall().unwrap();
        assert!(!units.join(format!("{name}.timer")).exists());

        let calls: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .split("--\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().collect::<Vec<_>>().join(" "))
            .collect();
        let timer = format!("{name}.timer");
        let service = format!("{name}.service");
        let show_timer = format!(
            "--user show {timer} --property=LoadState,UnitFileState,ActiveState,NextElapseUSecRealtime,LastTriggerUSec --timestamp=utc"
        );
        let show_service = format!(
            "--user show {service} --property=ActiveState,Result,ExecMainStatus --timestamp=utc"
        );
        let want = vec![
            "--user daemon-reload".to_string(),
            format!("--user enable --now {timer}"),
            show_timer.clone(),
            show_service.clone(),
            format!("--user disable --now {timer}"),
            show_timer.clone(),
            show_service.clone(),
            format!("--user enable --now {timer}"),
            show_timer.clone(),
            show_service.clone(),
            format!("--user disable --now {timer}"),
            "--user daemon-reload".to_string(),
            show_timer,
            show_service,
        ];
        assert_eq!(calls, want);
    }
}
