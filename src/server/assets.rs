//! The dashboard page, served from the binary: [`ASSETS`] is the one table of what the page
//! is made of — every file under `web/` (URL path, content type, bytes embedded with
//! `include_bytes!`) and the one module the server writes itself, `/js/statuses.js`.
//! [`routes`] serves each at its path; the router in `server/mod.rs` merges them.
//!
//! ```text
//!  web/index.html     → /             markup only
//!  web/style.css      → /style.css    the look (light and dark, desktop and phone)
//!  web/js/*.js        → /js/*.js      native ES modules, one concern each; entry: main.js
//!  (generated)        → /js/statuses.js   run and stage statuses, final events: Rust's constants
//!  web/favicon.svg    → /favicon.svg  the icon the page links to
//!  web/favicon.ico    → /favicon.ico  the same icon, 16 and 32 px, for clients that ask for it
//! ```
//!
//! No build step and nothing from a CDN: what is in `web/` is what the browser runs.
//! `/js/statuses.js` exists so that the page never spells a status out itself: the statuses
//! and the events that end a run or a stage are `index::RUN_STATUSES`,
//! `index::STAGE_STATUSES`, `event::kind::RUN_FINAL` and `event::kind::STAGE_FINAL`.
//!
//! Every answer carries its content type, `X-Content-Type-Options: nosniff`,
//! `Cache-Control: no-cache` and an `ETag`: the browser asks again each time and gets `304`
//! while the binary is the same, and a new binary's page at once. The page itself carries a
//! Content-Security-Policy that lets it load scripts, styles, images and connections from its
//! own origin only: no inline script or style, no `eval`, no other origin.
//!
//! Assets are public, like `/` always was: they hold no data (the page reads that from the
//! API, under the token). The guards of `auth.rs` (origin, JSON bodies) apply to them as to
//! every route; they answer `GET` and `HEAD` only.

use std::hash::{DefaultHasher, Hasher};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::event::{PIPELINE_STAGE, kind};
use crate::index::{RUN_STATUSES, RUNNING, STAGE_STATUSES};

/// The policy the page is served with: its own origin for everything it loads or connects
/// to (WebSocket included), nothing else; no inline script or style, no plugins, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'";

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const ICO: &str = "image/x-icon";

/// One file of the page.
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    pub content_type: &'static str,
    /// The file under `web/` it is made from; `None` for what the server writes itself.
    pub file: Option<&'static str>,
    body: Body,
    /// The bytes and their ETag, made on first use.
    ready: OnceLock<Ready>,
}

enum Body {
    File(&'static [u8]),
    Generated(fn() -> String),
}

struct Ready {
    bytes: Bytes,
    etag: HeaderValue,
}

/// A file under `web/`, served at its own path.
macro_rules! web_file {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: concat!("/", $path),
            content_type: $content_type,
            file: Some($path),
            body: Body::File(include_bytes!(concat!("../../web/", $path))),
            ready: OnceLock::new(),
        }
    };
}

/// Everything the page is made of.
pub static ASSETS: [Asset; 24] = [
    Asset {
        path: "/",
        content_type: HTML,
        file: Some("index.html"),
        body: Body::File(include_bytes!("../../web/index.html")),
        ready: OnceLock::new(),
    },
    web_file!("style.css", CSS),
    web_file!("favicon.svg", SVG),
    web_file!("favicon.ico", ICO),
    web_file!("js/main.js", JS),
    web_file!("js/state.js", JS),
    web_file!("js/dom.js", JS),
    web_file!("js/format.js", JS),
    web_file!("js/api.js", JS),
    web_file!("js/auth.js", JS),
    web_file!("js/conn.js", JS),
    web_file!("js/stream.js", JS),
    web_file!("js/fold.js", JS),
    web_file!("js/scope.js", JS),
    web_file!("js/overview.js", JS),
    web_file!("js/runs.js", JS),
    web_file!("js/params.js", JS),
    web_file!("js/trend.js", JS),
    web_file!("js/schedule.js", JS),
    web_file!("js/run.js", JS),
    web_file!("js/log.js", JS),
    web_file!("js/graph.js", JS),
    web_file!("js/alerts.js", JS),
    Asset {
        path: "/js/statuses.js",
        content_type: JS,
        file: None,
        body: Body::Generated(statuses_js),
        ready: OnceLock::new(),
    },
];

impl Asset {
    fn ready(&self) -> &Ready {
        self.ready.get_or_init(|| {
            let bytes = match self.body {
                Body::File(b) => Bytes::from_static(b),
                Body::Generated(make) => Bytes::from(make()),
            };
            // Only has to change when the bytes do: a hash of them, fixed for this binary.
            let mut h = DefaultHasher::new();
            h.write(&bytes);
            let etag = HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
            Ready { bytes, etag }
        })
    }

    /// The bytes served (tests compare them with the files).
    pub fn bytes(&self) -> Bytes {
        self.ready().bytes.clone()
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let ready = self.ready();
        let unchanged = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',').any(|t| {
                    let t = t.trim();
                    t == "*" || t.trim_start_matches("W/").as_bytes() == ready.etag.as_bytes()
                })
            });
        let mut res = if unchanged {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ready.bytes.clone().into_response()
        };
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::ETAG, ready.etag.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if self.content_type == HTML {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
        }
        res
    }
}

/// A `GET` route for each asset.
pub fn routes() -> Router<Arc<AppState>> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { asset.respond(&headers) }),
        )
    })
}

