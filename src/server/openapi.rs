//! The API's description: one OpenAPI 3.1 document, made from the code that serves the API.
//! `GET /api/openapi.json` serves it and `pipewatch openapi` prints it; `.ci/schemathesis`
//! holds the live server to it.
//!
//! What it is made of, each from the one place that decides it:
//!
//! | part | from |
//! |---|---|
//! | paths, methods, parameters, bodies, each route's own answers | the `#[utoipa::path]` on each handler, registered by `routes::api` (the router is built from the same registration) |
//! | schemas | `ToSchema` on the types the handlers serialize (`RunSummary`, `Event`, `Health`, …) |
//! | the token (security schemes, `401`) | the `protected` group of `routes::api`, the one `auth::require_token` guards |
//! | the answers every request may get (`421`, `413`, `408`; `403`, `415` on `POST`) | `guards` here, the description of `auth::guard_requests` |
//! | the page's files | `assets::ASSETS` |
//!
//! So a route cannot be served without being described: the router and the document come
//! from one list, and `tests/it/openapi.rs` checks both against `ROUTES` and the page.

use std::sync::OnceLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    Components, Content, HttpMethod, InfoBuilder, LicenseBuilder, OpenApi, Ref, RefOr, Required,
};
use utoipa::{PartialSchema, ToSchema};

use super::assets::ASSETS;
use super::auth::TOKEN_COOKIE;
use super::error::ErrorBody;
use super::routes::{self, Api, MAX_BODY_BYTES};

/// The document, as `GET /api/openapi.json` sends it and `pipewatch openapi` prints it: made
/// once per process.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document is plain data and always serializes")
    })
}

/// The OpenAPI document of the whole HTTP surface.
pub fn document() -> OpenApi {
    let Api {
        public,
        mut protected,
    } = routes::api();
    needs_token(protected.get_openapi_mut());
    let mut doc = public.merge(protected).into_openapi();
    doc.info = InfoBuilder::new()
        .title("pipewatch")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(
            LicenseBuilder::new()
                .name(env!("CARGO_PKG_LICENSE"))
                .identifier(Some(env!("CARGO_PKG_LICENSE")))
                .build(),
        ))
        .build();
    doc.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build()
            })
            .collect(),
    );
    page(&mut doc);
    let components = doc.components.get_or_insert_with(Components::new);
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    components.security_schemes.extend(
        SECURITY_SCHEMES
            .iter()
            .map(|name| (name.to_string(), security_scheme(name))),
    );
    guards(&mut doc);
    doc
}

const DESCRIPTION: &str = "The dashboard's HTTP API: runs, their events (JSON, Server-Sent \
Events, WebSocket), the pipeline and its schedule. JSON in and out; every error is \
`{\"error\": \"...\"}`. Every request must carry a `Host` naming the server (else 421); with a \
token configured, everything but `/api/health`, `/api/openapi.json` and the page needs it \
(`Authorization: Bearer TOKEN`, the `pipewatch_token` cookie or `?token=TOKEN`). \
Prose reference: docs/api.md.";

/// The operations' tags, in the order a reader meets them.
const TAGS: &[(&str, &str)] = &[
    (
        "dashboard",
        "The dashboard itself: health, metrics, this description.",
    ),
    (
        "runs",
        "Runs and their events, from the index and the run files.",
    ),
    ("pipeline", "Starting runs."),
    (
        "scheduler",
        "The schedule: the built-in scheduler or an OS scheduler's task.",
    ),
    (
        "alerts",
        "Alerts sent about runs (`[[alerts]]`): their history and a test per destination.",
    ),
    (
        "streams",
        "Live events: Server-Sent Events and WebSocket (the WebSocket routes answer an upgrade \
         only; a client that cannot speak WebSocket uses the SSE route).",
    ),
    (
        "page",
        "The dashboard page and its files: public, GET and HEAD only.",
    ),
];

/// The three ways to present the token (`auth::presented`), described by
/// [`security_scheme`]; any one will do.
const SECURITY_SCHEMES: [&str; 3] = ["bearer", "cookie", "query"];

fn security_scheme(name: &str) -> SecurityScheme {
    match name {
        "bearer" => SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`Authorization: Bearer TOKEN` ([server] token or PIPEWATCH_TOKEN).",
                ))
                .build(),
        ),
        "cookie" => SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            TOKEN_COOKIE,
            "The cookie the page keeps the token in.",
        ))),
        _ => SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
            "token",
            "`?token=TOKEN`, as a link to the page carries it.",
        ))),
    }
}

/// Marks every operation of `doc` as needing the token: any of the three schemes, and `401`
/// without it.
fn needs_token(doc: &mut OpenApi) {
    for (_, op) in operations(doc) {
        op.security = Some(
            SECURITY_SCHEMES
                .iter()
                .map(|name| SecurityRequirement::new(*name, Vec::<String>::new()))
                .collect(),
        );
        refer(op, 401, "Unauthorized");
    }
}

