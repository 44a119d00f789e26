//! Workspaces: one configuration file for many pipelines (`[workspace] pipelines = [globs]`).
//!
//! A [`Workspace`] is what every command loads. A file with `[pipeline]` is a workspace of
//! one pipeline and behaves exactly as before; a file with `[workspace]` names pipeline files
//! by glob (relative to its folder), each holding `[pipeline]` and `[[stages]]`, while
//! `[server]`, `[retention]` and `[scheduler]` are shared. A pipeline file may set its own
//! `[retention]`, for its runs; the workspace's applies to the others.
//!
//! Each pipeline is handed to the rest of the program as a complete [`Config`], so the
//! runner, the scheduler backends and retention keep reading one pipeline's view: its
//! `path` is the workspace file (the configuration a task or a dashboard belongs to), its
//! `file` the pipeline file, and its `pipeline_state_dir` a folder of its own under
//! `<state_dir>/pipelines/` for what is per pipeline (the overlap lock, the built-in
//! scheduler's switch).
//!
//! Errors that span files name both: a duplicate pipeline name names the file that had it
//! first, a pipeline file with a shared table names the workspace file.

use std::path::{Path, PathBuf};

use super::file::{self, RawConfig};
use super::validate;
use super::{Alert, Config, ConfigError, Retention};

/// Every pipeline of one configuration file, in file order (globs in the order written,
/// each glob's matches sorted by path).
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Absolute path of the file given (`--config`, or `./pipewatch.toml`).
    pub path: PathBuf,
    /// The file has `[workspace]` (even if it names a single pipeline file).
    pub is_workspace: bool,
    /// Never empty.
    pub pipelines: Vec<Config>,
    /// The workspace file's `[retention]`: the rules for the runs of a pipeline without its
    /// own (and of pipelines no longer configured). A pipeline's own is in its
    /// [`Config::retention`].
    pub retention: Retention,
    /// `[[alerts]]`: the destinations `serve` tells about runs, shared by every pipeline.
    pub alerts: Vec<Alert>,
}

