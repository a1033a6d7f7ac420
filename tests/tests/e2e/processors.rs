//! Wasm processors end to end: real `eddy` brokers (with their embedded
//! worker, or `--no-runtime` and standalone `eddy runtime` processes killed
//! with SIGKILL), the example modules from `examples/processors/`, deployed and
//! inspected with the `eddy processor` CLI; records produced and read with the
//! SDK. Every wait is a loop with a deadline; nothing asserts on timing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use eddy_sdk::protocol::processors::{dlq_headers, ProcessorDescription, STATUS_RUNNING, STATUS_STOPPED};
use eddy_sdk::{
    Admin, Client, ClientError, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, NewTopic, Processors, Producer,
    ProducerConfig, ProducerRecord, StartOffset,
};
use eddy_tests::{processor_wasm, BrokerProcess, CliProcess, Deadline};

use super::read_all;

/// Longest any single wait of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

/// Session timeout of the workers' group members where partitions must move.
const SESSION_TIMEOUT_MS: u64 = 2000;

async fn pause() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The last `n` lines of the broker's log, for failure messages.
fn log_tail(broker: &BrokerProcess, n: usize) -> String {
    let log = broker.log();
    let lines: Vec<&str> = log.lines().collect();
    format!("--- broker log (last {n} lines):\n{}", lines[lines.len().saturating_sub(n)..].join("\n"))
}

async fn create_topics(client: &Client, names: &[&str], partitions: u32) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    for name in names {
        admin.create_topic(NewTopic::new(*name, partitions)).await?;
    }
    Ok(())
}

/// `eddy processor deploy NAME --wasm <module> --input INPUT --output OUTPUT EXTRA...`;
/// returns what it printed.
fn deploy(
    broker: &BrokerProcess,
    name: &str,
    module: &str,
    input: &str,
    output: &str,
    extra: &[&str],
) -> anyhow::Result<String> {
    let wasm = processor_wasm(module);
    let mut args = vec!["processor", "deploy", name, "--wasm", wasm.to_str().context("UTF-8 path")?, "--input", input];
    args.extend(["--output", output]);
    args.extend_from_slice(extra);
    broker.cli_ok(&args)
}

/// `eddy processor describe NAME --json`.
fn describe_json(broker: &BrokerProcess, name: &str) -> anyhow::Result<serde_json::Value> {
    let out = broker.cli_ok(&["processor", "describe", name, "--json"])?;
    serde_json::from_str(&out).with_context(|| format!("describe printed {out:?}"))
}

/// Sends every record and waits for every acknowledgement.
async fn produce(client: &Client, records: Vec<ProducerRecord>) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for record in records {
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await?;
    Ok(())
}

/// Keyless records with these values.
fn values_to(topic: &str, values: &[&str]) -> Vec<ProducerRecord> {
    values.iter().map(|v| ProducerRecord::new(topic, v.to_string())).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn values(records: &[ConsumerRecord]) -> Vec<String> {
    records.iter().map(|r| text(&r.value)).collect()
}

fn header<'a>(r: &'a ConsumerRecord, key: &str) -> Option<&'a [u8]> {
    r.headers.iter().find(|h| h.key == key).map(|h| &h.value[..])
}

/// Reads `topic` from its first record until `done` holds for what was read.
async fn read_until(
    client: &Client,
    topic: &str,
    what: &str,
    mut done: impl FnMut(&[ConsumerRecord]) -> bool,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_all(topic, StartOffset::Earliest).await?;
    let deadline = Deadline::after(WAIT);
    let mut all = Vec::new();
    loop {
        if done(&all) {
            return Ok(all);
        }
        deadline.check(|| format!("{what} in {topic} ({} records read)", all.len()))?;
        all.extend(consumer.poll(Duration::from_millis(200)).await?);
    }
}

