//! `eddy ca create`: a cluster CA for the brokers of one cluster.

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
}

/// Runs a CA subcommand.
pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Create { out } => {
            let (cert, key) =
                eddy_broker::tls::create_ca(&out).with_context(|| format!("creating a CA in {}", out.display()))?;
            println!("wrote {} and {} (keep the key private)", cert.display(), key.display());
        }
    }
    Ok(())
}
