//! SCRAM-SHA-256 authentication (RFC 5802, RFC 7677): client and server state machines.
//!
//! Sans-IO: every step takes the peer's message as a `&str` and returns the next message
//! to send as a `String`; the caller carries them over whatever transport it uses.
//! The exchange has four messages:
//!
//! ```text
//! client                                                   server
//! ScramClient::start ── client-first  "n,,n=user,r=cnonce" ──▶ ScramServer::handle_client_first
//!                                                              (server looks up the user)
//!                    ◀── server-first "r=cnonce+snonce,s=salt,i=iterations" ── server_first
//! handle_server_first ── client-final "c=biws,r=cnonce+snonce,p=proof" ──▶ handle_client_final
//! handle_server_final ◀── server-final "v=signature" (or "e=error") ──
//! ```
//!
//! Each state is consumed by its step, so a step cannot be run twice on the same exchange.
//! The server stores a [`ScramCredential`] per user (salt, iteration count, stored key and
//! server key), never the password. The client proves it knows the password without
//! sending it; the server proves it knows the credential with its final signature.
//!
//! Scope and deliberate restrictions:
//! * No channel binding: the gs2 header is always `n,,` and the channel-binding attribute
//!   is `c=biws`. A client asking for binding (`p=...`) or claiming support for it (`y`)
//!   is refused, as is an authorization identity (`a=...`) and a mandatory extension (`m=...`).
//!   Optional extensions (`x=value` with a letter SCRAM does not define) are ignored.
//! * Full SASLprep (RFC 4013) is not applied. User names must be visible ASCII
//!   (`!` to `~`, at most [`MAX_USER_BYTES`] bytes), which SASLprep leaves unchanged;
//!   `,` and `=` travel escaped as `=2C` and `=3D`. Passwords are used as their UTF-8
//!   bytes as they are: identical to SASLprep for printable ASCII passwords.
//! * An unknown user gets a fake but stable salt, so a client cannot tell an unknown
//!   user from a wrong password: both fail at the proof with [`ScramError::InvalidProof`].
//! * Every message is checked against [`MAX_MESSAGE_BYTES`] before it is parsed, and no
//!   input makes any step panic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default PBKDF2 iteration count for new credentials (RFC 7677 recommends at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Lowest iteration count a server accepts for a stored credential and a client accepts
/// from a server.
pub const MIN_ITERATIONS: u32 = 4096;

/// Highest iteration count a server accepts for a stored credential and a client accepts
/// from a server: a hostile server could otherwise ask a client for 2^32 iterations.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Longest SCRAM message accepted, in bytes; checked before any parsing.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Longest user name, in bytes, after `=2C`/`=3D` unescaping.
pub const MAX_USER_BYTES: usize = 256;

/// Length of the salt of new credentials and of the fake salt sent for unknown users.
const SALT_BYTES: usize = 16;

/// Longest salt a stored credential may have (it must fit in a server-first message).
const MAX_SALT_BYTES: usize = 1024;

/// Random bytes in a nonce (client or server part), before base64.
const NONCE_BYTES: usize = 24;

/// `c=` value for the gs2 header `n,,`: base64 of "n,,".
const CHANNEL_BINDING_NONE: &str = "biws";

/// Attribute letters RFC 5802 defines; an extension may not reuse them.
const RESERVED_ATTRIBUTES: &str = "acmnrsipve";

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM step failed. Every error is final: the exchange cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message does not follow the RFC 5802 grammar; the text names the message and attribute.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// A message or field is longer than its limit.
    #[error("SCRAM {what} is {len} bytes, over the limit of {limit}")]
    TooLong {
        /// Which message or field.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The user name is badly escaped, empty, too long or not visible ASCII.
    #[error("invalid SCRAM user name: {0}")]
    InvalidUserName(String),
    /// The client asked for or claimed support for channel binding, which is not offered.
    #[error("SCRAM channel binding not supported: {0}")]
    ChannelBinding(String),
    /// The client-final channel-binding attribute is not `c=biws` (the gs2 header `n,,`).
    #[error("SCRAM channel binding data does not match the gs2 header n,,")]
    ChannelBindingMismatch,
    /// The client sent an authorization identity (`a=`), which is not supported.
    #[error("SCRAM authorization identity (a=) not supported")]
    AuthzidUnsupported,
    /// The peer sent a mandatory extension (`m=`), which is not supported.
    #[error("SCRAM mandatory extension not supported: {0}")]
    UnsupportedExtension(String),
    /// The nonce does not continue this exchange (the server's does not extend the client's,
    /// or a client-final carries another exchange's nonce, as a replay does).
    #[error("SCRAM nonce does not match this exchange")]
    NonceMismatch,
    /// An iteration count outside `MIN_ITERATIONS..=MAX_ITERATIONS`.
    #[error("SCRAM iteration count {iterations} is outside {min}..={max}")]
    IterationsOutOfRange {
        /// The count received or stored.
        iterations: u64,
        /// [`MIN_ITERATIONS`].
        min: u32,
        /// [`MAX_ITERATIONS`].
        max: u32,
    },
    /// The client's proof is wrong: wrong password or unknown user (deliberately the same error).
    #[error("SCRAM client proof is invalid")]
    InvalidProof,
    /// The server's final signature is wrong: the server does not know the credential.
    #[error("SCRAM server signature is invalid")]
    InvalidServerSignature,
    /// The server answered with `e=`; the value is its error text.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// A stored credential encoding is truncated, has trailing bytes or an unusable salt.
    #[error("invalid stored SCRAM credential: {0}")]
    InvalidCredential(String),
}

