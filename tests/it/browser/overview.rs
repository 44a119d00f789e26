//! The page of a workspace of several pipelines, in the real Chromium against the real
//! `pipewatch serve`: the overview (`#/`: a row per pipeline with its last runs as squares,
//! its day's figures, its switch and "Run now"; a removed pipeline's history), kept live by
//! the all-runs stream; a pipeline's page (`#/pipelines/NAME`: today's home page narrowed to
//! it), reached by a click or a bookmark; and the list of all runs with its pipeline column and
//! filter. The page of one pipeline is the rest of `browser`'s tests, unchanged.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Browser, QUIET, RunFile, rt, run_id_at, serial, start_work, tools};
use crate::support::{Project, Server};

/// The configured pipelines, in file order.
const PIPELINES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The seeded history: per pipeline, its runs oldest first as (status, seconds). `old` is no
/// longer configured. alpha has more runs than the strip shows.
fn history() -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
    let alpha: Vec<_> = (0..23)
        .map(|i| {
            (
                if i % 6 == 4 { "failure" } else { "success" },
                12 + (i * 7) % 40,
            )
        })
        .collect();
    vec![
        ("alpha", alpha),
        (
            "beta",
            vec![
                ("failure", 15),
                ("success", 25),
                ("success", 31),
                ("failure", 44),
            ],
        ),
        ("gamma", vec![]),
        ("old", vec![("success", 20), ("failure", 22)]),
    ]
}

/// A workspace of alpha, beta and gamma (one stage each, a schedule that will not fire, the
/// built-in scheduler) with `history()` written as their runs: returns it and every seeded
/// run id by pipeline, oldest first.
fn seeded_workspace() -> (Project, Vec<(&'static str, Vec<String>)>) {
    let p = Project::new();
    p.write_config(
        "[workspace]\npipelines = [\"pipelines/*.toml\"]\n\n[scheduler]\nbackend = \"builtin\"\n",
    );
    let dir = p.path().join("pipelines");
    std::fs::create_dir_all(&dir).expect("pipelines dir");
    for name in PIPELINES {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "[pipeline]\nname = \"{name}\"\n{QUIET}\n[[stages]]\nname = \"work\"\nrun = \"echo {name}\"\n"
            ),
        )
        .expect("pipeline file");
    }
    let now = Utc::now();
    let mut n = 0;
    let mut ids = Vec::new();
    for (pipeline, runs) in history() {
        let mut these = Vec::new();
        for (k, (status, secs)) in runs.iter().enumerate() {
            n += 1;
            // Every run within the last day, interleaved across pipelines, oldest first.
            let start =
                now - chrono::Duration::minutes(5 * (60 - k as i64)) + chrono::Duration::seconds(n);
            let id = run_id_at(start, n as u32);
            seeded_run(&p, pipeline, &id, start, *secs, status);
            these.push(id);
        }
        ids.push((pipeline, these));
    }
    (p, ids)
}

/// A finished run of `pipeline`, its one stage `work` taking `secs` and ending as the run does.
fn seeded_run(
    p: &Project,
    pipeline: &str,
    id: &str,
    start: DateTime<Utc>,
    secs: i64,
    status: &str,
) {
    let mut f = RunFile::new(p, id, "scheduler");
    f.pipeline = pipeline.to_string();
    let end = start + chrono::Duration::seconds(secs);
    let (level, code) = if status == "success" {
        ("info", 0)
    } else {
        ("error", 1)
    };
    f.push_at(
        start,
        "pipeline",
        "start",
        "info",
        "run started",
        json!({ "stages": ["work"] }),
    );
    f.push_at(
        start,
        "work",
        "start",
        "info",
        "stage work started",
        json!({ "attempt": 1 }),
    );
    f.push_at(
        end,
        "work",
        status,
        level,
        &format!("stage work: {status}"),
        json!({ "attempt": 1, "exit_code": code }),
    );
    f.push_at(
        end,
        "pipeline",
        status,
        level,
        &format!("run: {status}"),
        json!({}),
    );
}

