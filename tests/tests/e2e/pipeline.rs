//! The crawl -> format -> recommend pipeline end to end: a real `eddy`
//! broker process (with its embedded worker, or `--no-runtime` and `eddy
//! runtime` processes killed with SIGKILL), the real `format` and `recommend`
//! Wasm modules, the crawler fetching the bundled feeds over HTTP from the
//! example's local feed server. The recommendations must equal the checked-in
//! expected file (computed by the independent reference in
//! `pipeline_reference.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use eddy_pipeline::pipeline::{self, DeployParams, FORMATTED_TOPIC};
use eddy_pipeline::{bundled, load_profiles, publish_profiles, read_digest, Crawler, CrawlerConfig, FeedServer};
use eddy_pipeline::{Digest, FeedSource, ReadUntil, ARTICLES_TOPIC, RECOMMENDATIONS_TOPIC, USERS_TOPIC};
use eddy_sdk::{Admin, Client, Processors};
use eddy_tests::{processors_dir, BrokerProcess};

use super::pipeline_reference::{data_dir, expected_file, read_expected_file, Expected};
use super::read_all;

const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: u32 = 4;
/// Articles in the bundled feeds: 235 entries, one repeated under the same id
/// in two feeds, one with neither title nor text (dead-lettered by format).
const PUBLISHED: u64 = 234;
const FORMATTED: usize = 233;

/// Topics, processors and profiles, ready for articles.
async fn set_up(client: &Client) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    let processors = Processors::new(client.clone());
    pipeline::create_topics(&admin, PARTITIONS).await?;
    pipeline::deploy(&processors, &processors_dir(), &DeployParams::default()).await?;
    let profiles = load_profiles(&bundled::users_file())?;
    publish_profiles(client, USERS_TOPIC, &profiles).await?;
    // Profiles first, so that every article is scored against every user.
    pipeline::wait_caught_up(&admin, &processors, pipeline::RECOMMEND, &[USERS_TOPIC], WAIT, |_| {}).await?;
    Ok(())
}

/// Crawls `files` (paths under data/) from a local feed server.
async fn crawl(
    client: &Client,
    files: &[String],
    extra: Vec<FeedSource>,
) -> anyhow::Result<eddy_pipeline::CrawlReport> {
    let server = FeedServer::start(bundled::data_dir())?;
    let mut feeds = bundled::sources_at(server.base_url(), files);
    feeds.extend(extra);
    let mut crawler = Crawler::start(client.clone(), CrawlerConfig::new(feeds)).await?;
    let report = crawler.run_once().await;
    crawler.close().await?;
    server.stop();
    Ok(report)
}

/// Waits until both processors have committed everything.
async fn drained(client: &Client) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    let processors = Processors::new(client.clone());
    pipeline::wait_caught_up(&admin, &processors, pipeline::FORMAT, &[ARTICLES_TOPIC], WAIT, |_| {}).await?;
    pipeline::wait_caught_up(&admin, &processors, pipeline::RECOMMEND, &[FORMATTED_TOPIC, USERS_TOPIC], WAIT, |_| {})
        .await?;
    Ok(())
}

/// The recommendations as (user, article) -> what was recommended, checking
/// that every repeat of a pair (outputs are at-least-once) is identical.
fn recommendations(digest: &Digest) -> BTreeMap<(String, String), Expected> {
    let mut out = BTreeMap::new();
    for (user, recs) in digest.users() {
        for r in recs {
            let e = Expected {
                user: user.to_string(),
                article: r.article.clone(),
                score: r.score,
                reasons: r.reasons.clone(),
            };
            out.insert((e.user.clone(), e.article.clone()), e);
        }
    }
    out
}

