//! Turning a feed document (RSS 2.0, RSS 1.0 or Atom, parsed by `feed-rs`)
//! into [`Article`]s in the feed's entry order. Pure: no I/O.

use feed_rs::model::{Entry, Link};
use sha2::{Digest, Sha256};

use crate::records::Article;

/// Why a feed document was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not well-formed XML, or not an RSS/Atom document.
    #[error("not a valid RSS or Atom feed: {0}")]
    Invalid(#[from] feed_rs::parser::ParseFeedError),
}

/// Parses `bytes` (undecoded; the XML prolog names the encoding) into the
/// articles of feed `feed_id`. `base_url`, the feed's own URL if it was
/// fetched over HTTP, resolves relative links.
///
/// An entry's id is its guid (RSS 2.0) or id (Atom); else its link; else
/// `sha256:` and a hash of the feed id, title, content and time, so that an
/// entry without either keeps one id across crawls.
pub fn parse_feed(feed_id: &str, base_url: Option<&str>, bytes: &[u8]) -> Result<Vec<Article>, ParseError> {
    // feed-rs makes up ids (hashes, random UUIDs) for entries without one; an
    // empty id instead lets the fallbacks above apply.
    let parser = feed_rs::parser::Builder::new().base_uri(base_url).id_generator(|_, _, _| String::new()).build();
    let feed = parser.parse(bytes)?;
    Ok(feed.entries.into_iter().map(|entry| to_article(feed_id, entry)).collect())
}

fn to_article(feed_id: &str, entry: Entry) -> Article {
    let title = entry.title.map(|t| t.content).unwrap_or_default();
    let link = pick_link(&entry.links).unwrap_or_default();
    let published = entry.published.or(entry.updated).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let content = entry
        .content
        .and_then(|c| c.body)
        .filter(|body| !body.trim().is_empty())
        .or_else(|| entry.summary.map(|s| s.content))
        .unwrap_or_default();
    let id = if !entry.id.trim().is_empty() {
        entry.id.trim().to_string()
    } else if !link.is_empty() {
        link.clone()
    } else {
        content_id(feed_id, &title, &content, published.as_deref())
    };
    Article { feed: feed_id.to_string(), id, title, link, published, content }
}

/// The entry's page: the first `alternate` (or rel-less) link, else the first link.
fn pick_link(links: &[Link]) -> Option<String> {
    links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|rel| rel == "alternate"))
        .or_else(|| links.first())
        .map(|l| l.href.trim().to_string())
}

fn content_id(feed_id: &str, title: &str, content: &str, published: Option<&str>) -> String {
    let mut hash = Sha256::new();
    for part in [feed_id, title, content, published.unwrap_or("")] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel><title>T</title><link>https://example.org/</link><description>d</description>
<item><title>Rust &amp; Go</title><link>https://example.org/a</link><guid>g-1</guid>
  <pubDate>Tue, 02 Apr 2024 10:00:00 GMT</pubDate>
  <description>&lt;p&gt;summary&lt;/p&gt;</description>
  <content:encoded><![CDATA[<p>full <b>text</b></p>]]></content:encoded></item>
<item><title>No guid</title><link>/b</link><description>only a summary</description></item>
<item><description>nothing else</description></item>
</channel></rss>"#;

    #[test]
    fn rss2_entries_keep_order_ids_content_and_dates() {
        let articles = parse_feed("t", Some("https://example.org/feed.xml"), RSS2.as_bytes()).unwrap();
        assert_eq!(articles.len(), 3);
        let a = &articles[0];
        assert_eq!((a.id.as_str(), a.title.as_str(), a.link.as_str()), ("g-1", "Rust & Go", "https://example.org/a"));
        assert_eq!(a.content, "<p>full <b>text</b></p>");
        assert_eq!(a.published.as_deref(), Some("2024-04-02T10:00:00Z"));
        // No guid: the (resolved) link is the id; no content: the summary.
        assert_eq!(articles[1].id, "https://example.org/b");
        assert_eq!(articles[1].content, "only a summary");
        // Neither: a stable hash.
        assert!(articles[2].id.starts_with("sha256:"));
        assert_eq!(articles[2].id, parse_feed("t", None, RSS2.as_bytes()).unwrap()[2].id);
        assert_eq!(articles[2].title, "");
    }

    #[test]
    fn broken_xml_and_non_feeds_are_refused() {
        assert!(parse_feed("t", None, b"<rss><channel><item></channel></rss>").is_err());
        assert!(parse_feed("t", None, b"<html><body>hi</body></html>").is_err());
        assert!(parse_feed("t", None, b"").is_err());
    }
}
