//! `crawler`: publishes the entries of RSS/Atom feeds to an Eddy topic.
//!
//! ```text
//! crawler --broker HOST:PORT --ca CA.pem [--topic articles] [--interval-secs N | --once] FEED...
//! ```
//!
//! A FEED is an `http(s)://` URL, a `file://` URL or a path, optionally
//! prefixed with `ID=` to choose the feed id that keys its records. Entries
//! already in the topic (by id, else link) are not published again, also
//! across restarts. Feeds that fail are reported and skipped. Ctrl-C stops.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use eddy_pipeline::crawler::{CrawlReport, Crawler, CrawlerConfig, FeedSource, DEFAULT_MAX_FEED_BYTES};
use eddy_pipeline::ARTICLES_TOPIC;
use eddy_sdk::{Client, ClientConfig};

#[derive(Debug, Parser)]
#[command(name = "crawler", about = "Publish the entries of RSS/Atom feeds to an Eddy topic")]
struct Args {
    /// Broker address.
    #[arg(long, env = "EDDY_BROKER", default_value = "127.0.0.1:9400")]
    broker: String,
    /// The broker's CA certificate (DATA_DIR/tls/ca.pem of the broker).
    #[arg(long, env = "EDDY_CA")]
    ca: std::path::PathBuf,
    /// Topic to publish to; it must exist.
    #[arg(long, default_value = ARTICLES_TOPIC)]
    topic: String,
    /// Seconds between the starts of two rounds.
    #[arg(long, default_value_t = 300, conflicts_with = "once")]
    interval_secs: u64,
    /// Crawl every feed once and exit (status 1 if every feed failed).
    #[arg(long)]
    once: bool,
    /// Time limit of one HTTP fetch, in seconds.
    #[arg(long, default_value_t = 30)]
    fetch_timeout_secs: u64,
    /// Largest feed document accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FEED_BYTES)]
    max_feed_bytes: u64,
    /// Feeds: [ID=]URL or [ID=]PATH.
    #[arg(required = true, value_name = "FEED")]
    feeds: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("EDDY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let feeds = args.feeds.iter().map(|f| FeedSource::parse(f)).collect::<Result<Vec<_>, _>>()?;
    let mut config = CrawlerConfig::new(feeds);
    config.topic = args.topic.clone();
    config.fetch_timeout = Duration::from_secs(args.fetch_timeout_secs);
    config.max_feed_bytes = args.max_feed_bytes;

    let client =
        Client::connect(ClientConfig::new(args.broker.clone()).ca_file(args.ca.clone()).with_local_credentials())
            .await
            .with_context(|| format!("connecting to {}", args.broker))?;
    let mut crawler = Crawler::start(client, config).await?;
    println!("{} articles already in topic {}", crawler.known_articles(), args.topic);
    crawler.on_progress(|report, totals| match &report.error {
        Some(error) => println!("  {:<20} FAILED: {error}", report.feed),
        None => println!(
            "  {:<20} {:>4} entries, {:>4} new, {:>4} already published   (total published {})",
            report.feed, report.entries, report.published, report.duplicates, totals.articles_published
        ),
    });

    if args.once {
        let report = crawler.run_once().await;
        print_summary(&report);
        crawler.close().await?;
        let all_failed = report.feeds.iter().all(|f| f.error.is_some());
        anyhow::ensure!(!all_failed, "every feed failed");
        return Ok(());
    }
    let interval = Duration::from_secs(args.interval_secs.max(1));
    println!("crawling {} feeds every {interval:?}; Ctrl-C stops", args.feeds.len());
    let totals = crawler
        .run(interval, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    println!(
        "stopped: {} articles published, {} duplicates skipped, {} feed failures",
        totals.articles_published, totals.duplicates_skipped, totals.feeds_failed
    );
    crawler.close().await?;
    Ok(())
}

fn print_summary(report: &CrawlReport) {
    let s = report.stats;
    println!(
        "{} feeds fetched, {} failed, {} entries, {} published, {} duplicates skipped in {:.1} s",
        s.feeds_fetched,
        s.feeds_failed,
        s.entries_seen,
        s.articles_published,
        s.duplicates_skipped,
        report.elapsed.as_secs_f64()
    );
}