/// The RFC 5802 `e=` server-final message to send for a failed step, e.g. `e=invalid-proof`.
/// Never `e=unknown-user`: unknown users fail as [`ScramError::InvalidProof`].
pub fn server_error_message(e: &ScramError) -> String {
    let value = match e {
        ScramError::Malformed(_) | ScramError::TooLong { .. } => "invalid-encoding",
        ScramError::InvalidUserName(_) => "invalid-username-encoding",
        ScramError::ChannelBinding(_) => "channel-binding-not-supported",
        ScramError::ChannelBindingMismatch => "channel-bindings-dont-match",
        ScramError::UnsupportedExtension(_) => "extensions-not-supported",
        ScramError::InvalidProof => "invalid-proof",
        ScramError::AuthzidUnsupported
        | ScramError::NonceMismatch
        | ScramError::IterationsOutOfRange { .. }
        | ScramError::InvalidServerSignature
        | ScramError::ServerError(_)
        | ScramError::InvalidCredential(_) => "other-error",
    };
    format!("e={value}")
}

/// What the server stores per user: never the password. Derived with PBKDF2-HMAC-SHA-256;
/// `stored_key` verifies client proofs and `server_key` signs the server-final message.
/// `Debug` prints only the iteration count and salt length, never the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// PBKDF2 salt, sent to the client in server-first.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count, sent to the client in server-first.
    pub iterations: u32,
    /// SHA-256(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl ScramCredential {
    /// A new credential with a random 16-byte salt and `iterations` PBKDF2 rounds.
    /// `iterations` is not checked here: a server treats a credential outside
    /// `MIN_ITERATIONS..=MAX_ITERATIONS` as absent, and [`Self::from_bytes`] refuses it.
    /// Panics only if the operating system's random number generator fails.
    pub fn new(password: &str, iterations: u32) -> Self {
        Self::derive(password, &random_bytes::<SALT_BYTES>(), iterations)
    }

    /// Deterministic derivation for a given salt: the same inputs always give the same
    /// credential (tests, and the client side of an exchange). Does not check bounds.
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let keys = SaltedKeys::derive(password, salt, iterations);
        Self { salt: salt.to_vec(), iterations, stored_key: keys.stored_key(), server_key: keys.server_key }
    }

    /// Fixed-layout storage encoding: u32 LE iterations, u16 LE salt length, salt,
    /// 32-byte stored key, 32-byte server key. [`Self::from_bytes`] inverts it for every
    /// usable credential (salt of 1 to 1024 bytes, iterations within bounds).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 2 + self.salt.len() + 64);
        out.extend_from_slice(&self.iterations.to_le_bytes());
        // A salt too long for u16 gets a saturated length, which from_bytes refuses.
        out.extend_from_slice(&u16::try_from(self.salt.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.stored_key);
        out.extend_from_slice(&self.server_key);
        out
    }

    /// Decodes [`Self::to_bytes`]. Refuses truncated input, trailing bytes, an empty or
    /// over-long salt and iteration counts outside the bounds, with a typed error; never panics.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ScramError> {
        let truncated = || ScramError::InvalidCredential(format!("truncated at {} bytes", b.len()));
        let (iterations, rest) = b.split_first_chunk::<4>().ok_or_else(truncated)?;
        let (salt_len, rest) = rest.split_first_chunk::<2>().ok_or_else(truncated)?;
        let salt_len = usize::from(u16::from_le_bytes(*salt_len));
        if salt_len == 0 || salt_len > MAX_SALT_BYTES {
            return Err(ScramError::InvalidCredential(format!("salt length {salt_len} outside 1..={MAX_SALT_BYTES}")));
        }
        let (salt, rest) = rest.split_at_checked(salt_len).ok_or_else(truncated)?;
        let (stored_key, rest) = rest.split_first_chunk::<32>().ok_or_else(truncated)?;
        let (server_key, rest) = rest.split_first_chunk::<32>().ok_or_else(truncated)?;
        if !rest.is_empty() {
            return Err(ScramError::InvalidCredential(format!("{} trailing bytes", rest.len())));
        }
        let iterations = u32::from_le_bytes(*iterations);
        check_iterations(u64::from(iterations))?;
        Ok(Self { salt: salt.to_vec(), iterations, stored_key: *stored_key, server_key: *server_key })
    }

    /// Whether a server may use this credential (else it is treated as absent).
    fn is_usable(&self) -> bool {
        (1..=MAX_SALT_BYTES).contains(&self.salt.len()) && check_iterations(u64::from(self.iterations)).is_ok()
    }

    /// The stand-in for an unknown user: salt and keys derived from the user name and the
    /// server secret, so the same name always gets the same salt and no password matches.
    fn fake(user: &str, fake_salt_key: &[u8]) -> Self {
        let salt = hmac_sha256(fake_salt_key, &[b"eddy-scram-fake-salt\0", user.as_bytes()]);
        Self {
            salt: salt.get(..SALT_BYTES).unwrap_or(&salt).to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: hmac_sha256(fake_salt_key, &[b"eddy-scram-fake-stored-key\0", user.as_bytes()]),
            server_key: hmac_sha256(fake_salt_key, &[b"eddy-scram-fake-server-key\0", user.as_bytes()]),
        }
    }
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

