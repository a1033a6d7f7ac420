//! One connection's authentication state.
//!
//! A connection that presented a client certificate of the cluster CA with an
//! Eddy identity starts authenticated as that principal. Any other starts
//! pending: its first request must be an Authenticate exchange (SCRAM). A
//! request that arrives before any exchange began is refused at once; once
//! one began, every other request waits (at most [`AUTH_TIMEOUT`] from the
//! connection's start) until it ends, so a client may pipeline its first
//! request behind the exchange's last step. A failed exchange fails the
//! connection for good: every waiting and later request is refused with
//! AUTHENTICATION_FAILED and the server closes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_protocol::scram::ScramServerWaiting;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Principal;

/// How long a connection may take to authenticate before it is closed.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a connection's authentication stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// No exchange finished yet.
    Pending,
    /// Every request runs as this principal.
    Authenticated(Arc<Principal>),
    /// The exchange failed (the message says why, for the client).
    Failed(String),
}

/// A SCRAM exchange between its two steps.
pub struct PendingScram {
    /// The server's state after sending server-first.
    pub waiting: ScramServerWaiting,
}

/// The authentication state of one connection.
pub struct Session {
    remote: SocketAddr,
    deadline: Instant,
    state: watch::Sender<AuthState>,
    scram: Mutex<Option<PendingScram>>,
    /// An exchange began (set before its first answer leaves, never cleared).
    exchanging: AtomicBool,
}

impl Session {
    /// A session for a connection from `remote` that proved `certificate`
    /// (if any) during the TLS handshake.
    pub fn new(remote: SocketAddr, certificate: Option<Principal>) -> Self {
        Self::with_timeout(remote, certificate, AUTH_TIMEOUT)
    }

    /// [`Session::new`] with another authentication timeout.
    pub fn with_timeout(remote: SocketAddr, certificate: Option<Principal>, timeout: Duration) -> Self {
        let state = match certificate {
            Some(p) => AuthState::Authenticated(Arc::new(p)),
            None => AuthState::Pending,
        };
        Self {
            remote,
            deadline: Instant::now() + timeout,
            state: watch::Sender::new(state),
            scram: Mutex::new(None),
            exchanging: AtomicBool::new(false),
        }
    }

    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The state now.
    pub fn state(&self) -> AuthState {
        self.state.borrow().clone()
    }

    /// A receiver of state changes (the connection task closes failed and
    /// timed-out connections).
    pub fn subscribe(&self) -> watch::Receiver<AuthState> {
        self.state.subscribe()
    }

    /// When the connection must have authenticated.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits until the connection is authenticated (or failed, or past its
    /// deadline): the principal, or why there is none.
    pub async fn principal(&self) -> Result<Arc<Principal>, String> {
        if let AuthState::Authenticated(p) = &*self.state.borrow() {
            return Ok(p.clone());
        }
        if *self.state.borrow() == AuthState::Pending && !self.exchanging.load(Ordering::Acquire) {
            return Err("this connection has not authenticated: send an Authenticate request (SCRAM-SHA-256) first, \
                        or connect with a client certificate of the cluster CA"
                .into());
        }
        let mut rx = self.state.subscribe();
        let settled = tokio::time::timeout_at(self.deadline(), rx.wait_for(|s| *s != AuthState::Pending)).await;
        match settled {
            Ok(Ok(state)) => match &*state {
                AuthState::Authenticated(p) => Ok(p.clone()),
                AuthState::Failed(why) => Err(why.clone()),
                AuthState::Pending => unreachable!("waited for a settled state"),
            },
            Ok(Err(_)) => Err("the connection is closing".into()),
            Err(_) => Err("the connection did not finish authenticating in time".into()),
        }
    }

    /// Keeps a SCRAM exchange between its steps. Refused (false) when the
    /// connection is not pending or an exchange is under way already.
    pub fn begin_scram(&self, pending: PendingScram) -> bool {
        if *self.state.borrow() != AuthState::Pending {
            return false;
        }
        let mut slot = self.scram.lock().expect("session lock poisoned");
        if slot.is_some() {
            return false;
        }
        *slot = Some(pending);
        self.exchanging.store(true, Ordering::Release);
        true
    }

    /// Takes the exchange under way, if any.
    pub fn take_scram(&self) -> Option<PendingScram> {
        self.scram.lock().expect("session lock poisoned").take()
    }

    /// Ends authentication successfully: every request runs as `principal`.
    pub fn authenticated(&self, principal: Principal) {
        debug_assert!(!matches!(*self.state.borrow(), AuthState::Failed(_)), "a failed session never recovers");
        self.state.send_replace(AuthState::Authenticated(Arc::new(principal)));
    }

    /// Ends authentication with a failure; the session never recovers.
    pub fn failed(&self, why: impl Into<String>) {
        self.scram.lock().expect("session lock poisoned").take();
        self.state.send_replace(AuthState::Failed(why.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn a_certificate_authenticates_at_once() {
        let s = Session::new(addr(), Some(Principal::Broker(2)));
        assert_eq!(*s.principal().await.unwrap(), Principal::Broker(2));
    }

    #[tokio::test]
    async fn a_request_before_any_exchange_is_refused_at_once() {
        let s = Session::new(addr(), None);
        assert!(s.principal().await.unwrap_err().contains("not authenticated"));
    }

    fn begin(s: &Session) {
        let step = eddy_protocol::scram::ScramServer::handle_client_first("n,,n=a,r=abc").unwrap();
        let (waiting, _) = step.server_first(None, b"k");
        assert!(s.begin_scram(PendingScram { waiting }));
    }

    #[tokio::test]
    async fn waiting_requests_go_on_when_the_exchange_ends() {
        let s = Arc::new(Session::new(addr(), None));
        begin(&s);
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.principal().await }
        });
        tokio::task::yield_now().await;
        s.authenticated(Principal::User("alice".into()));
        assert_eq!(*waiter.await.unwrap().unwrap(), Principal::User("alice".into()));
    }

    #[tokio::test]
    async fn a_failure_refuses_every_request() {
        let s = Session::new(addr(), None);
        s.failed("wrong password");
        assert_eq!(s.principal().await.unwrap_err(), "wrong password");
    }

    #[tokio::test]
    async fn an_unfinished_exchange_times_out() {
        let s = Session::with_timeout(addr(), None, Duration::from_millis(50));
        begin(&s);
        let err = s.principal().await.unwrap_err();
        assert!(err.contains("did not finish authenticating"), "{err}");
    }
}
