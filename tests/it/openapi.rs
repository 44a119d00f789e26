//! The API's OpenAPI description (`server::openapi`): it covers the router and only the
//! router, it is the document the server serves and the command line prints, and what the
//! schema fuzzer (`.ci/schemathesis`) found stays fixed.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use pipewatch::config::Config;
use pipewatch::server::assets::ASSETS;
use pipewatch::server::routes::PUBLIC;
use pipewatch::server::{self, AppState, ROUTES, openapi};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::*;

const TOKEN: &str = "0penapi-t0ken";

/// The methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(openapi::json()).expect("the document is JSON")
}

/// Every (METHOD, path) the document describes.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every (METHOD, path) the server answers: the API's routes and the page's files.
fn served() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain(
            ASSETS
                .iter()
                .map(|a| ("GET".to_string(), a.path.to_string())),
        )
        .collect()
}

fn state(token: &str) -> (tempfile::TempDir, Arc<AppState>) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[pipeline]\nname = \"p\"\n{QUICK}[server]\ntoken = \"{token}\"\n");
    let config = Config::parse(&text, &dir.path().join("pipewatch.toml")).unwrap();
    let state = server::detached_state(config, BIN.into()).unwrap();
    (dir, state)
}

/// One request through the router (no socket), as a client of the default address sends it,
/// with the token if `token` is given.
async fn call(
    state: &Arc<AppState>,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8001");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Body::empty()).unwrap();
    let res = server::router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = if status == StatusCode::OK && uri.contains("/events/stream") {
        // An endless stream: its head is the answer.
        String::new()
    } else {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, content_type, body)
}

fn concrete(path: &str) -> String {
    path.replace("{run_id}", "20261129T081500Z-3f9a2c")
        .replace("{name}", "p")
}

/// A route added without its description, or a description of no route, fails here: the
/// document describes exactly `ROUTES` and the page's files.
#[test]
fn the_document_describes_every_route_and_nothing_else() {
    let doc = document();
    let described = described(&doc);
    let served = served();
    let undescribed: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undescribed.is_empty(),
        "served but not described: {undescribed:?}"
    );
    assert!(
        unserved.is_empty(),
        "described but not in ROUTES: {unserved:?}"
    );
}

/// Every described operation is routed, with the method described and no other, and needs
/// the token exactly where the document says so: without a token, a protected route answers
/// 401 (the token layer runs only on a matched route; the fallback would say 404) and a
/// public one answers.
#[tokio::test]
async fn every_described_operation_is_routed_and_guarded_as_described() {
    let doc = document();
    let (_dir, state) = state(TOKEN);
    for (method, path) in described(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let secured = op.get("security").is_some();
        let public = PUBLIC.contains(&path.as_str()) || ASSETS.iter().any(|a| a.path == path);
        assert_eq!(
            secured, !public,
            "{method} {path}: security in the document"
        );
        let (status, _, body) = call(&state, &method, &concrete(&path), None).await;
        assert!(
            !body.contains("no such endpoint") && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not routed: {status} {body}"
        );
        if public {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert!(
                op["responses"].get("401").is_some(),
                "{method} {path}: 401 not described"
            );
        }
        // A method the document does not describe there is not routed there either.
        for other in ["PUT", "DELETE", "PATCH"] {
            let (status, content_type, body) =
                call(&state, other, &concrete(&path), Some(TOKEN)).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {path}: {body}"
            );
            // Like every error, `{"error": ...}` (axum's own 405 had an empty body).
            assert_eq!(content_type, "application/json", "{other} {path}: {body}");
        }
    }
}

