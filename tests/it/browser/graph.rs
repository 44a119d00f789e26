//! A run's stages as their dependency graph (the run page's "Graph" view, `web/js/graph.js`),
//! in the real Chromium against the real `pipewatch serve`: the nodes, edges and layers of a
//! seeded run, its failed path, a node opening its stage's log, a live run's nodes moving
//! without a redraw, fifty stages without overlap in a box that scrolls sideways, the switch
//! by keyboard and across a reload, and a run written before the graph was recorded.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Browser, QUIET, RunFile, rt, run_id_at, serial, tools};
use crate::support::{Project, Server};

/// The seeded DAG, in file order: a diamond (extract → clean, enrich → merge), a chain after
/// it (merge → load → report) and a side branch (audit).
const DAG: [(&str, &[&str]); 7] = [
    ("extract", &[]),
    ("clean", &["extract"]),
    ("enrich", &["extract"]),
    ("audit", &["extract"]),
    ("merge", &["clean", "enrich"]),
    ("load", &["merge"]),
    ("report", &["load"]),
];

fn project() -> Project {
    Project::with_config(&format!(
        "{QUIET}[[stages]]\nname = \"work\"\nrun = \"echo hi\"\n"
    ))
}

/// The run's `start`: its stages in file order and, unless `graph` is false (a file from
/// before it was recorded), `stage_needs`.
fn start(f: &mut RunFile, t: DateTime<Utc>, dag: &[(String, Vec<String>)], graph: bool) {
    let names: Vec<&str> = dag.iter().map(|(n, _)| n.as_str()).collect();
    let mut data = json!({ "stages": names });
    if graph {
        let needs: serde_json::Map<String, Value> =
            dag.iter().map(|(n, ns)| (n.clone(), json!(ns))).collect();
        data["stage_needs"] = Value::Object(needs);
    }
    f.push_at(t, "pipeline", "start", "info", "run started", data);
}

