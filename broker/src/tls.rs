//! The broker's TLS identity.
//!
//! With no certificate configured, the first start generates a private CA and a
//! broker certificate signed by it into `<data-dir>/tls/`:
//!
//! * `ca.pem`: the CA certificate clients verify against (`--ca` / `EDDY_CA`);
//! * `ca.key`: the CA's private key (mode 0600), kept to sign future certificates;
//! * `broker.pem`, `broker.key`: the certificate (for `localhost`, `127.0.0.1`,
//!   `::1`, the host name and any extra names) and its key (mode 0600).
//!
//! Later starts reuse the files (and issue the certificate again, with the
//! CA key at hand, if it does not carry this broker's identity). A
//! configured `--tls-cert`/`--tls-key` pair is used as it is.
//!
//! Broker certificates carry the URI `eddy:broker:<id>` among their subject
//! alternative names and may serve as client certificates too: brokers
//! present them on their connections to each other, which is how a broker
//! proves who it is (`auth/identity.rs`). Client certificates
//! (`eddy ca issue-client`) carry `eddy:user:<name>` and are good for client
//! authentication only, so they can never pose as a broker. The server asks
//! every client for a certificate of the cluster CA but does not require
//! one: clients without one authenticate with a password (SCRAM).
//!
//! Permissions: the data directory and `tls/` are made 0700 and every key
//! file 0600 on every start, not only when created.
//!
//! A cluster needs one CA for every broker, so that clients and brokers verify
//! each other's certificates against one file: [`create_ca`] writes such a CA
//! (`eddy ca create`), and [`load_or_issue`] (`eddy broker --tls-ca-cert F
//! --tls-ca-key K`) signs this broker's certificate with it on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and key, plus the CA file clients should trust.
pub struct TlsIdentity {
    /// Broker certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The broker's private key.
    pub key: PrivateKeyDer<'static>,
    /// The CA certificate file clients pass as `--ca` (the certificate itself when configured).
    pub ca_path: PathBuf,
    /// The PEM certificate file (for the embedded worker's client certificate).
    pub cert_path: PathBuf,
    /// The PEM key file.
    pub key_path: PathBuf,
}

impl TlsIdentity {
    /// The broker id the certificate proves, if it carries one.
    pub fn broker_id(&self) -> Option<u32> {
        self.chain.first().and_then(crate::auth::identity::principal_of).and_then(|p| p.broker_id())
    }
}

/// Sets `path`'s permission bits (unix; a no-op elsewhere).
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Makes the data directory and its `tls/` 0700 and every key or password
/// file in them 0600 (run on every start).
pub fn restrict_data_dir(data_dir: &Path) -> Result<(), TlsError> {
    restrict(data_dir, 0o700).map_err(io(data_dir))?;
    let tls = data_dir.join("tls");
    if tls.is_dir() {
        restrict(&tls, 0o700).map_err(io(&tls))?;
        for entry in std::fs::read_dir(&tls).map_err(io(&tls))?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "key") {
                restrict(&path, 0o600).map_err(io(&path))?;
            }
        }
    }
    let password = data_dir.join(crate::auth::bootstrap::ADMIN_PASSWORD_FILE);
    if password.exists() {
        restrict(&password, 0o600).map_err(io(&password))?;
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Loads `cert`/`key` PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Pem { path: cert.into(), reason: e.to_string() })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: cert.into(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert.into(), reason: "no certificate found".into() });
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem { path: key.into(), reason: e.to_string() })?;
    Ok(TlsIdentity {
        chain,
        key: key_der,
        ca_path: cert.to_path_buf(),
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
    })
}

/// Loads the identity of broker `broker_id` from `<data_dir>/tls/`,
/// generating a CA and a certificate on first use (and issuing the
/// certificate again with that CA if it does not prove `broker_id`).
/// `extra_names` are added to the certificate's subject alternative names.
pub fn load_or_generate(data_dir: &Path, extra_names: &[String], broker_id: u32) -> Result<TlsIdentity, TlsError> {
    let dir = data_dir.join("tls");
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("broker.pem"), dir.join("broker.key"));
    if !(ca_pem.exists() && cert_pem.exists() && key_pem.exists()) {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        generate(&dir, extra_names, broker_id)?;
        tracing::info!(ca = %ca_pem.display(), "generated a self-signed CA and broker certificate");
    }
    let mut identity = load(&cert_pem, &key_pem)?;
    let ca_key = dir.join("ca.key");
    if identity.broker_id() != Some(broker_id) && ca_key.exists() {
        let issuer = issuer_of(&ca_pem, &ca_key)?;
        issue(&dir, &issuer, extra_names, broker_id)?;
        tracing::info!(broker = broker_id, "issued the broker certificate again with this broker's identity");
        identity = load(&cert_pem, &key_pem)?;
    }
    identity.ca_path = ca_pem;
    Ok(identity)
}

