//! `eddy processor test`: a module run locally on stdin records, no broker.

use eddy_tests::{eddy, processor_wasm};

fn run(module: &str, extra: &[&str], input: &str) -> anyhow::Result<(bool, String, String)> {
    let wasm = processor_wasm(module);
    let mut args = vec!["processor", "test", "--wasm", wasm.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = eddy(&args, input.as_bytes())?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

#[test]
fn uppercase_keeps_keys_and_prints_json() -> anyhow::Result<()> {
    let (ok, out, err) = run("uppercase", &["--json"], "hello\n{\"key\": \"k\", \"value\": \"json line\"}\n")?;
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["value"], "HELLO");
    assert_eq!(lines[0]["key"], serde_json::Value::Null);
    assert_eq!(lines[1]["value"], "JSON LINE");
    assert_eq!(lines[1]["key"], "k");
    Ok(())
}

#[test]
fn filter_gets_its_param_and_word_count_keeps_state_across_records() -> anyhow::Result<()> {
    let (ok, out, err) = run("filter", &["--param", "match=app"], "apple\nbanana\npineapple\n")?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["apple", "pineapple"]);
    // One record per call, so state must carry over between calls.
    let (ok, out, err) = run("word_count", &["--batch", "1"], "a b a\nb\n")?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["a 1", "b 1", "a 2", "b 2"]);
    Ok(())
}

#[test]
fn a_failing_record_is_reported_alone_and_the_exit_code_says_so() -> anyhow::Result<()> {
    let (ok, out, err) = run("panic", &[], "fine\nplease panic\nalso fine\n")?;
    assert!(!ok, "a failed record makes the command fail");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["fine", "also fine"]);
    assert!(err.contains("record 1: trap"), "{err}");
    let (ok, out, err) = run("infinite_loop", &[], "ok\nloop\n")?;
    assert!(!ok);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["ok"]);
    assert!(err.contains("record 1: timeout"), "{err}");
    Ok(())
}

#[test]
fn a_file_that_is_not_a_processor_is_refused_clearly() -> anyhow::Result<()> {
    let not_wasm = std::env::current_exe()?.with_extension("txt");
    std::fs::write(&not_wasm, "not wasm")?;
    let out = eddy(&["processor", "test", "--wasm", not_wasm.to_str().unwrap()], b"x\n")?;
    let _ = std::fs::remove_file(&not_wasm);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a WebAssembly binary"), "{err}");
    Ok(())
}
