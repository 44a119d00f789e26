//! The request guards (`docs/security.md`): the `Host` check on every request; the token on
//! `/api` (but health), `/ws` and `/metrics`; the `Origin` check on WebSocket upgrades and
//! state-changing requests; bounded bodies on every request; JSON-only bodies on
//! state-changing requests.
//!
//! The `Host` and `Origin` decision is one pure function, [`check_host_origin`], over the
//! headers and the [`AllowedHosts`]: unit-tested here and fuzzed (`fuzz/fuzz_targets/host_origin.rs`).
//! Comparing `Origin` with `Host` alone is not enough: under DNS rebinding a hostile page's
//! name resolves to this machine, and its requests carry that name in both. So `Host` must
//! name this server first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

use super::error::ApiError;
use super::routes::MAX_BODY_BYTES;
use super::state::AppState;
use crate::config::host::{Host, HostName};

/// The cookie the page keeps the token in.
pub const TOKEN_COOKIE: &str = "pipewatch_token";

/// Requires the token, when one is configured: `Authorization: Bearer TOKEN`, or the cookie
/// set by the login form or a `?token=` link.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if authorized(&state, req.headers(), req.uri().query()) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is required: send Authorization: Bearer TOKEN",
        ))
    }
}

/// Whether a request may see everything: no token is configured, or it presents the token.
pub fn authorized(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> bool {
    let token = &state.config.server.token;
    token.is_empty() || presented(headers, query).is_some_and(|t| same(&t, token))
}

/// The token a request presents, from the header, the cookie or the query string.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, t)) = v.trim_start().split_once(' ')
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER`.
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(t.trim().to_string());
    }
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some(t) = part
                .trim()
                .strip_prefix(TOKEN_COOKIE)
                .and_then(|r| r.strip_prefix('='))
            {
                return Some(t.to_string());
            }
        }
    }
    query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares in time independent of where the strings differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The `Host` values that name this server: its own address, loopback at its port, and
/// `[server] allowed_hosts`.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// The address the server listens on, with its real port (after binding port 0).
    bound: SocketAddr,
    configured: Vec<Host>,
}

impl AllowedHosts {
    pub fn new(bound: SocketAddr, configured: &[Host]) -> AllowedHosts {
        AllowedHosts {
            bound,
            configured: configured.to_vec(),
        }
    }

    /// Whether `host` names this server:
    /// - a configured entry (its port too, if the entry has one; any port otherwise: a proxy's
    ///   public port is not ours);
    /// - at our port: a loopback address, `localhost`, our bound IP — or, bound to a wildcard
    ///   address (whose addresses cannot all be known), any IP literal but the unspecified one.
    ///   DNS rebinding needs a DNS name, so an IP literal is never a rebound one.
    pub fn names(&self, host: &Host) -> bool {
        let configured = self
            .configured
            .iter()
            .any(|c| c.name == host.name && c.port.is_none_or(|p| host.port == Some(p)));
        if configured {
            return true;
        }
        // No port in `Host` is the scheme's default; only plain HTTP reaches us directly.
        if host.port.unwrap_or(80) != self.bound.port() {
            return false;
        }
        let bound = self.bound.ip().to_canonical();
        match &host.name {
            HostName::Dns(n) => n == "localhost",
            HostName::Ip(ip) => {
                !ip.is_unspecified() && (ip.is_loopback() || *ip == bound || bound.is_unspecified())
            }
        }
    }
}

/// Why [`check_host_origin`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is missing, repeated, malformed or names another server: 421.
    Host(String),
    /// `Origin` is not this server's: 403.
    CrossOrigin,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::Host(m) => ApiError::new(StatusCode::MISDIRECTED_REQUEST, m),
            Refusal::CrossOrigin => ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: the Origin does not match this server",
            ),
        }
    }
}

/// The `Host` and `Origin` decision, for every request: `Host` (and the target's authority,
/// when a client sends an absolute URL) must name this server ([`AllowedHosts::names`]); then,
/// where `check_origin` (WebSocket upgrades, state-changing requests), a browser's `Origin`
/// must be that same host. No `Origin` (scripts, curl) passes.
pub fn check_host_origin(
    headers: &HeaderMap,
    authority: Option<&str>,
    allowed: &AllowedHosts,
    check_origin: bool,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(raw), None) = (hosts.next(), hosts.next()) else {
        return Err(Refusal::Host(
            "send exactly one Host header naming this server".into(),
        ));
    };
    let Ok(raw) = raw.to_str() else {
        return Err(Refusal::Host("the Host header is not text".into()));
    };
    let shown = |h: &str| h.chars().take(200).collect::<String>();
    let refused = |h: &str| {
        Refusal::Host(format!(
            "Host {:?} does not name this server; add it to [server] allowed_hosts if a proxy forwards it",
            shown(h)
        ))
    };
    for candidate in authority.into_iter().chain([raw]) {
        match Host::parse(candidate.trim()) {
            Ok(h) if allowed.names(&h) => {}
            _ => return Err(refused(candidate)),
        }
    }
    if check_origin && !same_origin(headers.get(header::ORIGIN), raw.trim()) {
        return Err(Refusal::CrossOrigin);
    }
    Ok(())
}

/// A browser's `Origin` must be `scheme://HOST` with this request's (already checked) `Host`.
fn same_origin(origin: Option<&header::HeaderValue>, host: &str) -> bool {
    let Some(origin) = origin else { return true };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
}

/// The guards every request passes, in this order: the `Host` (421) and, on WebSocket
/// upgrades and state-changing requests, the `Origin` (403); the body size (413), whether or
/// not the route reads the body; on state-changing requests, a JSON body only (415).
pub async fn guard_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    check_host_origin(
        headers,
        authority(req.uri()),
        &state.allowed_hosts,
        upgrade || changes_state,
    )?;
    if changes_state {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let has_body = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() != "0")
            && (headers.contains_key(header::CONTENT_LENGTH)
                || headers.contains_key(header::TRANSFER_ENCODING));
        let json = content_type.is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json && (content_type.is_some() || has_body) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send a JSON body (Content-Type: application/json)",
            ));
        }
    }
    let req = bounded_body(req).await?;
    Ok(next.run(req).await)
}