/// The page's overview is drawn with every pipeline's row and the live stream.
async fn open_overview(b: &Browser, server: &Server, rows: usize) {
    b.goto(&format!("{}/", server.url())).await;
    b.wait(
        "the overview",
        Duration::from_secs(15),
        &format!("document.querySelectorAll('#pipes li.pipe').length === {rows}"),
    )
    .await;
    b.wait(
        "a live connection",
        Duration::from_secs(10),
        "document.querySelector('#conn').dataset.state === 'live'",
    )
    .await;
}

fn api_runs(server: &Server, query: &str) -> Vec<Value> {
    let list = server.json(&format!("/api/runs?limit=1000{query}"));
    list.as_array().expect("runs").clone()
}

fn ids_of(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["run_id"].as_str().expect("run id").to_string())
        .collect()
}

/// The squares of a pipeline's row, as (run id, status, label), left to right.
async fn squares(b: &Browser, pipeline: &str) -> Vec<(String, String, String)> {
    let v = b
        .js(&format!(
            "return [...document.querySelectorAll('#pipes li.pipe[data-pipeline=\"{pipeline}\"] .sq')].map(s => [s.dataset.runId, s.dataset.status, s.getAttribute('aria-label'), s.title])"
        ))
        .await;
    let rows: Vec<(String, String, String, String)> = serde_json::from_value(v).expect("squares");
    rows.into_iter()
        .map(|(id, st, label, title)| {
            assert_eq!(label, title, "a square's title says what its label says");
            (id, st, label)
        })
        .collect()
}

