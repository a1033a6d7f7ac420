//! `pipeline-bench`: articles per second through the whole pipeline on a
//! synthetic corpus (default 100,000 articles in 100 RSS feeds, 1,000 users),
//! against a fresh broker whose workers run the processors (`eddy dev`).
//!
//! ```text
//! eddy dev --data-dir /tmp/bench &
//! pipeline-bench --broker 127.0.0.1:9400 --ca /tmp/bench/tls/ca.pem --modules target/wasm32-wasip2/release
//! ```
//!
//! The feeds are written to a temporary directory and served by the example's
//! feed server, so the crawl takes the real HTTP fetch + parse + produce path.
//! The clock starts when the crawl starts (profiles are loaded before) and
//! stops when `recommend` has committed every formatted article; the
//! processors run while the crawl is going on. Where the time goes: the crawl's
//! own duration, and the CPU time each module spent per record (the
//! processors' `wasm_nanos` counters).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use eddy_pipeline::pipeline::{self, DeployParams, FORMATTED_TOPIC};
use eddy_pipeline::{publish_profiles, Crawler, CrawlerConfig, FeedServer, FeedSource, UserProfile};
use eddy_pipeline::{ARTICLES_TOPIC, USERS_TOPIC};
use eddy_sdk::{Admin, Client, ClientConfig, Processors};

#[derive(Debug, Parser)]
#[command(name = "pipeline-bench", about = "Articles per second through crawl -> format -> recommend")]
struct Args {
    /// Broker address (a fresh broker: the pipeline's topics must not exist).
    #[arg(long, env = "EDDY_BROKER", default_value = "127.0.0.1:9400")]
    broker: String,
    /// The broker's CA certificate.
    #[arg(long, env = "EDDY_CA")]
    ca: PathBuf,
    /// Directory with format.wasm and recommend.wasm.
    #[arg(long, default_value = "target/wasm32-wasip2/release")]
    modules: PathBuf,
    /// Articles in the corpus.
    #[arg(long, default_value_t = 100_000)]
    articles: usize,
    /// Feeds they are spread over.
    #[arg(long, default_value_t = 100)]
    feeds: usize,
    /// User profiles.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Group members of `format` per worker (the costliest stage per article).
    #[arg(long, default_value_t = 2)]
    format_parallelism: u32,
}

/// A tiny deterministic generator (xorshift64*): the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Skewed towards small values, like word frequencies.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u) * n as f64) as usize % n
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pronounceable made-up words (syllables), none of them a stop word.
fn vocabulary(n: usize) -> Vec<String> {
    const ONSETS: &[&str] = &["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr"];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    let mut rng = Rng(0x5eed);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < n {
        let syllables = 2 + rng.below(3);
        let word: String = (0..syllables)
            .map(|_| format!("{}{}", ONSETS[rng.below(ONSETS.len())], VOWELS[rng.below(VOWELS.len())]))
            .collect();
        words.insert(word);
    }
    let mut words: Vec<String> = words.into_iter().collect();
    // Shuffle so that frequency does not follow alphabetical order.
    for i in (1..words.len()).rev() {
        words.swap(i, rng.below(i + 1));
    }
    words
}

fn users(n: usize, vocab: &[String]) -> Vec<UserProfile> {
    let mut rng = Rng(0xface);
    (0..n)
        .map(|i| {
            let interests: BTreeMap<String, f64> = (0..3 + rng.below(6))
                .map(|_| (vocab[rng.skewed(vocab.len() / 2)].clone(), 0.5 + rng.below(6) as f64 * 0.5))
                .collect();
            UserProfile { user: format!("user{i:05}"), name: format!("User {i}"), interests }
        })
        .collect()
}

