//! Connection-level counters for benchmarks: how many TCP connections and TLS handshakes a
//! client cost the server, how many HTTP requests it sent, and the peaks of open connections
//! and sessions. The per-route `calls` counters cannot tell one connection per call from one
//! connection for all calls; these can.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

#[derive(Default)]
pub(crate) struct Traffic {
    tcp_accepted: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    http_requests: AtomicU64,
    connections_open: AtomicU64,
    peak_connections: AtomicU64,
    peak_sessions: AtomicU64,
}

/// Held for as long as an accepted connection lives; counts it open until dropped.
pub(crate) struct OpenConnection<'a>(&'a Traffic);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Traffic {
    pub(crate) fn accepted(&self) -> OpenConnection<'_> {
        self.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        let open = self.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connections.fetch_max(open, Ordering::Relaxed);
        OpenConnection(self)
    }

    pub(crate) fn handshake(&self, resumed: bool) {
        self.tls_handshakes.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.tls_resumed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An HTTP request to the API prefix (operator endpoints are not counted).
    pub(crate) fn request(&self) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Called with the number of sessions held right after one was created.
    pub(crate) fn sessions(&self, open: usize) {
        self.peak_sessions.fetch_max(open as u64, Ordering::Relaxed);
    }

    pub(crate) fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "tcp_accepted": get(&self.tcp_accepted),
            "tls_handshakes": get(&self.tls_handshakes),
            "tls_resumed": get(&self.tls_resumed),
            "http_requests": get(&self.http_requests),
            "connections_open": get(&self.connections_open),
            "peak_connections": get(&self.peak_connections),
            "peak_sessions": get(&self.peak_sessions),
        })
    }
}