/// Client side of an exchange. Usage:
///
/// ```
/// # use eddy_protocol::scram::ScramClient;
/// let (client, client_first) = ScramClient::start("alice", "secret");
/// // send client_first, receive server_first, then:
/// // let (client, client_final) = client.handle_server_first(&server_first)?;
/// // send client_final, receive server_final, then:
/// // client.handle_server_final(&server_final)?;
/// # let _ = (client, client_first);
/// ```
#[derive(Debug)]
pub struct ScramClient;

impl ScramClient {
    /// Starts an exchange with a random nonce (24 random bytes, base64); returns the state
    /// to continue with and the client-first message to send. The user name is escaped
    /// but not otherwise checked here: the server refuses names outside its rules.
    /// Panics only if the operating system's random number generator fails.
    pub fn start(user: &str, password: &str) -> (ScramClientFirst, String) {
        Self::start_with_nonce(user, password, &random_nonce())
    }

    /// [`Self::start`] with a given nonce (tests and RFC vectors). The nonce must be
    /// visible ASCII without `,`, and must never be reused outside tests.
    pub fn start_with_nonce(user: &str, password: &str, nonce: &str) -> (ScramClientFirst, String) {
        let client_first_bare = format!("n={},r={nonce}", escape_user(user));
        let message = format!("n,,{client_first_bare}");
        let state =
            ScramClientFirst { password: password.to_owned(), client_nonce: nonce.to_owned(), client_first_bare };
        (state, message)
    }
}

/// Client state after sending client-first, waiting for server-first.
#[cfg_attr(test, derive(Clone))]
pub struct ScramClientFirst {
    password: String,
    client_nonce: String,
    client_first_bare: String,
}

impl ScramClientFirst {
    /// Checks server-first (nonce extends ours, salt non-empty, iterations within
    /// `MIN_ITERATIONS..=MAX_ITERATIONS`, no mandatory extension), derives the keys and
    /// returns the state to continue with and the client-final message to send.
    pub fn handle_server_first(self, server_first: &str) -> Result<(ScramClientFinal, String), ScramError> {
        const WHAT: &str = "server-first";
        check_len(WHAT, server_first)?;
        if let Some(error) = server_first.strip_prefix("e=") {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let mut parts = server_first.split(',');
        let first = parts.next();
        refuse_mandatory_extension(first)?;
        let nonce = attribute(WHAT, first, 'r')?;
        check_nonce(WHAT, nonce)?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = decode_base64(WHAT, 's', attribute(WHAT, parts.next(), 's')?)?;
        let iterations = parse_iterations(attribute(WHAT, parts.next(), 'i')?)?;
        check_extensions(WHAT, parts)?;

        let keys = SaltedKeys::derive(&self.password, &salt, iterations);
        let without_proof = format!("c={CHANNEL_BINDING_NONE},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac_sha256(&keys.stored_key(), &[auth_message.as_bytes()]);
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = hmac_sha256(&keys.server_key, &[auth_message.as_bytes()]);
        let message = format!("{without_proof},p={}", BASE64.encode(proof));
        Ok((ScramClientFinal { server_signature }, message))
    }
}

impl std::fmt::Debug for ScramClientFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClientFirst").field("client_first_bare", &self.client_first_bare).finish_non_exhaustive()
    }
}

/// Client state after sending client-final, waiting for server-final.
#[cfg_attr(test, derive(Clone))]
pub struct ScramClientFinal {
    server_signature: [u8; 32],
}

impl ScramClientFinal {
    /// Checks server-final: `Ok` only if it carries the expected server signature
    /// (compared in constant time), which proves the server holds the user's credential.
    /// An `e=` answer becomes [`ScramError::ServerError`].
    pub fn handle_server_final(self, server_final: &str) -> Result<(), ScramError> {
        const WHAT: &str = "server-final";
        check_len(WHAT, server_final)?;
        let mut parts = server_final.split(',');
        let first = parts.next();
        if let Some(error) = first.and_then(|p| p.strip_prefix("e=")) {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let signature = decode_base64(WHAT, 'v', attribute(WHAT, first, 'v')?)?;
        check_extensions(WHAT, parts)?;
        if bool::from(signature.as_slice().ct_eq(&self.server_signature)) {
            Ok(())
        } else {
            Err(ScramError::InvalidServerSignature)
        }
    }
}

impl std::fmt::Debug for ScramClientFinal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClientFinal").finish_non_exhaustive()
    }
}

