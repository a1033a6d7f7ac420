//! The security requests: a connection's authentication (key 50), users
//! (51-53) and access rules (54-56). Users and rules are commands of the
//! metadata log, so every broker authenticates and authorizes alike.
//!
//! Managing users and rules needs `alter` on the cluster; listing them
//! needs `describe` on the cluster. Passwords never reach the broker: a
//! client sends the SCRAM credential derived from it.

use bytes::Bytes;
use eddy_protocol::codec::{from_bytes, to_bytes};
use eddy_protocol::messages::Empty;
use eddy_protocol::scram::{ScramCredential, ScramServer};
use eddy_protocol::security::*;
use eddy_protocol::ErrorCode;

use super::access::Caller;
use super::{Failure, Handlers};
use crate::auth::authorizer::{Authorizer, Resource};
use crate::auth::denials::DenialLog;
use crate::auth::session::{AuthState, PendingScram};
use crate::auth::{Principal, Session};
use crate::store::MetaCommand;

/// What the handlers need to authenticate and authorize.
pub struct AuthContext {
    /// The decision and the superusers.
    pub authorizer: Authorizer,
    /// Rate-limited refusal log.
    pub denials: DenialLog,
    /// Keys the fake salts answered for unknown users (stable per broker).
    pub fake_salt_key: Vec<u8>,
    /// Benchmarks only: every authenticated principal may do anything (the
    /// cost of authorization is measured against this).
    pub skip_authorization: bool,
}

/// Longest a broker that is catching up waits before answering for a user it does not know.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn auth_failed(message: impl Into<String>) -> Failure {
    Failure::new(ErrorCode::AuthenticationFailed, message)
}

impl Handlers {
    /// One step of a connection's authentication.
    pub(super) async fn authenticate(
        &self,
        payload: Bytes,
        session: &Session,
    ) -> Result<AuthenticateResponse, Failure> {
        let req: AuthenticateRequest = from_bytes(payload)?;
        match req.mechanism.as_str() {
            TLS_MECHANISM => {
                let AuthState::Authenticated(principal) = session.state() else {
                    return Err(auth_failed("mechanism TLS needs a client certificate of the cluster CA"));
                };
                let principal = self.act_as((*principal).clone(), req.act_as_processor, session)?;
                let answer = AuthenticateResponse { payload: Bytes::new(), principal: principal.to_string() };
                session.authenticated(principal);
                Ok(answer)
            }
            SCRAM_SHA_256 => self.scram_step(req, session).await,
            other => Err(auth_failed(format!("unsupported mechanism {other:?}; use {SCRAM_SHA_256}"))),
        }
    }

    /// A broker that has not caught up with the metadata log (just started,
    /// or resumed) may not know a user yet: it waits (at most
    /// [`CATCH_UP_WAIT`]) before it answers for an unknown user.
    async fn credential_of(&self, user: &str) -> Option<ScramCredential> {
        let lookup = || self.store.security().users.get(user).and_then(|bytes| ScramCredential::from_bytes(bytes).ok());
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        loop {
            let found = lookup();
            if found.is_some() || self.cluster.is_ready() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn scram_step(&self, req: AuthenticateRequest, session: &Session) -> Result<AuthenticateResponse, Failure> {
        let Ok(message) = std::str::from_utf8(&req.payload) else {
            session.failed("authentication failed: the SCRAM message is not UTF-8");
            return Err(auth_failed("the SCRAM message is not UTF-8"));
        };
        match session.take_scram() {
            None => {
                if session.state() != AuthState::Pending {
                    return Err(auth_failed("this connection has authenticated already"));
                }
                let step = ScramServer::handle_client_first(message).map_err(|e| {
                    self.auth.denials.login_failed("?", &e.to_string(), session.remote());
                    session.failed("authentication failed");
                    auth_failed(format!("bad SCRAM client-first message: {e}"))
                })?;
                let credential = self.credential_of(step.user()).await;
                let (waiting, server_first) = step.server_first(credential.as_ref(), &self.auth.fake_salt_key);
                if !session.begin_scram(PendingScram { waiting }) {
                    return Err(auth_failed("an authentication exchange is under way on this connection"));
                }
                Ok(AuthenticateResponse { payload: Bytes::from(server_first), principal: String::new() })
            }
            Some(pending) => match pending.waiting.handle_client_final(message) {
                Ok((user, server_final)) => {
                    let principal = self.act_as(Principal::User(user), req.act_as_processor, session)?;
                    let answer =
                        AuthenticateResponse { payload: Bytes::from(server_final), principal: principal.to_string() };
                    session.authenticated(principal);
                    Ok(answer)
                }
                Err(e) => {
                    self.auth.denials.login_failed("(see client-first)", &e.to_string(), session.remote());
                    session.failed("authentication failed: unknown user or wrong password");
                    Err(auth_failed("authentication failed: unknown user or wrong password"))
                }
            },
        }
    }

    /// The principal a connection runs as: `principal` itself, or the
    /// processor it asks to act as, if `principal` may run that processor
    /// (a broker, or `read` and `write` on the processor).
    fn act_as(&self, principal: Principal, processor: Option<String>, session: &Session) -> Result<Principal, Failure> {
        let Some(name) = processor else { return Ok(principal) };
        let caller = Caller { principal: std::sync::Arc::new(principal), remote: session.remote() };
        let refused = |f: Failure| {
            session.failed(f.body.message.clone());
            f
        };
        self.store.processor(&name).map_err(|e| refused(Failure::from(e)))?;
        self.check(&caller, Operation::Read, Resource::processor(&name)).map_err(refused)?;
        self.check(&caller, Operation::Write, Resource::processor(&name)).map_err(refused)?;
        Ok(Principal::Processor(name))
    }

    pub(super) async fn create_user(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: CreateUserRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::cluster())?;
        validate_user_name(&req.name).map_err(|m| Failure::new(ErrorCode::InvalidRequest, m))?;
        ScramCredential::from_bytes(&req.credential)
            .map_err(|e| Failure::new(ErrorCode::InvalidRequest, format!("unusable credential: {e}")))?;
        let command =
            MetaCommand::CreateUser { name: req.name, credential: req.credential.to_vec(), replace: req.replace };
        self.cluster.propose_everywhere(command).await?.into_done()?;
        Ok(Empty)
    }

    pub(super) async fn delete_user(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: DeleteUserRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::cluster())?;
        self.cluster.propose_everywhere(MetaCommand::DeleteUser { name: req.name }).await?.into_done()?;
        Ok(Empty)
    }

