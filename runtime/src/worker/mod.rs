//! The processor worker: runs every deployed processor as members of its
//! consumer group `processor.<name>`, in the broker process (`eddy broker`,
//! `eddy dev`) or in standalone `eddy runtime` processes that join the same
//! groups to scale out.
//!
//! A supervisor task lists the deployments every [`WorkerConfig::poll_interval`]
//! and reconciles: a new processor or version gets `parallelism` members (the
//! old version's members finish their batch, commit and leave first, so a
//! redeploy resumes from the committed offsets and neither loses nor skips
//! records); a deleted or stopped processor loses its members; a member that
//! failed is started again after [`RESTART_PAUSE`]. Members are in `member.rs`.

mod logs;
mod member;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_protocol::processors::{ProcessorDescription, STATUS_RUNNING};
use eddy_sdk::{Client, ClientConfig, ClientError, Processors};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::Runtime;
use crate::limits::ProcessorLimits;
use crate::module::Module;
use member::{MemberContext, MemberExit};

/// How long a failed member (or a module that failed to load) waits before it is started again.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// A worker failed to talk to the broker or to run a processor.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A broker request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The processor's module could not be loaded.
    #[error(transparent)]
    Runtime(#[from] crate::error::RuntimeError),
    /// A worker task failed unexpectedly (a bug).
    #[error("internal worker error: {0}")]
    Internal(String),
}

/// How a worker reaches the broker and runs its members.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The broker to connect to.
    pub client: ClientConfig,
    /// Shown as the members' client id (suffixed with the processor and member index).
    pub worker_id: String,
    /// Group session timeout of the members: how soon the partitions of a
    /// worker that died move to the others (default 10 s).
    pub session_timeout: Duration,
    /// How often the deployments are listed (default 200 ms).
    pub poll_interval: Duration,
}

impl WorkerConfig {
    /// Defaults for a worker connecting with `client`.
    pub fn new(client: ClientConfig) -> Self {
        WorkerConfig {
            client,
            worker_id: format!("eddy-runtime-{}", std::process::id()),
            session_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// A running worker. [`Worker::shutdown`] stops it cleanly; dropping it stops
/// its tasks without leaving the groups (the session timeout moves the partitions).
pub struct Worker {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Worker {
    /// Connects to the broker and starts the supervisor. Fails only if the
    /// first connection fails; later connection losses are retried.
    pub async fn start(runtime: Arc<Runtime>, config: WorkerConfig) -> Result<Worker, WorkerError> {
        let client = Client::connect(config.client.clone()).await?;
        let (stop, stop_rx) = watch::channel(false);
        let supervisor = Supervisor { runtime, config, client: Some(client), running: HashMap::new() };
        let task = tokio::spawn(supervisor.run(stop_rx));
        Ok(Worker { stop, task: Some(task) })
    }

    /// Stops every member (each finishes its batch, commits and leaves its
    /// group) and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One member task and the switch that stops it.
struct MemberHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<MemberExit>,
    index: usize,
}

/// The members of one processor version.
struct RunningProcessor {
    desc: ProcessorDescription,
    module: Arc<Module>,
    /// Connections acting as this processor (`Processor:<name>`): the broker
    /// lets its members read its inputs, write its outputs and commit its
    /// state, and nothing else.
    client: Client,
    members: Vec<MemberHandle>,
    /// Members that failed, with when they may start again.
    restarts: Vec<(usize, Instant)>,
    /// Set when a member stopped the processor; nothing is restarted.
    halted: bool,
}

struct Supervisor {
    runtime: Arc<Runtime>,
    config: WorkerConfig,
    client: Option<Client>,
    running: HashMap<String, RunningProcessor>,
}

impl Supervisor {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Versions whose module failed to load, with when to try again.
        let mut load_failures: HashMap<(String, u32), Instant> = HashMap::new();
        loop {
            if *stop.borrow() {
                break;
            }
            match self.list().await {
                Ok(deployed) => self.reconcile(deployed, &mut load_failures).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list processors; reconnecting");
                    self.client = None;
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        let names: Vec<String> = self.running.keys().cloned().collect();
        futures::future::join_all(names.iter().map(|n| stop_processor(self.running.remove(n)))).await;
    }

    /// The deployed processors, reconnecting first if needed.
    async fn list(&mut self) -> Result<Vec<ProcessorDescription>, ClientError> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = Client::connect(self.config.client.clone()).await?;
                self.client = Some(c.clone());
                c
            }
        };
        Processors::new(client).list().await
    }

    async fn reconcile(
        &mut self,
        deployed: Vec<ProcessorDescription>,
        load_failures: &mut HashMap<(String, u32), Instant>,
    ) {
        let wanted: HashMap<String, ProcessorDescription> =
            deployed.into_iter().filter(|d| d.status == STATUS_RUNNING).map(|d| (d.name.clone(), d)).collect();
        // Deleted, stopped or replaced versions first.
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(*name).is_none_or(|d| d.version != r.desc.version))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            tracing::info!(processor = %name, "stopping processor members");
            stop_processor(self.running.remove(&name)).await;
        }
        let Some(client) = self.client.clone() else { return };
        for (name, desc) in wanted {
            if let Some(running) = self.running.get_mut(&name) {
                let own = running.client.clone();
                running.supervise(&own, &self.config);
                continue;
            }
            let key = (name.clone(), desc.version);
            if load_failures.get(&key).is_some_and(|retry| Instant::now() < *retry) {
                continue;
            }
            let loaded = match self.load(&client, &desc).await {
                Ok(module) => Client::connect(self.config.client.clone().act_as_processor(name.clone()))
                    .await
                    .map(|own| (module, own))
                    .map_err(WorkerError::from),
                Err(e) => Err(e),
            };
            match loaded {
                Ok((module, own)) => {
                    load_failures.remove(&key);
                    let mut running = RunningProcessor {
                        desc,
                        module,
                        client: own.clone(),
                        members: Vec::new(),
                        restarts: Vec::new(),
                        halted: false,
                    };
                    for index in 0..running.desc.parallelism.max(1) as usize {
                        running.spawn(index, &own, &self.config);
                    }
                    tracing::info!(processor = %name, version = running.desc.version, members = running.members.len(), "processor started");
                    self.running.insert(name, running);
                }
                Err(e) => {
                    tracing::error!(processor = %name, version = desc.version, error = %e, "cannot load the processor's module");
                    load_failures.insert(key, Instant::now() + RESTART_PAUSE);
                }
            }
        }
    }

