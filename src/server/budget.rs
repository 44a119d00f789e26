//! What the server may hold for its clients, in bytes: each client's share, and all of them
//! together.
//!
//! Events read for a client (from a run file, or off the bus) wait in memory until its socket
//! takes them. A client that reads slowly, or not at all, must not make that wait grow without
//! limit: a review took the server from 760 MB to 7 GB with 50 WebSocket clients that never
//! read one 50 MB run. So every byte queued for a client is first [`reserved`](Client::reserve)
//! against two semaphores: the client's own ([`PER_CLIENT`]) and the server's
//! ([`SERVER_TOTAL`]). The reservation travels with the events and is dropped once they are
//! written to the socket; a follower that cannot reserve waits, and a per-run follower then
//! catches up from the file (the source of truth) instead of holding what it missed.
//!
//! Time bounds the rest: a socket that takes nothing for
//! [`WRITE_TIMEOUT`](super::WRITE_TIMEOUT) is closed, which drops its reservations.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most one client may have waiting for its socket.
pub const PER_CLIENT: usize = 512 * 1024;

/// The most all clients together may have waiting.
pub const SERVER_TOTAL: usize = 256 * 1024 * 1024;

/// The server's budget; [`Budget::client`] hands out a share per connection.
#[derive(Debug)]
pub struct Budget {
    total: Arc<Semaphore>,
    size: usize,
    per_client: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(SERVER_TOTAL, PER_CLIENT)
    }
}

impl Budget {
    pub fn new(total: usize, per_client: usize) -> Budget {
        Budget {
            total: Arc::new(Semaphore::new(total)),
            size: total,
            per_client: per_client.min(total),
        }
    }

    /// A new client's share.
    pub fn client(&self) -> Client {
        Client {
            own: Arc::new(Semaphore::new(self.per_client)),
            total: self.total.clone(),
            per_client: self.per_client,
        }
    }

    /// Waits until `bytes` more may be held for one answer that is built whole (a page of
    /// events, bounded by its own limits), out of the server's total only.
    pub async fn reserve(&self, bytes: usize) -> Reserved {
        let n = bytes.clamp(1, self.size) as u32;
        let total = self.total.clone().acquire_many_owned(n).await.ok();
        Reserved {
            _own: None,
            _total: total,
        }
    }

    /// Bytes reserved right now, by every client (for `/metrics`).
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.total.available_permits())
    }
}

/// One client's share of the [`Budget`].
#[derive(Debug, Clone)]
pub struct Client {
    own: Arc<Semaphore>,
    total: Arc<Semaphore>,
    per_client: usize,
}

impl Client {
    /// Waits until `bytes` may be queued for this client. Something larger than a client's
    /// whole share (one very long line) reserves the whole share: it still goes, alone.
    pub async fn reserve(&self, bytes: usize) -> Reserved {
        let n = bytes.clamp(1, self.per_client) as u32;
        // The client's own share first: a client over its share never holds any of the
        // server's while it waits. Neither semaphore is ever closed.
        let own = self.own.clone().acquire_many_owned(n).await.ok();
        let total = self.total.clone().acquire_many_owned(n).await.ok();
        Reserved {
            _own: own,
            _total: total,
        }
    }
}

/// Bytes reserved for a client; given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _own: Option<OwnedSemaphorePermit>,
    _total: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_client_waits_for_its_own_share_and_the_servers() {
        let budget = Budget::new(300, 200);
        let a = budget.client();
        let b = budget.client();
        let first = a.reserve(150).await;
        assert_eq!(budget.in_use(), 150);
        // Over a's share: waits until the first is given back.
        let wait = tokio::time::timeout(Duration::from_millis(50), a.reserve(100)).await;
        assert!(wait.is_err(), "a reserved past its own share");
        // b has its own share, but the server has only 150 left.
        let second = b.reserve(150).await;
        let wait = tokio::time::timeout(Duration::from_millis(50), b.reserve(10)).await;
        assert!(wait.is_err(), "b reserved past the server's total");
        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(50), a.reserve(100))
            .await
            .expect("a's share came back");
        assert_eq!(budget.in_use(), 250);
        drop((second, third));
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_line_larger_than_a_share_still_goes_alone() {
        let budget = Budget::new(1000, 100);
        let c = budget.client();
        let r = c.reserve(5000).await;
        assert_eq!(budget.in_use(), 100);
        drop(r);
        let _empty = c.reserve(0).await;
        assert_eq!(budget.in_use(), 1);
    }
}
