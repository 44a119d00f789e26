//! Telling the dashboard that a run has started: `POST /api/pipeline/notify-scheduled-run`.
//!
//! Best effort by design: runs never depend on the dashboard. The request goes out on its own
//! thread with a 2-second limit on the whole exchange; a dashboard that is down, slow or hung
//! costs the run at most that, and its failure is only logged. The dashboard finds the run's
//! file by itself anyway; the notification only makes it show sooner.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the whole notification may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A notification in flight.
pub struct Announcement {
    started: Instant,
    handle: JoinHandle<()>,
}

impl Announcement {
    /// Waits for the notification, but never past [`TIMEOUT`] after it started.
    pub fn finish(self) {
        while !self.handle.is_finished() {
            if self.started.elapsed() >= TIMEOUT {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.handle.join();
    }
}

/// The address to reach a server bound to `bind`: a wildcard bind is reached on loopback.
pub fn reachable(bind: SocketAddr) -> SocketAddr {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// Sends the notification in the background. `events_id` names the folder the run writes to
/// ([`crate::config::Server::events_id`]): a dashboard that tails another folder (another
/// project's, on the same address) refuses it instead of showing a run it will never see.
pub fn announce(
    bind: SocketAddr,
    token: &str,
    run_id: &str,
    source: &str,
    events_id: &str,
) -> Announcement {
    let url = format!(
        "http://{}/api/pipeline/notify-scheduled-run",
        reachable(bind)
    );
    let body = serde_json::json!({ "run_id": run_id, "source": source, "events_id": events_id })
        .to_string();
    let auth = (!token.is_empty()).then(|| format!("Bearer {token}"));
    let started = Instant::now();
    let handle = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let mut req = agent.post(&url).content_type("application/json");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        match req.send(&body) {
            Ok(_) => tracing::debug!(%url, "dashboard notified"),
            Err(ureq::Error::StatusCode(409)) => tracing::warn!(
                %url,
                "the dashboard at this address tails another events folder (another \
                 project's): it does not show this run; give this configuration its own \
                 [server] bind"
            ),
            Err(e) => tracing::debug!(%url, error = %e, "dashboard not notified"),
        }
    });
    Announcement { started, handle }
}