fn owned(dag: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    dag.iter()
        .map(|(n, ns)| (n.to_string(), ns.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn ok(f: &mut RunFile, t: DateTime<Utc>, stage: &str, secs: i64) -> DateTime<Utc> {
    let end = t + chrono::Duration::seconds(secs);
    f.push_at(
        t,
        stage,
        "start",
        "info",
        "started",
        json!({ "attempt": 1 }),
    );
    f.push_at(
        t,
        stage,
        "log",
        "info",
        &format!("{stage} working"),
        json!({ "stream": "stdout" }),
    );
    f.push_at(
        end,
        stage,
        "success",
        "info",
        "succeeded",
        json!({ "attempt": 1, "exit_code": 0 }),
    );
    end
}

/// The seeded failed run of `DAG`: enrich fails on its second attempt; merge, load and report
/// are skipped because of it; extract takes 5 s, clean 12 s, audit 3 s.
fn failed_dag_run(p: &Project, id: &str) {
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let s = chrono::Duration::seconds;
    let mut f = RunFile::new(p, id, "scheduler");
    start(&mut f, t0, &owned(&DAG), true);
    let t1 = ok(&mut f, t0, "extract", 5);
    ok(&mut f, t1, "clean", 12);
    ok(&mut f, t1, "audit", 3);
    f.push_at(
        t1,
        "enrich",
        "start",
        "info",
        "started",
        json!({ "attempt": 1 }),
    );
    f.push_at(
        t1 + s(2),
        "enrich",
        "retry",
        "warn",
        "retrying",
        json!({ "attempt": 2, "reason": "exit", "exit_code": 1 }),
    );
    f.push_at(
        t1 + s(3),
        "enrich",
        "start",
        "info",
        "started (attempt 2)",
        json!({ "attempt": 2 }),
    );
    f.push_at(
        t1 + s(4),
        "enrich",
        "log",
        "warn",
        "enrich: upstream answered 503",
        json!({ "stream": "stderr" }),
    );
    let t2 = t1 + s(7);
    f.push_at(
        t2,
        "enrich",
        "failure",
        "error",
        "stage enrich failed: exit code 1",
        json!({ "attempt": 2, "exit_code": 1, "reason": "exit" }),
    );
    for (stage, need) in [("merge", "enrich"), ("load", "merge"), ("report", "load")] {
        f.push_at(
            t2,
            stage,
            "skipped",
            "warn",
            &format!("skipped: needed stage {need} did not succeed"),
            json!({ "reason": "needs_failed", "needs": need }),
        );
    }
    f.push_at(
        t2,
        "pipeline",
        "failure",
        "error",
        "run failed: enrich",
        json!({ "reason": "stage_failed", "failed_stages": ["enrich"] }),
    );
}

/// Opens the run's page in the graph view and waits for `n` nodes.
async fn open_graph(b: &Browser, server: &Server, id: &str, n: usize) {
    b.goto(&format!("{}/#/runs/{id}?view=graph", server.url()))
        .await;
    b.wait(
        "the graph",
        Duration::from_secs(15),
        &format!("document.querySelectorAll('#graph g.gnode').length === {n} && !document.querySelector('#graph-view').hidden"),
    )
    .await;
}

/// Each node's layer, x and y (its box's left and top, in page pixels) and meta text.
async fn nodes(b: &Browser) -> serde_json::Map<String, Value> {
    let v = b
        .js("return Object.fromEntries([...document.querySelectorAll('#graph g.gnode')].map((g) => { const r = g.querySelector('rect').getBoundingClientRect(); \
             return [g.dataset.stage, { layer: Number(g.dataset.layer), x: r.left, y: r.top, status: g.dataset.status, meta: g.querySelector('.gmeta').textContent, failed: g.hasAttribute('data-failed-path') }]; }))")
        .await;
    v.as_object().expect("nodes").clone()
}

/// The nodes whose name or status line reaches outside their box.
async fn spilled(b: &Browser) -> Value {
    b.js("return [...document.querySelectorAll('#graph g.gnode')].filter((g) => { const w = g.querySelector('rect').getBBox().width; \
          return [...g.querySelectorAll('text')].some((el) => { const tb = el.getBBox(); return tb.x < 0 || tb.x + tb.width > w - 4; }); }).map((g) => g.dataset.stage)")
        .await
}

/// The drawn edges as "from>to", sorted; with `failed`, only those on the failed path.
async fn edges(b: &Browser, failed: bool) -> Vec<String> {
    let sel = if failed {
        "#graph path.gedge[data-failed-path]"
    } else {
        "#graph path.gedge"
    };
    let v = b
        .js(&format!("return [...document.querySelectorAll('{sel}')].map((e) => e.dataset.from + '>' + e.dataset.to).sort()"))
        .await;
    serde_json::from_value(v).expect("edges")
}

/// The seeded run's graph: nodes, edges, layers left to right, the failed path, attempts and
/// durations; a node opens its stage's log, by click and by keyboard.
#[test]
fn the_graph_shows_the_dag_its_layers_and_the_failed_path() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = project();
        let id = run_id_at(Utc::now(), 1);
        failed_dag_run(&p, &id);
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        open_graph(&b, &server, &id, DAG.len()).await;
        b.wait("the run's end", Duration::from_secs(10), "document.querySelector('#rv-status').dataset.status === 'failure' && document.querySelector('#graph g.gnode[data-stage=\"report\"]').dataset.status === 'skipped'").await;

        let n = nodes(&b).await;
        let mut want_edges: Vec<String> = DAG
            .iter()
            .flat_map(|(to, needs)| needs.iter().map(move |from| format!("{from}>{to}")))
            .collect();
        want_edges.sort();
        assert_eq!(edges(&b, false).await, want_edges);
        assert_eq!(b.js("return document.querySelectorAll('#graph path.gedge').length").await, 7);
        // Layers: the longest path from extract.
        let layer = |s: &str| n[s]["layer"].as_i64().expect("layer");
        let x = |s: &str| n[s]["x"].as_f64().expect("x");
        for (s, l) in [("extract", 0), ("clean", 1), ("enrich", 1), ("audit", 1), ("merge", 2), ("load", 3), ("report", 4)] {
            assert_eq!(layer(s), l, "{s}'s layer");
        }
        assert!(x("extract") < x("clean"));
        assert_eq!(x("clean"), x("enrich"));
        assert_eq!(x("clean"), x("audit"));
        assert!(x("enrich") < x("merge") && x("merge") < x("load") && x("load") < x("report"));
        // The diamond's two sides sit next to each other, audit (needed by nothing) outside
        // them: no edge crosses another.
        let y = |s: &str| n[s]["y"].as_f64().expect("y");
        assert!(
            (y("audit") - y("merge")).abs() > (y("clean") - y("merge")).abs().min((y("enrich") - y("merge")).abs()),
            "audit is not between the diamond's sides: {n:?}"
        );

        // The failed path: enrich, and what was skipped because of it.
        for (s, failed) in [("extract", false), ("clean", false), ("audit", false), ("enrich", true), ("merge", true), ("load", true), ("report", true)] {
            assert_eq!(n[s]["failed"], failed, "{s} on the failed path");
        }
        assert_eq!(edges(&b, true).await, ["enrich>merge", "load>report", "merge>load"]);
        // Status, attempts and durations.
        assert_eq!(n["enrich"]["status"], "failure");
        assert_eq!(n["enrich"]["meta"], "failure · 7.0s · ↻ 2");
        assert_eq!(n["extract"]["meta"], "success · 5.0s");
        assert_eq!(n["clean"]["meta"], "success · 12s");
        assert_eq!(n["merge"]["meta"], "skipped");
        assert_eq!(n["audit"]["status"], "success");
        assert_eq!(spilled(&b).await, json!([]), "text outside its box");
        // The node says why in its title.
        let title = b.js("return document.querySelector('#graph g.gnode[data-stage=\"merge\"] title').textContent").await;
        assert!(title.as_str().unwrap_or("").contains("enrich did not succeed"), "{title}");
        let title = b.js("return document.querySelector('#graph g.gnode[data-stage=\"enrich\"] title').textContent").await;
        assert!(title.as_str().unwrap_or("").contains("2 attempts"), "{title}");

        b.js("document.activeElement.blur(); window.scrollTo(0, 0); return true").await;
        b.screenshot("graph", Some("#stages-card")).await;

        // A click on a node shows that stage's log.
        b.click("#graph g.gnode[data-stage=\"enrich\"]").await;
        b.wait(
            "enrich's log",
            Duration::from_secs(5),
            "document.querySelector('#f-stage').value === 'enrich' && document.querySelectorAll('#log .lr').length > 0 && [...document.querySelectorAll('#log .lr .stg')].every((s) => s.textContent === 'enrich')",
        )
        .await;
        assert_eq!(b.js("return document.activeElement.id").await, "log");
        // And Enter on a focused node.
        b.js("document.querySelector('#graph g.gnode[data-stage=\"clean\"]').focus(); return true").await;
        b.c().active_element().await.expect("focused node").send_keys("\u{E007}").await.expect("Enter");
        b.wait("clean's log", Duration::from_secs(5), "document.querySelector('#f-stage').value === 'clean' && [...document.querySelectorAll('#log .lr .stg')].every((s) => s.textContent === 'clean')").await;

        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");

        // On a phone the graph scrolls inside its card; the page does not scroll sideways.
        b.c().set_window_size(390, 844).await.expect("phone size");
        b.wait(
            "the graph on a phone",
            Duration::from_secs(5),
            "document.querySelector('#graph').scrollWidth > document.querySelector('#graph').clientWidth",
        )
        .await;
        let overflow = b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        assert!(overflow.as_i64().unwrap_or(1) <= 0, "no sideways scrolling of the page: {overflow}");
        b.close().await;

        // The dark theme: the nodes take its colours.
        let b = Browser::start_with(&tools, 1280, 900, &["--force-dark-mode"]).await;
        if b.js("return matchMedia('(prefers-color-scheme: dark)').matches").await == true {
            open_graph(&b, &server, &id, DAG.len()).await;
            b.wait("the run's end", Duration::from_secs(10), "document.querySelector('#graph g.gnode[data-stage=\"report\"]').dataset.status === 'skipped'").await;
            let fill = b.js("return getComputedStyle(document.querySelector('#graph g.gnode .gname')).fill").await;
            assert_eq!(fill, "rgb(230, 233, 238)", "names in the dark theme's text colour");
            b.js("document.activeElement.blur(); return true").await;
            b.screenshot("graph-dark", Some("#stages-card")).await;
        } else {
            eprintln!("this Chromium ignores --force-dark-mode: no dark graph");
        }
        b.close().await;
    });
}

