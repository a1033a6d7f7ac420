//! `eddy broker` and `eddy dev`: run a broker, with a processor worker unless
//! `--no-runtime`, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use eddy_broker::store::DurabilityPolicy;
use eddy_broker::{Broker, BrokerConfig};
use eddy_runtime::{Worker, WorkerConfig};
use eddy_sdk::ClientConfig;

use super::common::dev_data_dir;

/// Options of `eddy broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Directory for the database and TLS files.
    #[arg(long, default_value = "eddy-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    common: ServeArgs,
}

/// Options of `eddy dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the database and TLS files (default: ~/.local/share/eddy/dev or $EDDY_DEV_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    common: ServeArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// UDP address to listen on (port 0 picks a free port; see <data-dir>/broker.addr).
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
    /// This broker's id.
    #[arg(long, default_value_t = 1)]
    id: u32,
    /// Every broker of the cluster, this one included, as ID@HOST:PORT,...
    /// (the addresses clients and brokers reach them at). Omit for a single broker.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Cluster CA certificate (from `eddy ca create`) that signs this broker's
    /// certificate; give every broker of a cluster the same one.
    #[arg(long, requires = "tls_ca_key")]
    tls_ca_cert: Option<PathBuf>,
    /// Private key of --tls-ca-cert.
    #[arg(long, requires = "tls_ca_cert")]
    tls_ca_key: Option<PathBuf>,
    /// With --tls-cert: the CA that the other brokers' certificates verify against.
    #[arg(long, requires = "tls_cert")]
    tls_peer_ca: Option<PathBuf>,
    /// A broker silent this long is declared dead by the controller, which
    /// moves its partitions' leadership, in ms.
    #[arg(long, default_value_t = 1000)]
    session_timeout_ms: u64,
    /// A follower not caught up for this long leaves the ISR, in ms.
    #[arg(long, default_value_t = 10_000)]
    replica_lag_time_ms: u64,
    /// Address clients should use to reach this broker.
    #[arg(long)]
    advertised_addr: Option<String>,
    /// PEM certificate chain to serve instead of the generated one (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// fsync at most every this many ms instead of before every acknowledgement.
    /// Relaxed: records acknowledged in the last interval can be lost on a crash.
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// Largest record batch accepted, in bytes.
    #[arg(long, default_value_t = eddy_sdk::protocol::limits::DEFAULT_MAX_BATCH_BYTES)]
    max_batch_bytes: u32,
    /// Largest single record accepted, in bytes.
    #[arg(long, default_value_t = eddy_sdk::protocol::limits::DEFAULT_MAX_RECORD_BYTES)]
    max_record_bytes: u32,
    /// How often retention deletes expired batches, in ms.
    #[arg(long, default_value_t = 30_000)]
    retention_check_ms: u64,
    /// Do not run processors in this process (run `eddy runtime` workers instead).
    #[arg(long)]
    no_runtime: bool,
    /// Session timeout of this process's processor group members, in ms: how
    /// soon their partitions move to other workers if this process dies.
    #[arg(long, default_value_t = 10_000)]
    processor_session_timeout_ms: u64,
    /// Users that may do anything, comma-separated (brokers always may).
    #[arg(long, value_delimiter = ',', default_value = "admin")]
    superusers: Vec<String>,
    /// On a new cluster's first start: the password of the superuser `admin`
    /// (first line of the file). Default: a random one written to
    /// <data-dir>/admin.password (mode 0600) and named in the log.
    #[arg(long)]
    admin_password_file: Option<PathBuf>,
    /// Benchmarks only: skip every authorization check (authentication stays
    /// on), to measure what authorization costs.
    #[arg(long, hide = true)]
    bench_skip_authorization: bool,
}

impl ServeArgs {
    fn config(&self, data_dir: PathBuf) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::new(data_dir);
        config.superusers = self.superusers.clone();
        config.admin_password_file = self.admin_password_file.clone();
        config.skip_authorization = self.bench_skip_authorization;
        config.peers = parse_peers(&self.peers)?;
        config.tls_ca = self.tls_ca_cert.clone().zip(self.tls_ca_key.clone());
        config.tls_peer_ca = self.tls_peer_ca.clone();
        config.session_timeout = Duration::from_millis(self.session_timeout_ms.max(100));
        config.replication.replica_lag_time = Duration::from_millis(self.replica_lag_time_ms.max(100));
        config.broker_id = self.id;
        config.listen = self.listen;
        config.advertised_addr = self.advertised_addr.clone();
        config.tls_cert = self.tls_cert.clone().zip(self.tls_key.clone());
        config.durability = match self.flush_interval_ms {
            None | Some(0) => DurabilityPolicy::EveryCommit,
            Some(ms) => DurabilityPolicy::Interval(Duration::from_millis(ms)),
        };
        config.max_batch_bytes = self.max_batch_bytes;
        config.max_record_bytes = self.max_record_bytes;
        config.retention_check_interval = Duration::from_millis(self.retention_check_ms.max(10));
        Ok(config)
    }
}

/// Parses `ID@HOST:PORT` entries into id -> address.
fn parse_peers(peers: &[String]) -> anyhow::Result<std::collections::BTreeMap<u32, String>> {
    let mut out = std::collections::BTreeMap::new();
    for p in peers.iter().filter(|p| !p.trim().is_empty()) {
        let (id, addr) = p
            .split_once('@')
            .ok_or_else(|| anyhow::anyhow!("--peers entry '{p}' is not ID@HOST:PORT (e.g. 1@10.0.0.1:9400)"))?;
        let id: u32 =
            id.trim().parse().map_err(|_| anyhow::anyhow!("--peers entry '{p}': '{id}' is not a broker id"))?;
        if id == 0 {
            anyhow::bail!("--peers entry '{p}': broker ids start at 1");
        }
        let addr = addr.trim();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => anyhow::bail!("--peers entry '{p}': '{addr}' is not HOST:PORT"),
        }
        if out.insert(id, addr.to_string()).is_some() {
            anyhow::bail!("--peers lists broker {id} twice");
        }
    }
    Ok(out)
}

/// Runs a broker until SIGINT/SIGTERM.
pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    serve(args.common.config(args.data_dir)?, &args.common).await
}

/// Runs a development broker until SIGINT/SIGTERM.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(dev_data_dir);
    serve(args.common.config(data_dir)?, &args.common).await
}

async fn serve(config: BrokerConfig, args: &ServeArgs) -> anyhow::Result<()> {
    let broker = Broker::start(config.clone())
        .await
        .with_context(|| format!("starting broker in {}", config.data_dir.display()))?;
    eprintln!(
        "eddy broker {} listening on {} (data: {}, CA: {})",
        config.broker_id,
        broker.local_addr(),
        config.data_dir.display(),
        broker.ca_path().display()
    );
    let worker = if args.no_runtime {
        None
    } else {
        // The embedded worker talks to this broker over QUIC like any other
        // worker, and shares its compiled-module cache.
        // It proves this broker's identity with the broker's certificate.
        let (cert, key) = broker.certificate();
        let client =
            ClientConfig::new(broker.local_addr().to_string()).ca_file(broker.ca_path()).client_cert(cert, key);
        let mut worker_config = WorkerConfig::new(client);
        worker_config.worker_id = format!("broker-{}", config.broker_id);
        worker_config.session_timeout = Duration::from_millis(args.processor_session_timeout_ms);
        let worker = Worker::start(broker.runtime(), worker_config).await.context("starting the processor worker")?;
        Some(worker)
    };
    wait_for_signal().await?;
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    broker.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
