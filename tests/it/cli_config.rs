//! Configuration errors and `init`, through the binary: exit code 2 and a message naming the
//! file, line and key before anything runs.

use crate::support::*;

const STAGE: &str = "[[stages]]\nname = \"a\"\nrun = \"echo hi\"\n";

/// Runs `pipewatch run` on `config` and returns the error message, asserting exit code 2 and
/// that nothing ran.
fn config_error(config: &str) -> String {
    let p = Project::new();
    p.write_config(config);
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(p.journals().is_empty(), "nothing may run on a bad config");
    let err = stderr(&out);
    assert!(
        err.contains("pipewatch.toml:"),
        "message names the file: {err}"
    );
    err
}

#[test]
fn unknown_key() {
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\nshedule = \"@daily\"\n{STAGE}"
    ));
    assert!(
        e.contains("pipewatch.toml:3: pipeline.shedule: unknown field"),
        "{e}"
    );
}

#[test]
fn bad_duration() {
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\n{STAGE}timeout = \"ten minutes\"\n"
    ));
    assert!(e.contains("pipewatch.toml:6: stages.timeout:"), "{e}");
    assert!(e.contains("ten minutes"), "{e}");
}

#[test]
fn bad_cron() {
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\nschedule = \"*/15 * *\"\n{STAGE}"
    ));
    assert!(
        e.contains("pipewatch.toml:3: pipeline.schedule: schedule \"*/15 * *\": expected 5 fields"),
        "{e}"
    );
}

#[test]
fn cron_errors_name_the_field_the_value_and_the_range() {
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\nschedule = \"0 25 * * *\"\n{STAGE}"
    ));
    assert!(
        e.contains("pipewatch.toml:3: pipeline.schedule: schedule \"0 25 * * *\": hour 25 is out of range 0–23"),
        "{e}"
    );
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\nschedule = \"@reboot\"\n{STAGE}"
    ));
    assert!(
        e.contains("schedule \"@reboot\": @reboot is not supported; use 5 fields")
            && e.contains("@hourly")
            && !e.contains("between 5 and 7"),
        "{e}"
    );
}

#[test]
fn needs_naming_no_stage() {
    let e = config_error(&format!(
        "[pipeline]\nname = \"p\"\n{STAGE}needs = [\"ghost\"]\n"
    ));
    assert!(e.contains("pipewatch.toml:6: stages.needs:"), "{e}");
    assert!(e.contains("\"ghost\""), "{e}");
}

#[test]
fn dependency_cycle_names_the_stages() {
    let e = config_error(
        "[pipeline]\nname = \"p\"\n\
         [[stages]]\nname = \"x\"\nrun = \"true\"\nneeds = [\"z\"]\n\
         [[stages]]\nname = \"y\"\nrun = \"true\"\nneeds = [\"x\"]\n\
         [[stages]]\nname = \"z\"\nrun = \"true\"\nneeds = [\"y\"]\n",
    );
    assert!(e.contains("dependency cycle: x -> z -> y -> x"), "{e}");
}

#[test]
fn duplicate_stage_names() {
    let e = config_error(&format!("[pipeline]\nname = \"p\"\n{STAGE}{STAGE}"));
    assert!(
        e.contains("pipewatch.toml:7: stages.name: duplicate stage name \"a\""),
        "{e}"
    );
}

#[test]
fn empty_pipeline() {
    let e = config_error("[pipeline]\nname = \"p\"\n");
    assert!(e.contains("stages: the pipeline has no stages"), "{e}");
}

#[test]
fn missing_config_says_how_to_get_one() {
    let p = Project::new();
    let out = p.run(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pipewatch init"), "{}", stderr(&out));
}

#[test]
fn config_flag_and_relative_paths() {
    let p = Project::new();
    std::fs::create_dir(p.path().join("conf")).unwrap();
    std::fs::write(
        p.path().join("conf/other.toml"),
        format!(
            "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"{}\"\n",
            stage::PWD
        ),
    )
    .unwrap();
    let out = p.run(&["run", "--no-notify", "--config", "conf/other.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // events_dir and the stage's workdir are relative to the config file's folder.
    let files: Vec<_> = std::fs::read_dir(p.path().join("conf/logs/events"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let events = read_events(&files[0].as_ref().unwrap().path());
    let pwd = logs(&events, "a", "stdout");
    assert!(pwd[0].ends_with("conf"), "{pwd:?}");
}

#[test]
fn unusable_events_dir_is_an_environment_error() {
    let p = Project::with_config(&format!(
        "{STAGE}[server]\nevents_dir = \"blocker/events\"\n"
    ));
    std::fs::write(p.path().join("blocker"), "a file, not a folder").unwrap();
    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("blocker"), "{}", stderr(&out));
}

#[test]
fn init_writes_a_runnable_example_and_never_overwrites() {
    let p = Project::new();
    let out = p.run(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(p.path().join("pipewatch.toml")).unwrap();
    assert!(config.contains("# "), "the config is commented");

    let out = p.run(&["run", "--no-notify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = p.journal();
    assert_eq!(run_end(&events)["event"], "success");
    let stages: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "start" && e["stage"] != "pipeline")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert!(stages.len() >= 5, "{stages:?}");
    // Two stages ran at the same time: both started before either finished.
    let pos = |stage: &str, event: &str| {
        events
            .iter()
            .position(|e| e["stage"] == stage && e["event"] == event)
            .unwrap()
    };
    assert!(pos("translate_de", "start") < pos("translate_fr", "success"));
    assert!(pos("translate_fr", "start") < pos("translate_de", "success"));
    // Output on both streams, and a stage that fails once and succeeds on retry.
    assert!(!logs(&events, "translate_fr", "stderr").is_empty());
    assert!(!logs(&events, "extract", "stdout").is_empty());
    assert_eq!(ev(&events, "load", "retry").len(), 1);
    assert_eq!(ev(&events, "load", "success").len(), 1);

    std::fs::write(p.path().join("pipewatch.toml"), "mine").unwrap();
    let out = p.run(&["init"]);
    assert_eq!(out.status.code(), Some(2));
    // Every file in the way is named.
    let err = stderr(&out);
    assert!(
        err.contains("pipewatch.toml") && err.contains("extract") && err.contains("already exist"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(p.path().join("pipewatch.toml")).unwrap(),
        "mine"
    );
}