/// Server side of an exchange. The server looks the user up between the first and second
/// step: `handle_client_first`, then [`ScramServerFirstStep::server_first`] with the user's
/// credential, then [`ScramServerWaiting::handle_client_final`].
#[derive(Debug)]
pub struct ScramServer;

impl ScramServer {
    /// Parses client-first (gs2 header `n,,`, `n=user`, `r=nonce`, optional extensions);
    /// returns the user name the client claims, unescaped and checked, in a state to continue with.
    pub fn handle_client_first(client_first: &str) -> Result<ScramServerFirstStep, ScramError> {
        const WHAT: &str = "client-first";
        check_len(WHAT, client_first)?;
        let mut gs2 = client_first.splitn(3, ',');
        let flag = gs2.next().unwrap_or_default();
        let (Some(authzid), Some(bare)) = (gs2.next(), gs2.next()) else {
            return Err(ScramError::Malformed(format!("{WHAT}: missing gs2 header")));
        };
        match flag {
            "n" => {}
            "y" => return Err(ScramError::ChannelBinding("client claims support (y), none is offered".into())),
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding(format!("client requires {f}"))),
            _ => return Err(ScramError::Malformed(format!("{WHAT}: bad gs2 channel-binding flag"))),
        }
        if authzid.starts_with("a=") {
            return Err(ScramError::AuthzidUnsupported);
        } else if !authzid.is_empty() {
            return Err(ScramError::Malformed(format!("{WHAT}: bad gs2 authzid field")));
        }
        let mut parts = bare.split(',');
        let first = parts.next();
        refuse_mandatory_extension(first)?;
        let user = unescape_user(attribute(WHAT, first, 'n')?)?;
        let client_nonce = attribute(WHAT, parts.next(), 'r')?;
        check_nonce(WHAT, client_nonce)?;
        check_extensions(WHAT, parts)?;
        Ok(ScramServerFirstStep { user, client_nonce: client_nonce.to_owned(), client_first_bare: bare.to_owned() })
    }
}

/// Server state after client-first: knows the claimed user name, needs its credential.
pub struct ScramServerFirstStep {
    user: String,
    client_nonce: String,
    client_first_bare: String,
}

impl ScramServerFirstStep {
    /// The user name the client claims (unescaped, visible ASCII, at most [`MAX_USER_BYTES`]).
    /// Not yet authenticated.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Continues with the user's credential, or `None` for an unknown user. For an unknown
    /// user (or a credential outside the bounds) a fake salt derived from the user name and
    /// the server secret `fake_salt_key` is sent, with the same length and iteration count
    /// as new credentials, so an attacker cannot tell unknown users from wrong passwords;
    /// the exchange then fails at the proof with [`ScramError::InvalidProof`]. `fake_salt_key`
    /// should be secret and stable across restarts. Returns the state and the server-first
    /// message. Panics only if the operating system's random number generator fails.
    pub fn server_first(
        self,
        credential: Option<&ScramCredential>,
        fake_salt_key: &[u8],
    ) -> (ScramServerWaiting, String) {
        self.server_first_with_nonce(credential, fake_salt_key, &random_nonce())
    }

    /// [`Self::server_first`] with a given server nonce part (tests and RFC vectors). It must
    /// be visible ASCII without `,`, and must never be reused outside tests.
    pub fn server_first_with_nonce(
        self,
        credential: Option<&ScramCredential>,
        fake_salt_key: &[u8],
        server_nonce: &str,
    ) -> (ScramServerWaiting, String) {
        let (credential, known) = match credential {
            Some(c) if c.is_usable() => (c.clone(), true),
            _ => (ScramCredential::fake(&self.user, fake_salt_key), false),
        };
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let message = format!("r={nonce},s={},i={}", BASE64.encode(&credential.salt), credential.iterations);
        let state = ScramServerWaiting {
            user: self.user,
            nonce,
            client_first_bare: self.client_first_bare,
            server_first: message.clone(),
            stored_key: credential.stored_key,
            server_key: credential.server_key,
            known,
        };
        (state, message)
    }
}

impl std::fmt::Debug for ScramServerFirstStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerFirstStep").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Server state after sending server-first, waiting for client-final.
pub struct ScramServerWaiting {
    user: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
    stored_key: [u8; 32],
    server_key: [u8; 32],
    known: bool,
}