fn expected() -> anyhow::Result<BTreeMap<(String, String), Expected>> {
    let file = expected_file(&data_dir());
    let expected = read_expected_file(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(expected.into_iter().map(|e| ((e.user.clone(), e.article.clone()), e)).collect())
}

fn compare(
    got: &BTreeMap<(String, String), Expected>,
    want: &BTreeMap<(String, String), Expected>,
) -> anyhow::Result<()> {
    let got_keys: BTreeSet<_> = got.keys().collect();
    let want_keys: BTreeSet<_> = want.keys().collect();
    let missing: Vec<_> = want_keys.difference(&got_keys).take(5).collect();
    let extra: Vec<_> = got_keys.difference(&want_keys).take(5).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "{} recommendations, {} expected; missing e.g. {missing:?}, unexpected e.g. {extra:?}",
        got.len(),
        want.len()
    );
    for (key, w) in want {
        let g = &got[key];
        ensure!((g.score - w.score).abs() < 1e-6 && g.reasons == w.reasons, "{key:?}: got {g:?}, expected {w:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_feeds_give_exactly_the_expected_recommendations() -> anyhow::Result<()> {
    let broker = BrokerProcess::start()?;
    let client = broker.client().await?;
    set_up(&client).await?;
    // The bundled feeds, a malformed feed and an unreachable one.
    let mut files = bundled::files("feeds")?;
    files.extend(bundled::files("malformed")?);
    let offline = FeedSource::parse("offline=http://127.0.0.1:9/feed.xml")?;
    let report = crawl(&client, &files, vec![offline]).await?;
    ensure!(report.stats.articles_published == PUBLISHED, "{:?}", report.stats);
    ensure!(report.stats.feeds_failed == 2, "the malformed and the unreachable feed are reported: {:?}", report.stats);
    let failed: BTreeSet<&str> = report.feeds.iter().filter(|f| f.error.is_some()).map(|f| f.feed.as_str()).collect();
    ensure!(failed == BTreeSet::from(["broken", "offline"]), "{failed:?}");
    drained(&client).await?;

    // Every well-formed article reaches `formatted`; the malformed one is dead-lettered with its reason.
    let formatted = read_all(&client, FORMATTED_TOPIC, FORMATTED).await?;
    ensure!(formatted.values().map(Vec::len).sum::<usize>() == FORMATTED);
    let dlq = read_all(&client, "formatted.dlq", 1).await?;
    let dead = dlq.values().flatten().next().context("a dead letter")?;
    let kind = dead.headers.iter().find(|h| h.key == "eddy.error.kind").map(|h| h.value.clone());
    ensure!(kind.as_deref() == Some(&b"error"[..]), "dead letter headers: {:?}", dead.headers);

    let digest = read_digest(&client, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, Duration::from_secs(10)).await?;
    ensure!(digest.duplicates() == 0, "no failure, so no repeated output");
    compare(&recommendations(&digest), &expected()?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_killed_mid_run_changes_nothing_in_the_result() -> anyhow::Result<()> {
    let mut broker = BrokerProcess::start_with(&["--no-runtime"])?;
    let client = broker.client().await?;
    let mut runtime = broker.spawn_runtime("first", 2000)?;
    set_up(&client).await?;
    let files = bundled::files("feeds")?;
    let (first, second) = files.split_at(files.len() / 2);
    crawl(&client, first, vec![]).await?;
    // Some of the first half is processed, then the worker dies without warning.
    let admin = Admin::new(client.clone());
    let deadline = std::time::Instant::now() + WAIT;
    while pipeline::progress(&admin, pipeline::RECOMMEND, &[FORMATTED_TOPIC]).await?.done == 0 {
        ensure!(std::time::Instant::now() < deadline, "recommend made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runtime.kill();
    // The second half arrives while no worker runs; then a new one takes over.
    crawl(&client, second, vec![]).await?;
    let _runtime = broker.spawn_runtime("second", 2000)?;
    drained(&client).await?;

    let digest = read_digest(&client, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, Duration::from_secs(10)).await?;
    compare(&recommendations(&digest), &expected()?)?;

    // And after the broker itself is killed and restarted, nothing changes:
    // state and offsets are durable, so no article is recommended again.
    let before = broker.client().await?;
    let count_before = read_digest(&before, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, Duration::from_secs(10)).await?;
    drop(before);
    broker.restart()?;
    let client = broker.client().await?;
    crawl(&client, &files, vec![]).await?; // every article is known: nothing new
    drained(&client).await?;
    let after = read_digest(&client, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, Duration::from_secs(10)).await?;
    ensure!(
        after.len() + after.duplicates() as usize == count_before.len() + count_before.duplicates() as usize,
        "no new recommendation records after the restart"
    );
    compare(&recommendations(&after), &expected()?)?;
    Ok(())
}
