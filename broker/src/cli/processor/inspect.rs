//! `eddy processor list | describe`: deployed processors, their
//! configuration, status and counters; for one processor also its workers
//! (the members of group `processor.NAME`) and per-partition lag.

use std::collections::HashMap;

use eddy_runtime::ProcessorLimits;
use eddy_sdk::protocol::messages::{GroupDescription, MemberDescription};
use eddy_sdk::protocol::processors::{dead_letter_topic, processor_group, ErrorPolicy, ProcessorDescription};
use eddy_sdk::{Admin, ClientError, ErrorCode, Processors};
use serde_json::json;

use super::rfc3339_utc;
use crate::cli::ClientArgs;

/// One input partition of a processor: how far it has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionProgress {
    topic: String,
    partition: u32,
    committed: Option<u64>,
    log_end: u64,
    owner: Option<String>,
}

impl PartitionProgress {
    /// Records between the committed offset and the log end (none before the first commit).
    fn lag(&self) -> Option<u64> {
        self.committed.map(|c| self.log_end.saturating_sub(c))
    }
}

/// Average time in the module per input record, in ns (none before the first record).
fn nanos_per_record(d: &ProcessorDescription) -> Option<u64> {
    (d.stats.records_in > 0).then(|| d.stats.wasm_nanos / d.stats.records_in)
}

/// The configuration, status and counters as JSON (what `deploy --json` and `list --json` print).
pub fn description_json(d: &ProcessorDescription) -> serde_json::Value {
    json!({
        "name": d.name,
        "version": d.version,
        "status": d.status,
        "status_reason": (!d.status_reason.is_empty()).then_some(&d.status_reason),
        "deployed_by": (!d.deployed_by.is_empty()).then_some(&d.deployed_by),
        "inputs": d.inputs,
        "output": d.output,
        "parallelism": d.parallelism,
        "on_error": d.on_error.name(),
        "dead_letter_topic": (d.on_error == ErrorPolicy::DeadLetter).then(|| dead_letter_topic(&d.output)),
        "params": d.params.iter().map(|p| (p.key.clone(), json!(p.value))).collect::<serde_json::Map<_, _>>(),
        "timeout_ms": d.timeout_ms,
        "memory_bytes": d.memory_bytes,
        "module_id": d.module_id,
        "module_bytes": d.module_bytes,
        "deployed_at_ms": d.deployed_at_ms,
        "deployed_at": rfc3339_utc(d.deployed_at_ms),
        "stats": {
            "records_in": d.stats.records_in,
            "records_out": d.stats.records_out,
            "errors": d.stats.errors,
            "dead_lettered": d.stats.dead_lettered,
            "batches": d.stats.batches,
            "wasm_nanos": d.stats.wasm_nanos,
            "wasm_nanos_per_record": nanos_per_record(d),
        },
    })
}

