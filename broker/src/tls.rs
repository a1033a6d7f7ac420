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

fn generate(dir: &Path, extra_names: &[String]) -> Result<(), TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Eddy local CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

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
    let cert = params.signed_by(&key, &issuer)?;

    write_private(&dir.join("ca.key"), &ca_key_pem)?;
    write_private(&dir.join("broker.key"), &key.serialize_pem())?;
    let cert_path = dir.join("broker.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    // The CA file last: its presence marks a complete set.
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).map_err(io(&ca_path))?;
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
}
