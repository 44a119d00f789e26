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
//! Status reads `schtasks /Query /FO LIST /V`, whose labels are English on English Windows
//! only; on other display languages the fields are not found and stay unknown.
//!
//! Everything but [`Windows`]'s trait methods is a pure function and runs on any OS.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};

use super::exec::{self, Tools};
use super::fields::{self, Fields};
use super::{Backend, SchedulerError, Status, Task, path_text, rfc3339, state, write_atomic};
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
        let file = temp_xml_path();
        write_atomic(&file, &utf16_with_bom(&xml))?;
        let created = self.schtasks(create_args(&self.task.task_name, &file));
        // The definition is only needed while schtasks reads it.
        let _ = std::fs::remove_file(&file);
        created?;
        self.status()
    }

    fn uninstall(&self) -> Result<Status, SchedulerError> {
        if self.status()?.exists {
            self.schtasks(delete_args(&self.task.task_name))?;
        }
        self.status()
    }

    fn enable(&self) -> Result<Status, SchedulerError> {
        self.require_installed()?;
        self.schtasks(change_args(&self.task.task_name, true))?;
        self.status()
    }

    fn disable(&self) -> Result<Status, SchedulerError> {
        self.require_installed()?;
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
        Ok(status_from(&self.task, &parse_list(&out.stdout)))
    }
}

impl Windows {
    fn require_installed(&self) -> Result<(), SchedulerError> {
        if self.status()?.exists {
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
            "pipewatch: runs the pipeline of {config} on the schedule {}",
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

/// `Label: value` lines of `schtasks /FO LIST /V`; a task with several triggers repeats
/// some labels, and the first one wins.
pub fn parse_list(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            out.entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    out
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

/// The status from `schtasks /Query /FO LIST /V`'s fields.
pub fn status_from(task: &Task, list: &BTreeMap<String, String>) -> Status {
    let get = |k: &str| list.get(k).map(String::as_str).unwrap_or("");
    let mut s = task.status(config::Backend::Windows);
    s.exists = true;
    let status = get("Status");
    s.enabled = match get("Scheduled Task State") {
        "" => status != "Disabled",
        v => v == "Enabled",
    };
    s.state = match status {
        "Ready" => state::READY.to_string(),
        "Running" => state::RUNNING.to_string(),
        "Disabled" => state::DISABLED.to_string(),
        "" if s.enabled => state::READY.to_string(),
        "" => state::DISABLED.to_string(),
        other => other.to_ascii_lowercase(),
    };
    s.next_run = parse_time(get("Next Run Time"));
    s.last_run = parse_time(get("Last Run Time"));
    s.last_result = match get("Last Result").parse::<i64>() {
        // SCHED_S_TASK_HAS_NOT_RUN
        Ok(267011) => None,
        // SCHED_S_TASK_RUNNING
        Ok(267009) => Some("running".to_string()),
        Ok(0) => Some("success".to_string()),
        Ok(code) => Some(format!("failure: exit code {code} (0x{:X})", code as u32)),
        Err(_) => None,
    };
    if s.last_run.is_none() && s.last_result.as_deref() != Some("running") {
        s.last_result = None;
    }
    s
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

    #[test]
    fn status_from_schtasks_samples() {
        let t = task("*/15 * * * *");
        let s = status_from(&t, &parse_list(SAMPLE));
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
        let s = status_from(&t, &parse_list(&never));
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
        let s = status_from(&t, &parse_list(&disabled));
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
        let s = status_from(&t, &parse_list(&running));
        assert_eq!(
            (s.state.as_str(), s.last_result.as_deref()),
            ("running", Some("running"))
        );

        let killed = SAMPLE.replace(
            "Last Result:                          0",
            "Last Result:                          -2147020576",
        );
        assert_eq!(
            status_from(&t, &parse_list(&killed)).last_result.as_deref(),
            Some("failure: exit code -2147020576 (0x800710E0)")
        );
        assert!(is_not_found(
            "ERROR: The system cannot find the file specified.\r\n"
        ));
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
        std::fs::write(&sample, SAMPLE).unwrap();
        let script = format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\n' "$a" >> '{log}'; done
echo -- >> '{log}'
case "$1" in
  /Create) cp "$5" '{copy}'; touch '{dir}/exists' ;;
  /Delete) rm -f '{dir}/exists' ;;
  /Query) if [ -e '{dir}/exists' ]; then cat '{sample}'; else echo 'ERROR: The system cannot find the file specified.' >&2; exit 1; fi ;;
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
        let t = task("*/15 * * * *");
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
        let verbs: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
        assert_eq!(
            verbs,
            [
                "/Query", "/Query", "/Create", "/Query", "/Query", "/Change", "/Query", "/Query",
                "/Change", "/Query", "/Query", "/Delete", "/Query"
            ]
        );
        assert_eq!(calls[0], q);
        assert_eq!(&calls[2][..4], &["/Create", "/TN", name.as_str(), "/XML"]);
        assert_eq!(calls[2][5], "/F");
        assert_eq!(calls[5], vec!["/Change", "/TN", &name, "/DISABLE"]);
        assert_eq!(calls[8], vec!["/Change", "/TN", &name, "/ENABLE"]);
        assert_eq!(calls[11], vec!["/Delete", "/TN", &name, "/F"]);
    }
}