    /// Fetches and compiles (or finds in the cache) a version's module.
    async fn load(&self, client: &Client, desc: &ProcessorDescription) -> Result<Arc<Module>, WorkerError> {
        let wasm = Processors::new(client.clone()).fetch_module(&desc.name, desc.version).await?;
        let runtime = self.runtime.clone();
        let module = tokio::task::spawn_blocking(move || runtime.load(&wasm))
            .await
            .map_err(|e| WorkerError::Internal(format!("module load task failed: {e}")))??;
        Ok(module)
    }
}

impl RunningProcessor {
    fn spawn(&mut self, index: usize, client: &Client, config: &WorkerConfig) {
        let ctx = MemberContext {
            client: client.clone(),
            desc: self.desc.clone(),
            module: self.module.clone(),
            limits: limits_of(&self.desc),
            client_id: format!("{}/{}#{index}", config.worker_id, self.desc.name),
            session_timeout: config.session_timeout,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(member::run(ctx, stop_rx));
        self.members.push(MemberHandle { stop, task, index });
    }

    /// Collects finished members and restarts failed ones after the pause.
    fn supervise(&mut self, client: &Client, config: &WorkerConfig) {
        let mut i = 0;
        while i < self.members.len() {
            if !self.members[i].task.is_finished() {
                i += 1;
                continue;
            }
            let handle = self.members.swap_remove(i);
            let index = handle.index;
            match futures::FutureExt::now_or_never(handle.task) {
                Some(Ok(MemberExit::Halted(reason))) => {
                    tracing::warn!(processor = %self.desc.name, %reason, "processor halted");
                    self.halted = true;
                }
                Some(Ok(MemberExit::Failed(e))) => {
                    tracing::warn!(processor = %self.desc.name, member = index, error = %e, "processor member failed; restarting it");
                    self.restarts.push((index, Instant::now() + RESTART_PAUSE));
                }
                Some(Ok(MemberExit::Stopped)) => {}
                Some(Err(e)) => {
                    tracing::error!(processor = %self.desc.name, member = index, error = %e, "processor member panicked; restarting it");
                    self.restarts.push((index, Instant::now() + RESTART_PAUSE));
                }
                None => {}
            }
        }
        if self.halted {
            self.restarts.clear();
            return;
        }
        let now = Instant::now();
        let due: Vec<usize> = self.restarts.iter().filter(|(_, at)| *at <= now).map(|(i, _)| *i).collect();
        self.restarts.retain(|(_, at)| *at > now);
        for index in due {
            self.spawn(index, client, config);
        }
    }
}

/// Stops a processor's members and waits for them to leave.
async fn stop_processor(running: Option<RunningProcessor>) {
    let Some(running) = running else { return };
    for m in &running.members {
        let _ = m.stop.send(true);
    }
    for m in running.members {
        let _ = m.task.await;
    }
}

/// The sandbox limits of a deployment (0 keeps a default).
fn limits_of(desc: &ProcessorDescription) -> ProcessorLimits {
    let mut limits = ProcessorLimits::default();
    if desc.timeout_ms > 0 {
        limits.call_timeout = Duration::from_millis(desc.timeout_ms.into());
    }
    if desc.memory_bytes > 0 {
        limits.max_memory_bytes = desc.memory_bytes as usize;
    }
    limits
}
