//! `eddy runtime`: a standalone processor worker that joins the processors'
//! consumer groups on a broker, to scale processing out of the broker process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use eddy_runtime::{Runtime, Worker, WorkerConfig};

use super::common::{interrupted, ClientArgs};

/// Options of `eddy runtime`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Directory for compiled modules, so a restart does not recompile
    /// (default: ~/.cache/eddy/wasm or $XDG_CACHE_HOME/eddy/wasm).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Shown as this worker's members' client id in `eddy group describe`.
    #[arg(long)]
    worker_id: Option<String>,
    /// Session timeout of the group members, in ms: how soon this worker's
    /// partitions move to other workers if it dies.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("eddy/wasm")
}

/// Runs the worker until SIGINT/SIGTERM, then lets every member finish its
/// batch, commit and leave.
pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    let cache_dir = args.cache_dir.unwrap_or_else(default_cache_dir);
    let runtime = Runtime::new(Some(cache_dir.clone()))
        .with_context(|| format!("starting the Wasm runtime (cache {})", cache_dir.display()))?;
    let mut config = WorkerConfig::new(args.client.config()?);
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    config.session_timeout = Duration::from_millis(args.session_timeout_ms);
    let worker = Worker::start(Arc::new(runtime), config)
        .await
        .with_context(|| format!("connecting to {}", args.client.broker))?;
    eprintln!("eddy runtime connected to {} (module cache: {})", args.client.broker, cache_dir.display());
    interrupted().await;
    eprintln!("eddy runtime stopping: finishing in-flight batches");
    worker.shutdown().await;
    Ok(())
}
