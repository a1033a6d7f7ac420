//! The `eddy` command against a real broker: topic admin, produce from stdin, consume --json.

use eddy_tests::BrokerProcess;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {}: stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn produce_and_consume_json_through_the_cli() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    ok(&broker.cli(&["topic", "create", "lines", "-p", "2"], b"")?);
    let input: String = (0..50).map(|i| format!("user{}:hello {i}\n", i % 5)).collect();
    ok(&broker.cli(&["produce", "lines", "--key-separator", ":"], input.as_bytes())?);
    let out = ok(&broker
        .cli(&["consume", "lines", "--from-beginning", "--json", "--max-records", "50", "--timeout", "20"], b"")?);
    let records: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(records.len(), 50);
    for r in &records {
        for field in ["topic", "partition", "offset", "timestamp", "key", "value", "headers"] {
            assert!(r.get(field).is_some(), "field {field} in {r}");
        }
        assert_eq!(r["topic"], "lines");
        let key = r["key"].as_str().unwrap();
        let value = r["value"].as_str().unwrap();
        let i: usize = value.strip_prefix("hello ").unwrap().parse()?;
        assert_eq!(key, format!("user{}", i % 5));
    }
    let mut values: Vec<&str> = records.iter().map(|r| r["value"].as_str().unwrap()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 50);

    // --timeout ends a consume that has nothing more to read.
    let out = ok(&broker.cli(&["consume", "lines", "--timeout", "0.5"], b"")?);
    assert!(out.is_empty());
    let described = ok(&broker.cli(&["topic", "describe", "lines", "--json"], b"")?);
    let t: serde_json::Value = serde_json::from_str(described.trim())?;
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);
    Ok(())
}

#[test]
fn cli_errors_are_one_line_and_nonzero() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let out = broker.cli(&["produce", "missing-topic"], b"a\nb\n")?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNKNOWN_TOPIC") || err.contains("unknown topic"), "{err}");
    let out = broker.cli(&["topic", "create", "x", "-r", "2"], b"")?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("replication factor 2 larger than available brokers 1"));
    Ok(())
}
