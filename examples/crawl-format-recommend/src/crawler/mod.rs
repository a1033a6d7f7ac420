//! The crawler: reads RSS/Atom feeds and publishes their new entries to topic
//! `articles`, keyed by feed id so that each feed's entries keep their order.
//!
//! * [`source`]: what a feed is ([`FeedSource`]: id and [`Location`]).
//! * [`fetch`]: reading its bytes over HTTP(S) or from a file ([`Fetcher`]).
//! * [`parse`]: turning them into [`Article`]s ([`parse_feed`], via `feed-rs`).
//! * this module: [`Crawler`], which remembers every article id it published
//!   (also across restarts: it starts by reading the topic from the beginning
//!   to its current end), publishes only new ones with `acks=all` and waits
//!   for the acknowledgements, and reports per feed.
//!
//! A feed that cannot be fetched or parsed is reported ([`FeedReport::error`],
//! a `warn` event) and skipped; the others go on. Publishing is at least
//! once: an article whose acknowledgement fails is not remembered and is
//! published again by the next round, even if the broker had stored it.

pub mod fetch;
pub mod parse;
pub mod source;

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use eddy_sdk::{Acks, Client, ClientError, Producer, ProducerConfig, ProducerRecord};
use futures::StreamExt;
use tracing::{debug, info, info_span, warn, Instrument};

pub use fetch::{FetchError, Fetcher};
pub use parse::{parse_feed, ParseError};
pub use source::{FeedSource, Location, SourceError};

use crate::records::{Article, ARTICLES_TOPIC};
use crate::topic_reader::{read_topic, ReadError, ReadUntil, DEFAULT_IDLE_TIMEOUT};

/// Default time limit of one HTTP fetch, connect to last byte.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest feed document accepted (each fetch holds at most this much).
pub const DEFAULT_MAX_FEED_BYTES: u64 = 16 * 1024 * 1024;
/// Default number of feeds fetched at the same time; memory is bounded by
/// this times `max_feed_bytes` (plus the parsed entries).
pub const DEFAULT_CONCURRENT_FETCHES: usize = 4;

/// What to crawl and how.
#[derive(Debug, Clone)]
pub struct CrawlerConfig {
    /// Topic to publish to (and to read the already published ids from).
    pub topic: String,
    /// The feeds, crawled in this order each round; ids must be distinct.
    pub feeds: Vec<FeedSource>,
    /// Time limit of one HTTP fetch.
    pub fetch_timeout: Duration,
    /// Largest feed document accepted.
    pub max_feed_bytes: u64,
    /// Feeds fetched at the same time (at least 1).
    pub concurrent_fetches: usize,
}

impl CrawlerConfig {
    /// Crawls `feeds` into topic `articles` with the default limits.
    pub fn new(feeds: Vec<FeedSource>) -> Self {
        Self {
            topic: ARTICLES_TOPIC.to_string(),
            feeds,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_feed_bytes: DEFAULT_MAX_FEED_BYTES,
            concurrent_fetches: DEFAULT_CONCURRENT_FETCHES,
        }
    }

    fn validate(&self) -> Result<(), CrawlError> {
        if self.feeds.is_empty() {
            return Err(CrawlError::NoFeeds);
        }
        let mut ids = HashSet::new();
        for feed in &self.feeds {
            if !ids.insert(feed.id.as_str()) {
                return Err(CrawlError::DuplicateFeedId(feed.id.clone()));
            }
        }
        Ok(())
    }
}

/// Why a crawler could not start.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    /// The configuration lists no feed.
    #[error("no feeds to crawl")]
    NoFeeds,
    /// Two feeds have the same id, so their records would share a key.
    #[error("two feeds have the id {0:?}; give them distinct ids with ID=URL")]
    DuplicateFeedId(String),
    /// The articles already in the topic could not be read.
    #[error("reading the articles already published: {0}")]
    History(#[from] ReadError),
    /// The producer could not be started.
    #[error("starting the producer: {0}")]
    Producer(#[source] ClientError),
}

/// Why one feed was skipped (wholly or in part) in a round.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Its bytes could not be read.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It is not a well-formed RSS/Atom document.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Some of its new articles were not acknowledged (they are retried next round).
    #[error("{failed} of {new} new articles not published: {source}")]
    Publish {
        /// Articles that failed.
        failed: u64,
        /// New articles of the feed in this round.
        new: u64,
        /// The first failure.
        source: ClientError,
    },
    /// The fetch task panicked.
    #[error("fetch task failed: {0}")]
    Task(String),
}