    pub(super) fn list_users(&self, payload: Bytes, caller: &Caller) -> Result<ListUsersResponse, Failure> {
        let _: ListUsersRequest = from_bytes(payload)?;
        self.check(caller, Operation::Describe, Resource::cluster())?;
        let users = self
            .store
            .security()
            .users
            .iter()
            .map(|(name, credential)| UserInfo {
                name: name.clone(),
                mechanism: SCRAM_SHA_256.into(),
                iterations: ScramCredential::from_bytes(credential).map_or(0, |c| c.iterations),
            })
            .collect();
        Ok(ListUsersResponse { users })
    }

    pub(super) async fn create_acls(&self, payload: Bytes, caller: &Caller) -> Result<Empty, Failure> {
        let req: CreateAclsRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::cluster())?;
        self.cluster.propose_everywhere(MetaCommand::CreateAcls { rules: to_bytes(&req.rules) }).await?.into_done()?;
        Ok(Empty)
    }

    pub(super) async fn delete_acls(&self, payload: Bytes, caller: &Caller) -> Result<DeleteAclsResponse, Failure> {
        let req: DeleteAclsRequest = from_bytes(payload)?;
        self.check(caller, Operation::Alter, Resource::cluster())?;
        let deleted = self
            .cluster
            .propose_everywhere(MetaCommand::DeleteAcls { rules: to_bytes(&req.rules) })
            .await?
            .into_count()?;
        Ok(DeleteAclsResponse { deleted })
    }

    pub(super) fn list_acls(&self, payload: Bytes, caller: &Caller) -> Result<ListAclsResponse, Failure> {
        let req: ListAclsRequest = from_bytes(payload)?;
        self.check(caller, Operation::Describe, Resource::cluster())?;
        let rules = self
            .store
            .security()
            .acls
            .iter()
            .filter(|r| req.principal.as_ref().is_none_or(|p| *p == r.principal))
            .cloned()
            .collect();
        Ok(ListAclsResponse { rules })
    }

    /// The broker id a request that only brokers may send came from:
    /// CLUSTER_AUTHORIZATION_FAILED (logged) unless the connection proved a
    /// broker identity and `claimed` (if any) is that broker.
    pub(super) fn inter_broker(
        &self,
        caller: &Caller,
        request: eddy_protocol::ApiKey,
        claimed: Option<u32>,
    ) -> Result<u32, Failure> {
        let proven = caller.principal.broker_id();
        match (proven, claimed) {
            (Some(id), None) => Ok(id),
            (Some(id), Some(c)) if c == id => Ok(id),
            (Some(id), Some(c)) => {
                self.auth.denials.not_a_broker(&caller.principal.to_string(), &format!("{request:?}"), caller.remote);
                Err(Failure::new(
                    ErrorCode::ClusterAuthorizationFailed,
                    format!("{request:?} names broker {c}, but this connection proved broker {id}"),
                ))
            }
            (None, _) => {
                self.auth.denials.not_a_broker(&caller.principal.to_string(), &format!("{request:?}"), caller.remote);
                Err(Failure::new(
                    ErrorCode::ClusterAuthorizationFailed,
                    format!("{request:?} is served to brokers only, and {} is not one", caller.principal),
                ))
            }
        }
    }
}
