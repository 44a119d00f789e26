//! `pipewatch tail`: following one run's events as they are written.
//!
//! Two ways in, one stream out:
//! - through the dashboard's WebSocket `/ws/events/{run_id}` when it answers at `[server] bind`
//!   (with `Authorization: Bearer` when a token is configured);
//! - straight from the run file (`tail::read_file`, polled every [`Options::poll`]) when it
//!   does not. While on the file, the dashboard is tried again every [`Options::probe_every`].
//!
//! No line is repeated or skipped across switches: the last `seq` handed on is kept, a
//! WebSocket is (re)opened with `?since=<last seq>`, and file reads drop what is at or below
//! it. The file is the source of truth: whatever the dashboard would send, the file has.
//!
//! The follow ends with the run's final run-level event ([`Event::is_run_terminal`]), or when
//! the run is found abandoned: its lock file is there but nobody holds it, twice in a row a
//! second apart, and the file holds no final event (the dashboard's rule, `server::ingest`).
//!
//! Everything here is blocking (a sync WebSocket client and file reads on the caller's thread):
//! the command has nothing else to do meanwhile.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use crate::cli::dashboard::{connect, timed_out};
use crate::config::{Config, Workspace};
use crate::event::{Event, Published, RunId, kind};
use crate::runner::liveness::{self, Liveness};
use crate::tail::{Replay, TailError};

/// How a follow is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the file is read while following it.
    pub poll: Duration,
    /// How often, while on the file, the dashboard is tried again.
    pub probe_every: Duration,
    /// How long a run id with no file and no lock may take to show up before it is unknown.
    pub appear_within: Duration,
    /// Never use the dashboard.
    pub file_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll: Duration::from_millis(100),
            probe_every: Duration::from_secs(1),
            appear_within: Duration::from_secs(3),
            file_only: false,
        }
    }
}

/// Where the events are coming from, reported on each switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Dashboard(SocketAddr),
    File(PathBuf),
}

/// How a followed run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Its final run-level event: `success`, `failure`, `cancelled`, `skipped` or `missed`.
    Final(String),
    /// Its runner died without writing one.
    Abandoned,
}

impl End {
    /// The exit code of `pipewatch tail`: 0 success or skipped, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            End::Final(k) if k == kind::SUCCESS || k == kind::SKIPPED => crate::exit::SUCCESS,
            _ => crate::exit::FAILURE,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            End::Final(k) => k,
            End::Abandoned => "abandoned",
        }
    }
}