impl Workspace {
    /// Reads the file at `path` and, for a workspace, every pipeline file it names; then
    /// applies the environment layer (`PIPEWATCH_TOKEN`).
    pub fn load(path: &Path) -> Result<Workspace, ConfigError> {
        let text = read(path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut ws = Self::parse(&text, &abs)?;
        if let Ok(token) = std::env::var("PIPEWATCH_TOKEN")
            && !token.is_empty()
        {
            for c in &mut ws.pipelines {
                c.server.token = token.clone();
            }
        }
        Ok(ws)
    }

    /// Parses `text` as read from `path`, reading the pipeline files it names.
    pub fn parse(text: &str, path: &Path) -> Result<Workspace, ConfigError> {
        let mut raw = file::read(text, path)?;
        let raw_alerts = std::mem::take(&mut raw.alerts);
        let raw_smtp = raw.smtp.take();
        let Some(globs) = raw.workspace.take() else {
            let config = validate::validate(raw, text, path)?;
            return Ok(Workspace {
                path: path.to_path_buf(),
                is_workspace: false,
                retention: config.retention.clone(),
                pipelines: vec![config],
                alerts: super::alerts::validate(raw_alerts, raw_smtp, text, path)?,
            });
        };
        let (server, retention, scheduler) = validate::shared(&mut raw, text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster = super::cluster::validate(raw.cluster.take(), text, path, base)?;
        let alerts = super::alerts::validate(raw_alerts, raw_smtp, text, path)?;
        let globs = globs.into_inner().pipelines;
        if globs.is_empty() {
            let at = text.find("[workspace]").unwrap_or(0);
            return Err(validate::error_at(
                path,
                text,
                at,
                "workspace.pipelines",
                "missing: list the pipeline files, like pipelines = [\"pipelines/*.toml\"]"
                    .to_string(),
            ));
        }
        let mut files: Vec<PathBuf> = Vec::new();
        for g in &globs {
            let matched = expand(base, g.get_ref()).map_err(|message| {
                validate::error_at(path, text, g.span().start, "workspace.pipelines", message)
            })?;
            if matched.is_empty() {
                return Err(validate::error_at(
                    path,
                    text,
                    g.span().start,
                    "workspace.pipelines",
                    format!("{:?} matches no file in {}", g.get_ref(), base.display()),
                ));
            }
            for f in matched {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        let mut pipelines: Vec<Config> = Vec::with_capacity(files.len());
        for f in files {
            let member_text = read(&f)?;
            let member_raw: RawConfig = file::read(&member_text, &f)?;
            let member = validate::member(member_raw, &member_text, &f, path)?;
            let pipeline = member.pipeline;
            if let Some(first) = pipelines.iter().find(|c| c.pipeline.name == pipeline.name) {
                return Err(validate::error_at(
                    &f,
                    &member_text,
                    member.name_at,
                    "pipeline.name",
                    format!(
                        "duplicate pipeline name {:?}: {} already has it; names are unique in \
                         the workspace {}",
                        pipeline.name,
                        first.file.display(),
                        path.display()
                    ),
                ));
            }
            pipelines.push(Config {
                path: path.to_path_buf(),
                pipeline_state_dir: server.state_dir.join("pipelines").join(&pipeline.name),
                file: f,
                in_workspace: true,
                pipeline,
                stages: member.stages,
                server: server.clone(),
                retention: member.retention.unwrap_or_else(|| retention.clone()),
                scheduler: scheduler.clone(),
                cluster: cluster.clone(),
            });
        }
        Ok(Workspace {
            path: path.to_path_buf(),
            is_workspace: true,
            pipelines,
            retention,
            alerts,
        })
    }

    /// The pipelines' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.pipelines
            .iter()
            .map(|c| c.pipeline.name.as_str())
            .collect()
    }

    /// The pipeline called `name`.
    pub fn get(&self, name: &str) -> Option<&Config> {
        self.pipelines.iter().find(|c| c.pipeline.name == name)
    }

    /// The settings every pipeline shares (`[server]`, `[scheduler]`, the file): the first
    /// pipeline's view of them.
    pub fn shared(&self) -> &Config {
        // `parse` never builds a workspace without a pipeline.
        &self.pipelines[0]
    }

    /// The pipeline a command is about: the one named, or the only one. Several and no name
    /// is an error listing them (`what`: the command, for the hint).
    pub fn select(&self, name: Option<&str>, what: &str) -> Result<&Config, ConfigError> {
        match name {
            Some(n) => self.get(n).ok_or_else(|| ConfigError::Pipeline {
                path: self.path.clone(),
                message: format!(
                    "no pipeline {n:?}; the pipelines are: {}",
                    self.names().join(", ")
                ),
            }),
            None if self.pipelines.len() == 1 => Ok(self.shared()),
            None => Err(ConfigError::Pipeline {
                path: self.path.clone(),
                message: format!(
                    "{} pipelines ({}): name one, like `pipewatch {what} {}`",
                    self.pipelines.len(),
                    self.names().join(", "),
                    self.names()[0]
                ),
            }),
        }
    }
}

impl From<Config> for Workspace {
    /// A file of one pipeline.
    fn from(config: Config) -> Workspace {
        Workspace {
            path: config.path.clone(),
            is_workspace: config.in_workspace,
            retention: config.retention.clone(),
            pipelines: vec![config],
            alerts: Vec::new(),
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The files `pattern` (relative to `base`, `/` or the platform's separator) matches, sorted.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        format!(
            "{}/{pattern}",
            glob::Pattern::escape(&base.to_string_lossy())
        )
    };
    let paths = glob::glob(&full).map_err(|e| format!("invalid pattern {pattern:?}: {}", e.msg))?;
    let mut files = Vec::new();
    for p in paths {
        let p = p.map_err(|e| format!("cannot read {}: {}", e.path().display(), e.error()))?;
        if p.is_file() {
            files.push(p.components().collect());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A workspace at `/w/pipewatch.toml` over the files of `tree` (written to a temporary
    /// folder, since the globs read the folder).
    fn load(tree: &[(&str, &str)]) -> (tempfile::TempDir, Result<Workspace, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in tree {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let ws = Workspace::load(&dir.path().join("pipewatch.toml"));
        (dir, ws)
    }

    fn pipeline(name: &str, schedule: &str) -> String {
        format!(
            "[pipeline]\nname = \"{name}\"\nschedule = \"{schedule}\"\n\n[[stages]]\nname = \"a\"\nrun = \"true\"\nworkdir = \"jobs\"\n"
        )
    }

    fn invalid(r: Result<Workspace, ConfigError>) -> (PathBuf, usize, String, String) {
        match r {
            Err(ConfigError::Invalid {
                path,
                line,
                key,
                message,
            }) => (path, line, key, message),
            other => panic!("expected an invalid workspace, got {other:?}"),
        }
    }

    #[test]
    fn pipelines_in_glob_order_share_the_server_and_keep_their_own_folders() {
        let (dir, ws) = load(&[
            (
                "pipewatch.toml",
                "[workspace]\npipelines = [\"pipelines/*.toml\", \"extra.toml\"]\n\n[server]\nbind = \"127.0.0.1:9100\"\n\n[retention]\nmax_runs = 50\n",
            ),
            ("pipelines/b.toml", &pipeline("sync", "*/15 * * * *")),
            ("pipelines/a.toml", &pipeline("export", "@daily")),
            ("extra.toml", &pipeline("report", "@hourly")),
        ]);
        let ws = ws.unwrap();
        assert!(ws.is_workspace);
        assert_eq!(ws.names(), ["export", "sync", "report"]);
        let root: PathBuf = dir.path().components().collect();
        let by: HashMap<&str, &Config> = ws
            .pipelines
            .iter()
            .map(|c| (c.pipeline.name.as_str(), c))
            .collect();
        for c in &ws.pipelines {
            assert_eq!(c.path, dir.path().join("pipewatch.toml"));
            assert_eq!(c.server.bind.to_string(), "127.0.0.1:9100");
            assert_eq!(c.server.events_dir, root.join("logs").join("events"));
            assert_eq!(
                c.pipeline_state_dir,
                root.join(".pipewatch")
                    .join("pipelines")
                    .join(&c.pipeline.name)
            );
        }
        assert_eq!(
            by["sync"].stages[0].workdir,
            root.join("pipelines").join("jobs")
        );
        assert_eq!(by["report"].stages[0].workdir, root.join("jobs"));
        assert_eq!(by["sync"].retention.max_runs, 50);
        assert_eq!(by["report"].retention.max_runs, 50);
        assert_eq!(by["export"].pipeline.schedule.expression(), "@daily");
        assert_eq!(
            ws.select(Some("sync"), "run").unwrap().pipeline.name,
            "sync"
        );
        let several = ws.select(None, "run").unwrap_err().to_string();
        assert!(
            several.contains(
                "3 pipelines (export, sync, report): name one, like `pipewatch run export`"
            ),
            "{several}"
        );
        let unknown = ws.select(Some("nope"), "run").unwrap_err().to_string();
        assert!(
            unknown.contains("no pipeline \"nope\"; the pipelines are: export, sync, report"),
            "{unknown}"
        );
    }

    #[test]
    fn a_single_pipeline_file_is_a_workspace_of_one() {
        let (_dir, ws) = load(&[("pipewatch.toml", &pipeline("solo", "@hourly"))]);
        let ws = ws.unwrap();
        assert!(!ws.is_workspace);
        let c = ws.select(None, "run").unwrap();
        assert_eq!(c.pipeline.name, "solo");
        // One pipeline keeps its state where it always had it.
        assert_eq!(c.pipeline_state_dir, c.server.state_dir);
        assert_eq!(c.file, c.path);
    }

    #[test]
    fn a_duplicate_name_names_both_files() {
        let (dir, ws) = load(&[
            (
                "pipewatch.toml",
                "[workspace]\npipelines = [\"p/*.toml\"]\n",
            ),
            ("p/one.toml", &pipeline("sync", "@hourly")),
            ("p/two.toml", &pipeline("sync", "@daily")),
        ]);
        let (path, line, key, message) = invalid(ws);
        assert_eq!(path, dir.path().join("p").join("two.toml"));
        assert_eq!((line, key.as_str()), (2, "pipeline.name"));
        assert!(
            message.contains("duplicate pipeline name \"sync\""),
            "{message}"
        );
        assert!(message.contains("one.toml already has it"), "{message}");
    }

    #[test]
    fn a_glob_that_matches_nothing_names_its_line() {
        let (_dir, ws) = load(&[
            (
                "pipewatch.toml",
                "# workspace\n[workspace]\npipelines = [\n  \"p/*.toml\",\n  \"nowhere/*.toml\",\n]\n",
            ),
            ("p/one.toml", &pipeline("sync", "@hourly")),
        ]);
        let (path, line, key, message) = invalid(ws);
        assert!(path.ends_with("pipewatch.toml"));
        assert_eq!((line, key.as_str()), (5, "workspace.pipelines"));
        assert!(
            message.contains("\"nowhere/*.toml\" matches no file"),
            "{message}"
        );
    }

    #[test]
    fn a_pipeline_file_with_a_shared_table_names_both_files() {
        let (dir, ws) = load(&[
            (
                "pipewatch.toml",
                "[workspace]\npipelines = [\"p/*.toml\"]\n",
            ),
            (
                "p/one.toml",
                &format!(
                    "{}\n[server]\nbind = \"127.0.0.1:1\"\n",
                    pipeline("sync", "@hourly")
                ),
            ),
        ]);
        let (path, line, key, message) = invalid(ws);
        assert_eq!(path, dir.path().join("p").join("one.toml"));
        assert_eq!((line, key.as_str()), (10, "server"));
        assert!(
            message.contains(&format!(
                "a pipeline file of the workspace {} cannot set [server]",
                dir.path().join("pipewatch.toml").display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_workspace_file_holds_no_stages_and_names_pipelines_safely() {
        let (_dir, ws) = load(&[(
            "pipewatch.toml",
            &format!(
                "[workspace]\npipelines = [\"p/*.toml\"]\n{}",
                pipeline("x", "@daily")
            ),
        )]);
        let (_, line, key, message) = invalid(ws);
        assert_eq!((line, key.as_str()), (3, "pipeline"));
        assert!(
            message.contains("move [pipeline] and [[stages]]"),
            "{message}"
        );

        let (_dir, ws) = load(&[
            (
                "pipewatch.toml",
                "[workspace]\npipelines = [\"p/*.toml\"]\n",
            ),
            ("p/one.toml", &pipeline("my sync", "@hourly")),
        ]);
        let (_, line, key, message) = invalid(ws);
        assert_eq!((line, key.as_str()), (2, "pipeline.name"));
        assert!(
            message.contains("invalid pipeline name \"my sync\""),
            "{message}"
        );

        let (_dir, ws) = load(&[("pipewatch.toml", "[workspace]\npipelines = []\n")]);
        let (_, _, key, message) = invalid(ws);
        assert_eq!(key, "workspace.pipelines");
        assert!(message.starts_with("missing"), "{message}");
    }
}
