//! Operating runs through the binary (`../shared/contract.md` §10): a retry from the failed
//! stage, parameters, and one stage on its own — from the terminal and through the API.

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn stage(name: &str, run: &str, extra: &str) -> String {
    format!("[[stages]]\nname = \"{name}\"\nrun = '''{run}'''\n{extra}\n")
}

/// Appends the stage's name to the file `ran`: the test counts how often each stage ran.
fn counted(name: &str) -> String {
    stage::sh(
        &format!("echo {name} >> ran"),
        &format!("echo {name}>> ran"),
    )
}

/// `extract` and `transform` (counted), `load` needing `transform` and failing until the
/// file `fixed` exists, `report` needing `load`.
fn pipeline(report: &str) -> String {
    [
        stage("extract", &counted("extract"), ""),
        stage("transform", &counted("transform"), "needs = [\"extract\"]"),
        stage(
            "load",
            &stage::sh(
                "echo load >> ran; [ -f fixed ] || { echo 'load: target down' >&2; exit 1; }",
                "echo load>> ran& if not exist fixed (echo load: target down 1>&2& exit /b 1)",
            ),
            "needs = [\"transform\"]",
        ),
        stage(report, &counted(report), "needs = [\"load\"]"),
    ]
    .concat()
}

/// How often each stage ran, by the file the stages append to.
fn ran(p: &Project) -> Vec<String> {
    std::fs::read_to_string(p.path().join("ran"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn run_ids(p: &Project) -> Vec<String> {
    let runs = json_out(&p.run(&["runs", "--json"]));
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

fn events_of(p: &Project, id: &str) -> Vec<Value> {
    read_events(&run_path(p, id))
}

#[test]
fn a_retry_runs_only_what_failed_and_reuses_the_rest() {
    let p = Project::with_config(&pipeline("report"));
    let first = p.run(&["run", "--no-notify", "--quiet"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert_eq!(ran(&p), ["extract", "transform", "load"]);
    let failed = run_ids(&p)[0].clone();

    std::fs::write(p.path().join("fixed"), "").unwrap();
    let retry = p.run(&["run", "--retry", &failed, "--no-notify", "--quiet"]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    // extract and transform did not run again.
    assert_eq!(
        ran(&p),
        ["extract", "transform", "load", "load", "report"],
        "only the failed stage and what needs it ran again"
    );
    let second = run_ids(&p)[0].clone();
    assert_ne!(second, failed);
    let events = events_of(&p, &second);
    let start = &ev(&events, "pipeline", "start")[0]["data"];
    assert_eq!(start["retry_of"], failed.as_str());
    for reused in ["extract", "transform"] {
        let skipped = ev(&events, reused, "skipped");
        assert_eq!(skipped.len(), 1, "{events:?}");
        assert_eq!(skipped[0]["data"]["reason"], "reused");
        assert_eq!(skipped[0]["data"]["from_run"], failed.as_str());
    }
    assert_eq!(ev(&events, "load", "success").len(), 1);
    assert_eq!(ev(&events, "report", "success").len(), 1);
    assert_eq!(run_end(&events)["event"], "success");
    let shown = json_out(&p.run(&["runs", "show", &second, "--json"]));
    assert_eq!(shown["status"], "success");

    // A run that succeeded has nothing to retry.
    let again = p.run(&["run", "--retry", &second, "--no-notify"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("succeeded"), "{}", stderr(&again));
    let unknown = p.run(&["run", "--retry", "20260101T000000Z-none", "--no-notify"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("no run"), "{}", stderr(&unknown));
}

#[test]
fn a_retry_of_a_changed_pipeline_is_refused_unless_forced() {
    let p = Project::with_config(&pipeline("report"));
    let first = p.run(&["run", "--no-notify", "--quiet"]);
    assert_eq!(first.status.code(), Some(1));
    let failed = run_ids(&p)[0].clone();

    // `report` renamed `publish`.
    p.write_config(&format!(
        "[pipeline]\nname = \"p\"\n{}",
        pipeline("publish")
    ));
    std::fs::write(p.path().join("fixed"), "").unwrap();
    let refused = p.run(&["run", "--retry", &failed, "--no-notify"]);
    assert_eq!(refused.status.code(), Some(2));
    let msg = stderr(&refused);
    assert!(msg.contains("stage report is gone"), "{msg}");
    assert!(msg.contains("stage publish is new"), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(run_ids(&p).len(), 1, "a refused retry wrote no run");

    let forced = p.run(&[
        "run",
        "--retry",
        &failed,
        "--force",
        "--no-notify",
        "--quiet",
    ]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(ran(&p), ["extract", "transform", "load", "load", "publish"]);
}

#[test]
fn one_stage_runs_alone_and_the_others_are_recorded_not_selected() {
    let p = Project::with_config(&pipeline("report"));
    let out = p.run(&["run", "--stage", "transform", "--no-notify", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ran(&p), ["transform"]);
    let events = p.journal();
    for other in ["extract", "load", "report"] {
        let skipped = ev(&events, other, "skipped");
        assert_eq!(skipped.len(), 1, "{other}: {events:?}");
        assert_eq!(skipped[0]["data"]["reason"], "not_selected");
    }
    assert_eq!(run_end(&events)["event"], "success");

    let unknown = p.run(&["run", "--stage", "nope", "--no-notify"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("its stages are extract, transform, load, report"),
        "{}",
        stderr(&unknown)
    );
    let both = p.run(&["run", "--stage", "load", "--retry", "20260101T000000Z-x"]);
    assert_eq!(both.status.code(), Some(2), "--stage and --retry together");
}

const PARAMS: &str = "[pipeline.params]\n\
    region = { default = \"eu\", description = \"Where to load\", choices = [\"eu\", \"us\"] }\n\
    day = { default = \"today\" }\n";

fn params_project() -> Project {
    Project::with_config(&format!(
        "{PARAMS}{}",
        stage(
            "show",
            &stage::sh(
                "echo \"$PIPEWATCH_PARAM_REGION/$PIPEWATCH_PARAM_DAY\"",
                "echo %PIPEWATCH_PARAM_REGION%/%PIPEWATCH_PARAM_DAY%",
            ),
            ""
        )
    ))
}

#[test]
fn parameters_reach_the_stages_and_bad_ones_are_refused() {
    let p = params_project();
    let out = p.run(&["run", "--no-notify", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(logs(&p.journal(), "show", "stdout"), ["eu/today"]);

    let out = p.run(&[
        "run",
        "--param",
        "region=us",
        "--param",
        "day=2026-12-01",
        "--no-notify",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let newest = run_ids(&p)[0].clone();
    let events = events_of(&p, &newest);
    assert_eq!(logs(&events, "show", "stdout"), ["us/2026-12-01"]);
    assert_eq!(
        ev(&events, "pipeline", "start")[0]["data"]["params"],
        serde_json::json!({"region": "us", "day": "2026-12-01"})
    );

    for (arg, says) in [
        ("region=asia", "not one of eu, us"),
        ("nope=1", "the parameters are day, region"),
        ("region", "expected NAME=VALUE"),
    ] {
        let out = p.run(&["run", "--param", arg, "--no-notify"]);
        assert_eq!(out.status.code(), Some(2), "{arg}");
        assert!(stderr(&out).contains(says), "{arg}: {}", stderr(&out));
    }
    assert_eq!(run_ids(&p).len(), 2, "a refused run wrote nothing");

    // The declaration is checked with the configuration, naming its line.
    p.write_config(
        "[pipeline]\nname = \"p\"\n[pipeline.params]\nregion = { default = \"asia\", choices = [\"eu\"] }\n[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n",
    );
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pipewatch.toml:4: pipeline.params.region.default"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_retry_keeps_the_parameters_of_the_run_it_retries() {
    let p = Project::with_config(&format!(
        "{PARAMS}{}{}",
        stage("first", &counted("first"), ""),
        stage(
            "second",
            &stage::sh(
                "echo \"$PIPEWATCH_PARAM_REGION\"; [ -f fixed ] || exit 1",
                "echo %PIPEWATCH_PARAM_REGION%& if not exist fixed exit /b 1",
            ),
            "needs = [\"first\"]"
        )
    ));
    let out = p.run(&["run", "--param", "region=us", "--no-notify", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let failed = run_ids(&p)[0].clone();
    std::fs::write(p.path().join("fixed"), "").unwrap();
    let retry = p.run(&["run", "--retry", &failed, "--no-notify", "--quiet"]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    let events = events_of(&p, &run_ids(&p)[0]);
    assert_eq!(logs(&events, "second", "stdout"), ["us"]);
    assert_eq!(ran(&p), ["first"]);
    let with_params = p.run(&["run", "--retry", &failed, "--param", "region=eu"]);
    assert_eq!(
        with_params.status.code(),
        Some(2),
        "--param and --retry together"
    );
}

#[test]
fn the_api_retries_runs_with_parameters_and_one_stage() {
    let p = Project::with_config(&format!("{PARAMS}{}", pipeline("report")));
    let s = Server::start(&p);
    let long = Duration::from_secs(60);

    let started = s.post_json("/api/pipeline/run", r#"{"params": {"region": "us"}}"#);
    assert_eq!(started.status, 202, "{}", started.body);
    let failed = started.json()["run_id"].as_str().unwrap().to_string();
    s.wait_run(&failed, long, |r| r["status"] == "failure");
    let start = s.all_events(&failed)[0].clone();
    assert_eq!(start["data"]["params"]["region"], "us");

    for (body, says) in [
        (r#"{"params": {"region": "asia"}}"#, "not one of eu, us"),
        (r#"{"params": {"nope": "1"}}"#, "unknown parameter"),
        (r#"{"stages": ["nope"]}"#, "no stage \"nope\""),
        (r#"{"params": {"region": 5}}"#, "invalid body"),
    ] {
        let r = s.post_json("/api/pipeline/run", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(says), "{body}: {error}");
    }

    // Fixed, a retry through the API reuses extract and transform.
    std::fs::write(p.path().join("fixed"), "").unwrap();
    let retry = s.post_json(&format!("/api/runs/{failed}/retry"), "");
    assert_eq!(retry.status, 202, "{}", retry.body);
    let body = retry.json();
    assert_eq!(body["retry_of"], failed.as_str());
    let second = body["run_id"].as_str().unwrap().to_string();
    let run = s.wait_run(&second, long, |r| r["status"] == "success");
    let stages: Vec<(String, String)> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["name"].as_str().unwrap().to_string(),
                st["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("extract".into(), "skipped".into()),
            ("transform".into(), "skipped".into()),
            ("load".into(), "success".into()),
            ("report".into(), "success".into())
        ]
    );
    assert_eq!(s.all_events(&second)[0]["data"]["params"]["region"], "us");
    // Each run names the other.
    assert_eq!(run["retry_of"], failed.as_str());
    assert_eq!(
        s.json(&format!("/api/runs/{failed}"))["retried_by"],
        serde_json::json!([second.clone()])
    );

    let again = s.post_json(&format!("/api/runs/{second}/retry"), "");
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("succeeded"), "{}", again.body);
    assert_eq!(
        s.post_json("/api/runs/20260101T000000Z-none/retry", "")
            .status,
        404
    );

    // One stage through the API.
    let one = s.post_json("/api/pipeline/run", r#"{"stages": ["report"]}"#);
    assert_eq!(one.status, 202, "{}", one.body);
    let id = one.json()["run_id"].as_str().unwrap().to_string();
    s.wait_run(&id, long, |r| r["status"] == "success");
    assert_eq!(ran(&p).last().map(String::as_str), Some("report"));
    assert_eq!(ran(&p).len(), 6, "{:?}", ran(&p));

    // The pipeline's parameters, for a form.
    let pipeline = s.json("/api/pipelines/p");
    assert_eq!(pipeline["params"][0]["name"], "day");
    assert_eq!(
        pipeline["params"][1]["choices"],
        serde_json::json!(["eu", "us"])
    );
    assert_eq!(pipeline["stages"][2]["name"], "load");
    assert_eq!(
        pipeline["stages"][2]["needs"],
        serde_json::json!(["transform"])
    );
}
