//! Identities carried by certificates of the cluster CA, as URIs in the
//! subject alternative names:
//!
//! * `eddy:broker:<id>`: a broker (`eddy ca issue-broker`, or issued by the
//!   broker itself on first start with the CA key). Only the holder of the
//!   CA key can issue one, and client certificates never carry it.
//! * `eddy:user:<name>`: a user authenticated by its certificate
//!   (`eddy ca issue-client NAME`).
//!
//! rustls has already verified the chain against the cluster CA (and the
//! extended key usage) before any of this is read.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::Principal;

/// URI prefix of a broker identity.
pub const BROKER_URI_PREFIX: &str = "eddy:broker:";
/// URI prefix of a user identity.
pub const USER_URI_PREFIX: &str = "eddy:user:";

/// The URI naming broker `id`.
pub fn broker_uri(id: u32) -> String {
    format!("{BROKER_URI_PREFIX}{id}")
}

/// The URI naming user `name`.
pub fn user_uri(name: &str) -> String {
    format!("{USER_URI_PREFIX}{name}")
}

/// The `eddy:` URIs among a certificate's subject alternative names (none if
/// it does not parse).
pub fn eddy_uris(cert: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) if uri.starts_with("eddy:") => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The principal a verified end-entity certificate proves, if any. A
/// certificate naming both a broker and a user, or two of either, proves
/// nothing (it is not one this cluster's tools issue).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    let uris = eddy_uris(cert.as_ref());
    let [uri] = uris.as_slice() else { return None };
    if let Some(id) = uri.strip_prefix(BROKER_URI_PREFIX) {
        return id.parse::<u32>().ok().filter(|id| *id != 0).map(Principal::Broker);
    }
    let name = uri.strip_prefix(USER_URI_PREFIX)?;
    eddy_protocol::security::validate_user_name(name).ok()?;
    Some(Principal::User(name.to_string()))
}

/// The principal of a QUIC connection's client certificate, if it presented one.
pub fn principal_of_connection(conn: &quinn::Connection) -> Option<Principal> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    principal_of(chain.first()?)
}
