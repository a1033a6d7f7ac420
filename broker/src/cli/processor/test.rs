//! `eddy processor test`: run a processor module locally on records from
//! standard input, no broker needed (the author's inner loop).
//!
//! Input: one record per line. A line that is a JSON object with a `value`
//! field is read as `{"key": .., "value": .., "headers": {"name": "value", ..},
//! "topic": ..}` (strings; `topic`, else `--topic`, is the input topic the
//! record appears to come from, for processors with several inputs); any
//! other line is the value of a keyless record. Output: one line per output
//! record (its value, or a JSON object with `--json`); errors go to standard
//! error as `record N: KIND: MESSAGE`, and the command exits non-zero if any
//! record failed. State persists across the records of one run.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use eddy_runtime::{InputRecord, Instance, LogLevel, ProcessorLimits, Runtime, StateView};
use serde_json::json;

use super::parse_param;
use crate::cli::consume::bytes_json;

/// Options of `eddy processor test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The processor module (a wasm32-wasip2 component built with eddy-processor).
    #[arg(long)]
    wasm: PathBuf,
    /// Parameters passed to the module's init, as key=value.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Topic name the records appear to come from (a JSON input line's
    /// `topic` overrides it, for processors with several inputs).
    #[arg(long, default_value = "test")]
    topic: String,
    /// Print output records as JSON objects (key, value, headers, input offset).
    #[arg(long)]
    json: bool,
    /// Records per call into the module.
    #[arg(long, default_value_t = 100)]
    batch: usize,
}

/// The run's state: committed after every batch, like the worker does.
#[derive(Clone, Default)]
struct LocalState(Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>);

impl StateView for LocalState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().expect("state lock").get(key).cloned()
    }
}

struct Line {
    topic: Option<String>,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

fn parse_line(line: &str) -> Line {
    if line.trim_start().starts_with('{') {
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(value) = obj.get("value") {
                let text = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone().into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                let headers = match obj.get("headers") {
                    Some(serde_json::Value::Object(h)) => h.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
                    _ => Vec::new(),
                };
                let key = obj.get("key").filter(|k| !k.is_null()).map(text);
                let topic = obj.get("topic").and_then(|t| t.as_str()).map(str::to_string);
                return Line { topic, key, value: text(value), headers };
            }
        }
    }
    Line { topic: None, key: None, value: line.as_bytes().to_vec(), headers: Vec::new() }
}

/// Runs `eddy processor test` (on a blocking thread: the module runs synchronously).
pub async fn run(args: TestArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || test(args)).await.context("test task")?
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let runtime = Runtime::new(None)?;
    let module = runtime.load(&wasm).with_context(|| format!("loading {}", args.wasm.display()))?;
    let state = LocalState::default();
    let log = |level: LogLevel, message: &str| eprintln!("[{level:?}] {message}");
    let mut instance =
        Instance::new(&module, ProcessorLimits::default(), args.params.clone(), Box::new(state.clone()), Box::new(log))
            .context("initialising the module")?;
    let lines: Vec<Line> = std::io::stdin()
        .lock()
        .lines()
        .map(|l| l.map(|l| parse_line(&l)))
        .collect::<Result<_, _>>()
        .context("reading standard input")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut failed, mut produced) = (0usize, 0usize);
    for (chunk_index, chunk) in lines.chunks(args.batch.max(1)).enumerate() {
        let base = (chunk_index * args.batch.max(1)) as u64;
        let headers: Vec<Vec<(&str, &[u8])>> =
            chunk.iter().map(|l| l.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()).collect();
        let records: Vec<InputRecord<'_>> = chunk
            .iter()
            .zip(&headers)
            .enumerate()
            .map(|(i, (l, h))| InputRecord {
                offset: base + i as u64,
                timestamp_ms: eddy_broker::now_ms(),
                key: l.key.as_deref(),
                value: &l.value,
                headers: h,
            })
            .collect();
        // One call per run of records of one topic, as the worker does.
        let topic_of = |l: &Line| l.topic.clone().unwrap_or_else(|| args.topic.clone());
        let mut outcomes = Vec::with_capacity(records.len());
        let mut start = 0;
        while start < chunk.len() {
            let topic = topic_of(&chunk[start]);
            let end = start + chunk[start..].iter().take_while(|l| topic_of(l) == topic).count();
            outcomes.extend(instance.process(&topic, 0, &records[start..end]));
            start = end;
        }
        {
            let mut committed = state.0.lock().expect("state lock");
            for (key, value) in instance.take_state_writes() {
                match value {
                    Some(v) => committed.insert(key, v),
                    None => committed.remove(&key),
                };
            }
        }
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let offset = base + i as u64;
            match outcome {
                Ok(outputs) => {
                    for o in outputs {
                        produced += 1;
                        if args.json {
                            let headers: Vec<_> =
                                o.headers.iter().map(|(k, v)| json!({"key": k, "value": bytes_json(v)})).collect();
                            let line = json!({"input": offset, "key": o.key.as_deref().map(bytes_json), "value": bytes_json(&o.value), "headers": headers});
                            writeln!(out, "{line}")?;
                        } else {
                            writeln!(out, "{}", String::from_utf8_lossy(&o.value))?;
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("record {offset}: {}: {e}", e.kind());
                }
            }
        }
    }
    out.flush()?;
    eprintln!("{} records in, {produced} out, {failed} failed", lines.len());
    anyhow::ensure!(failed == 0, "{failed} of {} records failed", lines.len());
    Ok(())
}