/// `/js/statuses.js`: the statuses and final events, from the constants the index folds with.
fn statuses_js() -> String {
    let list = |items: &[&str]| json!(items).to_string();
    format!(
        "// Written by pipewatch from its Rust constants (src/index.rs, src/event.rs): the page\n\
         // names no status itself, so the two cannot drift apart.\n\
         \n\
         /** Every status a run can have. */\n\
         export const RUN_STATUSES = Object.freeze({run});\n\
         /** Every status a stage can have. */\n\
         export const STAGE_STATUSES = Object.freeze({stage});\n\
         /** The run-level events that end a run; its status becomes the event's name. */\n\
         export const RUN_FINAL_EVENTS = Object.freeze({run_final});\n\
         /** The events that end a stage; its status becomes the event's name. */\n\
         export const STAGE_FINAL_EVENTS = Object.freeze({stage_final});\n\
         /** The status of a run or stage that has started and not ended. */\n\
         export const RUNNING = {running};\n\
         /** The `stage` of run-level events. */\n\
         export const PIPELINE_STAGE = {pipeline};\n",
        run = list(&RUN_STATUSES),
        stage = list(&STAGE_STATUSES),
        run_final = list(&kind::RUN_FINAL),
        stage_final = list(&kind::STAGE_FINAL),
        running = json!(RUNNING),
        pipeline = json!(PIPELINE_STAGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn web_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.insert(rel.replace('\\', "/"));
            }
        }
    }

    /// A file added to `web/` and not to the table would be a 404 in the browser.
    #[test]
    fn every_file_under_web_is_served_and_nothing_else() {
        let mut on_disk = BTreeSet::new();
        files_under(&web_dir(), &web_dir(), &mut on_disk);
        let in_table: BTreeSet<String> = ASSETS
            .iter()
            .filter_map(|a| a.file.map(str::to_string))
            .collect();
        assert_eq!(on_disk, in_table);
        let paths: BTreeSet<_> = ASSETS.iter().map(|a| a.path).collect();
        assert_eq!(paths.len(), ASSETS.len(), "a path served twice");
        for a in &ASSETS {
            if let Some(file) = a.file {
                let on_disk = std::fs::read(web_dir().join(file)).unwrap();
                assert_eq!(a.bytes(), on_disk, "{file}");
            }
        }
    }

    #[test]
    fn content_types_follow_the_extensions() {
        for a in &ASSETS {
            let name = a.file.unwrap_or(a.path);
            let want = match name.rsplit('.').next() {
                Some("html") => HTML,
                Some("css") => CSS,
                Some("js") => JS,
                Some("svg") => SVG,
                Some("ico") => ICO,
                other => panic!("{name}: no content type for {other:?}"),
            };
            assert_eq!(a.content_type, want, "{name}");
        }
    }

    /// Every `import` of every module, and every file the page links to, is in the table (or
    /// a public route): the module graph has no 404 (the browser tests load it for real).
    #[test]
    fn the_module_graph_is_closed() {
        let served: BTreeSet<_> = ASSETS.iter().map(|a| a.path).collect();
        let text = |a: &Asset| String::from_utf8(a.bytes().to_vec()).unwrap();
        let html = text(&ASSETS[0]);
        for attr in ["src=\"", "href=\""] {
            for rest in html.split(attr).skip(1) {
                let url = rest.split('"').next().unwrap();
                // A file of the page, or a public route (the footer links to the API's
                // description).
                if url.starts_with('/') {
                    assert!(
                        served.contains(url) || crate::server::routes::PUBLIC.contains(&url),
                        "index.html links to {url}"
                    );
                }
            }
        }
        let mut imported = BTreeSet::from(["/js/main.js"]);
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in text(a).lines().filter(|l| l.starts_with("import ")) {
                let spec = line.rsplit(" from ").next().unwrap().trim_end_matches(';');
                let spec = spec.trim_matches('\'');
                let url = format!("/js/{}", spec.strip_prefix("./").unwrap());
                assert!(served.contains(url.as_str()), "{} imports {spec}", a.path);
                imported.insert(ASSETS.iter().find(|x| x.path == url).unwrap().path);
            }
        }
        let modules: BTreeSet<_> = ASSETS
            .iter()
            .filter(|a| a.content_type == JS)
            .map(|a| a.path)
            .collect();
        assert_eq!(imported, modules, "a module nothing imports");
    }

    #[test]
    fn statuses_module_is_written_from_the_rust_constants() {
        let js = statuses_js();
        assert!(js.contains(
            "RUN_STATUSES = Object.freeze([\"running\",\"success\",\"failure\",\"cancelled\",\"skipped\",\"missed\",\"abandoned\"]);"
        ));
        for s in STAGE_STATUSES.iter().chain(&kind::RUN_FINAL) {
            assert!(js.contains(&format!("\"{s}\"")), "{s}");
        }
        assert!(js.contains("export const PIPELINE_STAGE = \"pipeline\";"));
    }

    #[test]
    fn etags_answer_304_and_the_page_has_its_policy() {
        let page = &ASSETS[0];
        let res = page.respond(&HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()[header::ETAG].clone();
        assert_eq!(
            res.headers()["content-security-policy"],
            CONTENT_SECURITY_POLICY
        );
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag.clone());
        assert_eq!(page.respond(&again).status(), StatusCode::NOT_MODIFIED);
        again.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(page.respond(&again).status(), StatusCode::OK);
        let css = ASSETS.iter().find(|a| a.path == "/style.css").unwrap();
        assert_ne!(css.respond(&HeaderMap::new()).headers()[header::ETAG], etag);
    }
}