/// Three pipelines and a removed one with their history: a row each, in file order then the
/// removed one, with the right squares (the last 20, oldest left), success rate and median of
/// the day; the removed one marked so, without switch or "Run now". Below, all runs with a
/// pipeline column, and the pipeline filter narrows them. The overview's screenshot.
#[test]
fn the_overview_shows_every_pipeline_with_its_last_runs_and_its_day() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, ids) = seeded_workspace();
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_overview(&b, &server, 4).await;
        let names = b.js("return [...document.querySelectorAll('#pipes li.pipe')].map(r => r.dataset.pipeline)").await;
        assert_eq!(names, json!(["alpha", "beta", "gamma", "old"]));
        b.wait("the squares", Duration::from_secs(10), "document.querySelectorAll('#pipes .sq').length === 26").await;

        for (pipeline, runs) in history() {
            let seeded = &ids.iter().find(|(n, _)| *n == pipeline).expect("seeded").1;
            let want: Vec<(String, String, String)> = seeded
                .iter()
                .zip(&runs)
                .map(|(id, (st, _))| (id.clone(), st.to_string(), format!("Run {id}: {st}")))
                .skip(runs.len().saturating_sub(20))
                .collect();
            assert_eq!(squares(&b, pipeline).await, want, "{pipeline}'s squares, oldest left");

            let row = format!("#pipes li.pipe[data-pipeline=\"{pipeline}\"]");
            let text = |cell: &str| format!("return document.querySelector('{row} .{cell}').textContent");
            let ok = runs.iter().filter(|(s, _)| *s == "success").count();
            let rate = if runs.is_empty() {
                "success —".to_string()
            } else {
                format!("success {}%", (100.0 * ok as f64 / runs.len() as f64).round())
            };
            assert_eq!(b.js(&text("rate")).await, rate.as_str(), "{pipeline}'s success rate");
            let mut secs: Vec<i64> = runs.iter().map(|(_, s)| *s).collect();
            secs.sort_unstable();
            let median = secs.get(secs.len().saturating_sub(1) / 2).map_or("—".to_string(), |s| format!("{s}s"));
            assert_eq!(b.js(&text("med")).await, format!("median {median}").as_str(), "{pipeline}'s median");

            let removed = pipeline == "old";
            let has = |sel: &str| format!("return !!document.querySelector('{row} {sel}')");
            assert_eq!(b.js(&has(".badge.removed")).await, removed, "{pipeline} marked removed");
            assert_eq!(b.js(&has(".switch")).await, !removed, "{pipeline}'s switch");
            assert_eq!(b.js(&has(".act button")).await, !removed, "{pipeline}'s Run now");
        }
        assert_eq!(
            b.js("return document.querySelector('#pipes li.pipe[data-pipeline=\"gamma\"] .strip').textContent").await,
            "no runs yet"
        );
        // Keyboard: each row's name is a link to its page, each square a link to its run.
        assert_eq!(
            b.js("return document.querySelector('#pipes li.pipe[data-pipeline=\"beta\"] .pname a').getAttribute('href')").await,
            "#/pipelines/beta"
        );
        assert_eq!(b.js("return document.querySelector('#pipes .sq').tagName").await, "A");
        // The overview has no one pipeline's schedule or trend.
        assert_eq!(b.js("return document.querySelector('#sched-card').hidden && document.querySelector('#trend-card').hidden").await, true);

        // All runs, with the pipeline each belongs to.
        let all = api_runs(&server, "");
        b.wait("every run listed", Duration::from_secs(10), &format!("document.querySelectorAll('#runs li.run').length === {}", all.len().min(50))).await;
        let shown: Vec<(String, String)> = serde_json::from_value(
            b.js("return [...document.querySelectorAll('#runs li.run')].map(r => [r.dataset.runId, r.querySelector('.pipe-name').textContent])").await,
        )
        .expect("rows");
        let want: Vec<(String, String)> = all
            .iter()
            .take(50)
            .map(|r| (r["run_id"].as_str().unwrap().to_string(), r["pipeline"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(shown, want, "all runs, newest first, each with its pipeline");
        assert_eq!(b.js("return document.querySelector('#runs-pipe-col').hidden").await, false);

        // A run of beta going now (its runner's lock held): "running" in its row, and its
        // square, newest right.
        let live = run_id_at(Utc::now(), 0xbeef);
        let mut f = RunFile::new(&p, &live, "manual");
        f.pipeline = "beta".into();
        let _alive = f.hold_lock(&p);
        start_work(&mut f);
        b.wait(
            "beta running",
            Duration::from_secs(10),
            &format!(
                "document.querySelector('#pipes li.pipe[data-pipeline=\"beta\"] .now a.badge')?.getAttribute('href') === '#/runs/{live}' \
                 && [...document.querySelectorAll('#pipes li.pipe[data-pipeline=\"beta\"] .sq')].pop()?.dataset.status === 'running'"
            ),
        )
        .await;

        b.js("document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
        b.screenshot("overview", None).await;
        // On a phone: no sideways scrolling.
        b.c().set_window_size(390, 844).await.expect("phone size");
        let overflow = b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_i64().unwrap_or(0) <= 0, "no sideways scrolling on a phone: {overflow}");
        b.screenshot("overview-mobile", None).await;
        b.c().set_window_size(1280, 860).await.expect("desktop size");

        // The pipeline filter.
        b.js("const s = document.querySelector('#pipeline-filter'); s.value = 'beta'; s.dispatchEvent(new Event('change')); return true").await;
        let beta = ids_of(&api_runs(&server, "&pipeline=beta"));
        b.wait(
            "only beta's runs",
            Duration::from_secs(10),
            &format!("JSON.stringify([...document.querySelectorAll('#runs li.run')].map(r => r.dataset.runId)) === {}", json!(json!(beta).to_string())),
        )
        .await;
        assert_eq!(beta.len(), 5, "beta's four runs and the one going");
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

/// A run started from the terminal shows in its pipeline's row (a new square, newest right)
/// within a second of its file appearing, without a reload; and ends there with its status.
#[test]
fn a_run_from_the_terminal_shows_in_its_row_at_once() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, _) = seeded_workspace();
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_overview(&b, &server, 4).await;
        b.wait("beta's squares", Duration::from_secs(10), "document.querySelectorAll('#pipes li.pipe[data-pipeline=\"beta\"] .sq').length === 4").await;
        b.js("window.__notReloaded = true; return true").await;
        let before: std::collections::BTreeSet<_> = p.journals().into_iter().collect();

        let mut child = p.cmd(&["run", "beta", "--quiet"]).spawn().expect("pipewatch run beta");
        // From the moment its file is there, the page has a second.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut appeared: Option<Instant> = None;
        let id = loop {
            if appeared.is_none() && p.journals().iter().any(|j| !before.contains(j)) {
                appeared = Some(Instant::now());
            }
            let last = b.js("const s = [...document.querySelectorAll('#pipes li.pipe[data-pipeline=\"beta\"] .sq')]; return s.length === 5 ? s[4].dataset.runId : null").await;
            if let Some(id) = last.as_str() {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "the terminal's run never showed in beta's row");
            tokio::time::sleep(Duration::from_millis(15)).await;
        };
        let took = appeared.map(|t| t.elapsed()).unwrap_or_default();
        eprintln!("the terminal's run {id} showed in its row {took:?} after its file appeared");
        assert!(took < Duration::from_secs(1), "the run took {took:?} to show");
        assert!(child.wait().expect("wait for the run").success());
        b.wait(
            "the run's square to end success",
            Duration::from_secs(10),
            &format!("document.querySelector('#pipes .sq[data-run-id=\"{id}\"]')?.dataset.status === 'success'"),
        )
        .await;
        // Its row only: alpha's strip is as it was.
        assert_eq!(b.js("return document.querySelectorAll('#pipes li.pipe[data-pipeline=\"alpha\"] .sq').length").await, 20);
        assert_eq!(b.js("return window.__notReloaded === true").await, true, "no reload");
        // And in the list of all runs.
        b.wait("the run in all runs", Duration::from_secs(10), &format!("document.querySelector(\"#runs li.run[data-run-id='{id}'] .pipe-name\")?.textContent === 'beta'")).await;
        b.close().await;
    });
}

