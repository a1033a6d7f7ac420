//! Who sent a request, and whether they may do what it asks.
//!
//! * [`Principal`]: the identity a connection proved: a broker (its
//!   certificate), a user (a SCRAM password exchange, or a client
//!   certificate), or a processor (a worker that assumed it).
//! * [`identity`]: reading the identity out of a peer's certificate.
//! * [`authorizer`]: the decision, a pure function of the principal, the
//!   operation, the resource, the committed rules and the superusers.
//! * [`session`]: one connection's authentication state machine (SCRAM
//!   server side), which every request of the connection waits on.
//! * [`bootstrap`]: the first superuser of a new cluster.
//! * [`denials`]: rate-limited logging of refusals.
//!
//! Where checks sit: the server authenticates every connection before any
//! request other than Authenticate is dispatched (`server/mod.rs`); the
//! handlers check every request against the authorizer before they act
//! (`server/handlers/`); requests only brokers may send (keys 40-46) are
//! served only to a `Broker` principal whose id matches every broker id the
//! request names.

pub mod authorizer;
pub mod bootstrap;
pub mod denials;
pub mod identity;
pub mod session;

use std::fmt;

pub use authorizer::Authorizer;
pub use session::Session;

/// The identity a connection runs as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// A broker of the cluster, proven by a certificate carrying
    /// `eddy:broker:<id>` issued by the cluster CA.
    Broker(u32),
    /// A user: a SCRAM-authenticated name, or a client certificate carrying
    /// `eddy:user:<name>`.
    User(String),
    /// A processor's worker connection; rights come from the deployment.
    Processor(String),
}

impl Principal {
    /// Parses [`Principal`]'s display form (`Broker:1`, `User:alice`, `Processor:p`).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, name) = s.split_once(':')?;
        match kind {
            "Broker" => name.parse().ok().filter(|id| *id != 0).map(Principal::Broker),
            "User" if !name.is_empty() => Some(Principal::User(name.to_string())),
            "Processor" if !name.is_empty() => Some(Principal::Processor(name.to_string())),
            _ => None,
        }
    }

    /// The broker id, for a broker.
    pub fn broker_id(&self) -> Option<u32> {
        match self {
            Principal::Broker(id) => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Broker(id) => write!(f, "Broker:{id}"),
            Principal::User(name) => write!(f, "User:{name}"),
            Principal::Processor(name) => write!(f, "Processor:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_round_trip_their_display_form() {
        for p in [Principal::Broker(3), Principal::User("alice".into()), Principal::Processor("upper".into())] {
            assert_eq!(Principal::parse(&p.to_string()), Some(p));
        }
        for bad in ["Broker:0", "Broker:x", "User:", "Admin:x", "alice"] {
            assert_eq!(Principal::parse(bad), None, "{bad}");
        }
    }
}
