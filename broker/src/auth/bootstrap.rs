//! The first superuser of a new cluster.
//!
//! On start, a broker whose cluster has no bootstrapped user proposes
//! `BootstrapUser { admin }` with a password read from
//! `--admin-password-file`, or else a random one written to
//! `<data-dir>/admin.password` (mode 0600) before it is proposed. The
//! command applies only once per cluster, so when several brokers of a new
//! cluster race, one user is created; the losers remove the password file
//! they wrote (it would be wrong) and the winner logs where its file is.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use eddy_protocol::scram::{ScramCredential, DEFAULT_ITERATIONS};
use eddy_sdk::client::read_password_file;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::store::{MetaCommand, Store};

/// The superuser every new cluster gets (the name clients fall back to).
pub const ADMIN_USER: &str = eddy_sdk::client::LOCAL_SUPERUSER;
/// Its password file in the data directory, unless given (where clients look).
pub const ADMIN_PASSWORD_FILE: &str = eddy_sdk::client::LOCAL_PASSWORD_FILE;

/// Where the first superuser's password comes from.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The broker's data directory.
    pub data_dir: PathBuf,
    /// A file holding the password to use (first line), if given.
    pub password_file: Option<PathBuf>,
}

/// A random password: 24 bytes of the OS's randomness, base64url.
pub fn random_password() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes `contents` to `path` with mode 0600 (created or truncated).
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    crate::tls::restrict(path, 0o600)
}

fn ours(store: &Store, credential: &[u8]) -> bool {
    store.security().users.get(ADMIN_USER).is_some_and(|c| c.as_ref() == credential)
}

/// Creates the first superuser if the cluster has none yet; retries until
/// the metadata quorum answers or the broker shuts down.
pub async fn run(
    config: BootstrapConfig,
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    mut shutdown: watch::Receiver<bool>,
) {
    if store.security().bootstrapped {
        return;
    }
    let generated_file = config.data_dir.join(ADMIN_PASSWORD_FILE);
    let (password, generated) = match &config.password_file {
        Some(file) => match read_password_file(file) {
            Ok(p) => (p, false),
            Err(e) => {
                warn!(file = %file.display(), error = %e, "cannot read the admin password file; no superuser created");
                return;
            }
        },
        None => match read_password_file(&generated_file) {
            Ok(p) => (p, true),
            Err(_) => {
                let p = random_password();
                if let Err(e) = write_private_file(&generated_file, &format!("{p}\n")) {
                    warn!(file = %generated_file.display(), error = %e, "cannot write the admin password file");
                    return;
                }
                (p, true)
            }
        },
    };
    let credential = ScramCredential::new(&password, DEFAULT_ITERATIONS).to_bytes();
    loop {
        if store.security().bootstrapped {
            break;
        }
        let command = MetaCommand::BootstrapUser { name: ADMIN_USER.into(), credential: credential.clone() };
        match cluster.propose(command).await.map(|o| o.into_flag()) {
            Ok(Ok(true)) => {
                let file =
                    if generated { &generated_file } else { config.password_file.as_ref().unwrap_or(&generated_file) };
                info!(user = ADMIN_USER, password_file = %file.display(), "created the cluster's superuser");
                return;
            }
            // Ours may have been applied with its answer lost: then it is ours.
            Ok(Ok(false)) if ours(&store, &credential) => return,
            Ok(Ok(false)) => break,
            Ok(Err(e)) => {
                warn!(error = %e, "unexpected answer to the superuser bootstrap");
                return;
            }
            Err(e) => info!(error = %e.message, "superuser bootstrap not possible yet; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
    // Another broker created it (with its own password).
    if generated && !ours(&store, &credential) {
        let _ = std::fs::remove_file(&generated_file);
    }
}