/// What happened to one feed in one round.
#[derive(Debug)]
pub struct FeedReport {
    /// The feed id.
    pub feed: String,
    /// Its URL or path.
    pub location: String,
    /// Entries in the document.
    pub entries: u64,
    /// New articles published and acknowledged.
    pub published: u64,
    /// Entries skipped because their id was already published.
    pub duplicates: u64,
    /// Why the feed was skipped or only partly published; `None` if it went well.
    pub error: Option<FeedError>,
}

/// Counters over one round or the crawler's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlStats {
    /// Feeds read and parsed.
    pub feeds_fetched: u64,
    /// Feeds with an error: not fetched, not parsed, or not all published.
    pub feeds_failed: u64,
    /// Entries found in the parsed feeds.
    pub entries_seen: u64,
    /// Articles published and acknowledged.
    pub articles_published: u64,
    /// Entries skipped as already published.
    pub duplicates_skipped: u64,
}

impl CrawlStats {
    fn add(&mut self, report: &FeedReport) {
        let parsed = !matches!(report.error, Some(FeedError::Fetch(_) | FeedError::Parse(_) | FeedError::Task(_)));
        self.feeds_fetched += u64::from(parsed);
        self.feeds_failed += u64::from(report.error.is_some());
        self.entries_seen += report.entries;
        self.articles_published += report.published;
        self.duplicates_skipped += report.duplicates;
    }
}

/// The outcome of one round over every feed.
#[derive(Debug)]
pub struct CrawlReport {
    /// One report per feed, in the configured order.
    pub feeds: Vec<FeedReport>,
    /// This round's counters.
    pub stats: CrawlStats,
    /// How long the round took.
    pub elapsed: Duration,
}

/// Called after each feed of a round with its report and the crawler's
/// lifetime counters (for progress displays).
pub type ProgressFn = Box<dyn FnMut(&FeedReport, &CrawlStats) + Send>;

