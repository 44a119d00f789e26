//! Validation: from the file as written ([`super::file`]) to a [`Config`] every other module can
//! trust, with the defaults applied and relative paths resolved against the file's folder.
//!
//! Each check is a small function returning the one [`ConfigError::Invalid`] that names the
//! file, the line and the `table.key`. The checks run in a fixed order and the first problem
//! found is the one reported: the pipeline, then the stages (names, then each stage's `needs`
//! and `env`, then cycles), then `[server]`, `[retention]`, `[scheduler]`. The messages are
//! part of the user interface (`docs/configuration.md` lists them): keep them word for word.
//!
//! Called by [`super::Config::parse`] only.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::file::{
    Dur, RawConfig, RawPipeline, RawRetention, RawScheduler, RawServer, RawStage, line_of,
};
use super::host::Host;
use super::{
    Backend, Catchup, Config, ConfigError, Overlap, Pipeline, Retention, Scheduler, Server, Stage,
};
use crate::event::PIPELINE_STAGE;

/// The text being validated and where it came from: what every error needs.
struct Source<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Source<'_> {
    /// The error for the byte offset `at` of the text.
    fn err(&self, at: usize, key: &str, message: String) -> ConfigError {
        self.err_on_line(line_of(self.text, at), key, message)
    }

    fn err_on_line(&self, line: usize, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: key.to_string(),
            message,
        }
    }
}

/// Checks `raw` (deserialized from `text`, read from `path`) and builds the configuration.
pub(super) fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let src = Source { text, path };
    let base = resolve(path.parent().unwrap_or(Path::new(".")), "");
    let (pipeline, pipeline_at) = pipeline(&src, raw.pipeline)?;
    let stages = stages(&src, raw.stages, pipeline_at, &base)?;
    let server = server(&src, inner(raw.server), &base)?;
    let retention = retention(inner(raw.retention));
    let scheduler = scheduler(&src, inner(raw.scheduler))?;
    let cluster = super::cluster::validate(raw.cluster, text, path, &base)?;
    Ok(Config {
        path: path.to_path_buf(),
        file: path.to_path_buf(),
        pipeline_state_dir: server.state_dir.clone(),
        in_workspace: false,
        pipeline,
        stages,
        server,
        retention,
        scheduler,
        cluster,
    })
}

/// A table as written, or its defaults when the file leaves it out.
pub(super) fn inner<T: Default>(t: Option<Spanned<T>>) -> T {
    t.map(Spanned::into_inner).unwrap_or_default()
}

/// The tables a workspace file shares with all its pipelines: `[server]`, `[retention]` (the
/// default of each pipeline) and `[scheduler]`. `[pipeline]` and `[[stages]]` belong in the
/// pipeline files.
pub(super) fn shared(
    raw: &mut RawConfig,
    text: &str,
    path: &Path,
) -> Result<(Server, Retention, Scheduler), ConfigError> {
    let src = Source { text, path };
    let misplaced = raw
        .pipeline
        .as_ref()
        .map(|p| (p.span().start, "pipeline"))
        .or_else(|| raw.stages.first().map(|s| (s.span().start, "stages")));
    if let Some((at, key)) = misplaced {
        return Err(src.err(
            at,
            key,
            "a workspace file names its pipeline files in [workspace] pipelines; \
             move [pipeline] and [[stages]] into one of them"
                .to_string(),
        ));
    }
    let base = resolve(path.parent().unwrap_or(Path::new(".")), "");
    let server = server(&src, inner(raw.server.take()), &base)?;
    let retention = retention(inner(raw.retention.take()));
    let scheduler = scheduler(&src, inner(raw.scheduler.take()))?;
    Ok((server, retention, scheduler))
}