impl ScramServerWaiting {
    /// Verifies client-final: channel binding `c=biws`, nonce equal to this exchange's
    /// combined nonce (so a replayed client-final fails), proof checked in constant time
    /// against the stored key. On success returns the authenticated user name and the
    /// server-final message (`v=...`). On failure returns the error; the caller sends
    /// [`server_error_message`] of it itself.
    pub fn handle_client_final(self, client_final: &str) -> Result<(String, String), ScramError> {
        const WHAT: &str = "client-final";
        check_len(WHAT, client_final)?;
        let Some((without_proof, proof)) = client_final.rsplit_once(',') else {
            return Err(ScramError::Malformed(format!("{WHAT}: missing attributes")));
        };
        let mut parts = without_proof.split(',');
        if attribute(WHAT, parts.next(), 'c')? != CHANNEL_BINDING_NONE {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let nonce = attribute(WHAT, parts.next(), 'r')?;
        check_extensions(WHAT, parts)?;
        let proof = decode_base64(WHAT, 'p', attribute(WHAT, Some(proof), 'p')?)?;
        if nonce != self.nonce {
            return Err(ScramError::NonceMismatch);
        }

        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let client_signature = hmac_sha256(&self.stored_key, &[auth_message.as_bytes()]);
        let Ok(proof) = <[u8; 32]>::try_from(proof.as_slice()) else {
            return Err(ScramError::InvalidProof);
        };
        let client_key = xor(&proof, &client_signature);
        let matches = Sha256::digest(client_key).as_slice().ct_eq(&self.stored_key);
        if !bool::from(matches & subtle::Choice::from(u8::from(self.known))) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.server_key, &[auth_message.as_bytes()]);
        Ok((self.user, format!("v={}", BASE64.encode(server_signature))))
    }
}

impl std::fmt::Debug for ScramServerWaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServerWaiting").field("user", &self.user).finish_non_exhaustive()
    }
}

/// The password-derived keys the client needs (the server only ever stores their hashes/HMACs).
struct SaltedKeys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl SaltedKeys {
    fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut salted_password = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted_password);
        Self {
            client_key: hmac_sha256(&salted_password, &[b"Client Key"]),
            server_key: hmac_sha256(&salted_password, &[b"Server Key"]),
        }
    }

    fn stored_key(&self) -> [u8; 32] {
        Sha256::digest(self.client_key).into()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("operating system random number generator failed");
    bytes
}

fn random_nonce() -> String {
    BASE64.encode(random_bytes::<NONCE_BYTES>())
}

fn check_len(what: &'static str, message: &str) -> Result<(), ScramError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(ScramError::TooLong { what, len: message.len(), limit: MAX_MESSAGE_BYTES });
    }
    Ok(())
}

fn check_iterations(iterations: u64) -> Result<(), ScramError> {
    if iterations < u64::from(MIN_ITERATIONS) || iterations > u64::from(MAX_ITERATIONS) {
        return Err(ScramError::IterationsOutOfRange { iterations, min: MIN_ITERATIONS, max: MAX_ITERATIONS });
    }
    Ok(())
}

/// The non-empty value of attribute `name` in `part` (`name=value`), or a `Malformed` error.
fn attribute<'a>(what: &str, part: Option<&'a str>, name: char) -> Result<&'a str, ScramError> {
    match part.and_then(|p| p.strip_prefix(name)).and_then(|p| p.strip_prefix('=')) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(ScramError::Malformed(format!("{what}: expected attribute {name}="))),
    }
}

fn refuse_mandatory_extension(first: Option<&str>) -> Result<(), ScramError> {
    match first.and_then(|p| p.strip_prefix("m=")) {
        Some(value) => Err(ScramError::UnsupportedExtension(value.to_owned())),
        None => Ok(()),
    }
}

/// Optional extensions: `x=value` with a letter SCRAM does not define and a value without NUL.
fn check_extensions<'a>(what: &str, parts: impl Iterator<Item = &'a str>) -> Result<(), ScramError> {
    for part in parts {
        let mut chars = part.chars();
        let ok = match (chars.next(), chars.next(), chars.next()) {
            (Some(name), Some('='), Some(_)) => {
                name.is_ascii_alphabetic() && !RESERVED_ATTRIBUTES.contains(name) && !part.contains('\0')
            }
            _ => false,
        };
        if !ok {
            return Err(ScramError::Malformed(format!("{what}: unexpected attribute")));
        }
    }
    Ok(())
}

/// Nonces are visible ASCII without `,` (RFC 5802 `printable`).
fn check_nonce(what: &str, nonce: &str) -> Result<(), ScramError> {
    if nonce.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        Ok(())
    } else {
        Err(ScramError::Malformed(format!("{what}: nonce is not printable ASCII")))
    }
}

fn decode_base64(what: &str, name: char, value: &str) -> Result<Vec<u8>, ScramError> {
    BASE64.decode(value).map_err(|_| ScramError::Malformed(format!("{what}: attribute {name}= is not base64")))
}