/// A follow that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(
        "no run {id}: no file {path} and no runner holds its lock; `pipewatch runs` lists the runs, `pipewatch tail --latest` waits for the next one"
    )]
    UnknownRun { id: RunId, path: PathBuf },
    #[error(transparent)]
    Read(#[from] TailError),
    #[error("cannot write the events out: {0}")]
    Output(#[source] io::Error),
}

impl crate::exit::Code for FollowError {
    fn exit_code(&self) -> u8 {
        match self {
            FollowError::UnknownRun { .. } => crate::exit::USAGE,
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

/// What the follower needs from the configuration.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: RunId,
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub bind: SocketAddr,
    pub token: String,
    /// The configuration's events folder, as dashboards name it: one that tails another
    /// folder never sees this run.
    pub events_id: String,
}

impl Target {
    pub fn new(config: &Config, id: RunId) -> Target {
        Target {
            path: config.server.events_dir.join(id.file_name()),
            state_dir: config.server.state_dir.clone(),
            bind: crate::runner::announce::reachable(config.server.bind),
            token: config.server.token.clone(),
            events_id: config.server.events_id(),
            id,
        }
    }
}

/// The follower's memory across switches.
struct Follower<'a> {
    target: &'a Target,
    opts: &'a Options,
    /// The last `seq` handed on: nothing at or below it is handed on again.
    last: Option<u64>,
    /// Where file reads resume (the file only grows; a replaced one is handled by the reader).
    file: Replay,
    /// When a dead runner's lock was first seen; abandoned if still so a second later.
    dead_since: Option<Instant>,
    on_event: &'a mut dyn FnMut(&Published) -> io::Result<()>,
    on_switch: &'a mut dyn FnMut(&Via, Option<&str>),
}

enum Step {
    Ended(End),
    /// The dashboard went away (or never answered): go on from the file.
    Disconnected,
}

impl Follower<'_> {
    /// Hands `p` on unless already handed on; returns the end if it is the final event.
    fn emit(&mut self, p: &Published) -> Result<Option<End>, FollowError> {
        if self.last.is_some_and(|l| p.seq <= l) {
            return Ok(None);
        }
        self.last = Some(p.seq);
        (self.on_event)(p).map_err(FollowError::Output)?;
        Ok(p.event
            .is_run_terminal()
            .then(|| End::Final(p.event.event.clone())))
    }

    /// Reads what the file has after the last `seq`. `Ok(None)`: no final event yet.
    fn drain_file(&mut self) -> Result<Option<End>, FollowError> {
        self.file.resume(self.last);
        loop {
            let events = match self.file.next_batch() {
                Ok(Some(events)) => events,
                Ok(None) => return Ok(None),
                Err(TailError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            for p in &events {
                if let Some(end) = self.emit(p)? {
                    return Ok(Some(end));
                }
            }
        }
    }

    /// Whether the runner is dead (checked at most once a second), after a last look at the
    /// file for a final event written just before it died.
    fn check_abandoned(&mut self) -> Result<Option<End>, FollowError> {
        let t = self.target;
        let dead = liveness::has_lock_file(&t.state_dir, &t.id)
            && liveness::liveness(&t.state_dir, &t.id) == Liveness::Gone;
        if !dead {
            self.dead_since = None;
            return Ok(None);
        }
        let since = *self.dead_since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_secs(1) {
            return Ok(None);
        }
        Ok(Some(self.drain_file()?.unwrap_or(End::Abandoned)))
    }

    /// A WebSocket to the dashboard, or why there is none (`None`: not even listening, or
    /// not to be used).
    fn try_dashboard(&mut self) -> Result<WebSocket<TcpStream>, Option<String>> {
        if self.opts.file_only {
            return Err(None);
        }
        // Another project's dashboard on the configured address would wait for ever for a
        // run it never sees.
        match crate::cli::dashboard::events_id(self.target.bind, Duration::from_millis(500)) {
            Err(why) => {
                tracing::debug!("dashboard not used: {why}");
                return Err(None);
            }
            Ok(Some(theirs)) if theirs != self.target.events_id => {
                return Err(Some(format!(
                    "the dashboard at {} tails another events folder (another project's)",
                    self.target.bind
                )));
            }
            Ok(_) => {}
        }
        let since = self.last.map(|s| format!("?since={s}")).unwrap_or_default();
        let path = format!("/ws/events/{}{since}", self.target.id);
        connect(
            self.target.bind,
            &path,
            &self.target.token,
            Duration::from_millis(250),
        )
        .map_err(|why| {
            tracing::debug!("dashboard not used: {why}");
            (!why.starts_with("cannot connect")).then_some(why)
        })
    }

    fn via_dashboard(&mut self, mut ws: WebSocket<TcpStream>) -> Result<Step, FollowError> {
        let mut checked = Instant::now();
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    let Ok(event) = serde_json::from_str::<Event>(text.as_str()) else {
                        continue;
                    };
                    let Some(seq) = event.seq else { continue };
                    let p = Published {
                        run_id: self.target.id.clone(),
                        seq,
                        event,
                        json: text.as_str().into(),
                    };
                    if let Some(end) = self.emit(&p)? {
                        let _ = ws.close(None);
                        let _ = ws.flush();
                        return Ok(Step::Ended(end));
                    }
                }
                Ok(Message::Close(_)) => return Ok(Step::Disconnected),
                Ok(_) => {}
                Err(e) if timed_out(&e) => {}
                Err(e) => {
                    tracing::debug!("dashboard stream ended: {e}");
                    return Ok(Step::Disconnected);
                }
            }
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                if let Some(end) = self.check_abandoned()? {
                    return Ok(Step::Ended(end));
                }
            }
        }
    }

    /// Follows the file until the run ends or the dashboard answers.
    fn via_file(&mut self) -> Result<Result<End, WebSocket<TcpStream>>, FollowError> {
        let mut probed = Instant::now();
        loop {
            if let Some(end) = self.drain_file()? {
                return Ok(Ok(end));
            }
            if let Some(end) = self.check_abandoned()? {
                return Ok(Ok(end));
            }
            if probed.elapsed() >= self.opts.probe_every {
                probed = Instant::now();
                if let Ok(ws) = self.try_dashboard() {
                    return Ok(Err(ws));
                }
            }
            std::thread::sleep(self.opts.poll);
        }
    }
}

