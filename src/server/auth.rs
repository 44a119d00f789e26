//! The request guards (`docs/security.md`): the token on `/api` (but health), `/ws` and
//! `/metrics`; the `Origin` check on WebSocket upgrades and state-changing requests; JSON-only
//! bodies on state-changing requests.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::state::AppState;

/// The cookie the page keeps the token in.
pub const TOKEN_COOKIE: &str = "pipewatch_token";

/// Requires the token, when one is configured: `Authorization: Bearer TOKEN`, or the cookie
/// set by the login form or a `?token=` link.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = &state.config.server.token;
    if token.is_empty()
        || presented(req.headers(), req.uri().query()).is_some_and(|t| same(&t, token))
    {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is required: send Authorization: Bearer TOKEN",
        ))
    }
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

/// Refuses cross-origin WebSocket upgrades and state-changing requests (403), and
/// state-changing requests whose body is not JSON (415).
pub async fn guard_requests(req: Request, next: Next) -> Result<Response, ApiError> {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if (upgrade || changes_state) && !same_origin(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: the Origin does not match this server",
        ));
    }
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
    Ok(next.run(req).await)
}

/// No `Origin` (scripts, curl) is accepted; a browser's `Origin` must name this server's host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
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

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, "127.0.0.1:8001".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8001".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