/// One pipeline file of a workspace (`file`, read as `text`): its `[pipeline]` and its
/// `[[stages]]` (relative `workdir`s resolved against its own folder). The shared tables are the workspace's (`workspace`, the file that named
/// it): a pipeline file that sets one is refused, naming both files.
pub(super) fn member(
    raw: RawConfig,
    text: &str,
    file: &Path,
    workspace: &Path,
) -> Result<Member, ConfigError> {
    let src = Source { text, path: file };
    let shared = [
        raw.workspace
            .as_ref()
            .map(|t| (t.span().start, "workspace")),
        raw.server.as_ref().map(|t| (t.span().start, "server")),
        raw.scheduler
            .as_ref()
            .map(|t| (t.span().start, "scheduler")),
        raw.alerts.first().map(|t| (t.span().start, "alerts")),
        raw.smtp.as_ref().map(|t| (t.span().start, "smtp")),
        raw.cluster.as_ref().map(|t| (t.span().start, "cluster")),
    ];
    if let Some((at, table)) = shared.into_iter().flatten().next() {
        return Err(src.err(
            at,
            table,
            format!(
                "a pipeline file of the workspace {} cannot set [{table}]: it is shared by \
                 every pipeline, set it there",
                workspace.display()
            ),
        ));
    }
    if let Some(name) = raw
        .pipeline
        .as_ref()
        .and_then(|p| p.get_ref().name.as_ref())
        && !valid_pipeline_name(name.get_ref())
    {
        return Err(src.err(
            name.span().start,
            "pipeline.name",
            format!(
                "invalid pipeline name {:?} for a workspace: use 1 to 64 letters, digits, `_` \
                 or `-` (it names the pipeline's task, timer and URL)",
                name.get_ref()
            ),
        ));
    }
    let base = resolve(file.parent().unwrap_or(Path::new(".")), "");
    let (pipeline, pipeline_at) = pipeline(&src, raw.pipeline)?;
    let name_at = text[pipeline_at..]
        .find("name")
        .map_or(pipeline_at, |i| pipeline_at + i);
    let stages = stages(&src, raw.stages, pipeline_at, &base)?;
    Ok(Member {
        pipeline,
        name_at,
        stages,
        retention: raw.retention.map(|r| retention(r.into_inner())),
    })
}

/// A pipeline file of a workspace, validated.
pub(super) struct Member {
    pub(super) pipeline: Pipeline,
    /// Where its name is written (for the duplicate-name error).
    pub(super) name_at: usize,
    pub(super) stages: Vec<Stage>,
    /// Its own `[retention]`, for its runs instead of the workspace's.
    pub(super) retention: Option<Retention>,
}

/// The name of a pipeline of a workspace: it becomes part of task, unit and file names and
/// of URLs, so only what is safe in all of them.
fn valid_pipeline_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The error for the byte offset `at` of `text` read from `path`: for the checks that span
/// files (the workspace's globs and names).
pub(super) fn error_at(
    path: &Path,
    text: &str,
    at: usize,
    key: &str,
    message: String,
) -> ConfigError {
    Source { text, path }.err(at, key, message)
}

/// `[pipeline]`: present, with a usable `name`. Also returns where the table starts, for the
/// errors about the whole file.
fn pipeline(
    src: &Source,
    raw: Option<Spanned<RawPipeline>>,
) -> Result<(Pipeline, usize), ConfigError> {
    let Some(raw) = raw else {
        return Err(src.err(
            0,
            "pipeline",
            "missing [pipeline] table with a `name`".to_string(),
        ));
    };
    let at = raw.span().start;
    let rp = raw.into_inner();
    let Some(name) = rp.name else {
        return Err(src.err(
            at,
            "pipeline.name",
            "missing: every pipeline needs a name".to_string(),
        ));
    };
    let name = plain_name(src, name, "pipeline.name")?;
    let params = super::params::declared(rp.params)
        .map_err(|(at, key, message)| src.err(at, &key, message))?;
    let pipeline = Pipeline {
        name,
        schedule: rp.schedule.unwrap_or_default(),
        overlap: rp.overlap.unwrap_or(Overlap::Skip),
        catchup: rp.catchup.unwrap_or(Catchup::Last),
        catchup_window: rp
            .catchup_window
            .map_or(Duration::from_secs(6 * 3600), |d| d.0),
        timeout: non_zero(rp.timeout),
        params,
    };
    Ok((pipeline, at))
}

/// A name shown to people: not blank, no control characters.
fn plain_name(src: &Source, name: Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let v = name.get_ref();
    if v.trim().is_empty() || v.chars().any(char::is_control) {
        return Err(src.err(
            name.span().start,
            key,
            "must be a non-empty name without control characters".to_string(),
        ));
    }
    Ok(name.into_inner())
}

