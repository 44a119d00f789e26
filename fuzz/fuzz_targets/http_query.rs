//! Arbitrary paths and query strings through the real router (no socket): never a panic,
//! never a 500.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use pipewatch::config::Config;
use pipewatch::server::{self, AppState};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = "[pipeline]\nname = \"p\"\n[[stages]]\nname = \"a\"\nrun = \"true\"\n";
        let config = Config::parse(text, &dir.path().join("pipewatch.toml")).expect("config");
        let state = server::detached_state(config, "/nonexistent/pipewatch".into()).expect("state");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Fixture { _dir: dir, state, rt }
    })
}

const PREFIXES: &[&str] = &[
    "/api/runs?",
    "/api/runs/",
    "/api/runs/r1/events?",
    "/api/runs/r1/events/stream?",
    "/ws/events/",
    "/api/health?",
    "/metrics?",
    "/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(tail) = std::str::from_utf8(rest) else {
        return;
    };
    let uri = format!("{}{}", PREFIXES[pick as usize % PREFIXES.len()], tail);
    // The detached state's own address, so that the request reaches the routes.
    let Ok(req) = Request::builder()
        .method("GET")
        .uri(&uri)
        .header("host", "127.0.0.1:8001")
        .body(Body::empty())
    else {
        return;
    };
    let f = fixture();
    let status = f.rt.block_on(async {
        server::router(f.state.clone())
            .oneshot(req)
            .await
            .map(|r| r.status())
            .unwrap_or(StatusCode::OK)
    });
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{uri} -> {status}"
    );
});
