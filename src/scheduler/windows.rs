//! The Windows backend: a Task Scheduler task created by `schtasks.exe` from an XML task
//! definition.
//!
//! XML rather than `schtasks /SC …` flags or PowerShell: only the XML carries every setting
//! pipewatch needs (several triggers with repetition, `MultipleInstancesPolicy`, the battery
//! switches, `StartWhenAvailable`, `ExecutionTimeLimit`), `schtasks` ships with every Windows,
//! and the task name and file path go in as plain arguments — no script text is built.
//!
//! What the settings become:
//! - `schedule` → triggers ([`triggers`]): a `TimeTrigger` repeating all day for "every N
//!   minutes" every day; otherwise `CalendarTrigger`s — `ScheduleByDay` (every day),
//!   `ScheduleByWeek` (weekdays), `ScheduleByMonth` (days of month),
//!   `ScheduleByMonthDayOfWeek` (weekdays in some months) — each starting at one time of day,
//!   with a `Repetition` for evenly spaced times. Cron's OR of day-of-month and day-of-week is
//!   two sets of triggers. More than 48 triggers (Task Scheduler's limit), a seconds field,
//!   and croner's extensions are refused.
//! - `overlap` → `MultipleInstancesPolicy`: skip = IgnoreNew, queue = Queue,
//!   parallel = Parallel, replace = StopExisting.
//! - `catchup` → `StartWhenAvailable` (true for `last` and `all`; Task Scheduler starts one
//!   run, up to 10 minutes after the machine is available).
//! - `timeout` → `ExecutionTimeLimit`, a minute longer than the run's timeout so `pipewatch
//!   run` ends the run itself and journals why (`PT0S` = no limit; the default would be 72 h).
//! - `DisallowStartIfOnBatteries` and `StopIfGoingOnBatteries` are false: their defaults
//!   silently skip or kill runs on laptops.
//!
//! Status reads `schtasks /Query /FO LIST /V` ([`parse_query`]) defensively: the answer must
//! name the task (Wine's `schtasks` answers nothing, with exit 0, and that is an error, not
//! "installed"). Its labels and words are translated on other display languages: there the
//! fields are taken by their place, the result code is a number in every language, and
//! whether the task is enabled is read from its XML definition (`schtasks /Query /XML`).
//! Dates are parsed in the US, ISO and German forms; a day-first date with slashes (British,
//! French) cannot be told from a US one and is read as US when it can be. A missing task is
//! recognised by the English "cannot find" only: elsewhere it is reported as the tool's error.
//!
//! Which configuration a task runs is read back from its definition (`schtasks /Query /XML`,
//! [`read_definition`]): the `--config` of its action's `<Arguments>`, and the cron
//! expression its `<Description>` records. Install, uninstall, enable and disable refuse a
//! task that runs another configuration.
//!
//! Everything but [`Windows`]'s trait methods is a pure function and runs on any OS.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};

use super::exec::{self, Tools};
use super::fields::{self, Fields};
use super::{
    Backend, Installed, SchedulerError, Status, Task, path_text, rfc3339, state, write_atomic,
};
use crate::config::{self, Catchup, Overlap};

const BACKEND: &str = "windows";
/// Task Scheduler refuses a task with more triggers than this.
pub const MAX_TRIGGERS: usize = 48;
const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The Windows backend for one task.
pub struct Windows {
    task: Task,
    tools: Tools,
}

impl Windows {
    pub fn new(task: Task, tools: Tools) -> Self {
        Windows { task, tools }
    }

    fn schtasks(&self, args: Vec<OsString>) -> Result<exec::Output, SchedulerError> {
        self.tools.run_ok("schtasks", &args, None)
    }
}

impl Backend for Windows {
    fn install(&self) -> Result<Status, SchedulerError> {
        let xml = task_xml(&self.task, Local::now().date_naive())?;
        self.check_owner("install over")?;
        let file = temp_xml_path();
        write_atomic(&file, &utf16_with_bom(&xml))?;
        let created = self.schtasks(create_args(&self.task.task_name, &file));
        // The definition is only needed while schtasks reads it.
        let _ = std::fs::remove_file(&file);
        created?;
        self.status()
    }

    fn uninstall(&self) -> Result<Status, SchedulerError> {
        if self.check_owner("uninstall")? {
            self.schtasks(delete_args(&self.task.task_name))?;
        }
        self.status()
    }

    fn enable(&self) -> Result<Status, SchedulerError> {
        self.require_installed("enable")?;
        self.schtasks(change_args(&self.task.task_name, true))?;
        self.status()
    }

    fn disable(&self) -> Result<Status, SchedulerError> {
        self.require_installed("disable")?;
        self.schtasks(change_args(&self.task.task_name, false))?;
        self.status()
    }

    fn status(&self) -> Result<Status, SchedulerError> {
        let args = query_args(&self.task.task_name);
        let out = self.tools.run("schtasks", &args, None)?;
        if !out.status.success() {
            if is_not_found(&out.stderr) {
                return Ok(self.task.status(config::Backend::Windows));
            }
            return Err(exec::failed("schtasks", &args, &out));
        }
        let unreadable = |reason: String| SchedulerError::Output {
            tool: "schtasks".to_string(),
            reason,
        };
        let fields = parse_query(&out.stdout, &self.task.task_name).map_err(unreadable)?;
        let mut status = status_from(&self.task, &fields);
        // The definition says what the task runs, and — in words that are not translated —
        // whether it is enabled.
        let args = query_xml_args(&self.task.task_name);
        let xml = self.tools.run_ok("schtasks", &args, None)?.stdout;
        if enabled_word(&fields).is_none() {
            status.enabled = enabled_in_xml(&xml).ok_or_else(|| {
                unreadable(format!(
                    "no <Settings><Enabled> in the task's definition (`schtasks {}`)",
                    args_text(&args)
                ))
            })?;
            status.state = state_from(&fields, status.enabled);
        }
        let found = read_definition(&xml, self.task.schedule.expression());
        self.task.describe(&mut status, &found);
        Ok(status)
    }
}

impl Windows {
    /// What the task's definition says about itself; `None` when there is no such task.
    fn installed(&self) -> Result<Option<Installed>, SchedulerError> {
        let args = query_xml_args(&self.task.task_name);
        let out = self.tools.run("schtasks", &args, None)?;
        if !out.status.success() {
            if is_not_found(&out.stderr) {
                return Ok(None);
            }
            return Err(exec::failed("schtasks", &args, &out));
        }
        if !out.stdout.contains("<Task") {
            // Wine's schtasks answers nothing with exit 0: that is not a task, nor its absence.
            return Err(SchedulerError::Output {
                tool: "schtasks".to_string(),
                reason: format!(
                    "no task definition in its answer to `schtasks {}`",
                    args_text(&args)
                ),
            });
        }
        Ok(Some(read_definition(
            &out.stdout,
            self.task.schedule.expression(),
        )))
    }

