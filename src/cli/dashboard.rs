//! Talking to this project's dashboard from the terminal (`tail` follows a run through it,
//! `doctor` checks its WebSocket): a blocking WebSocket client with the token, short connect
//! and read timeouts, and errors a person can act on.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tungstenite::WebSocket;
use tungstenite::client::IntoClientRequest;

/// Opens a WebSocket to `path` on the dashboard at `addr`, sending the token if there is one.
/// Reads on the returned socket time out after `read_timeout` (an `Io` error of kind
/// `WouldBlock`/`TimedOut`, after which the socket is still usable).
pub fn connect(
    addr: SocketAddr,
    path: &str,
    token: &str,
    read_timeout: Duration,
) -> Result<WebSocket<TcpStream>, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if !token.is_empty() {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        req.headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => {
            ws.get_ref()
                .set_read_timeout(Some(read_timeout))
                .map_err(|e| e.to_string())?;
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            let status = r.status();
            Err(if status.as_u16() == 401 {
                "the dashboard refused the token (401): set the same [server] token or PIPEWATCH_TOKEN as the dashboard".to_string()
            } else {
                format!("the dashboard refused the WebSocket upgrade with {status}")
            })
        }
        Err(e) => Err(format!("WebSocket upgrade failed: {e}")),
    }
}

/// The identity of the events folder the dashboard at `addr` tails (`events_id` in its
/// health), `Ok(None)` from a dashboard too old to say. An error when it does not answer as a
/// pipewatch dashboard.
pub fn events_id(addr: SocketAddr, timeout: Duration) -> Result<Option<String>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut answer = agent
        .get(&format!("http://{addr}/api/health"))
        .call()
        .map_err(|e| format!("no dashboard at {addr}: {e}"))?;
    let body = answer
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("the dashboard at {addr}: {e}"))?;
    let health: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| format!("{addr} does not answer as a pipewatch dashboard"))?;
    Ok(health["events_id"].as_str().map(str::to_string))
}

/// Why the dashboard at `addr` is not this configuration's (it tails another events folder),
/// if it is not.
pub fn not_ours(config: &crate::config::Config, theirs: Option<&str>) -> Option<String> {
    let ours = config.server.events_id();
    let theirs = theirs?;
    (theirs != ours).then(|| {
        format!(
            "the dashboard at {} tails another events folder than {} (another project's dashboard)",
            crate::runner::announce::reachable(config.server.bind),
            config.server.events_dir.display()
        )
    })
}

/// Whether a read ended on the socket's read timeout (the socket is still usable).
pub fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}