/// Events appended while the graph is open move its nodes within a second, in place (the SVG
/// is not drawn again), and a running node's duration ticks.
#[test]
fn a_live_run_moves_its_nodes_in_place() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = project();
        let id = run_id_at(Utc::now(), 2);
        let mut f = RunFile::new(&p, &id, "scheduler");
        let _alive = f.hold_lock(&p);
        let dag = owned(&[("fetch", &[]), ("build", &["fetch"]), ("ship", &["build"])]);
        start(&mut f, Utc::now(), &dag, true);
        f.push("fetch", "start", "info", "started", json!({ "attempt": 1 }));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        open_graph(&b, &server, &id, 3).await;
        b.wait("fetch running", Duration::from_secs(10), "document.querySelector('#graph g.gnode[data-stage=\"fetch\"]').dataset.status === 'running'").await;
        b.wait("a live connection", Duration::from_secs(10), "document.querySelector('#conn').dataset.state === 'live'").await;
        assert_eq!(b.js("return document.querySelector('#graph g.gnode[data-stage=\"ship\"]').dataset.status").await, "pending");
        assert_eq!(edges(&b, false).await, ["build>ship", "fetch>build"]);
        b.js("document.querySelector('#graph svg').dataset.mark = 'first'; return true").await;

        // The running node's duration ticks.
        let meta = "document.querySelector('#graph g.gnode[data-stage=\"fetch\"] .gmeta').textContent";
        let before = b.js(&format!("return {meta}")).await;
        assert!(before.as_str().unwrap_or("").starts_with("running · "), "{before}");
        b.wait("the duration to tick", Duration::from_secs(4), &format!("{meta} !== {before}")).await;

        let mut worst = Duration::ZERO;
        for (stage, event, want) in [("fetch", "success", "success"), ("build", "start", "running"), ("build", "failure", "failure")] {
            let started = Instant::now();
            let (level, data) = match event {
                "start" => ("info", json!({ "attempt": 1 })),
                "success" => ("info", json!({ "attempt": 1, "exit_code": 0 })),
                _ => ("error", json!({ "attempt": 1, "exit_code": 2, "reason": "exit" })),
            };
            f.push(stage, event, level, &format!("{stage} {event}"), data);
            b.wait(
                &format!("{stage} {want}"),
                Duration::from_secs(5),
                &format!("document.querySelector('#graph g.gnode[data-stage=\"{stage}\"]').dataset.status === '{want}'"),
            )
            .await;
            worst = worst.max(started.elapsed());
        }
        eprintln!("slowest node update: {worst:?}");
        assert!(worst < Duration::from_secs(1), "a node took {worst:?} to update");
        f.push("ship", "skipped", "warn", "skipped", json!({ "reason": "needs_failed", "needs": "build" }));
        b.wait("the failed path", Duration::from_secs(5), "document.querySelector('#graph path.gedge[data-from=\"build\"][data-to=\"ship\"]').hasAttribute('data-failed-path')").await;
        assert_eq!(b.js("return document.querySelector('#graph svg').dataset.mark").await, "first", "the graph was drawn again");
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