/// A click on a row opens the pipeline's page: only its runs, its schedule, its trend; the
/// bookmarked `#/pipelines/NAME` opens the same page directly; back to the overview by its link.
#[test]
fn a_pipeline_page_by_a_click_and_by_its_bookmark() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, _) = seeded_workspace();
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_overview(&b, &server, 4).await;
        // Anywhere on the row (here: its success rate) opens the pipeline.
        b.click("#pipes li.pipe[data-pipeline='beta'] .rate").await;
        b.wait("beta's page", Duration::from_secs(5), "location.hash === '#/pipelines/beta'").await;
        let beta = ids_of(&api_runs(&server, "&pipeline=beta"));
        let page_shows = |ids: &[String]| {
            format!(
                "!document.querySelector('#pipe-head').hidden && document.querySelector('#pipes-card').hidden \
                 && JSON.stringify([...document.querySelectorAll('#runs li.run')].map(r => r.dataset.runId)) === {} \
                 && document.querySelectorAll('#trend rect.bar').length === {} \
                 && document.querySelector('#sched-facts').textContent.includes('builtin')",
                json!(json!(ids).to_string()),
                ids.len()
            )
        };
        b.wait("only beta's runs, schedule and trend", Duration::from_secs(10), &page_shows(&beta)).await;
        assert_eq!(b.js("return document.querySelector('#pipe-name').textContent").await, "beta");
        // The page of one pipeline needs no pipeline column.
        assert_eq!(b.js("return document.querySelectorAll('#runs .pipe-name').length").await, 0);
        assert_eq!(b.js("return document.querySelector('#runs-pipe-col').hidden && document.querySelector('#pipeline-filter-box').hidden").await, true);
        assert_eq!(b.js("return document.title").await, "beta · pipewatch");
        b.js("document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
        b.screenshot("pipeline", None).await;
        // The schedule panel is beta's (its task, through /api/pipelines/beta/scheduler/status).
        let status = server.json("/api/pipelines/beta/scheduler/status");
        let next = status["schedule"].as_str().expect("schedule").to_string();
        assert!(b.js("return document.querySelector('#sched-facts').textContent").await.as_str().unwrap_or("").contains(&next));

        // Back to the overview, then a bookmark of gamma's page in a fresh load.
        b.click("#pipe-head .pipe-crumbs a").await;
        b.wait("the overview again", Duration::from_secs(10), "location.hash === '#/' && document.querySelectorAll('#pipes li.pipe').length === 4").await;
        // By keyboard: a row's name is a link; Enter on it opens the pipeline.
        let link = b
            .c()
            .find(fantoccini::Locator::Css("#pipes li.pipe[data-pipeline='gamma'] .pname a"))
            .await
            .expect("gamma's link");
        link.send_keys("\u{E007}").await.expect("Enter");
        b.wait("gamma's page by keyboard", Duration::from_secs(10), "location.hash === '#/pipelines/gamma' && document.querySelector('#runs .empty') && !document.querySelector('#runs .empty').textContent.includes('Loading')").await;
        // A fresh load, not a hash change of the page already open.
        b.goto("about:blank").await;
        b.goto(&format!("{}/#/pipelines/alpha", server.url())).await;
        let alpha = ids_of(&api_runs(&server, "&pipeline=alpha"));
        b.wait("alpha's page from its bookmark", Duration::from_secs(15), &page_shows(&alpha[..alpha.len().min(50)])).await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;

        // A run started elsewhere in another pipeline does not show here; one of alpha does.
        let other = server.post_json("/api/pipelines/beta/run", "");
        assert_eq!(other.status, 202, "{}", other.body);
        let mine = server.post_json("/api/pipelines/alpha/run", "");
        assert_eq!(mine.status, 202, "{}", mine.body);
        let mine = mine.json()["run_id"].as_str().expect("run id").to_string();
        let other = other.json()["run_id"].as_str().expect("run id").to_string();
        b.wait("alpha's new run", Duration::from_secs(15), &format!("document.querySelector(\"#runs li.run[data-run-id='{mine}']\")")).await;
        assert_eq!(b.js(&format!("return !!document.querySelector(\"#runs li.run[data-run-id='{other}']\")")).await, false);
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");

        // A removed pipeline's page: its history, and a schedule panel that says why it has none.
        b.goto(&format!("{}/#/pipelines/old", server.url())).await;
        let old = ids_of(&api_runs(&server, "&pipeline=old"));
        assert_eq!(old.len(), 2);
        b.wait(
            "old's history",
            Duration::from_secs(10),
            &format!("JSON.stringify([...document.querySelectorAll('#runs li.run')].map(r => r.dataset.runId)) === {}", json!(json!(old).to_string())),
        )
        .await;
        b.wait("why it has no schedule", Duration::from_secs(10), "document.querySelector('#sched-msg').textContent.includes('not in the configuration')").await;
        b.close().await;
    });
}