/// `[[stages]]`: at least one, names valid and unique, `needs` naming stages, no cycle.
fn stages(
    src: &Source,
    raw: Vec<Spanned<RawStage>>,
    pipeline_at: usize,
    base: &Path,
) -> Result<Vec<Stage>, ConfigError> {
    if raw.is_empty() {
        return Err(src.err(
            pipeline_at,
            "stages",
            "the pipeline has no stages: add at least one [[stages]] table with `name` and `run`"
                .to_string(),
        ));
    }
    let index = stage_names(src, &raw)?;
    let mut stages = Vec::with_capacity(raw.len());
    let mut lines = Vec::with_capacity(raw.len());
    for s in raw {
        let stage_at = s.span().start;
        let s = s.into_inner();
        let needs = stage_needs(src, &s, &index)?;
        stage_env(src, &s.env, stage_at)?;
        lines.push(line_of(src.text, s.name.span().start));
        stages.push(Stage {
            name: s.name.into_inner(),
            run: s.run,
            needs,
            timeout: non_zero(s.timeout),
            retries: s.retries.unwrap_or(0),
            retry_delay: s.retry_delay.map_or(Duration::ZERO, |d| d.0),
            env: s.env,
            workdir: s
                .workdir
                .map_or_else(|| base.to_path_buf(), |w| resolve(base, &w)),
        });
    }
    no_cycle(src, &stages, &lines)?;
    Ok(stages)
}

/// Every stage name is valid, not reserved and unique; returns the index of each name.
fn stage_names(
    src: &Source,
    raw: &[Spanned<RawStage>],
) -> Result<HashMap<String, usize>, ConfigError> {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.iter().enumerate() {
        let n = s.get_ref().name.get_ref();
        let at = s.get_ref().name.span().start;
        if !valid_stage_name(n) {
            return Err(src.err(
                at,
                "stages.name",
                format!("invalid stage name {n:?}: use 1 to 64 letters, digits, `_`, `-` or `.`"),
            ));
        }
        if n == PIPELINE_STAGE {
            return Err(src.err(
                at,
                "stages.name",
                format!("{n:?} is reserved for run-level events; choose another stage name"),
            ));
        }
        if index.insert(n.clone(), i).is_some() {
            return Err(src.err(
                at,
                "stages.name",
                format!("duplicate stage name {n:?}: stage names must be unique"),
            ));
        }
    }
    Ok(index)
}

/// The stage's `needs` name stages of this pipeline; returns their indices, without repeats.
fn stage_needs(
    src: &Source,
    s: &RawStage,
    index: &HashMap<String, usize>,
) -> Result<Vec<usize>, ConfigError> {
    let mut needs = Vec::new();
    for n in &s.needs {
        match index.get(n.get_ref()) {
            Some(&j) if !needs.contains(&j) => needs.push(j),
            Some(_) => {}
            None => {
                return Err(src.err(
                    n.span().start,
                    "stages.needs",
                    format!(
                        "stage {:?} needs {:?}, which is not a stage of this pipeline",
                        s.name.get_ref(),
                        n.get_ref()
                    ),
                ));
            }
        }
    }
    Ok(needs)
}

/// The stage's `env` names can be set in a process environment.
fn stage_env(
    src: &Source,
    env: &BTreeMap<String, String>,
    stage_at: usize,
) -> Result<(), ConfigError> {
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(src.err(
                stage_at,
                "stages.env",
                format!("invalid environment variable name {k:?}"),
            ));
        }
    }
    Ok(())
}

/// No stage needs itself, directly or through others; the error is on the line of the first
/// stage of the cycle. `lines` holds each stage's line.
fn no_cycle(src: &Source, stages: &[Stage], lines: &[usize]) -> Result<(), ConfigError> {
    let Some(cycle) = find_cycle(stages) else {
        return Ok(());
    };
    let names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
    let first = cycle.first().copied().unwrap_or(0);
    Err(src.err_on_line(
        lines[first],
        "stages.needs",
        format!(
            "dependency cycle: {} -> {}",
            names.join(" -> "),
            names.first().copied().unwrap_or("")
        ),
    ))
}

