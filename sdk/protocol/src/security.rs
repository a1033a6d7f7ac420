//! Security requests (API keys 46 and 50-56): authentication of a
//! connection, users and their SCRAM credentials, access-control rules, and
//! the envelope in which a broker forwards a client's request to the
//! controller on the client's behalf.
//!
//! # Principals
//!
//! A principal is written `Type:name`:
//!
//! * `User:alice`: authenticated with SCRAM-SHA-256 (a password), or with a
//!   client certificate issued by the cluster CA (`eddy ca issue-client`).
//! * `Broker:2`: a broker, proven by its certificate (mutual TLS between
//!   brokers). Brokers may do anything.
//! * `Processor:name`: a processor worker's connection after it assumed the
//!   processor's identity ([`AuthenticateRequest::act_as_processor`]); its
//!   rights come from the deployment (its inputs, output, dead-letter and logs
//!   topics, its group and state), never from rules.
//!
//! # Authentication (key 50)
//!
//! The first request of a connection without a client certificate must be an
//! [`AuthenticateRequest`]; anything else waits until the exchange finishes
//! and is then served as the authenticated principal, or refused with
//! AUTHENTICATION_FAILED. With mechanism `SCRAM-SHA-256` the exchange is two
//! requests on one stream (client-first, then client-final; RFC 5802); the
//! client may open other streams right after sending client-final, so
//! authentication costs one round trip. With mechanism `TLS` (a connection
//! that presented a client certificate) one request only sets
//! `act_as_processor`.

use bytes::Bytes;

use crate::codec::{DecodeError, Decoder, Encoder, Wire};
use crate::frame::ApiKey;
use crate::messages::{Empty, Request};
use crate::wire_struct;

/// The SCRAM mechanism name.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The mechanism of a connection authenticated by its client certificate.
pub const TLS_MECHANISM: &str = "TLS";
/// The resource name of the cluster resource in rules.
pub const CLUSTER_RESOURCE: &str = "eddy";
/// Longest user name, in bytes (`[A-Za-z0-9._@-]`).
pub const MAX_USER_NAME_BYTES: usize = 128;

wire_struct! {
    /// One step of a connection's authentication.
    pub struct AuthenticateRequest {
        /// `SCRAM-SHA-256` or `TLS`.
        pub mechanism: String,
        /// The mechanism's message (SCRAM: client-first, then client-final).
        pub payload: Bytes,
        /// A processor worker names the processor this connection works for:
        /// the connection then runs as `Processor:<name>`, provided the
        /// authenticated principal may run it (a broker, or read and write on
        /// the processor). Taken from the exchange's last step.
        pub act_as_processor: Option<String>,
    }
}

wire_struct! {
    /// The broker's answer to one step.
    pub struct AuthenticateResponse {
        /// The mechanism's message (SCRAM: server-first, then server-final).
        pub payload: Bytes,
        /// Once the exchange is complete: the principal the connection runs as
        /// (`User:alice`); empty while it continues.
        pub principal: String,
    }
}

impl Request for AuthenticateRequest {
    const KEY: ApiKey = ApiKey::Authenticate;
    type Response = AuthenticateResponse;
}

wire_struct! {
    /// Creates a user, or replaces its credential (`replace`). The client
    /// derives the credential (salt, iterations, stored key, server key) from
    /// the password itself: the password never crosses the wire.
    pub struct CreateUserRequest {
        pub name: String,
        /// `ScramCredential::to_bytes` of the new credential.
        pub credential: Bytes,
        /// Replace an existing user's credential (`eddy user passwd`) instead
        /// of refusing with USER_ALREADY_EXISTS.
        pub replace: bool,
    }
}

impl Request for CreateUserRequest {
    const KEY: ApiKey = ApiKey::CreateUser;
    type Response = Empty;
}

wire_struct! {
    /// Deletes a user (its rules stay until removed).
    pub struct DeleteUserRequest {
        pub name: String,
    }
}

impl Request for DeleteUserRequest {
    const KEY: ApiKey = ApiKey::DeleteUser;
    type Response = Empty;
}

wire_struct! {
    /// Lists the users.
    pub struct ListUsersRequest {}
}

wire_struct! {
    /// One user as listed: never its credential.
    pub struct UserInfo {
        pub name: String,
        pub mechanism: String,
        pub iterations: u32,
    }
}

wire_struct! {
    /// Every user, by name.
    pub struct ListUsersResponse {
        pub users: Vec<UserInfo>,
    }
}

impl Request for ListUsersRequest {
    const KEY: ApiKey = ApiKey::ListUsers;
    type Response = ListUsersResponse;
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* pub enum $name:ident ($what:literal) { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vmeta])* $variant = $value,)* }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The lower-case name used by the CLI and in logs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// Parses [`Self::as_str`]'s names (case-insensitive).
            pub fn parse(s: &str) -> Option<Self> {
                let s = s.to_ascii_lowercase();
                match s.as_str() { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Wire for $name {
            fn encode(&self, enc: &mut Encoder) {
                enc.put(&(*self as u8));
            }
            fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
                match u8::decode(dec)? {
                    $($value => Ok($name::$variant),)*
                    v => Err(DecodeError::InvalidValue { what: $what, value: v.into() }),
                }
            }
        }
    };
}

