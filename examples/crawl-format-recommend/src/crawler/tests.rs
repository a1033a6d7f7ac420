//! The crawler against an in-process broker and the local feed server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::bundled;
use crate::feed_server::FeedServer;
use crate::test_broker::TestBroker;

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/feed.xml")
}

/// Every record of `topic`: (partition, key, article), in offset order per partition.
async fn published(client: &Client, topic: &str) -> Vec<(u32, String, Article)> {
    let mut out = Vec::new();
    read_topic(client, topic, ReadUntil::LogEnd, Duration::from_secs(10), |r| {
        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
        out.push((r.partition, key, serde_json::from_slice(&r.value).unwrap()));
    })
    .await
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_feeds_are_published_once_across_rounds_and_restarts() {
    let broker = TestBroker::start().await;
    broker.create_topic(ARTICLES_TOPIC, 3).await;
    let server = FeedServer::start(bundled::data_dir()).unwrap();
    let mut feeds = bundled::sources_at(server.base_url(), &bundled::files("feeds").unwrap());
    feeds.extend(bundled::sources_at(server.base_url(), &bundled::files("malformed").unwrap()));
    feeds.push(FeedSource::new("missing", Location::Http(server.url("feeds/missing.xml"))));
    feeds.push(FeedSource::new("down", Location::Http(closed_port_url())));
    let config = CrawlerConfig::new(feeds.clone());

    let mut crawler = Crawler::start(broker.client.clone(), config.clone()).await.unwrap();
    assert_eq!(crawler.known_articles(), 0);
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    crawler.on_progress(move |report, totals| seen.lock().unwrap().push((report.feed.clone(), *totals)));
    let report = crawler.run_once().await;
    let expected = CrawlStats {
        feeds_fetched: 12,
        feeds_failed: 3,
        entries_seen: 235,
        articles_published: 234,
        duplicates_skipped: 1,
    };
    assert_eq!(report.stats, expected);
    assert_eq!(crawler.stats(), expected);
    let feed_order: Vec<&str> = report.feeds.iter().map(|f| f.feed.as_str()).collect();
    assert_eq!(feed_order, feeds.iter().map(|f| f.id.as_str()).collect::<Vec<_>>());
    let errors: HashMap<&str, &FeedError> =
        report.feeds.iter().filter_map(|f| f.error.as_ref().map(|e| (f.feed.as_str(), e))).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(matches!(errors["broken"], FeedError::Parse(_)), "{}", errors["broken"]);
    assert!(matches!(errors["missing"], FeedError::Fetch(FetchError::Status { status: 404, .. })));
    assert!(matches!(errors["down"], FeedError::Fetch(FetchError::Unreachable { .. })), "{}", errors["down"]);
    let progress = progress.lock().unwrap().clone();
    assert_eq!(progress.len(), feeds.len());
    assert_eq!(progress.last().unwrap().1, expected);

    // Per-feed order and keys: each feed's records share one partition and
    // come in entry order.
    let records = published(&broker.client, ARTICLES_TOPIC).await;
    assert_eq!(records.len(), 234);
    for file in bundled::files("feeds").unwrap() {
        let stem = Path::new(&file).file_stem().unwrap().to_str().unwrap().to_string();
        let of_feed: Vec<_> = records.iter().filter(|(_, key, _)| *key == stem).collect();
        assert!(of_feed.iter().all(|(p, _, a)| *p == of_feed[0].0 && a.feed == stem), "{stem}");
        let url = server.url(&file);
        let mut expected =
            parse_feed(&stem, Some(&url), &std::fs::read(bundled::data_dir().join(&file)).unwrap()).unwrap();
        if stem == "tech-digest" {
            // Its cross-post of a programming entry was published with that feed.
            expected.retain(|a| a.id != "tag:programming.example.org,2024:programming-0003");
        }
        let got: Vec<Article> = of_feed.iter().map(|(_, _, a)| a.clone()).collect();
        assert_eq!(got, expected, "{stem}");
    }

    // A second round publishes nothing.
    let again = crawler.run_once().await;
    assert_eq!((again.stats.articles_published, again.stats.duplicates_skipped), (0, 235));
    crawler.close().await.unwrap();

    // Nor does a restarted crawler: it learns the ids from the topic.
    let mut restarted = Crawler::start(broker.client.clone(), config).await.unwrap();
    assert_eq!(restarted.known_articles(), 234);
    let after_restart = restarted.run_once().await;
    assert_eq!((after_restart.stats.articles_published, after_restart.stats.duplicates_skipped), (0, 235));
    restarted.close().await.unwrap();
    assert_eq!(published(&broker.client, ARTICLES_TOPIC).await.len(), 234);
    server.stop();
    broker.stop().await;
}

fn rss(items: &[(&str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(guid, title)| {
            format!("<item><guid>{guid}</guid><title>{title}</title><description>about {title}</description></item>")
        })
        .collect();
    format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>{items}</channel></rss>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_new_entries_are_published_after_a_restart() {
    let broker = TestBroker::start().await;
    broker.create_topic("news", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.xml");
    std::fs::write(&path, rss(&[("b", "Second"), ("a", "First")])).unwrap();
    let mut config = CrawlerConfig::new(vec![FeedSource::parse(&format!("file://{}", path.display())).unwrap()]);
    config.topic = "news".into();

    let mut crawler = Crawler::start(broker.client.clone(), config.clone()).await.unwrap();
    assert_eq!(crawler.run_once().await.stats.articles_published, 2);
    crawler.close().await.unwrap();

    std::fs::write(&path, rss(&[("c", "Third"), ("b", "Second"), ("a", "First")])).unwrap();
    let mut crawler = Crawler::start(broker.client.clone(), config).await.unwrap();
    let report = crawler.run_once().await;
    assert_eq!((report.stats.articles_published, report.stats.duplicates_skipped), (1, 2));
    crawler.close().await.unwrap();
    let ids: Vec<String> =
        published(&broker.client, "news").await.into_iter().map(|(_, k, a)| k + ":" + &a.id).collect();
    assert_eq!(ids, ["local:b", "local:a", "local:c"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_polling_loop_runs_rounds_until_shutdown() {
    let broker = TestBroker::start().await;
    broker.create_topic(ARTICLES_TOPIC, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loop.xml");
    std::fs::write(&path, rss(&[("x", "X")])).unwrap();
    let config = CrawlerConfig::new(vec![FeedSource::new("loop", Location::File(path))]);
    let mut crawler = Crawler::start(broker.client.clone(), config).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rounds = Arc::new(Mutex::new(0u32));
    let counter = rounds.clone();
    let mut tx = Some(tx);
    crawler.on_progress(move |_, _| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        if *n == 3 {
            let _ = tx.take().unwrap().send(());
        }
    });
    let totals = crawler
        .run(Duration::from_millis(20), async {
            let _ = rx.await;
        })
        .await;
    assert!(totals.feeds_fetched >= 3, "{totals:?}");
    assert_eq!((totals.articles_published, totals.duplicates_skipped), (1, totals.feeds_fetched - 1));
    crawler.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_or_bad_feed_list_stops_the_start() {
    let broker = TestBroker::start().await;
    let feeds = vec![FeedSource::parse("a.xml").unwrap()];
    let err = Crawler::start(broker.client.clone(), CrawlerConfig::new(feeds.clone())).await.unwrap_err();
    assert!(matches!(err, CrawlError::History(ReadError::Client { .. })), "{err}");
    let err = Crawler::start(broker.client.clone(), CrawlerConfig::new(vec![])).await.unwrap_err();
    assert!(matches!(err, CrawlError::NoFeeds));
    let twice = vec![feeds[0].clone(), FeedSource::parse("dir/a.rss").unwrap()];
    let err = Crawler::start(broker.client.clone(), CrawlerConfig::new(twice)).await.unwrap_err();
    assert!(matches!(err, CrawlError::DuplicateFeedId(id) if id == "a"));
    broker.stop().await;
}

/// Type-checked only: a crawler and its rounds can move to a spawned task.
#[allow(dead_code)]
fn crawler_futures_are_send(client: Client, mut crawler: Crawler) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&Crawler::start(client, CrawlerConfig::new(vec![])));
    is_send(&crawler.run_once());
    is_send(&crawler.run(Duration::ZERO, async {}));
}