/// The overview's switch and "Run now" act on their own pipeline (checked through the API);
/// so do the schedule panel and "Run now" of a pipeline's page.
#[test]
fn the_switch_and_run_now_act_on_their_own_pipeline() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, _) = seeded_workspace();
        let server = Server::start(&p);
        let enabled = |name: &str| server.json(&format!("/api/pipelines/{name}"))["enabled"].as_bool().expect("enabled");
        assert!(enabled("alpha") && enabled("beta"), "the schedules start on");
        let b = Browser::start(&tools, 1280, 860).await;
        open_overview(&b, &server, 4).await;

        let switch = "#pipes li.pipe[data-pipeline='alpha'] .switch";
        assert_eq!(b.js(&format!("return document.querySelector(\"{switch}\").getAttribute('aria-checked')")).await, "true");
        b.click(switch).await;
        b.wait("alpha's switch off", Duration::from_secs(10), &format!("document.querySelector(\"{switch}\")?.getAttribute('aria-checked') === 'false' && !document.querySelector(\"{switch}\").disabled")).await;
        assert!(!enabled("alpha"), "alpha's schedule off");
        assert!(enabled("beta"), "beta's schedule untouched");
        assert_eq!(
            b.js("return document.querySelector('#pipes li.pipe[data-pipeline=\"alpha\"] .next').textContent").await,
            "next off"
        );
        b.click(switch).await;
        b.wait("alpha's switch on", Duration::from_secs(10), &format!("document.querySelector(\"{switch}\")?.getAttribute('aria-checked') === 'true'")).await;
        assert!(enabled("alpha"), "alpha's schedule on again");

        // Run now: gamma had no run.
        b.click("#pipes li.pipe[data-pipeline='gamma'] .act button").await;
        b.wait("gamma's first square", Duration::from_secs(15), "document.querySelectorAll('#pipes li.pipe[data-pipeline=\"gamma\"] .sq').length === 1").await;
        let gamma = api_runs(&server, "&pipeline=gamma");
        assert_eq!(gamma.len(), 1, "one run of gamma");
        assert_eq!(gamma[0]["source"], "manual");
        let id = gamma[0]["run_id"].as_str().expect("run id").to_string();
        assert!(b.js("return document.querySelector('#pipes-status').textContent").await.as_str().unwrap_or("").contains(&id));
        b.wait("gamma's run to succeed", Duration::from_secs(30), &format!("document.querySelector('#pipes .sq[data-run-id=\"{id}\"]')?.dataset.status === 'success'")).await;
        assert_eq!(api_runs(&server, "&pipeline=alpha").len(), 23, "no other pipeline ran");

        // On beta's page: its schedule panel's switch and its Run now.
        b.goto(&format!("{}/#/pipelines/beta", server.url())).await;
        b.wait("beta's switch", Duration::from_secs(10), "!document.querySelector('#sched-switch').disabled && document.querySelector('#sched-switch').getAttribute('aria-checked') === 'true'").await;
        b.click("#sched-switch").await;
        b.wait("beta's switch off", Duration::from_secs(10), "document.querySelector('#sched-switch').getAttribute('aria-checked') === 'false'").await;
        assert!(!enabled("beta"), "beta's schedule off");
        assert!(enabled("alpha"), "alpha's untouched");
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        b.click("#run-now").await;
        let new = b
            .wait("beta's new run", Duration::from_secs(15), "[...document.querySelectorAll('#runs li.run')].length === 5 && document.querySelector('#runs li.run')?.dataset.runId")
            .await;
        let new = new.as_str().expect("run id").to_string();
        let run = server.wait_run(&new, Duration::from_secs(30), |r| r["status"] == "success");
        assert_eq!(run["pipeline"], "beta");
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

