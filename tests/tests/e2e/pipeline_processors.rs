//! The crawl -> format -> recommend example's Wasm processors run by
//! `eddy processor test` (the real runtime, no broker) on the bundled data,
//! compared with the independent reference (pipeline_reference.rs), and on
//! hostile input.

use std::collections::BTreeMap;

use eddy_tests::{eddy, processor_wasm};
use serde_json::{json, Value};

use crate::pipeline_reference::{self as reference, Expected};

/// What `eddy processor test --json` printed: success, the output records
/// (`key`, `value` as text) and standard error.
struct Run {
    ok: bool,
    outputs: Vec<(Option<String>, String)>,
    stderr: String,
}

fn run(module: &str, extra: &[&str], lines: &[Value]) -> anyhow::Result<Run> {
    let wasm = processor_wasm(module);
    let mut args = vec!["processor", "test", "--wasm", wasm.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = eddy(&args, input.as_bytes())?;
    let mut outputs = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        let value = v["value"].as_str().map(str::to_string).unwrap_or_else(|| v["value"].to_string());
        outputs.push((v["key"].as_str().map(str::to_string), value));
    }
    Ok(Run { ok: out.status.success(), outputs, stderr: String::from_utf8(out.stderr)? })
}

/// The error `eddy processor test` reported for input record `n`, if any.
fn failure(run: &Run, n: usize) -> Option<&str> {
    run.stderr.lines().find_map(|l| l.strip_prefix(&format!("record {n}: error: ")))
}

/// A record line of topic `topic`.
fn record(topic: &str, key: &str, value: &Value) -> Value {
    json!({"topic": topic, "key": key, "value": value.to_string()})
}

/// The bundled articles as format writes them (key, value), by running format.wasm.
fn formatted_by_the_processor() -> anyhow::Result<(Run, usize)> {
    let raw = reference::raw_articles(&reference::data_dir());
    let lines: Vec<Value> = raw.iter().map(|a| record("articles", &a.feed, &a.to_json())).collect();
    Ok((run("format", &[], &lines)?, raw.len()))
}

fn profile_lines() -> anyhow::Result<Vec<Value>> {
    let path = reference::data_dir().join("users.json");
    let profiles: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(profiles.iter().map(|p| record("users", p["user"].as_str().unwrap_or_default(), p)).collect())
}

#[test]
fn format_agrees_with_the_reference_on_the_bundled_articles() -> anyhow::Result<()> {
    let expected: BTreeMap<String, reference::FormattedArticle> =
        reference::formatted_articles(&reference::data_dir()).into_iter().map(|a| (a.id.clone(), a)).collect();
    let (out, articles) = formatted_by_the_processor()?;
    let dead = out.stderr.lines().filter(|l| l.starts_with("record ")).count();
    assert_eq!(dead, articles - expected.len(), "dead letters: {}", out.stderr);
    assert_eq!(out.outputs.len(), expected.len(), "{}", out.stderr);
    for (key, value) in &out.outputs {
        let v: Value = serde_json::from_str(value)?;
        let id = v["id"].as_str().unwrap_or_default();
        assert_eq!(key.as_deref(), Some(id), "the key is the article id");
        let want = expected.get(id).unwrap_or_else(|| panic!("format wrote {id}, which the reference dead-letters"));
        assert_eq!(v["title"], want.title, "title of {id}");
        assert_eq!(v["summary"], want.summary, "summary of {id}");
        assert_eq!(v["keywords"], json!(want.keywords), "keywords of {id}");
        for field in ["feed", "link", "published"] {
            assert!(v.get(field).is_some(), "{id} has no {field}");
        }
    }
    Ok(())
}

#[test]
fn recommend_agrees_with_the_expected_file_and_sends_each_article_once() -> anyhow::Result<()> {
    let (formatted, _) = formatted_by_the_processor()?;
    let articles: Vec<Value> = formatted
        .outputs
        .iter()
        .map(|(key, value)| json!({"topic": "formatted", "key": key, "value": value}))
        .collect();
    // Profiles first (as the demo produces them), then every article twice:
    // the second copy must recommend nothing.
    let mut lines = profile_lines()?;
    lines.extend(articles.iter().cloned());
    lines.extend(articles.iter().cloned());
    let out = run("recommend", &[], &lines)?;
    assert!(out.ok, "{}", out.stderr);
    let mut got = Vec::new();
    for (key, value) in &out.outputs {
        let rec = Expected::from_json(&serde_json::from_str(value)?)?;
        assert_eq!(key.as_deref(), Some(rec.user.as_str()), "keyed by user");
        got.push(rec);
    }
    got.sort_by(|a, b| (&a.user, &a.article).cmp(&(&b.user, &b.article)));
    let data = reference::data_dir();
    let expected = reference::read_expected_file(&reference::expected_file(&data))?;
    assert_eq!(got.len(), expected.len(), "recommendations (duplicates included) vs the expected file");
    assert_eq!(got, expected);
    Ok(())
}