/// Every `$ref` resolves, operation ids are unique, every operation has a success answer,
/// and every error it describes is `{"error": ...}` as JSON: what a client generator and
/// schemathesis rely on.
#[test]
fn the_document_is_consistent() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r}: not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    let mut ids = BTreeSet::new();
    for (method, path) in described(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let id = op["operationId"].as_str().unwrap_or_default().to_string();
        assert!(
            !id.is_empty() && ids.insert(id.clone()),
            "{method} {path}: operationId {id:?} missing or repeated"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s == "101"),
            "{method} {path}: no success answer"
        );
        for (status, response) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let response = match response.get("$ref").and_then(Value::as_str) {
                Some(r) => doc.pointer(&r[1..]).unwrap(),
                None => response,
            };
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}: {status} is not {{\"error\": ...}}"
            );
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Through the real binary: `GET /api/openapi.json` needs no token (but a `Host` naming the
/// server), is OpenAPI 3.1 as JSON, and is byte for byte what `pipewatch openapi` prints.
#[test]
fn the_served_document_is_public_and_is_what_the_command_prints() {
    let p = Project::with_config(&format!("{QUICK}[server]\ntoken = \"{TOKEN}\"\n"));
    let s = Server::start(&p);
    let r = s.get("/api/openapi.json");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served: Value = r.json();
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        served["openapi"]
    );
    assert_eq!(
        s.get("/api/runs").status,
        401,
        "the API still needs the token"
    );
    let evil = format!("evil.example:{}", s.port);
    let r = s.request("GET", "/api/openapi.json", &[("Host", &evil)], b"");
    assert_eq!(r.status, 421, "{}", r.body);

    let out = Project::new().run(&["openapi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    let served_text = s.get("/api/openapi.json").body;
    assert_eq!(printed.trim_end(), served_text, "printed and served differ");
    assert_eq!(printed, format!("{served_text}\n"));
}

/// Found by the schema fuzzer: a repeated query parameter (`?status=null&status=null`) was
/// answered by axum's query extractor with a `text/plain` 400, not `{"error": ...}`.
#[tokio::test]
async fn a_repeated_query_parameter_is_a_json_400() {
    let (_dir, state) = state("");
    for uri in [
        "/api/runs?status=null&status=null",
        "/api/runs?limit=1&limit=2",
        "/api/runs/r1/events?tail=null&tail=null",
        "/api/runs/r1/events/stream?since=1&since=2",
        "/ws/events/r1?since=1&since=2",
    ] {
        let (status, content_type, body) = call(&state, "GET", uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(content_type, "application/json", "{uri}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("duplicate")),
            "{uri}: {v}"
        );
    }
}

/// The same class of answer from the path extractor and the WebSocket handshake: a path
/// segment that is not UTF-8 once decoded, and a plain `GET` on a WebSocket route, are
/// `{"error": ...}` as JSON like every other error.
#[tokio::test]
async fn rejected_paths_and_handshakes_are_json_errors() {
    let (_dir, state) = state("");
    for (uri, want) in [
        ("/api/runs/%FF", StatusCode::BAD_REQUEST),
        ("/api/runs/%FF/events", StatusCode::BAD_REQUEST),
        ("/ws/events", StatusCode::BAD_REQUEST),
        ("/ws/events/r1", StatusCode::BAD_REQUEST),
    ] {
        let (status, content_type, body) = call(&state, "GET", uri, None).await;
        assert_eq!(status, want, "{uri}: {body}");
        assert_eq!(content_type, "application/json", "{uri}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].is_string(), "{uri}: {v}");
    }
}

/// The document says `source` is at most 64 characters (JSON Schema counts characters); the
/// server counted bytes, so 64 characters of non-ASCII text were refused with 400. Both now
/// count characters.
#[tokio::test]
async fn a_source_of_64_characters_is_taken_whatever_its_bytes() {
    let (_dir, state) = state("");
    for (source, want) in [
        ("é".repeat(64), StatusCode::ACCEPTED),
        ("日".repeat(64), StatusCode::ACCEPTED),
        ("é".repeat(65), StatusCode::BAD_REQUEST),
    ] {
        let body = serde_json::json!({"run_id": "r1", "source": source}).to_string();
        let req = Request::builder()
            .method("POST")
            .uri("/api/pipeline/notify-scheduled-run")
            .header(header::HOST, "127.0.0.1:8001")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let res = server::router(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(
            res.status(),
            want,
            "{} characters of {:?}",
            source.chars().count(),
            &source[..2]
        );
    }
    let doc = document();
    assert_eq!(
        doc["components"]["schemas"]["Notify"]["properties"]["source"]["maxLength"],
        64
    );
}