/// The browser's back button retraces the way in: overview → a pipeline's page → one of its
/// runs, then back to the pipeline's page (still narrowed to it) and back to the overview.
#[test]
fn the_back_button_retraces_overview_pipeline_and_run() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let (p, ids) = seeded_workspace();
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_overview(&b, &server, 4).await;
        b.click("#pipes li.pipe[data-pipeline='beta'] .rate").await;
        b.wait("beta's page", Duration::from_secs(5), "location.hash === '#/pipelines/beta'").await;
        let beta = &ids.iter().find(|(n, _)| *n == "beta").expect("beta's runs").1;
        let run = beta.last().expect("a run of beta");
        let link = format!("#runs li.run[data-run-id='{run}'] a");
        b.wait("beta's runs", Duration::from_secs(10), &format!("document.querySelector(\"{link}\")")).await;
        b.click(&link).await;
        b.wait("the run's page", Duration::from_secs(10), &format!("location.hash === '#/runs/{run}' && !document.querySelector('#view-run').hidden")).await;

        b.c().back().await.expect("back");
        b.wait(
            "beta's page again, only its runs",
            Duration::from_secs(10),
            &format!(
                "location.hash === '#/pipelines/beta' && document.querySelector('#view-run').hidden \
                 && document.querySelectorAll('#runs li.run').length === {} \
                 && document.querySelector('#pipe-name').textContent === 'beta'",
                beta.len()
            ),
        )
        .await;
        b.c().back().await.expect("back");
        b.wait(
            "the overview again",
            Duration::from_secs(10),
            "location.hash === '#/' || location.hash === ''",
        )
        .await;
        b.wait(
            "its rows",
            Duration::from_secs(10),
            "!document.querySelector('#pipes-card').hidden && document.querySelectorAll('#pipes li.pipe').length === 4",
        )
        .await;
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}