/// The CA as an issuer: its certificate and key files.
fn issuer_of(ca_cert: &Path, ca_key: &Path) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let ca_text = std::fs::read_to_string(ca_cert).map_err(io(ca_cert))?;
    let key_text = std::fs::read_to_string(ca_key).map_err(io(ca_key))?;
    let key = KeyPair::from_pem(&key_text)
        .map_err(|e| TlsError::Pem { path: ca_key.into(), reason: format!("not a private key: {e}") })?;
    Issuer::from_ca_cert_pem(&ca_text, key)
        .map_err(|e| TlsError::Pem { path: ca_cert.into(), reason: format!("not a CA certificate: {e}") })
}

fn ca_params(name: &str) -> Result<CertificateParams, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(ca_params)
}

fn generate(dir: &Path, extra_names: &[String], broker_id: u32) -> Result<(), TlsError> {
    let ca_params = ca_params("Eddy local CA")?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    write_private(&dir.join("ca.key"), &ca_key_pem)?;
    issue(dir, &issuer, extra_names, broker_id)?;
    // The CA file last: its presence marks a complete set.
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).map_err(io(&ca_path))?;
    Ok(())
}

/// Writes a new cluster CA (`ca.pem`, and `ca.key` with mode 0600) into
/// `dir`, refusing to overwrite existing files. Returns the two paths.
pub fn create_ca(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists already; not overwritten");
            return Err(TlsError::Io { path: path.clone(), source });
        }
    }
    let params = ca_params("Eddy cluster CA")?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok((cert_path, key_path))
}

/// Loads this broker's identity from `<data_dir>/tls/`, issuing a certificate
/// signed by the cluster CA (`ca_cert`, `ca_key`) on first use or when the CA
/// changed. The CA certificate is copied to `<data_dir>/tls/ca.pem`, which
/// clients and the other brokers verify against.
pub fn load_or_issue(
    data_dir: &Path,
    ca_cert: &Path,
    ca_key: &Path,
    extra_names: &[String],
    broker_id: u32,
) -> Result<TlsIdentity, TlsError> {
    let dir = data_dir.join("tls");
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("broker.pem"), dir.join("broker.key"));
    let ca_text = std::fs::read_to_string(ca_cert).map_err(io(ca_cert))?;
    let current = std::fs::read_to_string(&ca_pem).ok();
    let proves_id = || load(&cert_pem, &key_pem).ok().and_then(|i| i.broker_id()) == Some(broker_id);
    if current.as_deref() != Some(ca_text.as_str()) || !(cert_pem.exists() && key_pem.exists()) || !proves_id() {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let issuer = issuer_of(ca_cert, ca_key)?;
        issue(&dir, &issuer, extra_names, broker_id)?;
        std::fs::write(&ca_pem, &ca_text).map_err(io(&ca_pem))?;
        tracing::info!(ca = %ca_cert.display(), "issued the broker certificate with the cluster CA");
    }
    let mut identity = load(&cert_pem, &key_pem)?;
    identity.ca_path = ca_pem;
    Ok(identity)
}

/// Writes `broker.pem` and `broker.key` into `dir`: the certificate of
/// broker `broker_id` for this machine's names plus `extra_names`, signed by
/// `issuer`.
fn issue(dir: &Path, issuer: &Issuer<'_, KeyPair>, extra_names: &[String], broker_id: u32) -> Result<(), TlsError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let (cert, key) = broker_certificate(issuer, &names, broker_id)?;
    write_private(&dir.join("broker.key"), &key)?;
    let cert_path = dir.join("broker.pem");
    std::fs::write(&cert_path, cert).map_err(io(&cert_path))?;
    Ok(())
}

fn uri(value: String) -> Result<rcgen::SanType, TlsError> {
    let ia5 = rcgen::string::Ia5String::try_from(value)?;
    Ok(rcgen::SanType::URI(ia5))
}

/// A broker certificate (PEM certificate, PEM key): the names plus the URI
/// `eddy:broker:<id>`, for server and client authentication.
fn broker_certificate(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    broker_id: u32,
) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.subject_alt_names.push(uri(crate::auth::identity::broker_uri(broker_id))?);
    params.distinguished_name.push(DnType::CommonName, format!("Eddy broker {broker_id}"));
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Issues a broker certificate offline (`eddy ca issue-broker`): writes
/// `broker.pem`, `broker.key` (0600) and a copy of the CA as `ca.pem` into
/// `out`, refusing to overwrite. The broker then runs with `--tls-cert
/// out/broker.pem --tls-key out/broker.key --tls-peer-ca out/ca.pem` and never
/// needs the CA key. Returns the certificate's path.
pub fn issue_broker_files(
    ca_cert: &Path,
    ca_key: &Path,
    broker_id: u32,
    names: &[String],
    out: &Path,
) -> Result<PathBuf, TlsError> {
    if broker_id == 0 {
        return Err(TlsError::Pem { path: out.into(), reason: "broker ids start at 1".into() });
    }
    let issuer = issuer_of(ca_cert, ca_key)?;
    let (cert, key) = broker_certificate(&issuer, names, broker_id)?;
    write_new_files(out, "broker", &cert, &key, ca_cert)
}

