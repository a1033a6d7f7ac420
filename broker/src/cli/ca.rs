//! `eddy ca create|issue-broker|issue-client`: a cluster CA for the brokers
//! of one cluster, and certificates it issues offline, so that a running
//! broker never needs the CA key.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Cluster certificate authority.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write a new CA (ca.pem, ca.key) for a cluster: give every broker
    /// `--tls-ca-cert DIR/ca.pem --tls-ca-key DIR/ca.key`, and clients `--ca DIR/ca.pem`.
    Create {
        /// Directory for ca.pem and ca.key (existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a broker certificate (carrying `eddy:broker:ID`) offline: run the
    /// broker with `--tls-cert OUT/broker.pem --tls-key OUT/broker.key --tls-peer-ca OUT/ca.pem`.
    IssueBroker {
        /// Directory of the CA (ca.pem, ca.key).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The broker's id.
        #[arg(long)]
        id: u32,
        /// Host names and addresses the broker is reached at, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        name: Vec<String>,
        /// Directory for broker.pem, broker.key and ca.pem (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate for user NAME (carrying `eddy:user:NAME`):
    /// clients pass `--client-cert OUT/NAME.pem --client-key OUT/NAME.key`.
    IssueClient {
        /// The user the certificate authenticates.
        name: String,
        /// Directory of the CA (ca.pem, ca.key).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Directory for NAME.pem, NAME.key and ca.pem (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a CA subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Create { out } => {
            let (cert, key) =
                eddy_broker::tls::create_ca(&out).with_context(|| format!("creating a CA in {}", out.display()))?;
            println!("wrote {} and {} (keep the key private)", cert.display(), key.display());
        }
        CaCommand::IssueBroker { ca_dir, id, name, out } => {
            let cert =
                eddy_broker::tls::issue_broker_files(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"), id, &name, &out)
                    .with_context(|| format!("issuing the certificate of broker {id}"))?;
            println!("wrote {} (broker {id}) and its key", cert.display());
        }
        CaCommand::IssueClient { name, ca_dir, out } => {
            let cert =
                eddy_broker::tls::issue_client_files(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"), &name, &out)
                    .with_context(|| format!("issuing the certificate of user {name}"))?;
            println!("wrote {} (user {name}) and its key", cert.display());
        }
    }
    Ok(())
}
