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
//! Later starts reuse the files. A configured `--tls-cert`/`--tls-key` pair is
//! used as it is.
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
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem { path: key.into(), reason: e.to_string() })?;
    Ok(TlsIdentity { chain, key, ca_path: cert.to_path_buf() })
}

/// Loads the identity from `<data_dir>/tls/`, generating it on first use.
/// `extra_names` are added to the certificate's subject alternative names.
pub fn load_or_generate(data_dir: &Path, extra_names: &[String]) -> Result<TlsIdentity, TlsError> {
    let dir = data_dir.join("tls");
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("broker.pem"), dir.join("broker.key"));
    if !(ca_pem.exists() && cert_pem.exists() && key_pem.exists()) {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        generate(&dir, extra_names)?;
        tracing::info!(ca = %ca_pem.display(), "generated a self-signed CA and broker certificate");
    }
    let mut identity = load(&cert_pem, &key_pem)?;
    identity.ca_path = ca_pem;
    Ok(identity)
}

fn ca_params(name: &str) -> Result<CertificateParams, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(ca_params)
}

fn generate(dir: &Path, extra_names: &[String]) -> Result<(), TlsError> {
    let ca_params = ca_params("Eddy local CA")?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    write_private(&dir.join("ca.key"), &ca_key_pem)?;
    issue(dir, &issuer, extra_names)?;
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
) -> Result<TlsIdentity, TlsError> {
    let dir = data_dir.join("tls");
    let (ca_pem, cert_pem, key_pem) = (dir.join("ca.pem"), dir.join("broker.pem"), dir.join("broker.key"));
    let ca_text = std::fs::read_to_string(ca_cert).map_err(io(ca_cert))?;
    let current = std::fs::read_to_string(&ca_pem).ok();
    if current.as_deref() != Some(ca_text.as_str()) || !(cert_pem.exists() && key_pem.exists()) {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let key_text = std::fs::read_to_string(ca_key).map_err(io(ca_key))?;
        let key = KeyPair::from_pem(&key_text)
            .map_err(|e| TlsError::Pem { path: ca_key.into(), reason: format!("not a private key: {e}") })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_text, key)
            .map_err(|e| TlsError::Pem { path: ca_cert.into(), reason: format!("not a CA certificate: {e}") })?;
        issue(&dir, &issuer, extra_names)?;
        std::fs::write(&ca_pem, &ca_text).map_err(io(&ca_pem))?;
        tracing::info!(ca = %ca_cert.display(), "issued the broker certificate with the cluster CA");
    }
    let mut identity = load(&cert_pem, &key_pem)?;
    identity.ca_path = ca_pem;
    Ok(identity)
}

/// Writes `broker.pem` and `broker.key` into `dir`: a server certificate for
/// this machine's names plus `extra_names`, signed by `issuer`.
fn issue(dir: &Path, issuer: &Issuer<'_, KeyPair>, extra_names: &[String]) -> Result<(), TlsError> {
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
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "Eddy broker");
    params.use_authority_key_identifier_extension = true;
    params.key_usages.push(KeyUsagePurpose::DigitalSignature);
    params.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_private(&dir.join("broker.key"), &key.serialize_pem())?;
    let cert_path = dir.join("broker.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok(())
}

/// A rustls server configuration: TLS 1.3 only, ALPN `eddy/1`, ring provider.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
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
        let first = load_or_generate(dir.path(), &["eddy.example".into()]).unwrap();
        let second = load_or_generate(dir.path(), &[]).unwrap();
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
        let one = load_or_issue(&dir.path().join("b1"), &ca, &key, &[]).unwrap();
        let two = load_or_issue(&dir.path().join("b2"), &ca, &key, &[]).unwrap();
        assert_ne!(one.chain, two.chain);
        assert_eq!(std::fs::read(&one.ca_path).unwrap(), std::fs::read(&ca).unwrap());
        assert_eq!(std::fs::read(&two.ca_path).unwrap(), std::fs::read(&ca).unwrap());
        let again = load_or_issue(&dir.path().join("b1"), &ca, &key, &[]).unwrap();
        assert_eq!(again.chain, one.chain, "a later start reuses the issued certificate");
        server_config(&one).unwrap();
    }
}