wire_enum! {
    /// What a rule is about.
    pub enum ResourceType ("resource type") {
        Topic = 0 => "topic",
        Group = 1 => "group",
        Processor = 2 => "processor",
        /// The cluster itself (name [`CLUSTER_RESOURCE`]): users, rules.
        Cluster = 3 => "cluster",
    }
}

wire_enum! {
    /// How a rule's name matches a resource's name.
    pub enum PatternType ("pattern type") {
        /// Equal names; `*` matches every name.
        Literal = 0 => "literal",
        /// Names starting with the rule's name.
        Prefix = 1 => "prefix",
    }
}

wire_enum! {
    /// What a principal does to a resource.
    pub enum Operation ("operation") {
        Read = 0 => "read",
        Write = 1 => "write",
        Create = 2 => "create",
        Delete = 3 => "delete",
        Alter = 4 => "alter",
        /// Seeing that the resource exists and its configuration. Implied by
        /// read, write, delete and alter (Kafka's rule).
        Describe = 5 => "describe",
        /// Every operation.
        All = 6 => "all",
    }
}

wire_enum! {
    /// Whether a rule allows or denies. Deny wins.
    pub enum Permission ("permission") {
        Allow = 0 => "allow",
        Deny = 1 => "deny",
    }
}

wire_struct! {
    /// One access-control rule (Kafka's model): `principal` (`User:alice`, or
    /// `*` for everyone authenticated) may (or may not) do `operation` on the
    /// resources of `resource_type` whose name matches `name` by `pattern`.
    pub struct AclRule {
        pub principal: String,
        pub resource_type: ResourceType,
        pub name: String,
        pub pattern: PatternType,
        pub operation: Operation,
        pub permission: Permission,
    }
}

impl Eq for AclRule {}

impl AclRule {
    fn key(&self) -> (&str, ResourceType, &str, PatternType, Operation, Permission) {
        (&self.principal, self.resource_type, &self.name, self.pattern, self.operation, self.permission)
    }
}

impl Ord for AclRule {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for AclRule {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for AclRule {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::fmt::Display for AclRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pattern = match self.pattern {
            PatternType::Literal => "",
            PatternType::Prefix => "*",
        };
        write!(
            f,
            "{} {} {} on {} {}{}",
            self.principal, self.permission, self.operation, self.resource_type, self.name, pattern
        )
    }
}

wire_struct! {
    /// Adds rules (rules already present are kept once).
    pub struct CreateAclsRequest {
        pub rules: Vec<AclRule>,
    }
}

impl Request for CreateAclsRequest {
    const KEY: ApiKey = ApiKey::CreateAcls;
    type Response = Empty;
}

wire_struct! {
    /// Removes the rules equal to these.
    pub struct DeleteAclsRequest {
        pub rules: Vec<AclRule>,
    }
}

wire_struct! {
    /// How many of the named rules existed and were removed.
    pub struct DeleteAclsResponse {
        pub deleted: u32,
    }
}

impl Request for DeleteAclsRequest {
    const KEY: ApiKey = ApiKey::DeleteAcls;
    type Response = DeleteAclsResponse;
}

wire_struct! {
    /// Lists rules, optionally only those of one principal.
    pub struct ListAclsRequest {
        pub principal: Option<String>,
    }
}

wire_struct! {
    /// The rules, in a stable order.
    pub struct ListAclsResponse {
        pub rules: Vec<AclRule>,
    }
}

impl Request for ListAclsRequest {
    const KEY: ApiKey = ApiKey::ListAcls;
    type Response = ListAclsResponse;
}

wire_struct! {
    /// A client's request frame (length prefix included), forwarded by a
    /// broker to the controller, to be served as `principal`. Brokers only.
    /// The answer is the inner request's own response frame.
    pub struct ForwardRequest {
        pub principal: String,
        pub frame: Bytes,
    }
}

/// Checks a user name: 1 to [`MAX_USER_NAME_BYTES`] bytes of
/// `[A-Za-z0-9._@-]`.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if name.len() > MAX_USER_NAME_BYTES {
        return Err(format!("user name is {} bytes long; the limit is {MAX_USER_NAME_BYTES}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))) {
        return Err(format!("character {c:?} is not allowed in a user name (letters, digits, '.', '_', '-', '@')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{from_bytes, to_bytes};

    #[test]
    fn rules_round_trip_and_print() {
        let rule = AclRule {
            principal: "User:alice".into(),
            resource_type: ResourceType::Topic,
            name: "orders.".into(),
            pattern: PatternType::Prefix,
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        assert_eq!(from_bytes::<AclRule>(to_bytes(&rule)).unwrap(), rule);
        assert_eq!(rule.to_string(), "User:alice allow write on topic orders.*");
        assert_eq!(Operation::parse("DESCRIBE"), Some(Operation::Describe));
        assert_eq!(ResourceType::parse("nope"), None);
    }

    #[test]
    fn bad_enum_bytes_are_refused() {
        let mut enc = Encoder::default();
        enc.put(&"*".to_string()).put(&9u8);
        assert!(from_bytes::<AclRule>(enc.finish().freeze()).is_err());
    }

    #[test]
    fn user_names_are_checked() {
        assert!(validate_user_name("alice.b@example-1").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a,b").is_err());
        assert!(validate_user_name(&"x".repeat(129)).is_err());
    }
}