/// Prints rows as columns padded to their widest cell, numbers right-aligned.
fn print_table(header: &[&str], rows: &[Vec<String>], right_aligned: &[bool]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(right_aligned)
            .map(|((c, w), right)| if *right { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `eddy processor list`.
pub async fn list(client: &ClientArgs, json: bool) -> anyhow::Result<()> {
    let processors = Processors::new(client.connect().await?).list().await?;
    if json {
        println!("{}", serde_json::Value::Array(processors.iter().map(description_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = processors
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                d.version.to_string(),
                d.status.clone(),
                d.inputs.join(","),
                d.output.clone(),
                d.parallelism.to_string(),
                d.stats.records_in.to_string(),
                d.stats.records_out.to_string(),
                d.stats.errors.to_string(),
                d.stats.dead_lettered.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "VERSION", "STATUS", "INPUTS", "OUTPUT", "PARALLELISM", "IN", "OUT", "ERRORS", "DLQ"];
    let right = [false, true, false, false, false, true, true, true, true, true];
    print_table(&header, &rows, &right);
    Ok(())
}

/// The processor's group, or `None` if it has neither members nor commits yet.
async fn group(admin: &Admin, name: &str) -> anyhow::Result<Option<GroupDescription>> {
    match admin.describe_group(&processor_group(name)).await {
        Ok(g) => Ok(Some(g)),
        Err(e) if e.code() == Some(ErrorCode::UnknownGroup) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every partition of the processor's inputs with its log end, and the
/// group's committed offset and owner where it has them.
async fn progress(
    admin: &Admin,
    d: &ProcessorDescription,
    group: Option<&GroupDescription>,
) -> anyhow::Result<Vec<PartitionProgress>> {
    let known: HashMap<(&str, u32), _> =
        group.iter().flat_map(|g| &g.partitions).map(|p| ((p.topic.as_str(), p.partition), p)).collect();
    let mut out = Vec::new();
    for topic in &d.inputs {
        let meta = match admin.describe_topic(topic).await {
            Ok(meta) => meta,
            // A deleted input shows no partitions rather than failing the whole description.
            Err(ClientError::Broker { code: ErrorCode::UnknownTopic, .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        for p in &meta.partitions {
            let g = known.get(&(topic.as_str(), p.partition));
            out.push(PartitionProgress {
                topic: topic.clone(),
                partition: p.partition,
                committed: g.and_then(|g| g.committed),
                log_end: p.log_end,
                owner: g.and_then(|g| g.owner.clone()),
            });
        }
    }
    Ok(out)
}

fn member_json(m: &MemberDescription) -> serde_json::Value {
    json!({
        "member_id": m.member_id,
        "client_id": m.client_id,
        "host": m.host,
        "assignment": m.assignment.iter().map(|tp| json!({"topic": tp.topic, "partitions": tp.partitions})).collect::<Vec<_>>(),
    })
}

/// `topic:0,1 other:2`, or `-`.
fn assignment_text(m: &MemberDescription) -> String {
    let parts: Vec<String> = m
        .assignment
        .iter()
        .filter(|tp| !tp.partitions.is_empty())
        .map(|tp| {
            let mut ps = tp.partitions.clone();
            ps.sort_unstable();
            format!("{}:{}", tp.topic, ps.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        })
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

/// The configured limit, or the runtime's default when the deployment left it at 0.
fn limits_text(d: &ProcessorDescription) -> String {
    let defaults = ProcessorLimits::default();
    let timeout = if d.timeout_ms > 0 {
        format!("{} ms", d.timeout_ms)
    } else {
        format!("{} ms (default)", defaults.call_timeout.as_millis())
    };
    let memory = if d.memory_bytes > 0 {
        mib(d.memory_bytes)
    } else {
        format!("{} (default)", mib(defaults.max_memory_bytes as u64))
    };
    format!("call timeout {timeout}, memory {memory}")
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

fn print_description(d: &ProcessorDescription, group: Option<&GroupDescription>, partitions: &[PartitionProgress]) {
    println!("processor {}  version {}  status {}", d.name, d.version, d.status);
    if !d.status_reason.is_empty() {
        println!("  reason       {}", d.status_reason);
    }
    if !d.deployed_by.is_empty() {
        println!("  deployed by  {}", d.deployed_by);
    }
    println!("  inputs       {}", d.inputs.join(", "));
    println!("  output       {}", d.output);
    println!("  parallelism  {}", d.parallelism);
    match d.on_error {
        ErrorPolicy::DeadLetter => println!("  on error     dlq (to {})", dead_letter_topic(&d.output)),
        policy => println!("  on error     {}", policy.name()),
    }
    let params: Vec<String> = d.params.iter().map(|p| format!("{}={}", p.key, p.value)).collect();
    println!("  params       {}", if params.is_empty() { "-".to_string() } else { params.join(" ") });
    println!("  limits       {}", limits_text(d));
    println!("  module       {} ({} bytes)", d.module_id, d.module_bytes);
    println!("  deployed at  {}", rfc3339_utc(d.deployed_at_ms));
    println!();
    let s = &d.stats;
    println!(
        "records in {}  out {}  errors {}  dead-lettered {}  batches {}",
        s.records_in, s.records_out, s.errors, s.dead_lettered, s.batches
    );
    match nanos_per_record(d) {
        Some(ns) => println!("wasm time {ns} ns per input record"),
        None => println!("wasm time -"),
    }
    println!();
    let members = group.map_or(&[][..], |g| &g.members[..]);
    if members.is_empty() {
        println!("workers: none");
    } else {
        println!("workers ({}):", members.len());
        let rows: Vec<Vec<String>> =
            members.iter().map(|m| vec![m.client_id.clone(), m.host.clone(), assignment_text(m)]).collect();
        print_table(&["CLIENT", "HOST", "PARTITIONS"], &rows, &[false, false, false]);
    }
    if !partitions.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.committed.map_or_else(|| "-".to_string(), |c| c.to_string()),
                    p.log_end.to_string(),
                    p.lag().map_or_else(|| "-".to_string(), |l| l.to_string()),
                ]
            })
            .collect();
        print_table(&["TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG"], &rows, &[false, true, true, true, true]);
    }
}

/// `eddy processor describe NAME`.
pub async fn describe(client: &ClientArgs, name: &str, json: bool) -> anyhow::Result<()> {
    let client = client.connect().await?;
    let d = Processors::new(client.clone()).describe(name).await?;
    let admin = Admin::new(client);
    let group = group(&admin, name).await?;
    let partitions = progress(&admin, &d, group.as_ref()).await?;
    if json {
        let mut v = description_json(&d);
        let members = group.as_ref().map_or(&[][..], |g| &g.members[..]);
        v["workers"] = members.iter().map(member_json).collect();
        v["partitions"] = partitions
            .iter()
            .map(|p| {
                json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "log_end": p.log_end,
                    "lag": p.lag(),
                    "owner": p.owner,
                })
            })
            .collect();
        v["total_lag"] = json!(partitions.iter().filter_map(PartitionProgress::lag).sum::<u64>());
        println!("{v}");
    } else {
        print_description(&d, group.as_ref(), &partitions);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use eddy_sdk::protocol::messages::TopicPartitions;
    use eddy_sdk::protocol::processors::{ProcessorParam, ProcessorStats};

    use super::*;

    fn desc() -> ProcessorDescription {
        ProcessorDescription {
            name: "up".into(),
            version: 1,
            inputs: vec!["in".into()],
            output: "out".into(),
            parallelism: 1,
            on_error: ErrorPolicy::DeadLetter,
            params: vec![ProcessorParam { key: "match".into(), value: "x".into() }],
            timeout_ms: 0,
            memory_bytes: 0,
            module_id: "ab".into(),
            module_bytes: 10,
            deployed_at_ms: 0,
            status: "running".into(),
            status_reason: String::new(),
            stats: ProcessorStats { records_in: 4, wasm_nanos: 1000, ..Default::default() },
            deployed_by: "User:admin".into(),
        }
    }

    #[test]
    fn json_has_config_counters_and_average_wasm_time() {
        let v = description_json(&desc());
        assert_eq!(v["dead_letter_topic"], "out.dlq");
        assert_eq!(v["params"]["match"], "x");
        assert_eq!(v["stats"]["wasm_nanos_per_record"], 250);
        assert_eq!(v["status_reason"], serde_json::Value::Null);
        let none = ProcessorDescription { stats: ProcessorStats::default(), ..desc() };
        assert_eq!(description_json(&none)["stats"]["wasm_nanos_per_record"], serde_json::Value::Null);
    }

    #[test]
    fn lag_is_log_end_minus_committed() {
        let p = PartitionProgress { topic: "t".into(), partition: 0, committed: None, log_end: 9, owner: None };
        assert_eq!(p.lag(), None);
        assert_eq!(PartitionProgress { committed: Some(4), ..p }.lag(), Some(5));
    }

    #[test]
    fn limits_show_defaults_and_assignments_compactly() {
        assert!(limits_text(&desc()).contains("(default)"));
        let custom = ProcessorDescription { timeout_ms: 50, memory_bytes: 2 << 20, ..desc() };
        assert_eq!(limits_text(&custom), "call timeout 50 ms, memory 2 MiB");
        let m = MemberDescription {
            member_id: "m".into(),
            client_id: "c".into(),
            host: "h".into(),
            assignment: vec![TopicPartitions { topic: "in".into(), partitions: vec![3, 1] }],
        };
        assert_eq!(assignment_text(&m), "in:1,3");
    }
}