/// Follows `target` to its end, handing each event to `on_event` once, in `seq` order, and
/// telling `on_switch` where events come from whenever that changes (with why, on a fallback).
pub fn follow(
    target: &Target,
    opts: &Options,
    on_event: &mut dyn FnMut(&Published) -> io::Result<()>,
    on_switch: &mut dyn FnMut(&Via, Option<&str>),
) -> Result<End, FollowError> {
    // A run id nobody knows is refused rather than waited for forever; a run just started may
    // take a moment to create its file or lock.
    let deadline = Instant::now() + opts.appear_within;
    while !target.path.exists() && !liveness::has_lock_file(&target.state_dir, &target.id) {
        if Instant::now() >= deadline {
            return Err(FollowError::UnknownRun {
                id: target.id.clone(),
                path: target.path.clone(),
            });
        }
        std::thread::sleep(opts.poll);
    }
    let mut f = Follower {
        target,
        opts,
        last: None,
        file: Replay::new(target.path.clone(), target.id.clone(), None),
        dead_since: None,
        on_event,
        on_switch,
    };
    let (mut ws, mut refused) = match f.try_dashboard() {
        Ok(socket) => (Some(socket), None),
        Err(why) => (None, why),
    };
    loop {
        if let Some(socket) = ws.take() {
            (f.on_switch)(&Via::Dashboard(target.bind), None);
            match f.via_dashboard(socket)? {
                Step::Ended(end) => return Ok(end),
                Step::Disconnected => {
                    (f.on_switch)(
                        &Via::File(target.path.clone()),
                        Some("the dashboard went away"),
                    );
                }
            }
        } else {
            // Said once: a dashboard that is up but refuses us (a token) is worth knowing.
            (f.on_switch)(&Via::File(target.path.clone()), refused.take().as_deref());
        }
        match f.via_file()? {
            Ok(end) => return Ok(end),
            Err(socket) => ws = Some(socket),
        }
    }
}

/// The run `tail --latest` follows: the newest run whose runner is alive; if none, waits for
/// the next run to start (a runner taking its lock, or a new run file that is not a `missed`
/// record), calling `on_wait` once before waiting.
/// With `pipeline`, only that pipeline's runs count.
pub fn latest(
    config: &Config,
    pipeline: Option<&str>,
    poll: Duration,
    on_wait: &mut dyn FnMut(),
) -> Result<RunId, FollowError> {
    let state_dir = &config.server.state_dir;
    let events_dir = &config.server.events_dir;
    let files = |seen: &mut HashSet<RunId>| -> Vec<RunId> {
        let mut new: Vec<RunId> = crate::index::history::run_files(events_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(f, _)| f.id)
            .filter(|id| !seen.contains(id))
            .collect();
        new.sort();
        new
    };
    let mut seen: HashSet<RunId> = files(&mut HashSet::new()).into_iter().collect();
    let mut waiting = false;
    loop {
        let alive = match pipeline {
            Some(p) => liveness::alive_runs_of(state_dir, p),
            None => liveness::alive_runs(state_dir),
        };
        if let Some(id) = alive.into_iter().max() {
            return Ok(id);
        }
        for id in files(&mut seen).into_iter().rev() {
            let (missed, of) = first_facts(&events_dir.join(id.file_name()), &id);
            // A file too new to name its pipeline yet is looked at again next time.
            if pipeline.is_some() && of.is_none() && !missed {
                continue;
            }
            seen.insert(id.clone());
            if missed || pipeline.is_some_and(|p| of.as_deref() != Some(p)) {
                continue;
            }
            return Ok(id);
        }
        if !waiting {
            waiting = true;
            on_wait();
        }
        std::thread::sleep(poll);
    }
}

/// Whether a run file is the dashboard's record of a missed occurrence (not a run to follow).
/// What a new run file says so far: whether it is a `missed` record (no run at all), and
/// the pipeline its events name.
fn first_facts(path: &std::path::Path, id: &RunId) -> (bool, Option<String>) {
    let mut missed = false;
    let mut pipeline = None;
    let _ = crate::index::history::read_batches(path, id, |b| {
        for p in &b.events {
            let p: &Arc<Published> = p;
            missed |= p.event.is_run_terminal() && p.event.event == kind::MISSED;
            if pipeline.is_none() {
                pipeline = p.event.pipeline.clone();
            }
        }
    });
    (missed, pipeline)
}