    /// Refuses `action` on a task that runs another configuration; `Ok(false)` when there is
    /// no task of that name.
    fn check_owner(&self, action: &'static str) -> Result<bool, SchedulerError> {
        let found = self.installed()?;
        self.task.check_owner(BACKEND, action, found.as_ref(), || {
            format!(
                " (or, to remove that task, run `schtasks /Delete /TN {} /F`)",
                windows_arg(&self.task.task_name)
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

fn is_not_found(stderr: &str) -> bool {
    stderr.contains("cannot find")
}

fn temp_xml_path() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("pipewatch-task-{}-{nanos}.xml", std::process::id()))
}

/// Task Scheduler reads task files in the encoding their declaration names; UTF-16 with a
/// byte-order mark is what it writes itself, and what every version reads.
pub fn utf16_with_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// `schtasks /Create /TN <name> /XML <file> /F`
pub fn create_args(task_name: &str, xml: &Path) -> Vec<OsString> {
    vec![
        "/Create".into(),
        "/TN".into(),
        task_name.into(),
        "/XML".into(),
        xml.as_os_str().to_os_string(),
        "/F".into(),
    ]
}

/// `schtasks /Change /TN <name> /ENABLE|/DISABLE`
pub fn change_args(task_name: &str, enable: bool) -> Vec<OsString> {
    let flag = if enable { "/ENABLE" } else { "/DISABLE" };
    exec::args(["/Change", "/TN", task_name, flag])
}

/// `schtasks /Delete /TN <name> /F`
pub fn delete_args(task_name: &str) -> Vec<OsString> {
    exec::args(["/Delete", "/TN", task_name, "/F"])
}

/// `schtasks /Query /TN <name> /FO LIST /V`
pub fn query_args(task_name: &str) -> Vec<OsString> {
    exec::args(["/Query", "/TN", task_name, "/FO", "LIST", "/V"])
}

/// `schtasks /Query /TN <name> /XML`: the task's definition, whose element names and values
/// are the same in every display language.
pub fn query_xml_args(task_name: &str) -> Vec<OsString> {
    exec::args(["/Query", "/TN", task_name, "/XML"])
}

fn args_text(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which days a trigger fires on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Days {
    Daily,
    /// Weekdays, 0 = Sunday.
    Weekly(BTreeSet<u8>),
    Monthly {
        days: BTreeSet<u8>,
        months: BTreeSet<u8>,
    },
    /// Those weekdays in every week of those months.
    MonthlyByWeekday {
        weekdays: BTreeSet<u8>,
        months: BTreeSet<u8>,
    },
}

/// One trigger: on `days`, at `start` (minutes after midnight), then every `every` minutes
/// for `count` starts in all; `all_day` for a `TimeTrigger` repeating forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub days: Days,
    pub start: u16,
    pub every: u16,
    pub count: u16,
    pub all_day: bool,
}

/// The triggers that fire when the cron expression does.
pub fn triggers(expression: &str) -> Result<Vec<Trigger>, SchedulerError> {
    let refuse = |reason: String| SchedulerError::Unsupported {
        backend: BACKEND,
        expression: expression.to_string(),
        reason,
    };
    let f = fields::parse(expression).map_err(refuse)?;
    if f.seconds.is_some() {
        return Err(refuse(
            "Task Scheduler starts tasks on whole minutes; use a 5-field expression".to_string(),
        ));
    }
    let days = day_specs(&f);
    let times = time_plans(&f);
    let total = days.len() * times.len();
    if total > MAX_TRIGGERS {
        return Err(refuse(format!(
            "it needs {total} triggers and Task Scheduler allows at most {MAX_TRIGGERS}: \
             make the minutes or the hours evenly spaced (like */10 or 8-18/2)"
        )));
    }
    let full_day = times.len() == 1
        && times[0].0 < times[0].1
        && u32::from(times[0].1) * u32::from(times[0].2) == 1440;
    Ok(days
        .iter()
        .flat_map(|d| {
            times.iter().map(move |&(start, every, count)| Trigger {
                days: d.clone(),
                start,
                every,
                count,
                all_day: full_day && *d == Days::Daily,
            })
        })
        .collect())
}

fn day_specs(f: &Fields) -> Vec<Days> {
    let all_months = fields::is_full(&f.months, 1, 12);
    let by_weekday = if all_months {
        Days::Weekly(f.weekdays.clone())
    } else {
        Days::MonthlyByWeekday {
            weekdays: f.weekdays.clone(),
            months: f.months.clone(),
        }
    };
    let by_day = Days::Monthly {
        days: f.days.clone(),
        months: f.months.clone(),
    };
    match (f.days_star, f.weekdays_star) {
        (true, true) if all_months => vec![Days::Daily],
        (true, true) => vec![Days::Monthly {
            days: (1..=31).collect(),
            months: f.months.clone(),
        }],
        (true, false) => vec![by_weekday],
        (false, true) => vec![by_day],
        (false, false) => vec![by_weekday, by_day],
    }
}

/// The times of day as `(start, every, count)` repetitions, with as few as can express them.
fn time_plans(f: &Fields) -> Vec<(u16, u16, u16)> {
    let times: BTreeSet<u16> = f
        .hours
        .iter()
        .flat_map(|h| {
            f.minutes
                .iter()
                .map(move |m| u16::from(*h) * 60 + u16::from(*m))
        })
        .collect();
    let len = |s: &BTreeSet<u8>| s.len() as u16;
    // Evenly spaced over the day: one trigger.
    if let Some(step) = ap16(&times) {
        let first = times.first().copied().unwrap_or(0);
        return vec![(first, step, times.len() as u16)];
    }
    let h_step = fields::step_of(&f.hours).or((f.hours.len() == 1).then_some(1));
    let m_step = fields::step_of(&f.minutes).or((f.minutes.len() == 1).then_some(1));
    let mut options: Vec<Vec<(u16, u16, u16)>> = Vec::new();
    if let (Some(hs), Some(h0)) = (h_step, f.hours.first()) {
        // One trigger per minute value, repeating every `hs` hours.
        options.push(
            f.minutes
                .iter()
                .map(|m| {
                    (
                        u16::from(*h0) * 60 + u16::from(*m),
                        u16::from(hs) * 60,
                        len(&f.hours),
                    )
                })
                .collect(),
        );
    }
    if let (Some(ms), Some(m0)) = (m_step, f.minutes.first()) {
        // One trigger per hour, repeating every `ms` minutes within it.
        options.push(
            f.hours
                .iter()
                .map(|h| {
                    (
                        u16::from(*h) * 60 + u16::from(*m0),
                        u16::from(ms),
                        len(&f.minutes),
                    )
                })
                .collect(),
        );
    }
    options.push(times.iter().map(|t| (*t, 1, 1)).collect());
    options.into_iter().min_by_key(Vec::len).unwrap_or_default()
}

fn ap16(set: &BTreeSet<u16>) -> Option<u16> {
    let v: Vec<u16> = set.iter().copied().collect();
    match v.len() {
        0 => None,
        1 => Some(1),
        _ => {
            let d = v[1] - v[0];
            v.windows(2).all(|w| w[1] - w[0] == d).then_some(d)
        }
    }
}

/// An `xs:duration` (`PT1H30M`, `PT0S`).
pub fn iso_duration(secs: u64) -> String {
    if secs == 0 {
        return "PT0S".to_string();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        let _ = write!(out, "{h}H");
    }
    if m > 0 {
        let _ = write!(out, "{m}M");
    }
    if s > 0 {
        let _ = write!(out, "{s}S");
    }
    out
}

/// XML text and attribute escaping.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One argument on a Windows command line, as `CommandLineToArgvW` and the C runtime read it
/// back: quoted when needed, `"` escaped, and backslashes doubled only where they precede a
/// quote.
pub fn windows_arg(s: &str) -> String {
    if !s.is_empty() && !s.contains([' ', '\t', '"']) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in s.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.extend(std::iter::repeat_n('\\', backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.extend(std::iter::repeat_n('\\', backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.extend(std::iter::repeat_n('\\', backslashes * 2));
    out.push('"');
    out
}

fn trigger_xml(t: &Trigger, date: NaiveDate, out: &mut String) {
    let start = format!(
        "{}T{:02}:{:02}:00",
        date.format("%Y-%m-%d"),
        t.start / 60,
        t.start % 60
    );
    let kind = if t.all_day {
        "TimeTrigger"
    } else {
        "CalendarTrigger"
    };
    let _ = writeln!(out, "    <{kind}>");
    if t.count > 1 {
        let _ = writeln!(out, "      <Repetition>");
        let _ = writeln!(
            out,
            "        <Interval>{}</Interval>",
            iso_duration(u64::from(t.every) * 60)
        );
        if !t.all_day {
            // Half a minute past the last start: not a whole interval, so no extra start,
            // and no start exactly on the boundary to argue about.
            let span = u64::from(t.every) * 60 * u64::from(t.count - 1) + 30;
            let _ = writeln!(out, "        <Duration>{}</Duration>", iso_duration(span));
        }
        let _ = writeln!(out, "        <StopAtDurationEnd>false</StopAtDurationEnd>");
        let _ = writeln!(out, "      </Repetition>");
    }
    let _ = writeln!(out, "      <StartBoundary>{start}</StartBoundary>");
    let _ = writeln!(out, "      <Enabled>true</Enabled>");
    let names = |set: &BTreeSet<u8>, all: &[&str], offset: u8| -> String {
        set.iter()
            .map(|v| format!("<{}/>", all[usize::from(v - offset)]))
            .collect()
    };
    match &t.days {
        _ if t.all_day => {}
        Days::Daily => {
            let _ = writeln!(
                out,
                "      <ScheduleByDay><DaysInterval>1</DaysInterval></ScheduleByDay>"
            );
        }
        Days::Weekly(w) => {
            let _ = writeln!(
                out,
                "      <ScheduleByWeek><DaysOfWeek>{}</DaysOfWeek><WeeksInterval>1</WeeksInterval></ScheduleByWeek>",
                names(w, &DAY_NAMES, 0)
            );
        }
        Days::Monthly { days, months } => {
            let d: String = days.iter().map(|d| format!("<Day>{d}</Day>")).collect();
            let _ = writeln!(
                out,
                "      <ScheduleByMonth><DaysOfMonth>{d}</DaysOfMonth><Months>{}</Months></ScheduleByMonth>",
                names(months, &MONTH_NAMES, 1)
            );
        }
        Days::MonthlyByWeekday { weekdays, months } => {
            // Weeks 1-4 and Last together cover every day of every month.
            let _ = writeln!(
                out,
                "      <ScheduleByMonthDayOfWeek><Weeks><Week>1</Week><Week>2</Week><Week>3</Week><Week>4</Week><Week>Last</Week></Weeks><DaysOfWeek>{}</DaysOfWeek><Months>{}</Months></ScheduleByMonthDayOfWeek>",
                names(weekdays, &DAY_NAMES, 0),
                names(months, &MONTH_NAMES, 1)
            );
        }
    }
    let _ = writeln!(out, "    </{kind}>");
}

/// The text of the first `<name>` element in `xml`, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let rest = xml.split_once(open.as_str())?.1;
    Some(xml_unescape(rest.split_once(close.as_str())?.0))
}

/// The reverse of [`xml_escape`], with the numeric references Task Scheduler may write.
pub fn xml_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The arguments of a Windows command line as the C runtime splits them: the reverse of
/// [`windows_arg`]. `2n` backslashes before a quote are `n` and the quote opens or closes;
/// `2n+1` are `n` and a literal quote; other backslashes are themselves.
pub fn split_windows_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut backslashes = 0usize;
    for c in line.chars() {
        match c {
            '\\' => {
                backslashes += 1;
                continue;
            }
            '"' => {
                let w = word.get_or_insert_default();
                w.extend(std::iter::repeat_n('\\', backslashes / 2));
                if backslashes % 2 == 1 {
                    w.push('"');
                } else {
                    quoted = !quoted;
                }
            }
            c if (c == ' ' || c == '\t') && !quoted => {
                if backslashes > 0 {
                    word.get_or_insert_default()
                        .extend(std::iter::repeat_n('\\', backslashes));
                }
                args.extend(word.take());
            }
            c => {
                let w = word.get_or_insert_default();
                w.extend(std::iter::repeat_n('\\', backslashes));
                w.push(c);
            }
        }
        backslashes = 0;
    }
    if backslashes > 0 {
        word.get_or_insert_default()
            .extend(std::iter::repeat_n('\\', backslashes));
    }
    args.extend(word);
    args
}

/// The start of the `<Description>` [`task_xml`] writes; the configuration follows, then
/// [`DESCRIPTION_SCHEDULE`] and the cron expression.
const DESCRIPTION_PREFIX: &str = "pipewatch: runs the pipeline of ";
const DESCRIPTION_SCHEDULE: &str = " on the schedule ";

/// What a task definition says about itself: the `--config` of its action's arguments, the
/// cron expression its description records, and whether that expression makes the triggers
/// `expression` makes.
pub fn read_definition(xml: &str, expression: &str) -> Installed {
    let config = element(xml, "Arguments").and_then(|a| {
        let words = split_windows_args(&a);
        let at = words.iter().position(|w| w == "--config")?;
        words.get(at + 1).map(PathBuf::from)
    });
    let schedule = element(xml, "Description").and_then(|d| {
        d.strip_prefix(DESCRIPTION_PREFIX)?
            .rsplit_once(DESCRIPTION_SCHEDULE)
            .map(|(_, e)| e.trim().to_string())
    });
    let schedule_matches = schedule.as_deref().is_some_and(|theirs| {
        theirs == expression
            || matches!((triggers(theirs), triggers(expression)), (Ok(a), Ok(b)) if a == b)
    });
    Installed {
        config,
        schedule,
        schedule_matches,
    }
}

/// `MultipleInstancesPolicy` for an overlap policy.
pub fn multiple_instances(o: Overlap) -> &'static str {
    match o {
        Overlap::Skip => "IgnoreNew",
        Overlap::Queue => "Queue",
        Overlap::Parallel => "Parallel",
        Overlap::Replace => "StopExisting",
    }
}

/// The task definition. `date`: the day the triggers start (install passes today).
pub fn task_xml(task: &Task, date: NaiveDate) -> Result<String, SchedulerError> {
    let trig = triggers(task.schedule.expression())?;
    let inv = task.invocation()?;
    let exe = path_text(BACKEND, &inv.exe)?;
    let config = path_text(BACKEND, &inv.config)?;
    let arguments = format!("run --config {} --source scheduler", windows_arg(config));
    let limit = iso_duration(task.timeout.map_or(0, |t| t.as_secs() + 60));
    let catchup = !matches!(task.catchup, Catchup::None);
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n");
    out.push_str(
        "<Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n",
    );
    let _ = writeln!(
        out,
        "  <RegistrationInfo>\n    <Description>{}</Description>\n  </RegistrationInfo>",
        xml_escape(&format!(
            "{DESCRIPTION_PREFIX}{config}{DESCRIPTION_SCHEDULE}{}",
            task.schedule.expression()
        ))
    );
    out.push_str("  <Triggers>\n");
    for t in &trig {
        trigger_xml(t, date, &mut out);
    }
    out.push_str("  </Triggers>\n");
    let _ = write!(
        out,
        "  <Settings>\n\
         \x20   <MultipleInstancesPolicy>{}</MultipleInstancesPolicy>\n\
         \x20   <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>\n\
         \x20   <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>\n\
         \x20   <StartWhenAvailable>{catchup}</StartWhenAvailable>\n\
         \x20   <AllowStartOnDemand>true</AllowStartOnDemand>\n\
         \x20   <Enabled>true</Enabled>\n\
         \x20   <ExecutionTimeLimit>{limit}</ExecutionTimeLimit>\n\
         \x20 </Settings>\n",
        multiple_instances(task.overlap)
    );
    let _ = write!(
        out,
        "  <Actions>\n\
         \x20   <Exec>\n\
         \x20     <Command>{}</Command>\n\
         \x20     <Arguments>{}</Arguments>\n\
         \x20   </Exec>\n\
         \x20 </Actions>\n\
         </Task>\n",
        xml_escape(exe),
        xml_escape(&arguments)
    );
    Ok(out)
}

/// The labels of `schtasks /Query /FO LIST /V`, in the order it prints them for every task,
/// whatever the display language (the same columns as its CSV output). Only the English names
/// are known; on other languages a field is found by its place after `TaskName`.
pub const LIST_FIELDS: [&str; 12] = [
    "HostName",
    "TaskName",
    "Next Run Time",
    "Status",
    "Logon Mode",
    "Last Run Time",
    "Last Result",
    "Author",
    "Task To Run",
    "Start In",
    "Comment",
    "Scheduled Task State",
];
const TASK_NAME_AT: usize = 1;

/// `Label: value` lines of `schtasks /FO LIST /V`, in order.
pub fn parse_list(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The fields `schtasks /Query /TN <task_name> /FO LIST /V` printed about that task, under
/// their English labels ([`LIST_FIELDS`]).
///
/// The task is found by its value, not by a label: the `TaskName` line is the one whose value
/// is the task's path (`\Pipeline Runner`), which no translation changes. An answer without
/// it — empty (Wine's `schtasks`), truncated, or about another task — is an error: saying
/// "installed and enabled" from nothing would be a lie. When the `TaskName` label itself is
/// there, the labels are English and are read as such (a task with several triggers repeats
/// some labels; the first one wins); otherwise each field is taken by its place.
pub fn parse_query(text: &str, task_name: &str) -> Result<BTreeMap<String, String>, String> {
    let lines = parse_list(text);
    let path = task_path(task_name);
    let at = lines
        .iter()
        .position(|(_, v)| v.to_lowercase() == path.to_lowercase())
        .ok_or_else(|| {
            let seen = if text.trim().is_empty() {
                "an empty answer".to_string()
            } else {
                format!("{} lines without it", text.lines().count())
            };
            format!("no TaskName {path:?} in its answer to /Query ({seen})")
        })?;
    let mut out = BTreeMap::new();
    if lines[at].0 == LIST_FIELDS[TASK_NAME_AT] {
        for (k, v) in lines.into_iter().skip(at.saturating_sub(TASK_NAME_AT)) {
            out.entry(k).or_insert(v);
        }
    } else {
        let first = at.checked_sub(TASK_NAME_AT).unwrap_or(at);
        let skip = TASK_NAME_AT - (at - first);
        for (label, (_, v)) in LIST_FIELDS.iter().skip(skip).zip(&lines[first..]) {
            out.insert((*label).to_string(), v.clone());
        }
    }
    Ok(out)
}

/// How `schtasks` names a task: its path in the task folders, `\` for the root.
fn task_path(task_name: &str) -> String {
    if task_name.starts_with('\\') {
        task_name.to_string()
    } else {
        format!("\\{task_name}")
    }
}

/// `Enabled` / `Disabled` of the `Scheduled Task State` field, when the output is English.
fn enabled_word(list: &BTreeMap<String, String>) -> Option<bool> {
    match list.get("Scheduled Task State").map(String::as_str) {
        Some("Enabled") => Some(true),
        Some("Disabled") => Some(false),
        _ => None,
    }
}

/// `<Settings><Enabled>` of a task definition (`schtasks /Query /XML`); a definition without
/// it is enabled (the schema's default). `None` if this is not a task definition.
pub fn enabled_in_xml(xml: &str) -> Option<bool> {
    let settings = xml.split_once("<Settings>")?.1.split_once("</Settings>")?.0;
    // Only the task's own switch: a trigger's `<Enabled>` is outside `<Settings>`, and no
    // element inside it nests another `<Enabled>` before the task's.
    match settings
        .split_once("<Enabled>")
        .and_then(|(_, rest)| rest.split_once("</Enabled>"))
    {
        Some((v, _)) => match v.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        None => Some(true),
    }
}

/// A `schtasks` local time (`11/29/2026 8:30:00 AM`, `2026-11-29 08:30:00`) as RFC 3339;
/// `N/A`, `Never` and Task Scheduler's "never ran" date (30 Nov 1999) are none.
pub fn parse_time(v: &str) -> Option<String> {
    let v = v.trim();
    let naive = [
        "%m/%d/%Y %I:%M:%S %p",
        "%m/%d/%Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%d.%m.%Y %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())?;
    if naive.date() == NaiveDate::from_ymd_opt(1999, 11, 30)? {
        return None;
    }
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| rfc3339(&t))
}

/// SCHED_S_TASK_RUNNING: the task is running now.
const TASK_RUNNING: i64 = 267009;
/// SCHED_S_TASK_HAS_NOT_RUN: the task never ran.
const TASK_HAS_NOT_RUN: i64 = 267011;

/// The status from the fields [`parse_query`] returns. On a display language other than
/// English, `enabled` is a guess (true) and the caller asks the task's definition
/// ([`enabled_in_xml`], then [`state_from`]).
pub fn status_from(task: &Task, list: &BTreeMap<String, String>) -> Status {
    let get = |k: &str| list.get(k).map(String::as_str).unwrap_or("");
    let mut s = task.status(config::Backend::Windows);
    s.exists = true;
    s.enabled = enabled_word(list).unwrap_or(true);
    s.state = state_from(list, s.enabled);
    s.next_run = parse_time(get("Next Run Time"));
    s.last_run = parse_time(get("Last Run Time"));
    s.last_result = match get("Last Result").parse::<i64>() {
        Ok(TASK_HAS_NOT_RUN) => None,
        Ok(TASK_RUNNING) => Some("running".to_string()),
        Ok(0) => Some("success".to_string()),
        Ok(code) => Some(format!("failure: exit code {code} (0x{:X})", code as u32)),
        Err(_) => None,
    };
    if s.last_run.is_none() && s.last_result.as_deref() != Some("running") {
        s.last_result = None;
    }
    s
}

/// The `state` of [`Status`]: the English `Status` word where there is one; otherwise from
/// what every language shows alike (whether the task is enabled, the running result code).
pub fn state_from(list: &BTreeMap<String, String>, enabled: bool) -> String {
    let get = |k: &str| list.get(k).map(String::as_str).unwrap_or("");
    let running = get("Last Result").parse::<i64>() == Ok(TASK_RUNNING);
    match get("Status") {
        "Ready" => state::READY.to_string(),
        "Running" => state::RUNNING.to_string(),
        "Disabled" => state::DISABLED.to_string(),
        // "Queued" and whatever else English Windows may say.
        other if enabled_word(list).is_some() && !other.is_empty() => other.to_ascii_lowercase(),
        _ if !enabled => state::DISABLED.to_string(),
        _ if running => state::RUNNING.to_string(),
        _ => state::READY.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::test_support::{HOSTILE, task};

    fn set(v: &[u8]) -> BTreeSet<u8> {
        v.iter().copied().collect()
    }

    fn tr(days: Days, start: u16, every: u16, count: u16) -> Trigger {
        Trigger {
            days,
            start,
            every,
            count,
            all_day: false,
        }
    }

    /// cron → triggers, summarised as (trigger count, first trigger) or refused.
    #[test]
    fn translation_table() {
        let daily = || Days::Daily;
        let weekdays = || Days::Weekly(set(&[1, 2, 3, 4, 5]));
        let all_day = |start: u16, every: u16| Trigger {
            days: Days::Daily,
            start,
            every,
            count: 1440 / every,
            all_day: true,
        };
        let table: Vec<(&str, Option<(usize, Trigger)>)> = vec![
            ("*/15 * * * *", Some((1, all_day(0, 15)))),
            ("* * * * *", Some((1, all_day(0, 1)))),
            ("*/5 * * * *", Some((1, all_day(0, 5)))),
            ("*/30 * * * *", Some((1, all_day(0, 30)))),
            ("0 * * * *", Some((1, all_day(0, 60)))),
            ("@hourly", Some((1, all_day(0, 60)))),
            ("0 */2 * * *", Some((1, all_day(0, 120)))),
            ("5 * * * *", Some((1, all_day(5, 60)))),
            ("30 2 * * *", Some((1, tr(daily(), 150, 1, 1)))),
            ("@daily", Some((1, tr(daily(), 0, 1, 1)))),
            ("0 9-17 * * *", Some((1, tr(daily(), 540, 60, 9)))),
            ("*/15 9-17 * * *", Some((1, tr(daily(), 540, 15, 36)))),
            ("0 9-17 * * 1-5", Some((1, tr(weekdays(), 540, 60, 9)))),
            (
                "*/15 9-17 * * mon-fri",
                Some((1, tr(weekdays(), 540, 15, 36))),
            ),
            ("*/7 * * * *", Some((9, tr(daily(), 0, 60, 24)))),
            ("*/7 9-17 * * *", Some((9, tr(daily(), 540, 60, 9)))),
            ("0 8,12,18 * * *", Some((3, tr(daily(), 480, 1, 1)))),
            ("0,30 8,13 * * *", Some((2, tr(daily(), 480, 300, 2)))),
            (
                "15 10 * * sat,sun",
                Some((1, tr(Days::Weekly(set(&[0, 6])), 615, 1, 1))),
            ),
            ("@weekly", Some((1, tr(Days::Weekly(set(&[0])), 0, 1, 1)))),
            (
                "15 10 * * 7",
                Some((1, tr(Days::Weekly(set(&[0])), 615, 1, 1))),
            ),
            (
                "0 0 1 * *",
                Some((
                    1,
                    tr(
                        Days::Monthly {
                            days: set(&[1]),
                            months: (1..=12).collect(),
                        },
                        0,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "@monthly",
                Some((
                    1,
                    tr(
                        Days::Monthly {
                            days: set(&[1]),
                            months: (1..=12).collect(),
                        },
                        0,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "0 0 1,15 * *",
                Some((
                    1,
                    tr(
                        Days::Monthly {
                            days: set(&[1, 15]),
                            months: (1..=12).collect(),
                        },
                        0,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "@yearly",
                Some((
                    1,
                    tr(
                        Days::Monthly {
                            days: set(&[1]),
                            months: set(&[1]),
                        },
                        0,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "0 6 * jan-mar *",
                Some((
                    1,
                    tr(
                        Days::Monthly {
                            days: (1..=31).collect(),
                            months: set(&[1, 2, 3]),
                        },
                        360,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "0 6 * 6 mon",
                Some((
                    1,
                    tr(
                        Days::MonthlyByWeekday {
                            weekdays: set(&[1]),
                            months: set(&[6]),
                        },
                        360,
                        1,
                        1,
                    ),
                )),
            ),
            (
                "0 0 13 * 5",
                Some((2, tr(Days::Weekly(set(&[5])), 0, 1, 1))),
            ),
            ("0,20,25 8,9,15 * * *", Some((9, tr(daily(), 480, 1, 1)))),
            ("0 0 L * *", None),
            ("0 0 * * 5#3", None),
            ("0 0 15W * *", None),
            ("*/10 * * * * *", None),
            ("0 0 30 2 *", None),
            ("0,7,13,29,31,44,50 1,2,5,7,11,13,17,19 * * *", None),
        ];
        assert!(table.len() >= 30);
        for (expr, want) in table {
            match (triggers(expr), want) {
                (Ok(got), Some((n, first))) => {
                    assert_eq!(got.len(), n, "{expr}: {got:?}");
                    assert_eq!(got[0], first, "{expr}");
                }
                (Err(e), None) => assert!(e.to_string().contains("windows"), "{e}"),
                (got, want) => panic!("{expr}: got {got:?}, want {want:?}"),
            }
        }
        let err = triggers("0,7,13,29,31,44,50 1,2,5,7,11,13,17,19 * * *")
            .unwrap_err()
            .to_string();
        assert!(err.contains("56 triggers"), "{err}");
    }

    /// Simulates the triggers over a week and compares with croner, minute by minute.
    #[test]
    fn triggers_fire_like_croner_over_a_week() {
        use chrono::{Datelike, Duration, Timelike, Utc};
        let fires = |t: &Trigger, at: &NaiveDateTime| {
            let day_ok = match &t.days {
                Days::Daily => true,
                Days::Weekly(w) => w.contains(&(at.weekday().num_days_from_sunday() as u8)),
                Days::Monthly { days, months } => {
                    days.contains(&(at.day() as u8)) && months.contains(&(at.month() as u8))
                }
                Days::MonthlyByWeekday { weekdays, months } => {
                    weekdays.contains(&(at.weekday().num_days_from_sunday() as u8))
                        && months.contains(&(at.month() as u8))
                }
            };
            let minute = at.hour() as u16 * 60 + at.minute() as u16;
            day_ok
                && minute >= t.start
                && (minute - t.start).is_multiple_of(t.every)
                && (minute - t.start) / t.every < t.count
        };
        for expr in [
            "*/15 * * * *",
            "*/7 9-17 * * *",
            "0,30 8,13 * * *",
            "0,20,25 8,9,15 * * *",
            "0 0 13 * 5",
            "0 6 * 3 mon",
            "5 * * * *",
            "*/15 9-17 * * mon-fri",
            "0 0 1,15 * *",
            "10 */3 * * 0,6",
        ] {
            let schedule: crate::config::schedule::Schedule = expr.parse().unwrap();
            let trig = triggers(expr).unwrap();
            let start: NaiveDateTime = "2026-02-25T00:00:00".parse().unwrap();
            let mut at = start;
            while at < start + Duration::days(7) {
                let croner = schedule
                    .next_after(&(Utc.from_utc_datetime(&at) - Duration::seconds(1)))
                    .is_some_and(|n| n.naive_utc() == at);
                let ours = trig.iter().any(|t| fires(t, &at));
                assert_eq!(ours, croner, "{expr} at {at}");
                at += Duration::minutes(1);
            }
        }
    }

    #[test]
    fn task_definition_as_text() {
        let mut t = task("*/15 9-17 * * mon-fri");
        t.exe = Some(r"C:\Program Files\pipewatch\pipewatch.exe".into());
        t.config_path = r"C:\etl\pipewatch.toml".into();
        t.overlap = Overlap::Replace;
        let date = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let xml = task_xml(&t, date).unwrap();
        // On Linux these paths are relative; the test only cares that they are carried whole.
        let inv = t.invocation().unwrap();
        let cfg = inv.config.to_str().unwrap();
        let want_triggers = "  <Triggers>\n\
             \x20   <CalendarTrigger>\n\
             \x20     <Repetition>\n\
             \x20       <Interval>PT15M</Interval>\n\
             \x20       <Duration>PT8H45M30S</Duration>\n\
             \x20       <StopAtDurationEnd>false</StopAtDurationEnd>\n\
             \x20     </Repetition>\n\
             \x20     <StartBoundary>2026-11-29T09:00:00</StartBoundary>\n\
             \x20     <Enabled>true</Enabled>\n\
             \x20     <ScheduleByWeek><DaysOfWeek><Monday/><Tuesday/><Wednesday/><Thursday/><Friday/></DaysOfWeek><WeeksInterval>1</WeeksInterval></ScheduleByWeek>\n\
             \x20   </CalendarTrigger>\n\
             \x20 </Triggers>\n";
        assert!(xml.contains(want_triggers), "{xml}");
        for want in [
            "<MultipleInstancesPolicy>StopExisting</MultipleInstancesPolicy>",
            "<DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
            "<StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>",
            "<StartWhenAvailable>true</StartWhenAvailable>",
            "<ExecutionTimeLimit>PT31M</ExecutionTimeLimit>",
        ] {
            assert!(xml.contains(want), "{want} in {xml}");
        }
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<Task version=\"1.2\"")
        );
        assert!(xml.contains(&format!(
            "<Arguments>run --config {} --source scheduler</Arguments>",
            xml_escape(&windows_arg(cfg))
        )));
        t.timeout = None;
        t.catchup = Catchup::None;
        let xml = task_xml(&t, date).unwrap();
        assert!(xml.contains("<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>"));
        assert!(xml.contains("<StartWhenAvailable>false</StartWhenAvailable>"));
        let every = task_xml(&task("*/15 * * * *"), date).unwrap();
        assert!(every.contains("<TimeTrigger>\n      <Repetition>\n        <Interval>PT15M</Interval>\n        <StopAtDurationEnd>false</StopAtDurationEnd>\n      </Repetition>\n      <StartBoundary>2026-11-29T00:00:00</StartBoundary>"), "{every}");
        for (o, p) in [
            (Overlap::Skip, "IgnoreNew"),
            (Overlap::Queue, "Queue"),
            (Overlap::Parallel, "Parallel"),
        ] {
            assert_eq!(multiple_instances(o), p);
        }
        let bytes = utf16_with_bom("<a/>");
        assert_eq!(&bytes[..4], &[0xFF, 0xFE, b'<', 0]);
    }

    #[test]
    fn hostile_values_stay_whole() {
        let t = task("@daily");
        let xml = task_xml(&t, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()).unwrap();
        // Every value is escaped: the only `<` are tags, and the hostile text appears
        // escaped.
        assert!(xml.contains(&xml_escape(HOSTILE)));
        assert!(!xml.contains("<x>"));
        let name = t.task_name.as_str();
        let file = Path::new("C:\\Temp\\it's 100% $(x) `y`;.xml");
        for args in [
            create_args(name, file),
            change_args(name, true),
            change_args(name, false),
            delete_args(name),
            query_args(name),
        ] {
            assert_eq!(args[1], "/TN");
            assert_eq!(args[2], OsString::from(name));
        }
        assert_eq!(create_args(name, file)[4], file.as_os_str());
    }

    #[test]
    fn split_windows_args_reads_back_windows_arg() {
        for w in [
            HOSTILE,
            "",
            "a b",
            "C:\\Program Files\\x\\",
            "\\\\server\\share\\p.toml",
            "a\\\"b",
            "\"",
            "\\\\\"",
        ] {
            let line = format!("run --config {} --source scheduler", windows_arg(w));
            assert_eq!(
                split_windows_args(&line),
                ["run", "--config", w, "--source", "scheduler"],
                "{line}"
            );
        }
    }

    #[test]
    fn xml_unescape_reverses_xml_escape() {
        assert_eq!(xml_unescape(&xml_escape(HOSTILE)), HOSTILE);
        assert_eq!(xml_unescape("&#34;&#x27;&bogus; & x"), "\"'&bogus; & x");
    }

    #[test]
    fn the_definition_says_which_configuration_it_runs() {
        let mut t = task("0 0 13 * 5");
        t.exe = Some(r"C:\pipewatch\pipewatch.exe".into());
        t.config_path = format!(r"C:\srv\{HOSTILE}\pipewatch.toml").into();
        let date = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        let xml = task_xml(&t, date).unwrap();
        let found = read_definition(&xml, "0 0 13 * 5");
        let inv = t.invocation().unwrap();
        assert_eq!(found.config.as_deref(), Some(inv.config.as_path()));
        assert_eq!(found.schedule.as_deref(), Some("0 0 13 * 5"));
        assert!(found.schedule_matches);
        assert!(read_definition(&xml, "0 0 13 * fri").schedule_matches);
        assert!(!read_definition(&xml, "0 0 14 * 5").schedule_matches);
        // A task made by hand or by another tool.
        let other = "<Task><RegistrationInfo><Description>nightly</Description></RegistrationInfo><Actions><Exec><Command>etl.exe</Command></Exec></Actions></Task>";
        let found = read_definition(other, "@daily");
        assert_eq!((found.config, found.schedule), (None, None));
    }

    #[test]
    fn windows_command_line_quoting() {
        for (s, want) in [
            (r"C:\etl\p.toml", r"C:\etl\p.toml"),
            (r"C:\my etl\p.toml", r#""C:\my etl\p.toml""#),
            (r"C:\my etl\", r#""C:\my etl\\""#),
            (r#"a"b"#, r#""a\"b""#),
            (r#"a\"b"#, r#""a\\\"b""#),
            ("", r#""""#),
        ] {
            assert_eq!(windows_arg(s), want, "{s}");
        }
    }

    const SAMPLE: &str = "\r\n\
Folder: \\\r\n\
HostName:                             DESKTOP-7Q2K1\r\n\
TaskName:                             \\Pipeline Runner\r\n\
Next Run Time:                        11/29/2026 8:30:00 AM\r\n\
Status:                               Ready\r\n\
Logon Mode:                           Interactive only\r\n\
Last Run Time:                        11/29/2026 8:15:00 AM\r\n\
Last Result:                          0\r\n\
Author:                               DESKTOP-7Q2K1\\ana\r\n\
Task To Run:                          \"C:\\Program Files\\pipewatch\\pipewatch.exe\" run --config C:\\etl\\pipewatch.toml --source scheduler\r\n\
Start In:                             N/A\r\n\
Comment:                              pipewatch: runs the pipeline\r\n\
Scheduled Task State:                 Enabled\r\n\
Idle Time:                            Disabled\r\n\
Power Management:                     \r\n\
Run As User:                          ana\r\n\
Delete Task If Not Rescheduled:       Disabled\r\n\
Stop Task If Runs X Hours and X Mins: 00:31:00\r\n\
Schedule:                             Scheduling data is not available in this format.\r\n\
Schedule Type:                        Daily \r\n\
Start Time:                           12:00:00 AM\r\n\
Start Date:                           11/29/2026\r\n\
End Date:                             N/A\r\n\
Days:                                 Every 1 day(s)\r\n\
Months:                               N/A\r\n\
Repeat: Every:                        0 Hour(s), 15 Minute(s)\r\n\
Repeat: Until: Time:                  None\r\n\
Repeat: Until: Duration:              Disabled\r\n\
Repeat: Stop If Still Running:        Disabled\r\n";

    /// The task the samples are about.
    fn runner() -> Task {
        let mut t = task("*/15 * * * *");
        t.task_name = "Pipeline Runner".to_string();
        t
    }

    fn fields(text: &str) -> BTreeMap<String, String> {
        parse_query(text, "Pipeline Runner").unwrap()
    }

    #[test]
    fn status_from_schtasks_samples() {
        let t = runner();
        let s = status_from(&t, &fields(SAMPLE));
        assert!(s.exists && s.enabled);
        assert_eq!(s.state, "ready");
        let local = |y, mo, d, h, mi| {
            rfc3339(
                &Local
                    .from_local_datetime(
                        &NaiveDate::from_ymd_opt(y, mo, d)
                            .unwrap()
                            .and_hms_opt(h, mi, 0)
                            .unwrap(),
                    )
                    .earliest()
                    .unwrap(),
            )
        };
        assert_eq!(s.next_run, Some(local(2026, 11, 29, 8, 30)));
        assert_eq!(s.last_run, Some(local(2026, 11, 29, 8, 15)));
        assert_eq!(s.last_result.as_deref(), Some("success"));

        let never = SAMPLE
            .replace("11/29/2026 8:15:00 AM", "11/30/1999 12:00:00 AM")
            .replace(
                "Last Result:                          0",
                "Last Result:                          267011",
            );
        let s = status_from(&t, &fields(&never));
        assert_eq!((s.last_run, s.last_result), (None, None));

        let disabled = SAMPLE
            .replace(
                "Status:                               Ready",
                "Status:                               Disabled",
            )
            .replace(
                "Scheduled Task State:                 Enabled",
                "Scheduled Task State:                 Disabled",
            )
            .replace("11/29/2026 8:30:00 AM", "N/A")
            .replace(
                "Last Result:                          0",
                "Last Result:                          1",
            );
        let s = status_from(&t, &fields(&disabled));
        assert!(s.exists && !s.enabled);
        assert_eq!(s.state, "disabled");
        assert_eq!(s.next_run, None);
        assert_eq!(s.last_result.as_deref(), Some("failure: exit code 1 (0x1)"));

        let running = SAMPLE
            .replace(
                "Status:                               Ready",
                "Status:                               Running",
            )
            .replace(
                "Last Result:                          0",
                "Last Result:                          267009",
            );
        let s = status_from(&t, &fields(&running));
        assert_eq!(
            (s.state.as_str(), s.last_result.as_deref()),
            ("running", Some("running"))
        );

        let killed = SAMPLE.replace(
            "Last Result:                          0",
            "Last Result:                          -2147020576",
        );
        assert_eq!(
            status_from(&t, &fields(&killed)).last_result.as_deref(),
            Some("failure: exit code -2147020576 (0x800710E0)")
        );
        assert!(is_not_found(
            "ERROR: The system cannot find the file specified.\r\n"
        ));
    }

    /// Wine's `schtasks` answers `/Query` with nothing and exit 0; an answer cut short or about
    /// another task says nothing about this one either.
    #[test]
    fn an_answer_without_the_task_is_an_error() {
        let name = "Pipeline Runner";
        let truncated: String = SAMPLE.lines().take(3).collect::<Vec<_>>().join("\r\n");
        for (what, text) in [
            ("empty", String::new()),
            ("blank lines", "\r\n\r\n".to_string()),
            ("truncated", truncated),
            (
                "another task",
                SAMPLE.replace("\\Pipeline Runner", "\\Other"),
            ),
            (
                "a task whose name contains ours",
                SAMPLE.replace("\\Pipeline Runner", "\\Pipeline Runner 2"),
            ),
        ] {
            let err = parse_query(&text, name).unwrap_err();
            assert!(
                err.contains("no TaskName \"\\\\Pipeline Runner\""),
                "{what}: {err}"
            );
        }
        // The same name, however it is cased, or given with its folder.
        assert!(parse_query(&SAMPLE.replace("Pipeline Runner", "PIPELINE runner"), name).is_ok());
        assert!(parse_query(SAMPLE, "\\Pipeline Runner").is_ok());
    }

    /// German Windows, as `schtasks` prints it: other labels, other words, dates day first.
    const SAMPLE_DE: &str = "\r\n\
Ordner: \\\r\n\
Hostname:                             DESKTOP-7Q2K1\r\n\
Aufgabenname:                         \\Pipeline Runner\r\n\
N\u{e4}chste Laufzeit:                     29.11.2026 08:30:00\r\n\
Status:                               Bereit\r\n\
Anmeldemodus:                         Nur interaktiv\r\n\
Letzte Laufzeit:                      29.11.2026 08:15:00\r\n\
Letztes Ergebnis:                     0\r\n\
Autor:                                DESKTOP-7Q2K1\\ana\r\n\
Auszuf\u{fc}hrende Aufgabe:                \"C:\\Program Files\\pipewatch\\pipewatch.exe\" run --config C:\\etl\\pipewatch.toml --source scheduler\r\n\
Starten in:                           Nicht zutreffend\r\n\
Kommentar:                            pipewatch: runs the pipeline\r\n\
Status der geplanten Aufgabe:         Aktiviert\r\n\
Leerlaufzeit:                         Deaktiviert\r\n";

    /// Labels in another language (here as a console in the wrong code page shows them, which
    /// must not matter) are read by their place after the task's name; the words are not
    /// known, so whether the task is enabled comes from its definition.
    #[test]
    fn localized_output_is_read_by_place() {
        let t = runner();
        let mangled = SAMPLE_DE.replace(['\u{e4}', '\u{fc}'], "\u{fffd}");
        for text in [SAMPLE_DE.to_string(), mangled] {
            let f = fields(&text);
            assert_eq!(f["HostName"], "DESKTOP-7Q2K1");
            assert_eq!(f["TaskName"], "\\Pipeline Runner");
            assert_eq!(f["Next Run Time"], "29.11.2026 08:30:00");
            assert_eq!(f["Last Result"], "0");
            assert_eq!(f["Scheduled Task State"], "Aktiviert");
            assert_eq!(enabled_word(&f), None);
            let s = status_from(&t, &f);
            assert!(s.exists);
            assert_eq!(s.next_run, parse_time("11/29/2026 8:30:00 AM"));
            assert_eq!(s.last_run, parse_time("11/29/2026 8:15:00 AM"));
            assert_eq!(s.last_result.as_deref(), Some("success"));
            assert_eq!((s.enabled, s.state.as_str()), (true, "ready"));
            assert_eq!(state_from(&f, false), "disabled");
            let mut running = f.clone();
            running.insert("Last Result".into(), TASK_RUNNING.to_string());
            assert_eq!(state_from(&running, true), "running");
        }
        // The answer starting at the name: the fields after it still line up.
        let from_name = &SAMPLE_DE[SAMPLE_DE.find("Aufgabenname").unwrap()..];
        let f = fields(from_name);
        assert_eq!(f.get("HostName"), None);
        assert_eq!(f["Last Result"], "0");
    }

    #[test]
    fn enabled_is_read_from_the_definition() {
        let xml = task_xml(
            &task("*/15 9-17 * * mon-fri"),
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        )
        .unwrap();
        // The triggers' own <Enabled> come first and are not the task's.
        assert!(xml.find("<Enabled>").unwrap() < xml.find("<Settings>").unwrap());
        assert_eq!(enabled_in_xml(&xml), Some(true));
        let off = xml.replace(
            "<AllowStartOnDemand>true</AllowStartOnDemand>\n    <Enabled>true</Enabled>",
            "<AllowStartOnDemand>true</AllowStartOnDemand>\n    <Enabled>false</Enabled>",
        );
        assert_ne!(off, xml);
        assert_eq!(enabled_in_xml(&off), Some(false));
        assert_eq!(
            enabled_in_xml("<Task><Settings><Hidden>true</Hidden></Settings></Task>"),
            Some(true)
        );
        assert_eq!(enabled_in_xml(""), None);
        assert_eq!(enabled_in_xml("ERROR: Access is denied."), None);
        assert_eq!(
            enabled_in_xml("<Settings><Enabled>maybe</Enabled></Settings>"),
            None
        );
        assert_eq!(
            query_xml_args("Pipeline Runner"),
            exec::args(["/Query", "/TN", "Pipeline Runner", "/XML"])
        );
    }

    /// A stand-in `schtasks` first on PATH records its calls and keeps a copy of the task
    /// file; it answers `/Query` as if the task exists once created.
    #[cfg(unix)]
    #[test]
    fn schtasks_call_flow() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let copy = dir.path().join("task.xml");
        let sample = dir.path().join("sample.txt");
        let t = task("*/15 * * * *");
        std::fs::write(
            &sample,
            SAMPLE.replace("\\Pipeline Runner", &format!("\\{}", t.task_name)),
        )
        .unwrap();
        let script = format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\n' "$a" >> '{log}'; done
echo -- >> '{log}'
case "$1" in
  /Create) cp "$5" '{copy}'; touch '{dir}/exists' ;;
  /Delete) rm -f '{dir}/exists' ;;
  /Query) if [ ! -e '{dir}/exists' ]; then echo 'ERROR: The system cannot find the file specified.' >&2; exit 1
          elif [ "$4" = /XML ]; then iconv -f UTF-16 -t UTF-8 '{copy}'
          else cat '{sample}'; fi ;;
esac
exit 0
"#,
            log = log.display(),
            copy = copy.display(),
            dir = dir.path().display(),
            sample = sample.display(),
        );
        let path = dir.path().join("schtasks");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools::new(Some(
            std::env::join_paths([dir.path().as_os_str(), "/usr/bin".as_ref(), "/bin".as_ref()])
                .unwrap(),
        ));
        let name = t.task_name.clone();
        let b = Windows::new(t, tools);
        assert!(!b.status().unwrap().exists);
        assert!(matches!(
            b.disable(),
            Err(SchedulerError::NotInstalled { .. })
        ));
        let s = b.install().unwrap();
        assert!(s.exists && s.enabled);
        let xml_bytes = std::fs::read(&copy).unwrap();
        let units: Vec<u16> = xml_bytes[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let xml = String::from_utf16(&units).unwrap();
        assert!(xml.contains("<Interval>PT15M</Interval>"));
        b.disable().unwrap();
        b.enable().unwrap();
        let s = b.uninstall().unwrap();
        assert!(!s.exists);

        let calls: Vec<Vec<String>> = std::fs::read_to_string(&log)
            .unwrap()
            .split("--\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().map(str::to_string).collect())
            .collect();
        let q = vec!["/Query", "/TN", &name, "/FO", "LIST", "/V"];
        // Every change reads the definition first (whose task is it?), and every status
        // reads it after the list (what does it run?).
        let x = vec!["/Query", "/TN", &name, "/XML"];
        let verbs: Vec<Vec<&str>> = calls
            .iter()
            .map(|c| c.iter().map(String::as_str).collect())
            .collect();
        let at = |i: usize| verbs[i].clone();
        assert_eq!(
            calls.iter().map(|c| c[0].as_str()).collect::<Vec<_>>(),
            [
                "/Query", "/Query", "/Query", "/Create", "/Query", "/Query", "/Query", "/Change",
                "/Query", "/Query", "/Query", "/Change", "/Query", "/Query", "/Query", "/Delete",
                "/Query"
            ]
        );
        assert_eq!(calls[0], q);
        assert_eq!(at(1), x);
        assert_eq!(at(2), x);
        assert_eq!(&calls[3][..4], &["/Create", "/TN", name.as_str(), "/XML"]);
        assert_eq!(calls[3][5], "/F");
        assert_eq!((at(4), at(5)), (q.clone(), x.clone()));
        assert_eq!(at(6), x);
        assert_eq!(calls[7], vec!["/Change", "/TN", &name, "/DISABLE"]);
        assert_eq!(calls[11], vec!["/Change", "/TN", &name, "/ENABLE"]);
        assert_eq!(calls[15], vec!["/Delete", "/TN", &name, "/F"]);
    }
}