/// The answers `auth::guard_requests` (and the transport) may give before any route runs, as
/// `#/components/responses/NAME`: on every operation; and on the state-changing ones, those
/// about `Origin` and the body's type.
fn guards(doc: &mut OpenApi) {
    /// Which operations a shared answer is added to.
    enum On {
        Every,
        Post,
        /// Those `needs_token` marked.
        Token,
    }
    let too_large = format!(
        "The request body is over {} KiB: refused on every route, whether it reads a body or \
         not.",
        MAX_BODY_BYTES / 1024
    );
    let shared: [(u16, &str, &str, On); 7] = [
        (
            401,
            "Unauthorized",
            "No token, or the wrong one: send `Authorization: Bearer TOKEN`, the \
             `pipewatch_token` cookie or `?token=TOKEN` (asked only when a token is configured).",
            On::Token,
        ),
        (
            421,
            "MisdirectedRequest",
            "The `Host` header does not name this server (its address, a loopback address at \
             its port, or a name in `[server] allowed_hosts`): the defence against DNS \
             rebinding.",
            On::Every,
        ),
        (413, "PayloadTooLarge", &too_large, On::Every),
        (
            408,
            "RequestTimeout",
            "The request body did not arrive within 10 seconds.",
            On::Every,
        ),
        (
            400,
            "BadBody",
            "The request body could not be read.",
            On::Every,
        ),
        (
            403,
            "CrossOrigin",
            "Cross-origin: a browser's `Origin` that is not this server. Clients that send no \
             `Origin` (scripts) are accepted.",
            On::Post,
        ),
        (
            415,
            "UnsupportedMediaType",
            "A body that is not JSON: send `Content-Type: application/json`, or no body.",
            On::Post,
        ),
    ];
    let components = doc.components.get_or_insert_with(Components::new);
    for (_, name, description, _) in &shared {
        components
            .responses
            .insert((*name).to_string(), RefOr::T(error(description)));
    }
    for (method, op) in operations(doc) {
        for (status, name, _, on) in &shared {
            let applies = match on {
                On::Every => true,
                On::Post => method == HttpMethod::Post,
                On::Token => false,
            };
            if applies {
                refer(op, *status, name);
            }
        }
    }
}

/// Adds a shared answer to `op`, unless it already describes that status (its own
/// description of it is more precise).
fn refer(op: &mut Operation, status: u16, name: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::new(format!("#/components/responses/{name}"))));
}

/// An error answer: `{"error": ...}` as JSON.
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
        )
        .build()
}

/// The page's files (`assets::ASSETS`): each a `GET` (and so `HEAD`) with its content type,
/// its `ETag` and the `304` that answers a matching `If-None-Match`.
fn page(doc: &mut OpenApi) {
    for asset in &ASSETS {
        let text = asset.content_type.starts_with("text/") || asset.content_type.contains("svg");
        let content = if text {
            Content::new(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        } else {
            Content::new(None::<RefOr<utoipa::openapi::schema::Schema>>)
        };
        let etag = HeaderBuilder::new()
            .schema(String::schema())
            .description(Some("This binary's version of the file."))
            .build();
        let ok = ResponseBuilder::new()
            .description(match asset.file {
                Some(file) => format!("`web/{file}`, as embedded in the binary."),
                None => "Written by the server from its own constants.".to_string(),
            })
            .content(asset.content_type, content)
            .header("ETag", etag.clone())
            .header(
                "Cache-Control",
                HeaderBuilder::new()
                    .schema(String::schema())
                    .description(Some("`no-cache`: the browser asks again each time."))
                    .build(),
            )
            .build();
        let unchanged = ResponseBuilder::new()
            .description("Not modified: the `If-None-Match` names this binary's version.")
            .header("ETag", etag)
            .build();
        let mut op = Operation::new();
        op.operation_id = Some(format!("page{}", operation_suffix(asset.path)));
        op.tags = Some(vec!["page".to_string()]);
        op.summary = Some(format!("The page's `{}`", asset.path));
        op.parameters = Some(vec![
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(String::schema()))
                .description(Some("The `ETag` of a copy the client has."))
                .build(),
        ]);
        op.responses.responses.insert("200".into(), RefOr::T(ok));
        op.responses
            .responses
            .insert("304".into(), RefOr::T(unchanged));
        doc.paths
            .paths
            .insert(asset.path.to_string(), PathItem::new(HttpMethod::Get, op));
    }
}

/// `/js/main.js` → `JsMainJs`: an operation id for a file's path.
fn operation_suffix(path: &str) -> String {
    let words: Vec<String> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    if words.is_empty() {
        "Index".to_string()
    } else {
        words.concat()
    }
}

/// Every operation of `doc`, with its method.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = (HttpMethod, &mut Operation)> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Options, item.options.as_mut()),
            (HttpMethod::Head, item.head.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
            (HttpMethod::Trace, item.trace.as_mut()),
        ]
        .into_iter()
        .filter_map(|(m, op)| op.map(|op| (m, op)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_for_files() {
        assert_eq!(operation_suffix("/"), "Index");
        assert_eq!(operation_suffix("/js/main.js"), "JsMainJs");
        assert_eq!(operation_suffix("/favicon.ico"), "FaviconIco");
    }
}