/// Publishes the new entries of a set of feeds; see the module docs.
pub struct Crawler {
    config: CrawlerConfig,
    fetcher: Fetcher,
    producer: Producer,
    /// Ids of every article published (or being published in this round).
    published: HashSet<String>,
    totals: CrawlStats,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Crawler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crawler")
            .field("config", &self.config)
            .field("known_articles", &self.published.len())
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Crawler {
    /// Checks the configuration, reads the ids of the articles already in the
    /// topic (from the beginning to the current log ends; values that are not
    /// [`Article`] JSON are skipped with a warning) and starts an `acks=all`
    /// producer. The topic must exist.
    pub async fn start(client: Client, config: CrawlerConfig) -> Result<Crawler, CrawlError> {
        config.validate()?;
        let started = Instant::now();
        let mut published = HashSet::new();
        let mut unreadable = 0u64;
        let topic = config.topic.clone();
        read_topic(&client, &topic, ReadUntil::LogEnd, DEFAULT_IDLE_TIMEOUT, |record| {
            match serde_json::from_slice::<PublishedId>(&record.value) {
                Ok(PublishedId { id }) => {
                    published.insert(id);
                }
                Err(e) => {
                    unreadable += 1;
                    debug!(partition = record.partition, offset = record.offset, error = %e, "not an article");
                }
            }
        })
        .await?;
        if unreadable > 0 {
            warn!(topic = %topic, unreadable, "records of the topic are not article JSON; ignored");
        }
        info!(topic = %topic, known = published.len(), elapsed_ms = started.elapsed().as_millis() as u64,
            "read the articles already published");
        let producer_config = ProducerConfig { acks: Acks::All, ..ProducerConfig::default() };
        let producer = Producer::new(client, producer_config).await.map_err(CrawlError::Producer)?;
        let fetcher = Fetcher::new(config.fetch_timeout, config.max_feed_bytes);
        Ok(Crawler { config, fetcher, producer, published, totals: CrawlStats::default(), progress: None })
    }

    /// Calls `progress` after each feed of every round.
    pub fn on_progress(&mut self, progress: impl FnMut(&FeedReport, &CrawlStats) + Send + 'static) {
        self.progress = Some(Box::new(progress));
    }

    /// Number of distinct article ids known to be published.
    pub fn known_articles(&self) -> usize {
        self.published.len()
    }

    /// Counters over every round so far.
    pub fn stats(&self) -> CrawlStats {
        self.totals
    }

    /// One round: fetches every feed (a few at a time), and publishes each
    /// feed's new articles in entry order, waiting for their acknowledgements
    /// before going to the next feed. Failures are in the report; a round
    /// itself never fails.
    pub async fn run_once(&mut self) -> CrawlReport {
        let started = Instant::now();
        let feeds = self.config.feeds.clone();
        let fetcher = self.fetcher.clone();
        let span = info_span!("crawl", topic = %self.config.topic, feeds = feeds.len());
        async {
            let mut fetched = futures::stream::iter(feeds.into_iter().map(|feed| {
                let fetcher = fetcher.clone();
                async move {
                    let source = feed.clone();
                    let result = tokio::task::spawn_blocking(move || fetch_and_parse(&fetcher, &source)).await;
                    let result = result.unwrap_or_else(|e| Err(FeedError::Task(e.to_string())));
                    (feed, result)
                }
            }))
            .buffered(self.config.concurrent_fetches.max(1));
            let mut reports = Vec::new();
            let mut stats = CrawlStats::default();
            while let Some((feed, result)) = fetched.next().await {
                let report = match result {
                    Ok(articles) => self.publish(&feed, articles).await,
                    Err(error) => FeedReport {
                        feed: feed.id.clone(),
                        location: feed.location.to_string(),
                        entries: 0,
                        published: 0,
                        duplicates: 0,
                        error: Some(error),
                    },
                };
                match &report.error {
                    Some(error) => warn!(feed = %report.feed, location = %report.location, %error, "feed skipped"),
                    None => info!(feed = %report.feed, entries = report.entries, published = report.published,
                        duplicates = report.duplicates, "feed crawled"),
                }
                stats.add(&report);
                self.totals.add(&report);
                if let Some(progress) = self.progress.as_mut() {
                    progress(&report, &self.totals);
                }
                reports.push(report);
            }
            CrawlReport { feeds: reports, stats, elapsed: started.elapsed() }
        }
        .instrument(span)
        .await
    }

    /// Runs a round every `interval` (measured from the start of each round)
    /// until `shutdown` resolves, which also interrupts a round in progress
    /// (its unacknowledged articles are published again after a restart).
    /// Returns the lifetime counters.
    pub async fn run(&mut self, interval: Duration, shutdown: impl Future<Output = ()>) -> CrawlStats {
        tokio::pin!(shutdown);
        loop {
            let next = tokio::time::Instant::now() + interval;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = self.run_once() => {}
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next) => {}
            }
        }
        self.totals
    }

    /// Waits for every record sent so far and stops the producer.
    pub async fn close(self) -> Result<(), ClientError> {
        self.producer.close().await
    }

    /// Publishes the articles of `feed` not published before, in order, and
    /// waits for their acknowledgements.
    async fn publish(&mut self, feed: &FeedSource, articles: Vec<Article>) -> FeedReport {
        let mut report = FeedReport {
            feed: feed.id.clone(),
            location: feed.location.to_string(),
            entries: articles.len() as u64,
            published: 0,
            duplicates: 0,
            error: None,
        };
        let mut new = 0u64;
        let mut failed = 0u64;
        let mut first_error = None;
        let mut pending = Vec::new();
        for article in articles {
            if self.published.contains(&article.id) {
                report.duplicates += 1;
                continue;
            }
            new += 1;
            let value = serde_json::to_vec(&article).expect("an Article always serializes");
            let record = ProducerRecord::new(self.config.topic.clone(), value).key(feed.id.clone());
            match self.producer.send(record).await {
                Ok(delivery) => {
                    self.published.insert(article.id.clone());
                    pending.push((article.id, delivery));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        for (id, delivery) in pending {
            match delivery.await {
                Ok(_) => report.published += 1,
                Err(e) => {
                    self.published.remove(&id);
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(source) = first_error {
            report.error = Some(FeedError::Publish { failed, new, source });
        }
        report
    }
}

/// The one field of an [`Article`] that the crawler needs back (the others,
/// content included, are skipped unparsed).
#[derive(serde::Deserialize)]
struct PublishedId {
    id: String,
}

/// Reads and parses one feed (blocking).
fn fetch_and_parse(fetcher: &Fetcher, feed: &FeedSource) -> Result<Vec<Article>, FeedError> {
    let bytes = fetcher.fetch(&feed.location)?;
    let base_url = match &feed.location {
        Location::Http(url) => Some(url.as_str()),
        Location::File(_) => None,
    };
    Ok(parse_feed(&feed.id, base_url, &bytes)?)
}

#[cfg(test)]
mod tests;
