//! Options shared by every client command: where the broker is and which CA to trust.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use eddy_sdk::client::{read_password_file, LOCAL_PASSWORD_FILE, LOCAL_SUPERUSER};
use eddy_sdk::{Client, ClientConfig};

/// `--broker`, `--ca` and the credentials, with defaults that reach a
/// local `eddy dev`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Broker address, host:port.
    #[arg(long, env = "EDDY_BROKER", default_value = "127.0.0.1:9400", global = true)]
    pub broker: String,
    /// CA certificate to verify the broker with (default: the `eddy dev` CA).
    #[arg(long, env = "EDDY_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// User to authenticate as (SCRAM-SHA-256); the password comes from
    /// EDDY_PASSWORD or --password-file. Default: the broker's `admin` with
    /// the password file next to the CA (`eddy dev`, a single `eddy broker`).
    #[arg(long, env = "EDDY_USER", global = true)]
    pub user: Option<String>,
    /// File holding the password of --user (first line).
    #[arg(long, env = "EDDY_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Client certificate (PEM, from `eddy ca issue-client`) to authenticate
    /// with instead of a password; with --client-key.
    #[arg(long, env = "EDDY_CLIENT_CERT", requires = "client_key", global = true)]
    pub client_cert: Option<PathBuf>,
    /// Key of --client-cert.
    #[arg(long, env = "EDDY_CLIENT_KEY", requires = "client_cert", global = true)]
    pub client_key: Option<PathBuf>,
}

/// The password of `--user`: `EDDY_PASSWORD`, else the first line of `--password-file`.
fn password(args: &ClientArgs, user: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("EDDY_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let Some(file) = &args.password_file else {
        anyhow::bail!("--user {user} needs a password: set EDDY_PASSWORD or pass --password-file FILE");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading the password file {}", file.display()))?;
    match text.lines().next() {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => anyhow::bail!("the password file {} is empty", file.display()),
    }
}

/// Where `eddy dev` keeps its data unless told otherwise.
pub fn dev_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDDY_DEV_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("eddy/dev")
}

impl ClientArgs {
    /// The client configuration these options describe.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let ca = match &self.ca {
            Some(ca) => ca.clone(),
            None => {
                let dev_ca = dev_data_dir().join("tls/ca.pem");
                if !dev_ca.exists() {
                    anyhow::bail!(
                        "no CA certificate given: pass --ca FILE or set EDDY_CA (a broker writes its CA to <data-dir>/tls/ca.pem; \
                         the default {} does not exist)",
                        dev_ca.display()
                    );
                }
                dev_ca
            }
        };
        let mut config = ClientConfig::new(self.broker.clone()).ca_file(ca);
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            config = config.client_cert(cert, key);
        }
        match &self.user {
            Some(user) => Ok(config.credentials(user.clone(), password(self, user)?)),
            None => {
                let config = config.with_local_credentials();
                if config.credentials.is_none() && config.client_cert.is_none() {
                    // The `eddy dev` superuser, when --ca names another file.
                    if let Ok(p) = read_password_file(&dev_data_dir().join(LOCAL_PASSWORD_FILE)) {
                        return Ok(config.credentials(LOCAL_SUPERUSER, p));
                    }
                }
                Ok(config)
            }
        }
    }

    /// Connects to the broker.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let config = self.config()?;
        Client::connect(config).await.with_context(|| format!("connecting to {}", self.broker))
    }
}

/// Parses `0`, `1` or `all`.
pub fn parse_acks(s: &str) -> Result<eddy_sdk::protocol::messages::Acks, String> {
    use eddy_sdk::protocol::messages::Acks;
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("acks must be 0, 1 or all, not '{other}'")),
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