fn parse_iterations(value: &str) -> Result<u32, ScramError> {
    let digits = value.bytes().all(|b| b.is_ascii_digit()) && !value.starts_with('0');
    let iterations = match value.parse::<u64>() {
        Ok(n) if digits => n,
        _ => return Err(ScramError::Malformed("server-first: attribute i= is not a positive number".into())),
    };
    check_iterations(iterations)?;
    u32::try_from(iterations).map_err(|_| ScramError::IterationsOutOfRange {
        iterations,
        min: MIN_ITERATIONS,
        max: MAX_ITERATIONS,
    })
}

fn escape_user(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// Decodes `=2C`/`=3D` (any other `=` sequence is refused) and checks the result is
/// 1 to [`MAX_USER_BYTES`] bytes of visible ASCII.
fn unescape_user(escaped: &str) -> Result<String, ScramError> {
    let mut user = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '=' {
            match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => user.push(','),
                (Some('3'), Some('D')) => user.push('='),
                _ => return Err(ScramError::InvalidUserName("bad = escape (only =2C and =3D)".into())),
            }
        } else {
            user.push(c);
        }
    }
    if user.len() > MAX_USER_BYTES {
        return Err(ScramError::TooLong { what: "user name", len: user.len(), limit: MAX_USER_BYTES });
    }
    if user.is_empty() || !user.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ScramError::InvalidUserName("must be visible ASCII".into()));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAKE_KEY: &[u8] = b"test fake-salt key";

    /// The server's `handle_client_final` result, and the client's `handle_server_final`
    /// result when the server accepted.
    type Outcome = (Result<(String, String), ScramError>, Option<Result<(), ScramError>>);

    /// Runs a whole exchange with a random nonce.
    fn exchange(user: &str, password: &str, stored: Option<&ScramCredential>) -> Outcome {
        let (client, client_first) = ScramClient::start(user, password);
        let step = ScramServer::handle_client_first(&client_first).unwrap();
        assert_eq!(step.user(), user);
        let (server, server_first) = step.server_first(stored, FAKE_KEY);
        let (client, client_final) = client.handle_server_first(&server_first).unwrap();
        let result = server.handle_client_final(&client_final);
        let client_result = result.as_ref().ok().map(|(_, server_final)| client.handle_server_final(server_final));
        (result, client_result)
    }

    fn salt_and_iterations(server_first: &str) -> (Vec<u8>, String) {
        let parts: Vec<&str> = server_first.split(',').collect();
        let salt = BASE64.decode(parts[1].strip_prefix("s=").unwrap()).unwrap();
        (salt, parts[2].to_owned())
    }

    #[test]
    fn scram_rfc7677_vector() {
        let client_nonce = "rOprNGfwEbeRWgbNEkqO";
        let server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = ScramCredential::derive("pencil", &salt, 4096);

        let (client, client_first) = ScramClient::start_with_nonce("user", "pencil", client_nonce);
        assert_eq!(client_first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let step = ScramServer::handle_client_first(&client_first).unwrap();
        assert_eq!(step.user(), "user");
        let (server, server_first) = step.server_first_with_nonce(Some(&credential), FAKE_KEY, server_nonce);
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let (client, client_final) = client.handle_server_first(&server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let (user, server_final) = server.handle_client_final(&client_final).unwrap();
        assert_eq!(user, "user");
        // RFC 7677 section 3 (the value every published implementation checks).
        assert_eq!(server_final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        client.handle_server_final(&server_final).unwrap();
    }

    #[test]
    fn scram_random_round_trip() {
        let credential = ScramCredential::new("correct horse", DEFAULT_ITERATIONS);
        let (result, client_result) = exchange("alice", "correct horse", Some(&credential));
        assert_eq!(result.unwrap().0, "alice");
        assert_eq!(client_result, Some(Ok(())));
    }

    #[test]
    fn scram_wrong_password_is_invalid_proof() {
        let credential = ScramCredential::new("correct horse", DEFAULT_ITERATIONS);
        let (result, _) = exchange("alice", "battery staple", Some(&credential));
        let error = result.unwrap_err();
        assert_eq!(error, ScramError::InvalidProof);
        assert_eq!(server_error_message(&error), "e=invalid-proof");
    }

    #[test]
    fn scram_unknown_user_looks_like_wrong_password() {
        let (result, _) = exchange("mallory", "anything", None);
        assert_eq!(result.unwrap_err(), ScramError::InvalidProof);

        let server_first_for = |user: &str, credential: Option<&ScramCredential>| {
            let (_, client_first) = ScramClient::start(user, "pw");
            let step = ScramServer::handle_client_first(&client_first).unwrap();
            step.server_first(credential, FAKE_KEY).1
        };
        let known = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let (known_salt, known_iterations) = salt_and_iterations(&server_first_for("alice", Some(&known)));
        let (fake_salt, fake_iterations) = salt_and_iterations(&server_first_for("mallory", None));
        assert_eq!(known_salt.len(), fake_salt.len());
        assert_eq!(known_iterations, fake_iterations);
        let (again, _) = salt_and_iterations(&server_first_for("mallory", None));
        assert_eq!(fake_salt, again, "the fake salt must be stable for a user");
        let (other, _) = salt_and_iterations(&server_first_for("trudy", None));
        assert_ne!(fake_salt, other);
    }

    #[test]
    fn scram_replayed_client_final_fails() {
        let credential = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let (client, client_first) = ScramClient::start("alice", "pw");
        let step = ScramServer::handle_client_first(&client_first).unwrap();
        let (server, server_first) = step.server_first(Some(&credential), FAKE_KEY);
        let (_, client_final) = client.handle_server_first(&server_first).unwrap();
        server.handle_client_final(&client_final).unwrap();

        // An eavesdropper replays both client messages against a new exchange.
        let step = ScramServer::handle_client_first(&client_first).unwrap();
        let (server, _) = step.server_first(Some(&credential), FAKE_KEY);
        assert_eq!(server.handle_client_final(&client_final).unwrap_err(), ScramError::NonceMismatch);
    }

    #[test]
    fn scram_tampered_server_signature_fails() {
        let credential = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let (client, client_first) = ScramClient::start("alice", "pw");
        let step = ScramServer::handle_client_first(&client_first).unwrap();
        let (server, server_first) = step.server_first(Some(&credential), FAKE_KEY);
        let (client, client_final) = client.handle_server_first(&server_first).unwrap();
        let (_, server_final) = server.handle_client_final(&client_final).unwrap();
        let mut signature = BASE64.decode(server_final.strip_prefix("v=").unwrap()).unwrap();
        signature[0] ^= 1;
        let tampered = format!("v={}", BASE64.encode(signature));
        assert_eq!(client.clone().handle_server_final(&tampered).unwrap_err(), ScramError::InvalidServerSignature);
        assert_eq!(
            client.handle_server_final("e=invalid-proof").unwrap_err(),
            ScramError::ServerError("invalid-proof".into())
        );
    }

    #[test]
    fn scram_client_refuses_iterations_out_of_range() {
        let (client, _) = ScramClient::start_with_nonce("alice", "pw", "abc");
        for iterations in [u64::from(MAX_ITERATIONS) + 1, 1 << 32, u64::from(MIN_ITERATIONS) - 1] {
            let error = client.clone().handle_server_first(&format!("r=abcdef,s=c2FsdA==,i={iterations}")).unwrap_err();
            assert!(matches!(error, ScramError::IterationsOutOfRange { iterations: i, .. } if i == iterations));
        }
        let bad_nonce = client.clone().handle_server_first("r=xyzdef,s=c2FsdA==,i=4096").unwrap_err();
        assert_eq!(bad_nonce, ScramError::NonceMismatch);
        let same_nonce = client.clone().handle_server_first("r=abc,s=c2FsdA==,i=4096").unwrap_err();
        assert_eq!(same_nonce, ScramError::NonceMismatch);
        let mandatory = client.handle_server_first("m=x,r=abcdef,s=c2FsdA==,i=4096").unwrap_err();
        assert!(matches!(mandatory, ScramError::UnsupportedExtension(_)));
    }

    #[test]
    fn scram_user_name_escaping_round_trip() {
        let (_, client_first) = ScramClient::start_with_nonce("a,b=c", "pw", "nonce");
        assert_eq!(client_first, "n,,n=a=2Cb=3Dc,r=nonce");
        assert_eq!(ScramServer::handle_client_first(&client_first).unwrap().user(), "a,b=c");
        let credential = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let (result, client_result) = exchange("a,b=c", "pw", Some(&credential));
        assert_eq!(result.unwrap().0, "a,b=c");
        assert_eq!(client_result, Some(Ok(())));

        for bad in ["n,,n=a=2c,r=x", "n,,n=a=,r=x", "n,,n=a=41,r=x", "n,,n=a b,r=x", "n,,n=é,r=x"] {
            assert!(matches!(ScramServer::handle_client_first(bad), Err(ScramError::InvalidUserName(_))), "{bad}");
        }
        let long = format!("n,,n={},r=x", "u".repeat(MAX_USER_BYTES + 1));
        assert!(matches!(ScramServer::handle_client_first(&long), Err(ScramError::TooLong { .. })));
    }

    #[test]
    fn scram_server_refuses_unsupported_client_first() {
        let cases = [
            ("p=tls-unique,,n=u,r=x", "ChannelBinding"),
            ("y,,n=u,r=x", "ChannelBinding"),
            ("n,a=admin,n=u,r=x", "AuthzidUnsupported"),
            ("n,,m=ext,n=u,r=x", "UnsupportedExtension"),
            ("n,,n=u,r=x,x=ok", "ok"),
            ("n,,n=u,r=x,r=again", "Malformed"),
            ("n,,n=u,r=a,b", "Malformed"),
            ("n,,n=u", "Malformed"),
            ("n,n=u,r=x", "Malformed"),
            ("", "Malformed"),
        ];
        for (message, expected) in cases {
            let got = match ScramServer::handle_client_first(message) {
                Ok(_) => "ok",
                Err(ScramError::ChannelBinding(_)) => "ChannelBinding",
                Err(ScramError::AuthzidUnsupported) => "AuthzidUnsupported",
                Err(ScramError::UnsupportedExtension(_)) => "UnsupportedExtension",
                Err(ScramError::Malformed(_)) => "Malformed",
                Err(e) => panic!("{message}: unexpected {e:?}"),
            };
            assert_eq!(got, expected, "{message}");
        }
        let too_long = format!("n,,n=u,r={}", "x".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(ScramServer::handle_client_first(&too_long), Err(ScramError::TooLong { .. })));

        let step = ScramServer::handle_client_first("n,,n=u,r=x").unwrap();
        let (server, _) = step.server_first_with_nonce(None, FAKE_KEY, "y");
        let proof = BASE64.encode([0u8; 32]);
        let error = server.handle_client_final(&format!("c=eSws,r=xy,p={proof}")).unwrap_err();
        assert_eq!(error, ScramError::ChannelBindingMismatch);
        assert_eq!(server_error_message(&error), "e=channel-bindings-dont-match");
    }

    #[test]
    fn scram_credential_bytes_round_trip() {
        let credential = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let bytes = credential.to_bytes();
        assert_eq!(bytes.len(), 4 + 2 + 16 + 32 + 32);
        assert_eq!(ScramCredential::from_bytes(&bytes).unwrap(), credential);
        for len in 0..bytes.len() {
            assert!(matches!(ScramCredential::from_bytes(&bytes[..len]), Err(ScramError::InvalidCredential(_))));
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(ScramCredential::from_bytes(&trailing), Err(ScramError::InvalidCredential(_))));
        let weak = ScramCredential::derive("pw", b"salt", 1).to_bytes();
        assert!(matches!(ScramCredential::from_bytes(&weak), Err(ScramError::IterationsOutOfRange { .. })));
        let no_salt = ScramCredential::derive("pw", b"", DEFAULT_ITERATIONS).to_bytes();
        assert!(matches!(ScramCredential::from_bytes(&no_salt), Err(ScramError::InvalidCredential(_))));
    }

    #[test]
    fn scram_credential_debug_hides_keys() {
        let credential = ScramCredential::new("pw", DEFAULT_ITERATIONS);
        let debug = format!("{credential:?}");
        assert_eq!(debug, "ScramCredential { iterations: 4096, salt_len: 16, .. }");
        assert!(!debug.contains(&format!("{:?}", credential.stored_key)));
        assert!(!debug.contains(&format!("{:?}", credential.server_key)));
    }

    #[test]
    fn scram_unusable_credential_is_treated_as_absent() {
        let weak = ScramCredential::derive("pw", b"salt", 1);
        let (result, _) = exchange("alice", "pw", Some(&weak));
        assert_eq!(result.unwrap_err(), ScramError::InvalidProof);
    }

    /// 10,000 deterministic pseudo-random inputs into every parse entry point: none may panic.
    #[test]
    fn scram_fuzz_parsers_never_panic() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const TOKENS: &[&str] = &[
            "n", "y", "p=", "a=", "m=", "n=", "r=", "s=", "i=", "c=", "v=", "e=", ",", "=", "=2C", "=3D", "biws",
            "4096", "0", "abc", "c2FsdA==", "\0", "é", "abcdef",
        ];
        let credential = ScramCredential::derive("pw", b"salt", MIN_ITERATIONS);
        let (client, _) = ScramClient::start_with_nonce("alice", "pw", "abc");
        let (client_final, _) = client.clone().handle_server_first("r=abcdef,s=c2FsdA==,i=4096").unwrap();
        for round in 0..10_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                (0..len / 4).flat_map(|_| TOKENS[(next() as usize) % TOKENS.len()].bytes()).collect()
            };
            let _ = ScramCredential::from_bytes(&bytes);
            let input = String::from_utf8_lossy(&bytes);
            let _ = ScramServer::handle_client_first(&input);
            let _ = ScramServer::handle_client_first(&format!("n,,{input}"));
            let _ = client.clone().handle_server_first(&input);
            let _ = client.clone().handle_server_first(&format!("r=abc{input}"));
            let _ = client_final.clone().handle_server_final(&input);
            let step = ScramServer::handle_client_first("n,,n=alice,r=abc").unwrap();
            let (server, _) = step.server_first_with_nonce(Some(&credential), FAKE_KEY, "def");
            let _ = server.handle_client_final(&input);
            let step = ScramServer::handle_client_first("n,,n=alice,r=abc").unwrap();
            let (server, _) = step.server_first_with_nonce(Some(&credential), FAKE_KEY, "def");
            let _ = server.handle_client_final(&format!("c=biws,r=abcdef,{input}"));
        }
    }
}