/// `[server] stream_buffer` when not set: 16 MiB.
pub const DEFAULT_STREAM_BUFFER: usize = 16 * 1024 * 1024;
/// The smallest `stream_buffer`: a few of the longest events (a line may be 1 MiB).
const MIN_STREAM_BUFFER: usize = 1024 * 1024;
/// The largest `stream_buffer`.
const MAX_STREAM_BUFFER: usize = 4 * 1024 * 1024 * 1024;

/// A size in bytes: a whole number with an optional unit (`B`, `KiB`, `MiB`, `GiB`, or `KB`,
/// `MB`, `GB` in powers of 1000; any case, a space allowed before it). `None` if it does not
/// parse or overflows.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    usize::try_from(n.checked_mul(mult)?).ok()
}

/// `[server]`: `bind` is an IP and a port; paths resolved against the file's folder; each of
/// `allowed_hosts` a host name or IP with an optional port.
fn server(src: &Source, raw: RawServer, base: &Path) -> Result<Server, ConfigError> {
    let bind = match raw.bind {
        None => SocketAddr::from(([127, 0, 0, 1], 8001)),
        Some(b) => b.get_ref().trim().parse::<SocketAddr>().map_err(|e| {
            src.err(
                b.span().start,
                "server.bind",
                format!(
                    "invalid address {:?} ({e}); write an IP and a port, like \"127.0.0.1:8001\"",
                    b.get_ref()
                ),
            )
        })?,
    };
    Ok(Server {
        bind,
        events_dir: resolve(base, raw.events_dir.as_deref().unwrap_or("logs/events")),
        state_dir: resolve(base, raw.state_dir.as_deref().unwrap_or(".pipewatch")),
        poll_interval: raw
            .poll_interval
            .map_or(Duration::from_secs(2), |d| d.0)
            .max(Duration::from_millis(50)),
        stream_buffer: match raw.stream_buffer {
            None => DEFAULT_STREAM_BUFFER,
            Some(b) => parse_size(b.get_ref())
                .filter(|n| (MIN_STREAM_BUFFER..=MAX_STREAM_BUFFER).contains(n))
                .ok_or_else(|| {
                    src.err(
                        b.span().start,
                        "server.stream_buffer",
                        format!(
                            "invalid size {:?}: write a size from 1MiB to 4GiB, like \"16MiB\" \
                             (units B, KiB, MiB, GiB; KB, MB, GB are powers of 1000)",
                            b.get_ref()
                        ),
                    )
                })?,
        },
        token: raw.token.unwrap_or_default(),
        allowed_hosts: raw
            .allowed_hosts
            .into_iter()
            .map(|h| {
                Host::parse(h.get_ref().trim())
                    .map_err(|e| src.err(h.span().start, "server.allowed_hosts", e))
            })
            .collect::<Result<_, _>>()?,
    })
}

/// `[retention]`: nothing to refuse; `max_age = "0"` means keep forever.
/// `rel` (from the file; absolute paths stay as they are) in `base`, in the platform's form:
/// a file may say `logs/events` on Windows too, and the folder is then shown, logged and
/// joined as `C:\etl\logs\events`, not `C:\etl\logs/events`. Taking the path apart and
/// putting it back together does that: Windows reads both separators and writes its own;
/// elsewhere only repeated and trailing separators and `.` components go.
fn resolve(base: &Path, rel: &str) -> PathBuf {
    base.join(rel).components().collect()
}

fn retention(raw: RawRetention) -> Retention {
    Retention {
        max_age: match raw.max_age {
            None => Some(Duration::from_secs(90 * 86_400)),
            Some(Dur(d)) if d.is_zero() => None,
            Some(Dur(d)) => Some(d),
        },
        max_runs: raw.max_runs.unwrap_or(0),
    }
}

/// `[scheduler]`: a usable `task_name`; `grace` at least a second.
fn scheduler(src: &Source, raw: RawScheduler) -> Result<Scheduler, ConfigError> {
    let task_name = match raw.task_name {
        None => "Pipeline Runner".to_string(),
        Some(t) => plain_name(src, t, "scheduler.task_name")?,
    };
    Ok(Scheduler {
        backend: raw.backend.unwrap_or(Backend::Builtin),
        task_name,
        grace: raw
            .grace
            .map_or(Duration::from_secs(120), |d| d.0)
            .max(Duration::from_secs(1)),
    })
}

fn non_zero(d: Option<Dur>) -> Option<Duration> {
    d.map(|d| d.0).filter(|d| !d.is_zero())
}

