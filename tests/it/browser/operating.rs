//! Operating runs on the page, in the real Chromium against the real `pipewatch serve`: the
//! Retry button of a failed run (and "Retry anyway" when the pipeline changed since), the
//! link between a retry and the run it retries, the parameters form "Run now" opens, and "Run
//! this stage" on a run's log narrowed to one stage.

use std::time::Duration;

use serde_json::Value;

use super::{Browser, QUIET, rt, serial, tools};
use crate::support::{Project, Server};

const LONG: Duration = Duration::from_secs(30);

/// `extract` then `load`, which fails until the file `fixed` exists, then `report` (named
/// `report_as`).
fn pipeline(report_as: &str) -> String {
    format!(
        "[pipeline]\nname = \"p\"\n{QUIET}\n\
         [[stages]]\nname = \"extract\"\nrun = \"echo extract >> ran\"\n\
         [[stages]]\nname = \"load\"\nrun = \"echo load >> ran; [ -f fixed ] || exit 1\"\nneeds = [\"extract\"]\n\
         [[stages]]\nname = \"{report_as}\"\nrun = \"echo report >> ran\"\nneeds = [\"load\"]\n"
    )
}

fn failed_run(p: &Project) -> String {
    let out = p.run(&["run", "--no-notify", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let runs: Value = serde_json::from_slice(&p.run(&["runs", "--json"]).stdout).expect("runs");
    runs[0]["run_id"].as_str().expect("run id").to_string()
}

async fn open_run(b: &Browser, server: &Server, id: &str) {
    b.goto(&format!("{}/#/runs/{id}", server.url())).await;
    b.wait(
        "the failed run's page",
        LONG,
        "document.querySelector('#rv-status').dataset.status === 'failure' && !document.querySelector('#rv-retry').hidden",
    )
    .await;
}

#[test]
fn retry_from_failure_opens_the_new_run_which_links_back() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::new();
        p.write_config(&pipeline("report"));
        let failed = failed_run(&p);
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_run(&b, &server, &failed).await;
        assert_eq!(b.js("return document.querySelector('#rv-retry-force').hidden").await, true);

        std::fs::write(p.path().join("fixed"), "").expect("fixed");
        b.click("#rv-retry").await;
        b.wait(
            "the retry's page, ended",
            LONG,
            &format!("location.hash !== '#/runs/{failed}' && document.querySelector('#rv-status').dataset.status === 'success'"),
        )
        .await;
        let hash = b.js("return location.hash").await;
        let retry = hash.as_str().unwrap_or("").trim_start_matches("#/runs/").to_string();
        // It links back to the run it retries, and says which stage it reused.
        b.wait(
            "the link to the run it retries",
            LONG,
            &format!("[...document.querySelectorAll('#rv-facts a')].some(a => a.getAttribute('href') === '#/runs/{failed}')"),
        )
        .await;
        b.wait(
            "extract reused",
            LONG,
            "[...document.querySelectorAll('#timeline .tl-skip')].some(el => el.dataset.stage === 'extract' && el.textContent.includes('reused'))",
        )
        .await;
        assert_eq!(b.js("return document.querySelector('#rv-retry').hidden").await, true, "a run that succeeded offers no retry");
        let ran = std::fs::read_to_string(p.path().join("ran")).expect("ran");
        assert_eq!(ran.lines().collect::<Vec<_>>(), ["extract", "load", "load", "report"]);
        let started = server.all_events(&retry)[0].clone();
        assert_eq!(started["data"]["retry_of"], failed.as_str());
        // The run it retries links to it.
        b.click(&format!("#rv-facts a[href='#/runs/{failed}']")).await;
        b.wait(
            "the failed run's page, naming its retry",
            LONG,
            &format!("location.hash === '#/runs/{failed}' && !!document.querySelector(\"#rv-retried-by a[href='#/runs/{retry}']\")"),
        )
        .await;
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

#[test]
fn a_changed_pipeline_asks_before_retrying_anyway() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::new();
        p.write_config(&pipeline("report"));
        let failed = failed_run(&p);
        p.write_config(&pipeline("publish"));
        std::fs::write(p.path().join("fixed"), "").expect("fixed");
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        open_run(&b, &server, &failed).await;
        b.click("#rv-retry").await;
        b.wait(
            "why it was refused, and the way past it",
            LONG,
            "document.querySelector('#rv-msg').textContent.includes('stage report is gone') && !document.querySelector('#rv-retry-force').hidden",
        )
        .await;
        b.click("#rv-retry-force").await;
        b.wait(
            "the forced retry, ended",
            LONG,
            &format!("location.hash !== '#/runs/{failed}' && document.querySelector('#rv-status').dataset.status === 'success'"),
        )
        .await;
        b.close().await;
    });
}

