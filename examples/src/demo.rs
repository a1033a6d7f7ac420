//! `cargo xtask demo`: the crawl -> format -> recommend pipeline on an
//! embedded single-node Eddy (`eddy dev` defaults, a temporary data directory,
//! a free port, a processor worker in the same process).
//!
//! 1. start the broker and its worker (or use `--broker HOST:PORT --ca FILE`,
//!    whose workers then run the processors);
//! 2. create the topics; deploy the Wasm processors `format` and `recommend`;
//! 3. publish the bundled user profiles and wait until `recommend` has them;
//! 4. serve the bundled feeds on 127.0.0.1 and crawl them (plus a malformed
//!    feed and an unreachable one, which are reported and skipped);
//! 5. wait until both processors have caught up, and print the per-user digest.
//!
//! Modules are read from `$EDDY_PROCESSORS_DIR`, else
//! `target/wasm32-wasip2/release` next to this binary's `target/release`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use eddy_broker::{Broker, BrokerConfig};
use eddy_pipeline::pipeline::{self, DeployParams, Progress, FORMATTED_TOPIC};
use eddy_pipeline::{bundled, load_profiles, publish_profiles, read_digest, Crawler, CrawlerConfig, FeedServer};
use eddy_pipeline::{FeedSource, ReadUntil, ARTICLES_TOPIC, RECOMMENDATIONS_TOPIC, USERS_TOPIC};
use eddy_runtime::{Worker, WorkerConfig};
use eddy_sdk::{Admin, Client, ClientConfig, Processors};

const PARTITIONS: u32 = 4;
const WAIT: Duration = Duration::from_secs(300);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("EDDY_LOG").unwrap_or_else(|_| "warn,eddy_pipeline::crawler=error".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let started = Instant::now();

    let tempdir = tempfile::Builder::new().prefix("eddy-demo-").tempdir()?;
    let (embedded, config) = match flag("--broker") {
        Some(addr) => {
            let ca = flag("--ca").context("--broker needs --ca FILE (the broker's <data-dir>/tls/ca.pem)")?;
            println!("[1/6] using the Eddy cluster at {addr} (its workers run the processors)");
            (None, ClientConfig::new(addr).ca_file(ca).with_local_credentials())
        }
        None => {
            let mut config = BrokerConfig::new(tempdir.path());
            config.listen = "127.0.0.1:0".parse()?;
            let broker = Broker::start(config).await.context("starting the embedded broker")?;
            let client = ClientConfig::new(broker.local_addr().to_string())
                .ca_file(broker.ca_path())
                .client_cert(broker.certificate().0, broker.certificate().1);
            let mut worker_config = WorkerConfig::new(client.clone());
            worker_config.worker_id = "demo".into();
            let worker =
                Worker::start(broker.runtime(), worker_config).await.context("starting the processor worker")?;
            println!(
                "[1/6] embedded Eddy broker on {} with a processor worker (data in {})",
                broker.local_addr(),
                tempdir.path().display()
            );
            (Some((broker, worker)), client)
        }
    };

    let client = Client::connect(config).await?;
    let result = run(&client).await;
    client.close().await;
    if let Some((broker, worker)) = embedded {
        worker.shutdown().await;
        broker.shutdown().await;
        println!("embedded broker shut down cleanly ({:.1} s in all)", started.elapsed().as_secs_f64());
    }
    result
}

