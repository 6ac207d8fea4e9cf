//! Whether the upstream cluster can be reached: what `/readyz` reports, so that a load balancer
//! stops sending clients to a gateway that cannot reach Kafka.
//!
//! Three sources of evidence, each able to turn readiness off, only the first two able to turn
//! it back on:
//! - the gateway's own Metadata refresh (every `metadata_refresh_secs`, every second while
//!   failing), which also keeps broker ports served;
//! - a connect probe to the bootstrap addresses every [`PROBE_EVERY`], whatever the refresh
//!   interval, so that an unreachable cluster turns `/readyz` to 503 within about
//!   `PROBE_EVERY + upstream_connect_timeout` (capped at [`PROBE_TIMEOUT`]);
//! - a client connection on the bootstrap port that could reach none of the bootstrap addresses,
//!   which turns it off at once. (A connection to one broker's port that fails is not evidence:
//!   one broker down is normal in a cluster.)
//!
//! While it is off, the refresh runs every second, so readiness returns within about a second of
//! the cluster answering again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How often the bootstrap addresses are probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// The longest a probe waits for a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Health {
    up: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The last reason the upstream was found unreachable.
    pub fn reason(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The upstream answered; returns whether that is news.
    pub fn mark_up(&self) -> bool {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = None;
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// The upstream did not answer; returns whether that is news.
    pub fn mark_down(&self, why: String) -> bool {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.up.swap(false, Ordering::Relaxed)
    }

    /// A client connection on the bootstrap port reached none of the bootstrap addresses.
    pub fn data_path_failed(&self, why: &str) {
        if self.mark_down(format!("a client connection could not reach it: {why}")) {
            tracing::warn!(error = %why, "upstream unreachable (data path)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_latest_evidence() {
        let h = Health::default();
        assert!(!h.is_up(), "not ready before the upstream was reached");
        assert!(h.mark_up());
        assert!(!h.mark_up(), "not news twice");
        h.data_path_failed("connection refused");
        assert!(!h.is_up());
        assert!(h.reason().unwrap().contains("connection refused"));
        assert!(h.mark_up());
        assert_eq!(h.reason(), None);
    }
}
