//! `eddy processor deploy`: send a module and its configuration to the
//! broker, which validates the module against the processor world, stores it
//! and bumps the version; the workers pick the new version up.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use eddy_sdk::protocol::processors::{
    DeployProcessorRequest, ErrorPolicy, ProcessorDescription, ProcessorParam, StartPosition,
};
use eddy_sdk::Processors;

use super::inspect::description_json;
use super::parse_param;
use crate::cli::ClientArgs;

/// Options of `eddy processor deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Processor name; its workers join group `processor.NAME`.
    name: String,
    /// The module: a wasm32-wasip2 component built with eddy-processor.
    #[arg(long, value_name = "FILE")]
    wasm: PathBuf,
    /// Input topic(s), comma-separated; each record tells the module its topic.
    #[arg(long, value_name = "TOPIC", value_delimiter = ',', required = true)]
    input: Vec<String>,
    /// Output topic.
    #[arg(long, value_name = "TOPIC")]
    output: String,
    /// Group members per worker process (1..=64).
    #[arg(long, default_value_t = 1)]
    parallelism: u32,
    /// What to do with a record the module fails on: dlq (write it to OUTPUT.dlq), skip, or stop the processor.
    #[arg(long, value_name = "POLICY", default_value = "dlq", value_parser = parse_policy)]
    on_error: ErrorPolicy,
    /// Parameters passed to the module's init, as key=value (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// First deployment only: start at each input partition's first record
    /// (default: only records produced after the deployment).
    #[arg(long, conflicts_with = "from_offset")]
    from_beginning: bool,
    /// First deployment only: start at this offset in every input partition.
    #[arg(long)]
    from_offset: Option<u64>,
    /// Deadline of one call into the module, in ms (default: the runtime's, 100 ms).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Memory cap of one instance, in MiB (default: the runtime's, 64 MiB).
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Print the deployed processor's description as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_policy(s: &str) -> Result<ErrorPolicy, String> {
    ErrorPolicy::from_name(s).ok_or_else(|| format!("on-error must be dlq, skip or stop, not '{s}'"))
}

impl DeployArgs {
    /// Where the first deployment starts reading.
    fn start(&self) -> StartPosition {
        match (self.from_beginning, self.from_offset) {
            (true, _) => StartPosition::Beginning,
            (false, Some(offset)) => StartPosition::Offset(offset),
            (false, None) => StartPosition::End,
        }
    }

    /// The request for `wasm`.
    fn request(&self, wasm: Bytes) -> anyhow::Result<DeployProcessorRequest> {
        let memory_bytes = match self.memory_mb {
            Some(mb) => mb.checked_mul(1024 * 1024).context("--memory-mb is too large")?,
            None => 0,
        };
        Ok(DeployProcessorRequest {
            name: self.name.clone(),
            inputs: self.input.clone(),
            output: self.output.clone(),
            parallelism: self.parallelism,
            on_error: self.on_error,
            params: self
                .params
                .iter()
                .map(|(key, value)| ProcessorParam { key: key.clone(), value: value.clone() })
                .collect(),
            start: self.start(),
            timeout_ms: self.timeout_ms.unwrap_or(0),
            memory_bytes,
            wasm,
        })
    }
}

/// The line printed after a deployment.
fn summary(d: &ProcessorDescription, elapsed_ms: u128) -> String {
    let module: String = d.module_id.chars().take(12).collect();
    format!(
        "deployed {} version {} (module {module}, {} bytes) in {elapsed_ms} ms: {} -> {}",
        d.name,
        d.version,
        d.module_bytes,
        d.inputs.join(","),
        d.output
    )
}

/// Reads the module, deploys it and prints the result.
pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let req = args.request(Bytes::from(wasm))?;
    let processors = Processors::new(args.client.connect().await?);
    let started = Instant::now();
    let desc = processors.deploy(&req).await.with_context(|| format!("deploying {}", args.wasm.display()))?;
    if args.json {
        println!("{}", description_json(&desc));
    } else {
        println!("{}", summary(&desc, started.elapsed().as_millis()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let mut all = vec!["deploy"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.deploy)
    }

    #[test]
    fn defaults_and_lists() {
        let a = parse(&["p", "--wasm", "m.wasm", "--input", "a,b", "--output", "o"]).unwrap();
        let req = a.request(Bytes::new()).unwrap();
        assert_eq!(req.inputs, ["a", "b"]);
        assert_eq!((req.parallelism, req.on_error, req.start), (1, ErrorPolicy::DeadLetter, StartPosition::End));
        assert_eq!((req.timeout_ms, req.memory_bytes), (0, 0));
    }

    #[test]
    fn options_map_to_the_request() {
        let a = parse(&[
            "p",
            "--wasm",
            "m.wasm",
            "--input",
            "a",
            "--output",
            "o",
            "--on-error",
            "stop",
            "--param",
            "match=x",
            "--from-offset",
            "7",
            "--memory-mb",
            "2",
            "--timeout-ms",
            "50",
            "--parallelism",
            "3",
        ])
        .unwrap();
        let req = a.request(Bytes::new()).unwrap();
        assert_eq!((req.on_error, req.start, req.parallelism), (ErrorPolicy::Stop, StartPosition::Offset(7), 3));
        assert_eq!((req.timeout_ms, req.memory_bytes), (50, 2 * 1024 * 1024));
        assert_eq!(req.params, [ProcessorParam { key: "match".into(), value: "x".into() }]);
        assert!(parse(&["p", "--wasm", "m", "--input", "a", "--output", "o", "--on-error", "retry"]).is_err());
        assert!(parse(&[
            "p",
            "--wasm",
            "m",
            "--input",
            "a",
            "--output",
            "o",
            "--from-beginning",
            "--from-offset",
            "1"
        ])
        .is_err());
    }

    #[test]
    fn summary_names_version_module_and_topics() {
        let d = ProcessorDescription {
            name: "up".into(),
            version: 2,
            inputs: vec!["a".into(), "b".into()],
            output: "o".into(),
            parallelism: 1,
            on_error: ErrorPolicy::DeadLetter,
            params: vec![],
            timeout_ms: 0,
            memory_bytes: 0,
            module_id: "0123456789abcdef".into(),
            module_bytes: 1234,
            deployed_at_ms: 0,
            status: "running".into(),
            status_reason: String::new(),
            stats: Default::default(),
            deployed_by: "User:admin".into(),
        };
        assert_eq!(summary(&d, 5), "deployed up version 2 (module 0123456789ab, 1234 bytes) in 5 ms: a,b -> o");
    }
}