/// Fifty stages (ten layers, some long names) draw with no two boxes overlapping, every name
/// inside its box, and a box that scrolls sideways inside the card (not the page).
#[test]
fn fifty_stages_fit_without_overlap_and_scroll_sideways() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = project();
        let id = run_id_at(Utc::now(), 3);
        // Ten groups of five; each stage needs one or two stages of the group before it, so
        // group g is layer g. Every eleventh name is too long for a node.
        let name = |i: usize| {
            if i % 11 == 7 {
                format!("stage_{i:02}_with_a_very_long_name_that_does_not_fit_in_a_node")
            } else {
                format!("stage_{i:02}")
            }
        };
        let dag: Vec<(String, Vec<String>)> = (0..50)
            .map(|i| {
                let mut needs = Vec::new();
                if i >= 5 {
                    let prev = 5 * (i / 5 - 1);
                    needs.push(name(prev + (i * 3) % 5));
                    if i % 3 == 0 {
                        needs.push(name(prev + (i + 2) % 5));
                    }
                }
                needs.dedup();
                (name(i), needs)
            })
            .collect();
        let mut f = RunFile::new(&p, &id, "scheduler");
        let t0 = Utc::now() - chrono::Duration::minutes(5);
        start(&mut f, t0, &dag, true);
        for (name, _) in &dag {
            ok(&mut f, t0, name, 2);
        }
        f.push_at(t0 + chrono::Duration::seconds(3), "pipeline", "success", "info", "run succeeded", json!({}));
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        open_graph(&b, &server, &id, 50).await;
        let layers = b.js("return Math.max(...[...document.querySelectorAll('#graph g.gnode')].map((g) => Number(g.dataset.layer)))").await;
        assert_eq!(layers, 9, "ten layers");
        let check = b
            .js("const boxes = [...document.querySelectorAll('#graph g.gnode')].map((g) => [g.dataset.stage, g.querySelector('rect').getBBox(), g.getAttribute('transform'), g.querySelector('.gname')]);\
                 const rects = boxes.map(([n, r, t]) => { const m = /translate\\(([-\\d.]+),([-\\d.]+)\\)/.exec(t); return [n, +m[1], +m[2], r.width, r.height]; });\
                 const overlaps = [];\
                 for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {\
                   const [a, ax, ay, aw, ah] = rects[i], [c, cx, cy, cw, ch] = rects[j];\
                   if (ax < cx + cw && cx < ax + aw && ay < cy + ch && cy < ay + ah) overlaps.push(a + ' / ' + c); }\
                 const cut = boxes.filter(([n, r, t, text]) => text.textContent.endsWith('…')).map(([n, r, t, text]) => [n, text.parentNode.querySelector('title').textContent.split('\\n')[0]]);\
                 const box = document.querySelector('#graph');\
                 return { overlaps, cut, scroll: box.scrollWidth - box.clientWidth, overflowX: getComputedStyle(box).overflowX,\
                          page: document.documentElement.scrollWidth - document.documentElement.clientWidth };")
            .await;
        b.screenshot("graph-50", Some("#stages-card")).await;
        assert_eq!(check["overlaps"], json!([]), "overlapping nodes");
        assert_eq!(spilled(&b).await, json!([]), "text outside its box");
        let cut = check["cut"].as_array().expect("cut names");
        assert!(!cut.is_empty(), "the long names are cut");
        for c in cut {
            assert!(c[0] == c[1], "a cut name keeps its full name in its title: {c}");
            assert!(c[0].as_str().unwrap_or("").ends_with("fit_in_a_node"));
        }
        assert!(check["scroll"].as_i64().unwrap_or(0) > 0, "the graph scrolls sideways: {check}");
        assert_eq!(check["overflowX"], "auto");
        assert!(check["page"].as_i64().unwrap_or(1) <= 0, "the page itself does not: {check}");
        // Scrolled to its end, the last layer shows.
        b.js("const g = document.querySelector('#graph'); g.scrollLeft = g.scrollWidth; return true").await;
        let last = b.js("const g = document.querySelector('#graph').getBoundingClientRect(); const n = document.querySelector('#graph g.gnode[data-layer=\"9\"] rect').getBoundingClientRect(); return n.right <= g.right + 1 && n.left >= g.left").await;
        assert_eq!(last, true, "the last layer in view once scrolled");
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