/// The authority of an absolute-form target (`GET http://host/path`), which HTTP says wins
/// over `Host`.
fn authority(uri: &Uri) -> Option<&str> {
    uri.authority().map(|a| a.as_str())
}

/// A request body must have arrived whole within this long after its headers (`408`).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a body over [`MAX_BODY_BYTES`] on any route, read by it or not: by its declared
/// length at once, else (chunked) by reading at most that much before the route runs. And a
/// body not received whole within [`BODY_READ_TIMEOUT`] gets `408`: every body the API takes
/// is small, so it is read here, under that deadline, rather than by the route at the
/// client's pace (a review held a connection for 45 s and more with a slow 60 KB body, and
/// with an endless chunked one).
async fn bounded_body(req: Request) -> Result<Request, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    let body = req.body();
    if body.is_end_stream() {
        return Ok(req);
    }
    if body.size_hint().lower() > MAX_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
            if read.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            read.extend_from_slice(&chunk);
        }
        Ok(read)
    };
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )
        })??;
    Ok(Request::from_parts(parts, Body::from(read)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn token_sources() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h, Some("a=1&token=s%20t")), Some("s t".into()));
        h.insert(
            header::COOKIE,
            "x=1; pipewatch_token=c00kie".parse().unwrap(),
        );
        assert_eq!(presented(&h, None), Some("c00kie".into()));
        h.insert(header::AUTHORIZATION, "Bearer b34rer".parse().unwrap());
        assert_eq!(presented(&h, None), Some("b34rer".into()));
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        for v in [
            "Bearer b34rer",
            "bearer b34rer",
            "BEARER  b34rer",
            "bEaReR b34rer",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(presented(&h, None), Some("b34rer".into()), "{v}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic b34rer".parse().unwrap());
        assert_eq!(presented(&h, None), None);
    }

    fn hosts(bound: &str, configured: &[&str]) -> AllowedHosts {
        let configured: Vec<Host> = configured.iter().map(|c| Host::parse(c).unwrap()).collect();
        AllowedHosts::new(bound.parse().unwrap(), &configured)
    }

    /// Asserts which `Host` values `allowed` takes and which it refuses.
    fn takes(allowed: &AllowedHosts, ok: &[&str], bad: &[&str]) {
        for host in ok {
            assert!(
                decide(allowed, Some(host), None).is_ok(),
                "{host:?} refused"
            );
        }
        for host in bad {
            assert!(decide(allowed, Some(host), None).is_err(), "{host:?} taken");
        }
    }

    fn decide(
        allowed: &AllowedHosts,
        host: Option<&str>,
        origin: Option<&str>,
    ) -> Result<(), Refusal> {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, v.parse().unwrap());
        }
        check_host_origin(&h, None, allowed, true)
    }

    #[test]
    fn origins() {
        let a = hosts("127.0.0.1:8001", &[]);
        assert!(decide(&a, Some("127.0.0.1:8001"), None).is_ok());
        assert!(decide(&a, Some("127.0.0.1:8001"), Some("http://127.0.0.1:8001")).is_ok());
        assert_eq!(
            decide(&a, Some("127.0.0.1:8001"), Some("http://evil.example")),
            Err(Refusal::CrossOrigin)
        );
        assert_eq!(
            decide(&a, Some("127.0.0.1:8001"), Some("null")),
            Err(Refusal::CrossOrigin)
        );
    }

    #[test]
    fn rebound_names_are_refused_whatever_the_origin() {
        let a = hosts("127.0.0.1:8001", &[]);
        for host in ["evil.example:8001", "evil.example", "127.0.0.1.nip.io:8001"] {
            let origin = format!("http://{host}");
            for o in [None, Some(origin.as_str())] {
                assert!(
                    matches!(decide(&a, Some(host), o), Err(Refusal::Host(m)) if m.contains(host)),
                    "{host} {o:?}"
                );
            }
        }
    }

    #[test]
    fn loopback_and_the_bound_address_at_our_port() {
        let a = hosts("127.0.0.1:8001", &[]);
        let ok = [
            "127.0.0.1:8001",
            "localhost:8001",
            "LOCALHOST:8001",
            "[::1]:8001",
            "127.0.0.2:8001",
        ];
        let bad = [
            "127.0.0.1:8002",
            "localhost",
            "0.0.0.0:8001",
            "10.0.0.5:8001",
            "",
            " ",
            "127.0.0.1:8001, evil",
        ];
        takes(&a, &ok, &bad);
        assert!(decide(&a, None, None).is_err(), "no Host");
        let mut two = HeaderMap::new();
        two.append(header::HOST, "127.0.0.1:8001".parse().unwrap());
        two.append(header::HOST, "evil.example:8001".parse().unwrap());
        assert!(
            check_host_origin(&two, None, &a, false).is_err(),
            "two Hosts"
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8001".parse().unwrap());
        assert!(
            check_host_origin(&h, Some("evil.example:8001"), &a, false).is_err(),
            "an absolute target naming another host"
        );
        let on_lan = hosts("10.0.0.5:8001", &[]);
        assert!(decide(&on_lan, Some("10.0.0.5:8001"), None).is_ok());
        assert!(decide(&on_lan, Some("10.0.0.6:8001"), None).is_err());
    }

    #[test]
    fn a_wildcard_bind_takes_ip_literals_but_only_configured_names() {
        let a = hosts("0.0.0.0:8001", &["dash.example.com", "other.example:9443"]);
        let ok = [
            "192.168.1.7:8001",
            "[fe80::1]:8001",
            "localhost:8001",
            "dash.example.com",
            "Dash.Example.Com:443",
            "other.example:9443",
        ];
        let bad = [
            "evil.example:8001",
            "other.example",
            "other.example:8001",
            "0.0.0.0:8001",
            "192.168.1.7:9",
        ];
        takes(&a, &ok, &bad);
        assert!(
            decide(
                &a,
                Some("dash.example.com"),
                Some("https://dash.example.com")
            )
            .is_ok(),
            "the page behind a TLS proxy"
        );
    }
}
