//! Who is calling, and the one place handlers ask whether they may.
//!
//! Every handler receives the [`Caller`] (the connection's authenticated
//! principal and address) and calls [`Handlers::check`] before it acts; a
//! refusal is AUTHORIZATION_FAILED naming the operation and the resource,
//! and is logged (rate-limited) with the principal and the peer address.

use std::net::SocketAddr;
use std::sync::Arc;

use eddy_protocol::security::{Operation, ResourceType};
use eddy_protocol::ErrorCode;

use super::{Failure, Handlers};
use crate::auth::authorizer::{logs_topic_owner, Resource};
use crate::auth::Principal;

/// The authenticated sender of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is.
    pub principal: Arc<Principal>,
    /// Where the connection comes from (for a forwarded request: the
    /// forwarding broker).
    pub remote: SocketAddr,
}

impl Handlers {
    /// Whether `caller` may do `op` on `resource` (no logging).
    pub(crate) fn may(&self, caller: &Caller, op: Operation, resource: Resource<'_>) -> bool {
        if self.auth.skip_authorization || self.auth.authorizer.is_super(&caller.principal) {
            return true;
        }
        let security = self.store.security();
        // The one processor the decision can depend on, looked up once.
        let looked_up = match &*caller.principal {
            Principal::Processor(name) => self.store.processor(name).ok(),
            Principal::User(_) if resource.kind == ResourceType::Topic => {
                logs_topic_owner(resource.name).and_then(|p| self.store.processor(p).ok())
            }
            _ => None,
        };
        let lookup = |name: &str| looked_up.as_ref().filter(|d| d.name == name);
        self.auth.authorizer.allows(&caller.principal, op, resource, &security, lookup)
    }

    /// [`Handlers::may`], or AUTHORIZATION_FAILED (logged).
    pub(crate) fn check(&self, caller: &Caller, op: Operation, resource: Resource<'_>) -> Result<(), Failure> {
        if self.may(caller, op, resource) {
            return Ok(());
        }
        self.auth.denials.denied(&caller.principal.to_string(), op.as_str(), &resource.to_string(), caller.remote);
        Err(Failure::new(
            ErrorCode::AuthorizationFailed,
            format!("{} may not {op} {resource}; ask an administrator for a rule (`eddy acl add`)", caller.principal),
        ))
    }

    /// Fails unless `caller` may `op` at least one resource of `kind`.
    pub(crate) fn check_any(&self, caller: &Caller, op: Operation, kind: ResourceType) -> Result<(), Failure> {
        if self.auth.authorizer.allows_any(&caller.principal, op, kind, &self.store.security()) {
            return Ok(());
        }
        self.auth.denials.denied(&caller.principal.to_string(), op.as_str(), &format!("any {kind}"), caller.remote);
        Err(Failure::new(ErrorCode::AuthorizationFailed, format!("{} may not {op} any {kind}", caller.principal)))
    }
}