/// The switch between Timeline and Graph works from the keyboard, says which is on, and the
/// choice stays in the address across a reload; "Timeline" takes it out again.
#[test]
fn the_view_switch_is_keyboard_operable_and_survives_a_reload() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = project();
        let id = run_id_at(Utc::now(), 4);
        failed_dag_run(&p, &id);
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        b.goto(&format!("{}/#/runs/{id}", server.url())).await;
        b.wait("the timeline", Duration::from_secs(15), "document.querySelectorAll('.tl-bar').length >= 4 && document.querySelector('#graph-view').hidden").await;
        assert_eq!(b.js("return document.querySelector('#view-timeline').getAttribute('aria-pressed')").await, "true");
        // Tab from "Timeline" to "Graph", then Enter.
        b.js("document.querySelector('#view-timeline').focus(); return true").await;
        b.c().active_element().await.expect("focus").send_keys("\u{E004}").await.expect("Tab");
        assert_eq!(b.js("return document.activeElement.id").await, "view-graph");
        b.c().active_element().await.expect("focus").send_keys("\u{E007}").await.expect("Enter");
        b.wait("the graph", Duration::from_secs(5), "!document.querySelector('#graph-view').hidden && document.querySelector('#timeline').hidden && document.querySelectorAll('#graph g.gnode').length === 7").await;
        assert_eq!(b.js("return document.querySelector('#view-graph').getAttribute('aria-pressed')").await, "true");
        assert_eq!(b.js("return location.hash").await, format!("#/runs/{id}?view=graph"));
        let history = b.js("return history.length").await;

        b.c().refresh().await.expect("reload");
        b.wait("the graph after a reload", Duration::from_secs(15), "!document.querySelector('#graph-view').hidden && document.querySelectorAll('#graph g.gnode').length === 7 && document.querySelector('#rv-status').dataset.status === 'failure'").await;
        assert_eq!(b.js("return document.querySelector('#view-graph').getAttribute('aria-pressed')").await, "true");

        // Back to the timeline with Space on its button: the address loses the view, and no
        // history entry is added by switching.
        b.js("document.querySelector('#view-timeline').focus(); return true").await;
        b.c().active_element().await.expect("focus").send_keys(" ").await.expect("Space");
        b.wait("the timeline again", Duration::from_secs(5), "document.querySelector('#graph-view').hidden && !document.querySelector('#timeline').hidden && document.querySelectorAll('.tl-bar').length >= 4").await;
        assert_eq!(b.js("return location.hash").await, format!("#/runs/{id}"));
        assert_eq!(b.js("return history.length").await, history);
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}

