//! eddy-pipeline: the native side of the crawl -> format -> recommend example.
//!
//! A crawler pulls articles from RSS/Atom feeds into topic `articles`; the
//! Wasm processor `format` (in `processors/`) cleans them into `formatted`;
//! the stateful Wasm processor `recommend` matches them with the profiles of
//! topic `users` and writes `recommendations`; the digest shows the result.
//!
//! * [`records`]: the JSON record formats every stage shares, and topic names.
//! * [`crawler`]: fetch (HTTP(S) or file), parse (RSS 2.0, RSS 1.0, Atom),
//!   de-duplicate and publish feed entries; the `crawler` binary wraps it.
//! * [`feed_server`]: a tiny local HTTP server for the bundled feeds.
//! * [`users`]: load user profiles and publish them to every partition of `users`.
//! * [`digest`]: read `recommendations` and render a per-user digest.
//! * [`topic_reader`]: read a topic from the beginning to its end (used by
//!   the crawler and the digest).
//! * [`bundled`]: paths of the bundled feeds and profiles in `data/`.
//! * [`pipeline`]: the topics, deploying both processors, and waiting for a
//!   processor to catch up.
//!
//! ```no_run
//! use eddy_pipeline::{bundled, load_profiles, publish_profiles, read_digest, Crawler, CrawlerConfig, FeedServer};
//! use eddy_pipeline::{ReadUntil, RECOMMENDATIONS_TOPIC, USERS_TOPIC};
//! use eddy_sdk::{Client, ClientConfig};
//! # async fn demo() -> anyhow::Result<()> {
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9400").ca_file("ca.pem")).await?;
//! let profiles = load_profiles(&bundled::users_file())?;
//! publish_profiles(&client, USERS_TOPIC, &profiles).await?;
//!
//! let server = FeedServer::start(bundled::data_dir())?;
//! let feeds = bundled::sources_at(server.base_url(), &bundled::files("feeds")?);
//! let mut crawler = Crawler::start(client.clone(), CrawlerConfig::new(feeds)).await?;
//! crawler.on_progress(|feed, totals| println!("{}: {} published so far", feed.feed, totals.articles_published));
//! let report = crawler.run_once().await;
//! println!("{} articles published", report.stats.articles_published);
//! crawler.close().await?;
//!
//! // ... once the processors have caught up:
//! let idle = std::time::Duration::from_secs(10);
//! let digest = read_digest(&client, RECOMMENDATIONS_TOPIC, ReadUntil::LogEnd, idle).await?;
//! print!("{}", digest.render(&profiles, Some(5)));
//! # Ok(())
//! # }
//! ```

pub mod bundled;
pub mod crawler;
pub mod digest;
pub mod feed_server;
pub mod pipeline;
pub mod records;
pub mod topic_reader;
pub mod users;

#[cfg(test)]
mod test_broker;

pub use crawler::{CrawlReport, CrawlStats, Crawler, CrawlerConfig, FeedReport, FeedSource};
pub use digest::{read_digest, Digest};
pub use feed_server::FeedServer;
pub use records::{Article, Recommendation, UserProfile, ARTICLES_TOPIC, RECOMMENDATIONS_TOPIC, USERS_TOPIC};
pub use topic_reader::ReadUntil;
pub use users::{load_profiles, publish_profiles};