/// Issues a client certificate for user `name` (`eddy ca issue-client`):
/// writes `<name>.pem`, `<name>.key` (0600) and `ca.pem` into `out`,
/// refusing to overwrite. The certificate carries `eddy:user:<name>` and is
/// good for client authentication only. Returns the certificate's path.
pub fn issue_client_files(ca_cert: &Path, ca_key: &Path, name: &str, out: &Path) -> Result<PathBuf, TlsError> {
    eddy_protocol::security::validate_user_name(name).map_err(|reason| TlsError::Pem { path: out.into(), reason })?;
    let issuer = issuer_of(ca_cert, ca_key)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names.push(uri(crate::auth::identity::user_uri(name))?);
    params.distinguished_name.push(DnType::CommonName, format!("Eddy user {name}"));
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_new_files(out, name, &cert.pem(), &key.serialize_pem(), ca_cert)
}

fn write_new_files(out: &Path, stem: &str, cert: &str, key: &str, ca_cert: &Path) -> Result<PathBuf, TlsError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let (cert_path, key_path) = (out.join(format!("{stem}.pem")), out.join(format!("{stem}.key")));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists already; not overwritten");
            return Err(TlsError::Io { path: path.clone(), source });
        }
    }
    write_private(&key_path, key)?;
    std::fs::write(&cert_path, cert).map_err(io(&cert_path))?;
    let ca_copy = out.join("ca.pem");
    if !ca_copy.exists() {
        std::fs::copy(ca_cert, &ca_copy).map_err(io(&ca_copy))?;
    }
    Ok(cert_path)
}

/// The CA certificates of a PEM file, as a root store.
pub fn root_store(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| TlsError::Pem { path: ca.into(), reason: e.to_string() })?;
    for cert in certs {
        let cert = cert.map_err(|e| TlsError::Pem { path: ca.into(), reason: e.to_string() })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem { path: ca.into(), reason: "no CA certificate found".into() });
    }
    Ok(roots)
}

/// A rustls server configuration: TLS 1.3 only, ALPN `eddy/1`, ring
/// provider; client certificates of the CA in `identity.ca_path` are asked
/// for and verified, but not required.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(&identity.ca_path)?);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Pem { path: identity.ca_path.clone(), reason: format!("unusable CA: {e}") })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![eddy_protocol::ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), &["eddy.example".into()], 1).unwrap();
        let second = load_or_generate(dir.path(), &[], 1).unwrap();
        assert_eq!(first.broker_id(), Some(1));
        assert_eq!(first.chain, second.chain);
        assert!(first.ca_path.ends_with("tls/ca.pem"));
        server_config(&first).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/broker.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn brokers_of_one_cluster_ca_share_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, key) = create_ca(&dir.path().join("ca")).unwrap();
        assert!(create_ca(&dir.path().join("ca")).is_err(), "an existing CA is never overwritten");
        let one = load_or_issue(&dir.path().join("b1"), &ca, &key, &[], 1).unwrap();
        let two = load_or_issue(&dir.path().join("b2"), &ca, &key, &[], 2).unwrap();
        assert_eq!((one.broker_id(), two.broker_id()), (Some(1), Some(2)));
        assert_ne!(one.chain, two.chain);
        assert_eq!(std::fs::read(&one.ca_path).unwrap(), std::fs::read(&ca).unwrap());
        assert_eq!(std::fs::read(&two.ca_path).unwrap(), std::fs::read(&ca).unwrap());
        let again = load_or_issue(&dir.path().join("b1"), &ca, &key, &[], 1).unwrap();
        assert_eq!(again.chain, one.chain, "a later start reuses the issued certificate");
        server_config(&one).unwrap();
        let renamed = load_or_issue(&dir.path().join("b1"), &ca, &key, &[], 3).unwrap();
        assert_eq!(renamed.broker_id(), Some(3), "a certificate of another id is issued again");
    }

    #[test]
    fn offline_certificates_carry_exactly_their_identity() {
        use crate::auth::{identity::principal_of, Principal};
        let dir = tempfile::tempdir().unwrap();
        let (ca, key) = create_ca(&dir.path().join("ca")).unwrap();
        let broker = issue_broker_files(&ca, &key, 2, &["localhost".into()], &dir.path().join("b2")).unwrap();
        assert!(issue_broker_files(&ca, &key, 2, &[], &dir.path().join("b2")).is_err(), "never overwrites");
        let client = issue_client_files(&ca, &key, "alice", &dir.path().join("alice")).unwrap();
        let b = load(&broker, &dir.path().join("b2/broker.key")).unwrap();
        let c = load(&client, &dir.path().join("alice/alice.key")).unwrap();
        assert_eq!(principal_of(&b.chain[0]), Some(Principal::Broker(2)));
        assert_eq!(principal_of(&c.chain[0]), Some(Principal::User("alice".into())));
        assert!(issue_client_files(&ca, &key, "bad,name", &dir.path().join("x")).is_err());
    }
}
