//! The pipeline's set-up and progress on a broker: its topics, the two
//! processors, and waiting until a processor has caught up with its inputs.
//! Used by `cargo xtask demo`, the pipeline benchmark and the tests.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_sdk::protocol::processors::{
    processor_group, DeployProcessorRequest, ErrorPolicy, ProcessorDescription, ProcessorParam, StartPosition,
};
use eddy_sdk::{Admin, ClientError, ErrorCode, NewTopic, Processors};

use crate::records::{ARTICLES_TOPIC as ARTICLES, RECOMMENDATIONS_TOPIC as RECOMMENDATIONS, USERS_TOPIC as USERS};

/// Articles as JSON documents from `format`, keyed by article id.
pub const FORMATTED_TOPIC: &str = "formatted";
use FORMATTED_TOPIC as FORMATTED;
/// The `format` processor's name.
pub const FORMAT: &str = "format";
/// The `recommend` processor's name.
pub const RECOMMEND: &str = "recommend";

/// Why the pipeline could not be set up or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A broker call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A processor module could not be read.
    #[error("cannot read the processor module {path}: {source} (build it with `cargo xtask processors`)")]
    Module {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A processor did not catch up in time.
    #[error("processor {processor} did not catch up within {waited:?}: {state}")]
    Timeout {
        /// The processor.
        processor: String,
        /// How long it was given.
        waited: Duration,
        /// Its progress when the wait ended.
        state: String,
    },
    /// A processor stopped (its `stop` policy or a failing init).
    #[error("processor {processor} stopped: {reason}")]
    Stopped {
        /// The processor.
        processor: String,
        /// Why, as the worker reported it.
        reason: String,
    },
}

/// Creates the pipeline's topics with `partitions` partitions each (existing
/// ones are kept).
pub async fn create_topics(admin: &Admin, partitions: u32) -> Result<(), PipelineError> {
    for topic in [ARTICLES, FORMATTED, USERS, RECOMMENDATIONS] {
        match admin.create_topic(NewTopic::new(topic, partitions)).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Settings of the two processors.
#[derive(Debug, Clone)]
pub struct DeployParams {
    /// `recommend`: the least score that makes a recommendation.
    pub threshold: f64,
    /// `recommend`: the most users one article is recommended to.
    pub max_per_article: u32,
    /// `format`: group members per worker (format costs the most CPU per
    /// article; a second member keeps a core busy while the first waits for
    /// its outputs to be acknowledged).
    pub format_parallelism: u32,
}

impl Default for DeployParams {
    fn default() -> Self {
        DeployParams { threshold: 2.0, max_per_article: 5, format_parallelism: 1 }
    }
}

/// Deploys `format` (articles -> formatted, bad articles to formatted.dlq)
/// and `recommend` (formatted + users -> recommendations) from
/// `modules_dir/{format,recommend}.wasm`, both reading from the beginning.
pub async fn deploy(
    processors: &Processors,
    modules_dir: &Path,
    params: &DeployParams,
) -> Result<(ProcessorDescription, ProcessorDescription), PipelineError> {
    let module = |name: &str| {
        let path = modules_dir.join(format!("{name}.wasm"));
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|source| PipelineError::Module { path: path.display().to_string(), source })
    };
    let request =
        |name: &str, inputs: &[&str], output: &str, wasm: Bytes, params: Vec<ProcessorParam>| DeployProcessorRequest {
            name: name.to_string(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.to_string(),
            parallelism: 1,
            on_error: ErrorPolicy::DeadLetter,
            params,
            start: StartPosition::Beginning,
            timeout_ms: 0,
            memory_bytes: 0,
            wasm,
        };
    let mut format_request = request(FORMAT, &[ARTICLES], FORMATTED, module(FORMAT)?, vec![]);
    format_request.parallelism = params.format_parallelism.max(1);
    let format = processors.deploy(&format_request).await?;
    let recommend_params = vec![
        ProcessorParam { key: "threshold".into(), value: params.threshold.to_string() },
        ProcessorParam { key: "max_per_article".into(), value: params.max_per_article.to_string() },
    ];
    let recommend = processors
        .deploy(&request(RECOMMEND, &[FORMATTED, USERS], RECOMMENDATIONS, module(RECOMMEND)?, recommend_params))
        .await?;
    Ok((format, recommend))
}

/// How far a processor is: records committed and still to do on the given inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Input records whose processing is committed.
    pub done: u64,
    /// Input records in the logs now (log ends minus log starts).
    pub total: u64,
}

/// The committed progress of processor `name` on `topics`.
pub async fn progress(admin: &Admin, name: &str, topics: &[&str]) -> Result<Progress, PipelineError> {
    let group = match admin.describe_group(&processor_group(name)).await {
        Ok(g) => Some(g),
        Err(e) if e.code() == Some(ErrorCode::UnknownGroup) => None,
        Err(e) => return Err(e.into()),
    };
    let mut progress = Progress::default();
    for topic in topics {
        let meta = admin.describe_topic(topic).await?;
        for p in &meta.partitions {
            progress.total += p.log_end - p.log_start;
            let committed = group
                .as_ref()
                .and_then(|g| g.partitions.iter().find(|gp| gp.topic == *topic && gp.partition == p.partition))
                .and_then(|gp| gp.committed)
                .unwrap_or(p.log_start);
            progress.done += committed.saturating_sub(p.log_start);
        }
    }
    Ok(progress)
}

/// Waits until processor `name` has committed everything in `topics` as of
/// the moment it catches up, calling `report` with its progress on the way.
/// Fails if the processor stops or `timeout` passes.
pub async fn wait_caught_up(
    admin: &Admin,
    processors: &Processors,
    name: &str,
    topics: &[&str],
    timeout: Duration,
    mut report: impl FnMut(Progress),
) -> Result<Progress, PipelineError> {
    let started = Instant::now();
    loop {
        let p = progress(admin, name, topics).await?;
        report(p);
        if p.done >= p.total {
            return Ok(p);
        }
        let d = processors.describe(name).await?;
        if d.status != eddy_sdk::protocol::processors::STATUS_RUNNING {
            return Err(PipelineError::Stopped { processor: name.to_string(), reason: d.status_reason });
        }
        if started.elapsed() > timeout {
            return Err(PipelineError::Timeout {
                processor: name.to_string(),
                waited: timeout,
                state: format!("{} of {} input records committed", p.done, p.total),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