/// Writes the corpus as RSS 2.0 files; returns their names.
fn write_feeds(dir: &std::path::Path, articles: usize, feeds: usize, vocab: &[String]) -> anyhow::Result<Vec<String>> {
    let mut rng = Rng(0xa271c1e5);
    let mut files = Vec::new();
    for f in 0..feeds {
        let mut xml = String::from("<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel>");
        write!(
            xml,
            "<title>Synthetic feed {f}</title><link>https://feed{f}.example</link><description>bench</description>"
        )?;
        for a in (f..articles).step_by(feeds) {
            let mut words = |n: usize| -> String {
                (0..n).map(|_| vocab[rng.skewed(vocab.len())].as_str()).collect::<Vec<_>>().join(" ")
            };
            let title = words(8);
            let body: String = (0..3).map(|_| format!("&lt;p&gt;{}.&lt;/p&gt;", words(60))).collect();
            write!(
                xml,
                "<item><title>{title}</title><link>https://feed{f}.example/a/{a}</link>\
                 <guid>bench-{a}</guid><description>{body}</description></item>"
            )?;
        }
        xml.push_str("</channel></rss>\n");
        let name = format!("feed{f:03}.xml");
        std::fs::write(dir.join(&name), xml)?;
        files.push(name);
    }
    Ok(files)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("EDDY_LOG").unwrap_or_else(|_| "warn".into())).init();
    let args = Args::parse();
    let client = Client::connect(ClientConfig::new(args.broker.clone()).ca_file(&args.ca).with_local_credentials())
        .await
        .with_context(|| format!("connecting to {}", args.broker))?;
    let admin = Admin::new(client.clone());
    let processors = Processors::new(client.clone());
    anyhow::ensure!(
        admin.describe_topic(ARTICLES_TOPIC).await.is_err(),
        "topic {ARTICLES_TOPIC} exists: run the benchmark against a fresh broker"
    );

    let vocab = vocabulary(5_000);
    let dir = tempfile::tempdir()?;
    let generated = Instant::now();
    let files = write_feeds(dir.path(), args.articles, args.feeds, &vocab)?;
    let profiles = users(args.users, &vocab);
    let corpus_bytes: u64 = files.iter().map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len())).sum();
    println!(
        "corpus: {} articles in {} RSS feeds ({:.0} MB), {} users; generated in {:.1} s",
        args.articles,
        args.feeds,
        corpus_bytes as f64 / 1e6,
        args.users,
        generated.elapsed().as_secs_f64()
    );

    pipeline::create_topics(&admin, args.partitions).await?;
    let params = DeployParams { format_parallelism: args.format_parallelism, ..DeployParams::default() };
    pipeline::deploy(&processors, &args.modules, &params).await?;
    publish_profiles(&client, USERS_TOPIC, &profiles).await?;
    pipeline::wait_caught_up(
        &admin,
        &processors,
        pipeline::RECOMMEND,
        &[USERS_TOPIC],
        Duration::from_secs(300),
        |_| {},
    )
    .await?;

    let server = FeedServer::start(dir.path())?;
    let feeds: Vec<FeedSource> = files
        .iter()
        .map(|f| FeedSource::parse(&format!("{}={}", f.trim_end_matches(".xml"), server.url(f))))
        .collect::<Result<_, _>>()?;
    let mut config = CrawlerConfig::new(feeds);
    config.max_feed_bytes = 256 << 20;
    let started = Instant::now();
    let mut crawler = Crawler::start(client.clone(), config).await?;
    let report = crawler.run_once().await;
    crawler.close().await?;
    let crawled = started.elapsed();
    server.stop();
    anyhow::ensure!(report.stats.feeds_failed == 0, "feeds failed: {:?}", report.stats);
    let timeout = Duration::from_secs(1800);
    pipeline::wait_caught_up(&admin, &processors, pipeline::FORMAT, &[ARTICLES_TOPIC], timeout, |_| {}).await?;
    let formatted = started.elapsed();
    pipeline::wait_caught_up(
        &admin,
        &processors,
        pipeline::RECOMMEND,
        &[FORMATTED_TOPIC, USERS_TOPIC],
        timeout,
        |_| {},
    )
    .await?;
    let total = started.elapsed();

    let format = processors.describe(pipeline::FORMAT).await?;
    let recommend = processors.describe(pipeline::RECOMMEND).await?;
    let per = |nanos: u64, n: u64| nanos as f64 / n.max(1) as f64 / 1e3;
    let n = report.stats.articles_published;
    println!(
        "through the pipeline: {n} articles in {:.2} s = {:.0} articles/s (crawl to last recommendation committed)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "  crawl (HTTP fetch, parse, produce acks=all): done after {:.2} s ({:.0} articles/s)",
        crawled.as_secs_f64(),
        n as f64 / crawled.as_secs_f64()
    );
    println!(
        "  format caught up after {:.2} s; module CPU {:.1} µs/article ({} formatted, {} dead-lettered)",
        formatted.as_secs_f64(),
        per(format.stats.wasm_nanos, format.stats.records_in),
        format.stats.records_out,
        format.stats.dead_lettered
    );
    println!(
        "  recommend caught up after {:.2} s; module CPU {:.1} µs/record ({} recommendations)",
        total.as_secs_f64(),
        per(recommend.stats.wasm_nanos, recommend.stats.records_in),
        recommend.stats.records_out
    );
    Ok(())
}