#[test]
fn format_dead_letters_what_is_not_an_article_and_takes_huge_ones() -> anyhow::Result<()> {
    // Half the broker's default maximum record size (1 MiB), to stay well
    // within the default 100 ms per call on a busy machine.
    let huge_content = "<p>Stream processing with <b>Wasm</b> &amp; Rust keeps latency low.</p>\n".repeat(7_000);
    let lines = [
        json!({"key": "f", "value": "not json {"}),
        record(
            "articles",
            "f",
            &json!({"feed": "f", "id": "empty", "title": " <br> ", "content": "<script>x()</script>"}),
        ),
        record("articles", "f", &json!({"feed": "f", "id": 42, "title": "wrong type"})),
        record(
            "articles",
            "f",
            &json!({"feed": "f", "id": "huge", "title": "Huge", "link": "", "published": null,
            "content": huge_content}),
        ),
        record("articles", "f", &json!({"feed": "f", "id": "ok", "title": "Fine &amp; dandy", "content": "text"})),
    ];
    let out = run("format", &[], &lines)?;
    assert!(!out.ok, "failed records make the command fail");
    let reason = |n| failure(&out, n).unwrap_or_else(|| panic!("record {n} did not fail: {}", out.stderr));
    assert!(reason(0).contains("not a valid article: expected"), "{}", reason(0));
    assert!(reason(1).contains("article \"empty\" has neither a title nor any text"), "{}", reason(1));
    assert!(reason(2).contains("not a valid article: invalid type: integer `42`"), "{}", reason(2));
    // The module logs why, too (a warning in the processor's log).
    assert!(out.stderr.contains("[Warn]") && out.stderr.contains("neither a title nor any text"), "{}", out.stderr);
    let keys: Vec<_> = out.outputs.iter().map(|(k, _)| k.as_deref().unwrap_or_default()).collect();
    assert_eq!(keys, ["huge", "ok"]);
    let huge: Value = serde_json::from_str(&out.outputs[0].1)?;
    let summary = huge["summary"].as_str().unwrap_or_default();
    assert!(summary.ends_with('…') && summary.chars().count() <= 281, "{summary}");
    assert_eq!(huge["keywords"].as_array().map(Vec::len), Some(8));
    let ok: Value = serde_json::from_str(&out.outputs[1].1)?;
    assert_eq!(ok["title"], "Fine & dandy");
    Ok(())
}

#[test]
fn recommend_keeps_profiles_across_calls_and_checks_its_input() -> anyhow::Result<()> {
    let article = |id: &str, keywords: &[&str]| {
        record(
            "formatted",
            id,
            &json!({"id": id, "feed": "f", "title": id.to_uppercase(), "link": format!("https://x/{id}"),
            "published": null, "summary": "", "keywords": keywords}),
        )
    };
    let user =
        |id: &str, interests: Value| record("users", id, &json!({"user": id, "name": id, "interests": interests}));
    let lines = [
        user("ada", json!({"rust": 1.0, "Wasm": 0.5})),
        user("bob", json!({"mars": 2.0})),
        article("a1", &["rust", "wasm", "compiler"]),
        article("a2", &["mars", "rust"]),
        // Bob's new profile replaces the old one.
        user("bob", json!({"rust": 1.0})),
        article("a3", &["mars"]),
        article("a1", &["rust", "wasm"]),
        json!({"topic": "users", "value": "{\"user\": \"eve\", \"interests\": {\"x\": \"heavy\"}}"}),
        json!({"topic": "formatted", "value": "[not an article"}),
    ];
    // One record per call: the profiles must live on in the instance and its state.
    let out = run("recommend", &["--batch", "1", "--param", "threshold=1.5"], &lines)?;
    assert!(!out.ok);
    let got: Vec<Value> = out.outputs.iter().map(|(_, v)| serde_json::from_str(v)).collect::<Result<_, _>>()?;
    assert_eq!(
        got,
        [
            json!({"user": "ada", "article": "a1", "link": "https://x/a1", "title": "A1", "score": 1.5,
                "reasons": ["rust", "wasm"]}),
            json!({"user": "bob", "article": "a2", "link": "https://x/a2", "title": "A2", "score": 2.0,
                "reasons": ["mars"]}),
        ]
    );
    assert!(failure(&out, 7).is_some_and(|r| r.contains("not a valid user profile")), "{}", out.stderr);
    assert!(failure(&out, 8).is_some_and(|r| r.contains("not a valid formatted article")), "{}", out.stderr);
    // An unknown parameter refuses the deployment.
    let refused = run("recommend", &["--param", "treshold=1"], &[])?;
    assert!(!refused.ok && refused.stderr.contains("unknown parameter `treshold`"), "{}", refused.stderr);
    Ok(())
}