async fn run(client: &Client) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    let processors = Processors::new(client.clone());
    pipeline::create_topics(&admin, PARTITIONS).await?;
    println!(
        "[2/6] topics {ARTICLES_TOPIC}, {FORMATTED_TOPIC}, {USERS_TOPIC}, {RECOMMENDATIONS_TOPIC} ({PARTITIONS} partitions)"
    );

    let modules = modules_dir();
    let (format, recommend) = pipeline::deploy(&processors, &modules, &DeployParams::default()).await?;
    println!(
        "[3/6] deployed Wasm processors {} v{} ({} KiB) and {} v{} ({} KiB) from {}",
        format.name,
        format.version,
        format.module_bytes / 1024,
        recommend.name,
        recommend.version,
        recommend.module_bytes / 1024,
        modules.display()
    );

    let profiles = load_profiles(&bundled::users_file())?;
    let summary = publish_profiles(client, USERS_TOPIC, &profiles).await?;
    pipeline::wait_caught_up(&admin, &processors, pipeline::RECOMMEND, &[USERS_TOPIC], WAIT, |_| {}).await?;
    println!(
        "[4/6] published {} user profiles to all {} partitions of {USERS_TOPIC}; recommend has them",
        summary.profiles, summary.partitions
    );

    let server = FeedServer::start(bundled::data_dir())?;
    let mut feeds = bundled::sources_at(server.base_url(), &bundled::files("feeds")?);
    feeds.extend(bundled::sources_at(server.base_url(), &bundled::files("malformed")?));
    feeds.push(FeedSource::parse("offline=http://127.0.0.1:9/feed.xml")?);
    println!("[5/6] crawling {} feeds from {} ...", feeds.len(), server.base_url());
    let mut crawler = Crawler::start(client.clone(), CrawlerConfig::new(feeds)).await?;
    crawler.on_progress(|feed, totals| match &feed.error {
        None => println!(
            "      {:<16} {:>3} entries, {:>3} new ({} published so far)",
            feed.feed, feed.entries, feed.published, totals.articles_published
        ),
        Some(e) => println!("      {:<16} skipped: {e}", feed.feed),
    });
    let report = crawler.run_once().await;
    crawler.close().await?;
    server.stop();
    let s = &report.stats;
    println!(
        "      crawled in {:.2} s: {} articles published, {} duplicates skipped, {} feeds failed",
        report.elapsed.as_secs_f64(),
        s.articles_published,
        s.duplicates_skipped,
        s.feeds_failed
    );

    let waited = Instant::now();
    let f = wait(&admin, &processors, pipeline::FORMAT, &[ARTICLES_TOPIC]).await?;
    let r = wait(&admin, &processors, pipeline::RECOMMEND, &[FORMATTED_TOPIC, USERS_TOPIC]).await?;
    let format = processors.describe(pipeline::FORMAT).await?;
    let recommend = processors.describe(pipeline::RECOMMEND).await?;
    println!(
        "      format: {} articles in, {} formatted, {} dead-lettered to {FORMATTED_TOPIC}.dlq; \
         recommend: {} records in, {} recommendations ({:.2} s)",
        f.done,
        format.stats.records_out,
        format.stats.dead_lettered,
        r.done,
        recommend.stats.records_out,
        waited.elapsed().as_secs_f64()
    );

    let digest = read_digest(client, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, Duration::from_secs(10)).await?;
    println!("[6/6] digest: {} recommendations for {} users\n", digest.len(), digest.users().count());
    print!("{}", digest.render(&profiles, Some(5)));
    Ok(())
}

/// Waits for a processor to catch up, printing its progress as it changes.
async fn wait(admin: &Admin, processors: &Processors, name: &str, topics: &[&str]) -> anyhow::Result<Progress> {
    let mut last = None;
    let mut printed = Instant::now();
    let p = pipeline::wait_caught_up(admin, processors, name, topics, WAIT, |p| {
        if last != Some(p) && printed.elapsed() > Duration::from_millis(500) {
            println!("      {name}: {}/{} input records processed", p.done, p.total);
            printed = Instant::now();
        }
        last = Some(p);
    })
    .await?;
    Ok(p)
}

/// Where the built processors are.
fn modules_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDDY_PROCESSORS_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/demo -> target/wasm32-wasip2/release
    exe.parent().and_then(|d| d.parent()).map(|t| t.join("wasm32-wasip2/release")).unwrap_or_default()
}