/// One event for a person: `time  stage  kind  msg`, stderr and errors in red.
pub fn render(p: &Published, paint: crate::cli::term::Paint, stage_width: usize) -> String {
    let e = &p.event;
    let time = crate::cli::term::local_time(&e.timestamp);
    let what = if e.event == kind::LOG {
        e.data_str("stream").unwrap_or("log").to_string()
    } else {
        e.event.clone()
    };
    let stderr = e.event == kind::LOG && e.data_str("stream") == Some("stderr");
    let level = e.level.as_deref().unwrap_or("info");
    let mut msg = e.msg.clone();
    if e.event == kind::FAILURE
        && let Some(code) = e.data_i64("exit_code")
        && !msg.contains(&code.to_string())
    {
        msg.push_str(&format!(" (exit code {code})"));
    }
    let (what_s, msg_s) = if stderr {
        (paint.red(&what), paint.red(&msg))
    } else if level == "error" || e.event == kind::FAILURE {
        (paint.bold_red(&what), paint.bold_red(&msg))
    } else if level == "warn" || e.event == kind::RETRY || e.event == kind::CANCELLED {
        (paint.yellow(&what), paint.yellow(&msg))
    } else if e.event == kind::SUCCESS {
        (paint.green(&what), msg)
    } else {
        (what.clone(), msg)
    };
    format!(
        "{}  {}  {}  {}",
        paint.dim(&time),
        crate::cli::term::pad(&paint.cyan(&e.stage), &e.stage, stage_width),
        crate::cli::term::pad(&what_s, &what, 9),
        msg_s
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// The run to follow (default: --latest).
    #[arg(value_parser = super::parse_run_id, value_name = "RUN_ID")]
    run_id: Option<RunId>,
    /// Follow the newest running run, or wait for the next one to start.
    #[arg(long, conflicts_with = "run_id")]
    latest: bool,
    /// Follow the newest run of this pipeline of the workspace (with --latest, the default).
    #[arg(long, value_name = "NAME", conflicts_with = "run_id")]
    pipeline: Option<String>,
    /// Print each event as its raw JSON line.
    #[arg(long)]
    json: bool,
    /// Read the run file even when the dashboard is up.
    #[arg(long)]
    no_dashboard: bool,
}

/// `pipewatch tail`: follows the run and exits with its result.
pub fn command(ws: &Workspace, args: Args) -> Result<u8, super::CliError> {
    let config = match &args.pipeline {
        Some(name) => ws.select(Some(name), "tail --latest --pipeline")?,
        None => ws.shared(),
    };
    use super::out;
    use std::io::Write;
    let paint = super::stdout_paint();
    let note = crate::cli::term::Paint::new(super::colour_on_stderr());
    let opts = Options {
        file_only: args.no_dashboard,
        ..Options::default()
    };
    let id = match args.run_id {
        Some(id) => id,
        None => latest(config, args.pipeline.as_deref(), opts.poll, &mut || {
            out::note(
                note.dim("no run is going: waiting for the next one to start (Ctrl-C to stop)"),
            );
        })?,
    };
    let target = Target::new(config, id.clone());
    let width = ws
        .pipelines
        .iter()
        .flat_map(|c| &c.stages)
        .map(|s| s.name.chars().count())
        .chain([crate::event::PIPELINE_STAGE.len()])
        .max()
        .unwrap_or(8);
    let mut stdout = out::stdout();
    let mut on_event = |p: &Published| -> io::Result<()> {
        if args.json {
            writeln!(stdout, "{}", p.json)
        } else {
            writeln!(stdout, "{}", render(p, paint, width))
        }
    };
    let mut on_switch = |via: &Via, why: Option<&str>| {
        let why = why.map(|w| format!("{w}: ")).unwrap_or_default();
        let msg = match via {
            Via::Dashboard(addr) => {
                format!("{why}following run {id} through the dashboard at {addr}")
            }
            Via::File(path) => format!("{why}following run {id} from its file {}", path.display()),
        };
        out::note(note.dim(&msg));
    };
    let end = match follow(&target, &opts, &mut on_event, &mut on_switch) {
        Ok(end) => end,
        // Through the one writing path: a closed reader (`| head`) is a quiet exit 0.
        Err(FollowError::Output(e)) => return Err(out::WriteError::from(e).into()),
        Err(e) => return Err(e.into()),
    };
    let text = match &end {
        End::Abandoned => format!("run {id} abandoned: its runner is gone without a final event"),
        e => format!("run {id} ended: {}", e.as_str()),
    };
    out::note(note.status_line(&text, end.exit_code() == crate::exit::SUCCESS));
    Ok(end.exit_code())
}
