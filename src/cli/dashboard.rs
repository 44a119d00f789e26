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

/// Whether a read ended on the socket's read timeout (the socket is still usable).
pub fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}