fn valid_stage_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Returns the stages of one dependency cycle in order, if there is one.
fn find_cycle(stages: &[Stage]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(i: usize, stages: &[Stage], mark: &mut [Mark], path: &mut Vec<usize>) -> bool {
        mark[i] = Mark::OnPath;
        path.push(i);
        for &j in &stages[i].needs {
            match mark[j] {
                Mark::OnPath => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    path.drain(..start);
                    return true;
                }
                Mark::New => {
                    if visit(j, stages, mark, path) {
                        return true;
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark[i] = Mark::Done;
        false
    }
    let mut mark = vec![Mark::New; stages.len()];
    for i in 0..stages.len() {
        if mark[i] == Mark::New {
            let mut path = Vec::new();
            if visit(i, stages, &mut mark, &mut path) {
                // `path` runs from the needed stage down to the one needing it; present it in
                // the order "a needs b needs c needs a" reads naturally.
                return Some(path);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, err};

    #[test]
    fn needs_unknown_stage() {
        let (line, key, msg) = err(&format!(
            "{MINIMAL}\n[[stages]]\nname = \"b\"\nrun = \"true\"\nneeds = [\"nope\"]\n"
        ));
        assert_eq!((line, key.as_str()), (11, "stages.needs"));
        assert!(msg.contains("\"nope\""), "{msg}");
    }

    #[test]
    fn cycle_names_the_stages() {
        let text = "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\nneeds = [\"c\"]\n[[stages]]\nname = \"b\"\nrun = \"x\"\nneeds = [\"a\"]\n[[stages]]\nname = \"c\"\nrun = \"x\"\nneeds = [\"b\"]\n";
        let (_, key, msg) = err(text);
        assert_eq!(key, "stages.needs");
        assert!(msg.contains("dependency cycle"), "{msg}");
        for s in ["a", "b", "c"] {
            assert!(msg.contains(&format!("{s} ")) || msg.ends_with(s), "{msg}");
        }
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let (_, _, msg) = err(
            "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\nneeds = [\"a\"]\n",
        );
        assert_eq!(msg, "dependency cycle: a -> a");
    }

    #[test]
    fn duplicate_and_empty() {
        let (line, _, msg) = err(&format!("{MINIMAL}[[stages]]\nname = \"a\"\nrun = \"y\"\n"));
        assert_eq!(line, 8);
        assert!(msg.contains("duplicate"), "{msg}");
        let (_, key, _) = err("[pipeline]\nname = \"p\"\n");
        assert_eq!(key, "stages");
        let (_, key, _) = err("[[stages]]\nname = \"a\"\nrun = \"x\"\n");
        assert_eq!(key, "pipeline");
    }

    #[test]
    fn bad_enum_and_bind() {
        let (line, key, msg) = err(
            "[pipeline]\nname = \"p\"\noverlap = \"sometimes\"\n[[stages]]\nname = \"a\"\nrun = \"x\"\n",
        );
        assert_eq!((line, key.as_str()), (3, "pipeline.overlap"));
        assert!(msg.contains("sometimes"), "{msg}");
        let (line, key, _) = err(&format!("{MINIMAL}[server]\nbind = \"localhost\"\n"));
        assert_eq!((line, key.as_str()), (8, "server.bind"));
    }

    #[test]
    fn allowed_hosts_are_host_names_or_ips_with_an_optional_port() {
        let c = super::super::tests::parse(&format!(
            "{MINIMAL}[server]\nallowed_hosts = [\"Dash.Example.com\", \"[::1]:9000\", \"10.0.0.5\"]\n"
        ))
        .unwrap();
        let hosts: Vec<String> = c
            .server
            .allowed_hosts
            .iter()
            .map(|h| h.to_string())
            .collect();
        assert_eq!(hosts, ["dash.example.com", "[::1]:9000", "10.0.0.5"]);
        let (line, key, msg) = err(&format!(
            "{MINIMAL}[server]\nallowed_hosts = [\n  \"ok.example\",\n  \"https://dash.example.com/\",\n]\n"
        ));
        assert_eq!((line, key.as_str()), (10, "server.allowed_hosts"));
        assert!(msg.contains("https://dash.example.com/"), "{msg}");
    }
}