#[test]
fn run_now_asks_for_the_parameters_and_starts_the_run_with_them() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::new();
        p.write_config(&format!(
            "[pipeline]\nname = \"p\"\n{QUIET}\n[pipeline.params]\n\
             region = {{ default = \"eu\", description = \"Where to load\", choices = [\"eu\", \"us\"] }}\n\
             day = {{ default = \"today\" }}\n\
             [[stages]]\nname = \"show\"\nrun = 'echo \"$PIPEWATCH_PARAM_REGION/$PIPEWATCH_PARAM_DAY\"'\n"
        ));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        b.goto(&format!("{}/", server.url())).await;
        b.wait("the page", LONG, "document.querySelector('#conn').dataset.state === 'live'").await;
        b.click("#run-now").await;
        b.wait("the parameters form", LONG, "!document.querySelector('#params-form').hidden").await;
        let fields = b
            .js("return [...document.querySelectorAll('#params-fields .param')].map(p => [p.querySelector('label').textContent, p.querySelector('select, input').value, (p.querySelector('.desc') || {}).textContent || ''])")
            .await;
        assert_eq!(
            fields,
            serde_json::json!([["day", "today", ""], ["region", "eu", "Where to load"]])
        );
        let options = b.js("return [...document.querySelectorAll('#param-region option')].map(o => o.value)").await;
        assert_eq!(options, serde_json::json!(["eu", "us"]));
        b.js("document.querySelector('#param-region').value = 'us'; document.querySelector('#param-day').value = '2026-12-01'; return true").await;
        b.click("#params-start").await;
        b.wait("the form closed", LONG, "document.querySelector('#params-form').hidden").await;
        b.wait("the run listed", LONG, "document.querySelectorAll('#runs li.run').length === 1").await;
        let runs = server.json("/api/runs");
        let id = runs[0]["run_id"].as_str().expect("run id").to_string();
        server.wait_run(&id, LONG, |r| r["status"] == "success");
        let events = server.all_events(&id);
        assert_eq!(events[0]["data"]["params"], serde_json::json!({"region": "us", "day": "2026-12-01"}));
        assert!(events.iter().any(|e| e["msg"] == "us/2026-12-01"), "{events:?}");
        // The run's page shows them.
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait(
            "the parameters on the run's page",
            LONG,
            "document.querySelector('#rv-params') && document.querySelector('#rv-params').textContent === 'day=2026-12-01 region=us'",
        )
        .await;
        b.goto(&format!("{}/#/", server.url())).await;
        b.wait("the home page again", LONG, "!document.querySelector('#view-home').hidden && document.querySelector('#conn').dataset.state === 'live'").await;

        // Cancel closes the form and starts nothing.
        b.click("#run-now").await;
        b.wait("the form again", LONG, "!document.querySelector('#params-form').hidden").await;
        b.click("#params-cancel").await;
        b.wait("closed", LONG, "document.querySelector('#params-form').hidden").await;
        assert_eq!(server.json("/api/runs").as_array().map(Vec::len), Some(1));
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

#[test]
fn run_this_stage_starts_a_run_of_that_stage_alone() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = Project::new();
        p.write_config(&pipeline("report"));
        std::fs::write(p.path().join("fixed"), "").expect("fixed");
        let out = p.run(&["run", "--no-notify", "--quiet"]);
        assert!(out.status.success());
        let runs: Value = serde_json::from_slice(&p.run(&["runs", "--json"]).stdout).expect("runs");
        let first = runs[0]["run_id"].as_str().expect("run id").to_string();
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 860).await;
        b.goto(&format!("{}/#/runs/{first}", server.url())).await;
        b.wait("the run's page", LONG, "document.querySelector('#rv-status').dataset.status === 'success'").await;
        assert_eq!(b.js("return document.querySelector('#run-stage').hidden").await, true, "offered only for one stage");
        b.wait("the stage filter", LONG, "[...document.querySelectorAll('#f-stage option')].some(o => o.value === 'load')").await;
        b.js("const s = document.querySelector('#f-stage'); s.value = 'load'; s.dispatchEvent(new Event('change')); return true").await;
        b.wait("the action", LONG, "!document.querySelector('#run-stage').hidden").await;
        b.click("#run-stage").await;
        b.wait(
            "the new run's page, ended",
            LONG,
            &format!("location.hash !== '#/runs/{first}' && document.querySelector('#rv-status').dataset.status === 'success'"),
        )
        .await;
        let hash = b.js("return location.hash").await;
        let id = hash.as_str().unwrap_or("").trim_start_matches("#/runs/").to_string();
        let events = server.all_events(&id);
        let not_selected: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "skipped" && e["data"]["reason"] == "not_selected")
            .filter_map(|e| e["stage"].as_str())
            .collect();
        assert_eq!(not_selected, ["extract", "report"]);
        let ran = std::fs::read_to_string(p.path().join("ran")).expect("ran");
        assert_eq!(ran.lines().collect::<Vec<_>>(), ["extract", "load", "report", "load"]);
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}