/// Reads `topic` from its first record up to its log end as of now.
async fn read_to_end(client: &Client, topic: &str) -> anyhow::Result<Vec<ConsumerRecord>> {
    let meta = Admin::new(client.clone()).describe_topic(topic).await?;
    let mut ends: BTreeMap<u32, u64> = meta.partitions.iter().map(|p| (p.partition, p.log_end)).collect();
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer.assign_all(topic, StartOffset::Earliest).await?;
    let deadline = Deadline::after(WAIT);
    let mut all = Vec::new();
    loop {
        ends.retain(|&p, end| consumer.position(topic, p).is_some_and(|pos| pos < *end));
        if ends.is_empty() {
            return Ok(all);
        }
        deadline.check(|| format!("{topic} up to its log end {ends:?} ({} records read)", all.len()))?;
        all.extend(consumer.poll(Duration::from_millis(200)).await?);
    }
}

/// Polls the processor's description until `cond` holds.
async fn wait_processor(
    broker: &BrokerProcess,
    client: &Client,
    name: &str,
    what: &str,
    cond: impl Fn(&ProcessorDescription) -> bool,
) -> anyhow::Result<ProcessorDescription> {
    let processors = Processors::new(client.clone());
    let deadline = Deadline::after(WAIT);
    loop {
        let d = processors.describe(name).await?;
        if cond(&d) {
            return Ok(d);
        }
        deadline.check(|| {
            format!(
                "processor {name}: {what}; last seen version {} status {} {:?} {:?}\n{}",
                d.version,
                d.status,
                d.status_reason,
                d.stats,
                log_tail(broker, 40)
            )
        })?;
        pause().await;
    }
}

