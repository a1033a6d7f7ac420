//! Options shared by every client command: where the broker is and which CA to trust.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use eddy_sdk::{Client, ClientConfig};

/// `--broker` and `--ca`, with defaults that reach a local `eddy dev`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Broker address, host:port.
    #[arg(long, env = "EDDY_BROKER", default_value = "127.0.0.1:9400", global = true)]
    pub broker: String,
    /// CA certificate to verify the broker with (default: the `eddy dev` CA).
    #[arg(long, env = "EDDY_CA", global = true)]
    pub ca: Option<PathBuf>,
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
        Ok(ClientConfig::new(self.broker.clone()).ca_file(ca))
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
