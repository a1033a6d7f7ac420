//! Rate-limited logging of refused requests and failed logins: an attacker
//! hammering the broker must not fill its log. At most [`LINES_PER_SECOND`]
//! lines a second are written; the next line written says how many were
//! left out. Nothing secret is logged: principals, operations, resources and
//! addresses only, never a password, a proof or a credential.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

/// Most refusal lines per second.
pub const LINES_PER_SECOND: u32 = 20;

/// The limiter shared by every connection of a broker.
#[derive(Debug)]
pub struct DenialLog {
    window: Mutex<(Instant, u32, u64)>,
}

impl Default for DenialLog {
    fn default() -> Self {
        Self { window: Mutex::new((Instant::now(), 0, 0)) }
    }
}

impl DenialLog {
    /// Whether a line may be written now, and how many were suppressed before it.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0, w.2);
        }
        if w.1 >= LINES_PER_SECOND {
            w.2 += 1;
            return None;
        }
        w.1 += 1;
        Some(std::mem::take(&mut w.2))
    }

    /// Logs a refused request.
    pub fn denied(&self, principal: &str, operation: &str, resource: &str, peer: std::net::SocketAddr) {
        if let Some(suppressed) = self.admit(Instant::now()) {
            warn!(%principal, %operation, %resource, %peer, suppressed, "request denied");
        }
    }

    /// Logs a failed authentication.
    pub fn login_failed(&self, user: &str, reason: &str, peer: std::net::SocketAddr) {
        if let Some(suppressed) = self.admit(Instant::now()) {
            warn!(%user, %reason, %peer, suppressed, "authentication failed");
        }
    }

    /// Logs a request only brokers may send, from a connection that is not
    /// the broker it claims to be (or no broker at all).
    pub fn not_a_broker(&self, principal: &str, request: &str, peer: std::net::SocketAddr) {
        if let Some(suppressed) = self.admit(Instant::now()) {
            warn!(%principal, %request, %peer, suppressed, "inter-broker request refused: CLUSTER_AUTHORIZATION_FAILED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_bounded_number_per_second_and_counts_the_rest() {
        let log = DenialLog::default();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(log.admit(t0), Some(0));
        }
        assert_eq!(log.admit(t0), None);
        assert_eq!(log.admit(t0), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(2));
    }
}