/// Partitions per worker (client id) in `processor describe --json`.
fn workers(v: &serde_json::Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for w in v["workers"].as_array().into_iter().flatten() {
        let owned: usize = w["assignment"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tp| tp["partitions"].as_array().map_or(0, Vec::len))
            .sum();
        out.insert(w["client_id"].as_str().unwrap_or_default().to_string(), owned);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uppercase_keeps_keys_and_per_key_order() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["up-in", "up-out"], 4).await?;
    let line = deploy(&broker, "upper", "uppercase", "up-in", "up-out", &["--from-beginning"])?;
    ensure!(
        line.starts_with("deployed upper version 1 (module ") && line.trim_end().ends_with("up-in -> up-out"),
        "{line}"
    );

    const RECORDS: u64 = 10_000;
    let records = (0..RECORDS)
        .map(|n| {
            let k = n % 100;
            ProducerRecord::new("up-in", format!("key-{k} seq-{n}")).key(format!("key-{k}"))
        })
        .collect();
    produce(&client, records).await?;

    let out = read_all(&client, "up-out", RECORDS as usize).await.with_context(|| log_tail(&broker, 40))?;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut seen = BTreeSet::new();
    for r in out.values().flatten() {
        let key = text(r.key.as_deref().context("the key is kept")?);
        let value = text(&r.value);
        let (k, seq) = value.split_once(" SEQ-").with_context(|| format!("output value {value:?}"))?;
        ensure!(k == key.to_ascii_uppercase(), "record keyed {key} has value {value}");
        let seq: u64 = seq.parse()?;
        ensure!(format!("key-{}", seq % 100) == key, "seq {seq} came out under key {key}");
        if let Some(prev) = last_seq.insert(key.clone(), seq) {
            ensure!(prev < seq, "key {key}: seq {seq} after {prev}");
        }
        ensure!(seen.insert(seq), "seq {seq} twice");
    }
    ensure!(seen.len() == RECORDS as usize);

    wait_processor(&broker, &client, "upper", "10,000 records in", |d| d.stats.records_in >= RECORDS).await?;
    let v = describe_json(&broker, "upper")?;
    ensure!(v["stats"]["records_in"] == RECORDS && v["stats"]["records_out"] == RECORDS, "{v}");
    ensure!(v["version"] == 1 && v["status"] == STATUS_RUNNING && v["stats"]["errors"] == 0, "{v}");
    ensure!(v["module_id"].as_str().is_some_and(|id| line.contains(&id[..12])), "{v}");
    let parts = v["partitions"].as_array().context("partitions")?;
    ensure!(parts.len() == 4 && parts.iter().all(|p| p["lag"] == 0), "{v}");
    ensure!(workers(&v).values().sum::<usize>() == 4, "one embedded worker owns the four partitions: {v}");

    let list = broker.cli_ok(&["processor", "list"])?;
    let row: Vec<&str> = list.lines().nth(1).context("a row")?.split_whitespace().collect();
    ensure!(row == ["upper", "1", "running", "up-in", "up-out", "1", "10000", "10000", "0", "0"], "{list}");
    let text = broker.cli_ok(&["processor", "describe", "upper"])?;
    ensure!(text.contains("records in 10000") && text.contains("ns per input record"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_passes_exactly_the_matching_records() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["f-in", "f-out"], 2).await?;
    let out =
        deploy(&broker, "fruit", "filter", "f-in", "f-out", &["--param", "match=apple", "--from-beginning", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("deploy --json printed {out:?}"))?;
    ensure!(v["name"] == "fruit" && v["version"] == 1 && v["params"]["match"] == "apple", "{v}");
    ensure!(v["on_error"] == "dlq" && v["dead_letter_topic"] == "f-out.dlq", "{v}");
    let all: Vec<String> = (0..1000)
        .map(|i| match i % 3 {
            0 => format!("apple-{i}"),
            1 => format!("banana-{i}"),
            _ => format!("pineapple-{i}"),
        })
        .collect();
    let expected: BTreeSet<String> = all.iter().filter(|v| v.contains("apple")).cloned().collect();
    produce(&client, all.iter().map(|v| ProducerRecord::new("f-in", v.clone())).collect()).await?;

    let out = read_all(&client, "f-out", expected.len()).await.with_context(|| log_tail(&broker, 40))?;
    let got: Vec<String> = out.values().flat_map(|rs| values(rs)).collect();
    ensure!(got.len() == expected.len(), "{} records out, {} expected", got.len(), expected.len());
    ensure!(got.into_iter().collect::<BTreeSet<_>>() == expected, "the output is exactly the matching records");

    let d = wait_processor(&broker, &client, "fruit", "1000 records in", |d| d.stats.records_in >= 1000).await?;
    ensure!(d.stats.records_in == 1000 && d.stats.records_out == expected.len() as u64, "{:?}", d.stats);
    let v = describe_json(&broker, "fruit")?;
    ensure!(v["params"]["match"] == "apple", "{v}");

    // Deleted: gone from the list, its workers leave, its logs topic stays readable.
    ensure!(broker.cli_ok(&["processor", "delete", "fruit"])?.contains("deleted processor fruit"));
    ensure!(broker.cli_ok(&["processor", "list", "--json"])?.trim() == "[]");
    let out = broker.cli(&["processor", "describe", "fruit"], b"")?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_PROCESSOR"), "{out:?}");
    let admin = Admin::new(client.clone());
    let deadline = Deadline::after(WAIT);
    loop {
        match admin.describe_group("processor.fruit").await {
            Err(e) if e.code() == Some(ErrorCode::UnknownGroup) => break,
            Ok(g) if g.members.is_empty() => break,
            Ok(g) => deadline.check(|| format!("the workers of fruit to leave: {g:?}"))?,
            Err(e) => return Err(e.into()),
        }
        pause().await;
    }
    broker.cli_ok(&["processor", "logs", "fruit"])?;
    Ok(())
}

/// Deterministic words of record `i` of round `round`.
fn words(round: u64, i: u64) -> String {
    const VOCAB: [&str; 5] = ["apple", "pear", "plum", "fig", "kiwi"];
    let pick = |n: u64| VOCAB[(n % VOCAB.len() as u64) as usize];
    format!("{} {} {}", pick(i * 7 + round), pick(i * 3 + 1), pick(i + round * 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_counts_stay_exact_when_a_runtime_is_killed() -> anyhow::Result<()> {
    let broker = BrokerProcess::start_with(&["--no-runtime"])?;
    let client = broker.client().await?;
    let mut first = broker.spawn_runtime("w1", SESSION_TIMEOUT_MS)?;
    create_topics(&client, &["wc-in", "wc-out"], 2).await?;
    deploy(&broker, "counter", "word_count", "wc-in", "wc-out", &["--from-beginning"])?;

    let keys = ["k0", "k1", "k2", "k3"];
    let mut totals: HashMap<(String, String), u64> = HashMap::new();
    let mut produced = 0u64;
    let mut round = |round: u64, count: u64| -> Vec<ProducerRecord> {
        (0..count)
            .map(|i| {
                let key = keys[(i % keys.len() as u64) as usize];
                let value = words(round, i);
                for w in value.split_whitespace() {
                    *totals.entry((key.to_string(), w.to_string())).or_default() += 1;
                }
                ProducerRecord::new("wc-in", value).key(key)
            })
            .collect()
    };

    // Round 1 is processed by the first runtime.
    let records = round(1, 300);
    produced += 300;
    produce(&client, records).await?;
    wait_processor(&broker, &client, "counter", "round 1 processed", |d| d.stats.records_in >= 300)
        .await
        .with_context(|| format!("runtime w1 stderr:\n{}", first.stderr()))?;

    // Round 2 is large; the first runtime dies while it works on it.
    let records = round(2, 3000);
    produced += 3000;
    produce(&client, records).await?;
    let processors = Processors::new(client.clone());
    let deadline = Deadline::after(WAIT);
    let at_kill = loop {
        let d = processors.describe("counter").await?;
        if d.stats.records_in > 300 {
            first.kill();
            break d.stats.records_in;
        }
        deadline.check(|| format!("round 2 to start; runtime w1 stderr:\n{}", first.stderr()))?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("runtime w1 killed with {at_kill} of {produced} input records committed");

    let second = broker.spawn_runtime("w2", SESSION_TIMEOUT_MS)?;
    let records = round(3, 300);
    produced += 300;
    produce(&client, records).await?;
    let d = wait_processor(&broker, &client, "counter", "every record processed", |d| d.stats.records_in >= produced)
        .await
        .with_context(|| format!("runtime w2 stderr:\n{}", second.stderr()))?;
    ensure!(d.stats.records_in == produced, "records counted twice: {:?}, {produced} produced", d.stats);
    ensure!(d.stats.errors == 0, "{:?}", d.stats);

    // Every output was acknowledged before its batch committed: the output is complete.
    let out = read_to_end(&client, "wc-out").await?;
    let mut counts: HashMap<(String, String), BTreeSet<u64>> = HashMap::new();
    for r in &out {
        let key = text(r.key.as_deref().context("outputs keep the input key")?);
        let value = text(&r.value);
        let (word, count) = value.split_once(' ').with_context(|| format!("output {value:?}"))?;
        counts.entry((key, word.to_string())).or_default().insert(count.parse()?);
    }
    ensure!(counts.len() == totals.len(), "{} (key, word) pairs out, {} in", counts.len(), totals.len());
    for (pair, total) in &totals {
        let seen = counts.get(pair).with_context(|| format!("no output for {pair:?}"))?;
        let expected: BTreeSet<u64> = (1..=*total).collect();
        ensure!(
            *seen == expected,
            "{pair:?}: counts {:?}..{:?} ({} distinct), expected 1..={total}: state lost or applied twice",
            seen.first(),
            seen.last(),
            seen.len()
        );
    }
    Ok(())
}

/// One hostile module: what makes it fail and how the failure is named.
struct Hostile {
    module: &'static str,
    trigger: &'static str,
    kind: &'static str,
    extra: &'static [&'static str],
}

const HOSTILE: [Hostile; 4] = [
    Hostile { module: "infinite_loop", trigger: "loop", kind: "timeout", extra: &["--timeout-ms", "300"] },
    Hostile { module: "memory_bomb", trigger: "bomb", kind: "memory-limit", extra: &["--memory-mb", "16"] },
    Hostile { module: "trap", trigger: "trap", kind: "trap", extra: &[] },
    Hostile { module: "panic", trigger: "please panic", kind: "trap", extra: &[] },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modules_dead_letter_only_the_bad_record() -> anyhow::Result<()> {
    let mut broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["ok-in", "ok-out"], 1).await?;
    deploy(&broker, "bystander", "uppercase", "ok-in", "ok-out", &["--from-beginning"])?;
    let normal = ["before-1", "before-2", "after-1", "after-2"];
    for h in &HOSTILE {
        let (input, output) = (format!("{}-in", h.module), format!("{}-out", h.module));
        create_topics(&client, &[&input, &output], 1).await?;
        let mut extra = vec!["--on-error", "dlq", "--from-beginning"];
        extra.extend_from_slice(h.extra);
        deploy(&broker, h.module, h.module, &input, &output, &extra)?;
        let records = values_to(&input, &[normal[0], normal[1], h.trigger, normal[2], normal[3]]);
        produce(&client, records).await?;
    }
    for h in &HOSTILE {
        let (input, output) = (format!("{}-in", h.module), format!("{}-out", h.module));
        let dlq = format!("{output}.dlq");
        let dead = read_all(&client, &dlq, 1).await.with_context(|| format!("{dlq}\n{}", log_tail(&broker, 40)))?;
        let dead = &dead[&0][0];
        ensure!(text(&dead.value) == h.trigger, "{}: dead letter {dead:?}", h.module);
        let kind = header(dead, dlq_headers::ERROR_KIND).map(text);
        ensure!(kind.as_deref() == Some(h.kind), "{}: kind {kind:?}, expected {}", h.module, h.kind);
        ensure!(header(dead, dlq_headers::SOURCE_TOPIC) == Some(input.as_bytes()), "{dead:?}");
        ensure!(header(dead, dlq_headers::SOURCE_PARTITION) == Some(&b"0"[..]), "{dead:?}");
        ensure!(header(dead, dlq_headers::SOURCE_OFFSET) == Some(&b"2"[..]), "{dead:?}");
        ensure!(header(dead, dlq_headers::PROCESSOR) == Some(h.module.as_bytes()), "{dead:?}");
        ensure!(header(dead, dlq_headers::ERROR_MESSAGE).is_some_and(|m| !m.is_empty()), "{dead:?}");

        let out = read_all(&client, &output, normal.len()).await.with_context(|| log_tail(&broker, 40))?;
        ensure!(values(&out[&0]) == normal, "{}: output {:?}", h.module, values(&out[&0]));
        let d = wait_processor(&broker, &client, h.module, "5 records in", |d| d.stats.records_in >= 5).await?;
        ensure!(
            (d.stats.records_in, d.stats.records_out, d.stats.errors, d.stats.dead_lettered) == (5, 4, 1, 1),
            "{}: {:?}",
            h.module,
            d.stats
        );
        ensure!(d.status == STATUS_RUNNING, "{}: {} {}", h.module, d.status, d.status_reason);
    }
    let v = describe_json(&broker, "infinite_loop")?;
    ensure!(v["timeout_ms"] == 300, "{v}");
    let v = describe_json(&broker, "memory_bomb")?;
    ensure!(v["memory_bytes"] == 16 * 1024 * 1024, "{v}");

    // The broker survived them all and the processor next to them still works.
    ensure!(broker.try_wait()?.is_none(), "the broker died:\n{}", log_tail(&broker, 40));
    produce(&client, values_to("ok-in", &["still", "working"])).await?;
    let out = read_all(&client, "ok-out", 2).await?;
    ensure!(values(&out[&0]) == ["STILL", "WORKING"], "{:?}", values(&out[&0]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_are_not_processors_are_refused_at_deploy() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["x-in", "x-out"], 1).await?;
    let core = broker.dir().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0")?;
    let random = broker.dir().join("random.wasm");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&random, noise)?;
    for file in [&core, &random] {
        let path = file.to_str().context("UTF-8 path")?;
        let args = ["processor", "deploy", "bad", "--wasm", path, "--input", "x-in", "--output", "x-out"];
        let out = broker.cli(&args, b"")?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{path} was accepted");
        ensure!(err.contains("INVALID_PROCESSOR") && err.contains("invalid processor module"), "{path}: {err}");
    }
    // Nothing was deployed, and other mistakes are named too.
    ensure!(broker.cli_ok(&["processor", "list", "--json"])?.trim() == "[]");
    let out = broker.cli(&["processor", "describe", "bad"], b"")?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_PROCESSOR"), "{out:?}");
    let wasm = processor_wasm("uppercase");
    let wasm = wasm.to_str().context("UTF-8 path")?;
    let out = broker.cli(&["processor", "deploy", "p", "--wasm", wasm, "--input", "nope", "--output", "x-out"], b"")?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("UNKNOWN_TOPIC"), "{out:?}");
    let out = broker
        .cli(&["processor", "deploy", "p", "--wasm", "/no/such.wasm", "--input", "x-in", "--output", "x-out"], b"")?;
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/no/such.wasm"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_policy_stops_at_the_record_and_skip_policy_counts_it() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["s-in", "s-out", "k-in", "k-out"], 1).await?;
    deploy(&broker, "stopper", "error_return", "s-in", "s-out", &["--on-error", "stop", "--from-beginning"])?;
    deploy(&broker, "skipper", "error_return", "k-in", "k-out", &["--on-error", "skip", "--from-beginning"])?;
    let input = ["ok-1", "this is an error", "ok-2"];
    produce(&client, values_to("s-in", &input)).await?;
    produce(&client, values_to("k-in", &input)).await?;

    let d = wait_processor(&broker, &client, "stopper", "status stopped", |d| d.status == STATUS_STOPPED).await?;
    ensure!(d.status_reason.contains("s-in/0@1"), "the reason names the record: {}", d.status_reason);
    let out = read_to_end(&client, "s-out").await?;
    ensure!(!values(&out).iter().any(|v| v == "ok-2"), "nothing after the failed record: {:?}", values(&out));
    let v = describe_json(&broker, "stopper")?;
    let committed = v["partitions"][0]["committed"].as_u64();
    ensure!(committed.is_none_or(|c| c <= 1), "committed past the failed record: {v}");
    let described = broker.cli_ok(&["processor", "describe", "stopper"])?;
    ensure!(described.contains("status stopped") && described.contains("s-in/0@1"), "{described}");
    let list = broker.cli_ok(&["processor", "list"])?;
    ensure!(list.lines().any(|l| l.starts_with("stopper") && l.contains(" stopped ")), "{list}");

    let d = wait_processor(&broker, &client, "skipper", "3 records in", |d| d.stats.records_in >= 3).await?;
    ensure!((d.stats.records_in, d.stats.errors, d.stats.dead_lettered) == (3, 1, 0), "{:?}", d.stats);
    let out = read_all(&client, "k-out", 2).await?;
    ensure!(values(&out[&0]) == ["ok-1", "ok-2"], "{:?}", values(&out[&0]));
    match Admin::new(client.clone()).describe_topic("k-out.dlq").await {
        Err(ClientError::Broker { code: ErrorCode::UnknownTopic, .. }) => {}
        Ok(t) => ensure!(t.partitions.iter().all(|p| p.log_end == 0), "skip wrote dead letters: {t:?}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Waits until `processor describe --json` shows `count` workers (client ids
/// starting with `prefixes`) owning `per_worker` partitions each.
fn wait_workers(
    broker: &BrokerProcess,
    name: &str,
    prefixes: &[&str],
    per_worker: usize,
    runtimes: &[&CliProcess],
) -> anyhow::Result<serde_json::Value> {
    let deadline = Deadline::after(WAIT);
    loop {
        let v = describe_json(broker, name)?;
        let w = workers(&v);
        let matches = w.len() == prefixes.len()
            && w.values().all(|n| *n == per_worker)
            && prefixes.iter().all(|p| w.keys().any(|id| id.starts_with(p)));
        if matches {
            return Ok(v);
        }
        deadline.check(|| {
            let logs: Vec<String> = runtimes.iter().map(|r| r.stderr()).collect();
            format!("workers {prefixes:?} with {per_worker} partitions each; last {w:?}\n{}", logs.join("\n---\n"))
        })?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The distinct `SEQ-n` numbers in uppercase outputs.
fn seqs(records: &[ConsumerRecord]) -> BTreeSet<u64> {
    records.iter().filter_map(|r| text(&r.value).strip_prefix("SEQ-").and_then(|n| n.parse().ok())).collect()
}

fn seq_records(topic: &str, range: std::ops::Range<u64>) -> Vec<ProducerRecord> {
    range.map(|i| ProducerRecord::new(topic, format!("seq-{i}")).partition((i % 4) as u32)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_share_the_partitions_and_one_takes_over() -> anyhow::Result<()> {
    let broker = BrokerProcess::start_with(&["--no-runtime"])?;
    let client = broker.client().await?;
    create_topics(&client, &["r-in", "r-out"], 4).await?;
    let mut first = broker.spawn_runtime("w1", SESSION_TIMEOUT_MS)?;
    let second = broker.spawn_runtime("w2", SESSION_TIMEOUT_MS)?;
    deploy(&broker, "shared", "uppercase", "r-in", "r-out", &["--from-beginning"])?;
    wait_workers(&broker, "shared", &["w1/", "w2/"], 2, &[&first, &second])?;

    produce(&client, seq_records("r-in", 0..1000)).await?;
    first.kill();
    let v = wait_workers(&broker, "shared", &["w2/"], 4, &[&second])?;
    ensure!(v["workers"][0]["client_id"].as_str().is_some_and(|id| id.starts_with("w2/shared#")), "{v}");
    produce(&client, seq_records("r-in", 1000..2000)).await?;

    let expected: BTreeSet<u64> = (0..2000).collect();
    read_until(&client, "r-out", "every input record", |out| seqs(out) == expected)
        .await
        .with_context(|| format!("runtime w2 stderr:\n{}", second.stderr()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_while_producing_loses_no_record() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["rd-in", "rd-out"], 4).await?;
    deploy(&broker, "redeploy", "uppercase", "rd-in", "rd-out", &["--from-beginning"])?;
    produce(&client, seq_records("rd-in", 0..300)).await?;

    let producing = {
        let client = client.clone();
        tokio::spawn(async move {
            for chunk in 0..30u64 {
                produce(&client, seq_records("rd-in", 300 + chunk * 10..310 + chunk * 10)).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    // The CLI blocks this thread while the producer task runs on the other.
    let line = tokio::task::block_in_place(|| deploy(&broker, "redeploy", "uppercase", "rd-in", "rd-out", &[]))?;
    ensure!(line.starts_with("deployed redeploy version 2 "), "{line}");
    producing.await??;
    produce(&client, seq_records("rd-in", 600..900)).await?;

    let expected: BTreeSet<u64> = (0..900).collect();
    read_until(&client, "rd-out", "every input record", |out| seqs(out) == expected)
        .await
        .with_context(|| log_tail(&broker, 40))?;
    let d = wait_processor(&broker, &client, "redeploy", "900 records in", |d| d.stats.records_in >= 900).await?;
    ensure!(d.version == 2 && d.status == STATUS_RUNNING, "version {} status {}", d.version, d.status);
    ensure!(d.stats.records_in == 900, "records counted twice: {:?}", d.stats);
    let v = describe_json(&broker, "redeploy")?;
    ensure!(v["version"] == 2, "{v}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_show_dead_letters_and_panic_messages() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["l-in", "l-out"], 1).await?;
    deploy(&broker, "noisy", "panic", "l-in", "l-out", &["--from-beginning"])?;
    produce(&client, values_to("l-in", &["fine", "please panic", "fine again"])).await?;
    read_all(&client, "l-out.dlq", 1).await?;

    // Logs are sent apart from the outputs: poll until they are there.
    let deadline = Deadline::after(WAIT);
    let logs = loop {
        let logs = broker.cli_ok(&["processor", "logs", "noisy"])?;
        if logs.contains("sent to l-out.dlq") && logs.contains("record 1 asked for it") {
            break logs;
        }
        deadline.check(|| format!("the dead letter and the panic in the logs:\n{logs}"))?;
        std::thread::sleep(Duration::from_millis(100));
    };
    let warning = logs.lines().find(|l| l.contains("sent to l-out.dlq")).context("warning line")?;
    let (time, rest) = warning.split_once(' ').context("time")?;
    ensure!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "RFC 3339 time: {warning}");
    ensure!(rest.starts_with("WARN [l-in/0] record l-in/0@1 failed: trap: "), "{warning}");
    ensure!(logs.lines().any(|l| l.contains(" ERROR [l-in/0] panicked at ")), "{logs}");

    let json = broker.cli_ok(&["processor", "logs", "noisy", "--json"])?;
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("--json printed {line:?}"))?;
        ensure!(v["processor"] == "noisy" && v["level"].is_string() && v["message"].is_string(), "{v}");
    }
    let out = broker.cli(&["processor", "logs", "ghost"], b"")?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("processor ghost has no logs topic: is it deployed?"), "{err}");

    // --follow prints what is logged later, until SIGTERM.
    let mut follow = broker.spawn_cli(&["processor", "logs", "noisy", "--follow"])?;
    produce(&client, values_to("l-in", &["panic again"])).await?;
    let deadline = Deadline::after(WAIT);
    loop {
        if let Some(line) = follow.read_line(Duration::from_millis(200)) {
            if line.contains("record l-in/0@3 failed") {
                break;
            }
        }
        if let Some(status) = follow.try_wait()? {
            bail!("logs --follow exited with {status}: {}", follow.stderr());
        }
        deadline.check(|| format!("the new failure in logs --follow; stderr: {}", follow.stderr()))?;
    }
    let status = follow.terminate(WAIT)?;
    ensure!(status.success(), "logs --follow exited with {status}: {}", follow.stderr());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_partitioned_inputs_share_one_state_per_partition() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    create_topics(&client, &["j-a", "j-b", "j-out"], 2).await?;
    // Inputs with different partition counts are refused: they could not share state.
    create_topics(&client, &["j-c"], 3).await?;
    let wasm = processor_wasm("word_count");
    let wasm = wasm.to_str().context("UTF-8 path")?;
    let refused = broker
        .cli(&["processor", "deploy", "j-bad", "--wasm", wasm, "--input", "j-a,j-c", "--output", "j-out"], b"")?;
    ensure!(!refused.status.success(), "deploying inputs of 2 and 3 partitions must fail");
    ensure!(String::from_utf8_lossy(&refused.stderr).contains("same number of partitions"), "{refused:?}");

    deploy(&broker, "joined", "word_count", "j-a,j-b", "j-out", &["--from-beginning"])?;
    // The same key goes to the same partition number of both inputs: its
    // words are counted in one state, whichever topic they came from.
    let records = (0..10).map(|i| ProducerRecord::new(if i % 2 == 0 { "j-a" } else { "j-b" }, "x").key("k")).collect();
    produce(&client, records).await?;
    let out = read_all(&client, "j-out", 10).await.with_context(|| log_tail(&broker, 40))?;
    let got: BTreeSet<String> = out.values().flat_map(|rs| values(rs)).collect();
    let expected: BTreeSet<String> = (1..=10).map(|n| format!("x {n}")).collect();
    ensure!(got == expected, "one count across both inputs: got {got:?}");
    Ok(())
}