/// A run file from before `stage_needs` was written: its stages in one column in file order,
/// no edges, and a note that the graph is not recorded.
#[test]
fn a_run_without_a_recorded_graph_shows_its_stages_in_file_order() {
    let Some(tools) = tools() else { return };
    let _serial = serial();
    rt().block_on(async {
        let p = project();
        let id = run_id_at(Utc::now(), 5);
        let mut f = RunFile::new(&p, &id, "scheduler");
        let t0 = Utc::now() - chrono::Duration::minutes(3);
        let dag = owned(&[("zeta", &[]), ("alpha", &["zeta"]), ("mid", &["alpha"])]);
        start(&mut f, t0, &dag, false);
        let t1 = ok(&mut f, t0, "zeta", 1);
        let t2 = ok(&mut f, t1, "alpha", 1);
        ok(&mut f, t2, "mid", 1);
        f.push_at(
            t2 + chrono::Duration::seconds(1),
            "pipeline",
            "success",
            "info",
            "run succeeded",
            json!({}),
        );
        let server = Server::start(&p);
        let b = Browser::start(&tools, 1280, 900).await;
        open_graph(&b, &server, &id, 3).await;
        b.wait(
            "the note",
            Duration::from_secs(10),
            "document.querySelector('#graph-note').textContent.includes('not recorded')",
        )
        .await;
        let n = nodes(&b).await;
        assert!(edges(&b, false).await.is_empty(), "no edges");
        let x = |s: &str| n[s]["x"].as_f64().expect("x");
        let y = |s: &str| n[s]["y"].as_f64().expect("y");
        assert!(
            x("zeta") == x("alpha") && x("alpha") == x("mid"),
            "one column: {n:?}"
        );
        assert!(
            y("zeta") < y("alpha") && y("alpha") < y("mid"),
            "file order: {n:?}"
        );
        assert_eq!(n["mid"]["status"], "success");

        // A run with the graph has no such note.
        let other = run_id_at(Utc::now(), 6);
        failed_dag_run(&p, &other);
        // Opened once the dashboard has read it, as a user finds it in the list.
        server.wait_run(&other, Duration::from_secs(10), |_| true);
        open_graph(&b, &server, &other, DAG.len()).await;
        assert_eq!(
            b.js("return document.querySelector('#graph-note').textContent")
                .await,
            ""
        );

        // Nor does a run longer than the page's first read (its start event read on its own).
        let long = run_id_at(Utc::now(), 7);
        let mut f = RunFile::new(&p, &long, "scheduler");
        start(&mut f, t0, &dag, true);
        f.push_at(
            t0,
            "zeta",
            "start",
            "info",
            "started",
            json!({ "attempt": 1 }),
        );
        for i in 0..1500 {
            f.push_at(
                t0,
                "zeta",
                "log",
                "info",
                &format!("line {i}"),
                json!({ "stream": "stdout" }),
            );
        }
        f.push_at(
            t0,
            "zeta",
            "success",
            "info",
            "succeeded",
            json!({ "attempt": 1, "exit_code": 0 }),
        );
        server.wait_run(&long, Duration::from_secs(10), |r| r["events"] == 1503);
        open_graph(&b, &server, &long, 3).await;
        b.wait(
            "the long run's edges",
            Duration::from_secs(10),
            "document.querySelectorAll('#graph path.gedge').length === 2",
        )
        .await;
        assert_eq!(edges(&b, false).await, ["alpha>mid", "zeta>alpha"]);
        assert_eq!(
            b.js("return document.querySelector('#graph-note').textContent")
                .await,
            ""
        );
        assert_eq!(
            b.js("return window.__pipewatch.logSeqs()[0] > 0").await,
            true,
            "the first read did not reach the start"
        );
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:?}");
        b.close().await;
    });
}
