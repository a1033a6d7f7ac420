//! The `format` processor of the crawl -> format -> recommend example: a raw
//! article from topic `articles` becomes one clean JSON document in topic
//! `formatted`, keyed by article id.
//!
//! In: `{"feed", "id", "title", "link", "published", "content"}` (title and
//! content raw HTML or text). Out: `{"id", "feed", "title", "link",
//! "published", "summary", "keywords"}`: the title as plain text, the first
//! [`SUMMARY_CHARS`] characters of the text cut at a word boundary (see
//! [`text`]), and up to 20 keywords (see [`keywords`]).
//!
//! A record that is not an article (not JSON, wrong types, no id) or an
//! article with neither a title nor any text fails: the worker sends it to the
//! dead-letter topic (`formatted.dlq`), and a warning in the processor's log
//! says why.

pub mod keywords;
pub mod text;

use eddy_processor::{Error, Output, Record};
use serde::{Deserialize, Serialize};

/// The summary's length limit, in characters ('…' not included).
pub const SUMMARY_CHARS: usize = 280;

/// A record of topic `articles`. Only `id` is required; absent or null
/// strings are empty.
#[derive(Debug, Deserialize)]
struct Article {
    id: String,
    #[serde(default)]
    feed: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    published: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// A record of topic `formatted`.
#[derive(Debug, Serialize)]
struct Formatted<'a> {
    id: &'a str,
    feed: &'a str,
    title: String,
    link: &'a str,
    published: Option<&'a str>,
    summary: String,
    keywords: Vec<String>,
}

/// A formatted article: its id (the output key) and its JSON.
#[derive(Debug)]
pub struct FormattedArticle {
    pub id: String,
    pub json: Vec<u8>,
}

/// Formats one `articles` record value; `Err` says why it cannot be.
pub fn format_article(value: &[u8]) -> Result<FormattedArticle, String> {
    let article: Article = serde_json::from_slice(value).map_err(|e| format!("not a valid article: {e}"))?;
    let id = article.id.trim();
    if id.is_empty() {
        return Err("not a valid article: its id is empty".to_string());
    }
    let title = text::html_to_text(article.title.as_deref().unwrap_or_default());
    let body = text::html_to_text(article.content.as_deref().unwrap_or_default());
    if title.is_empty() && body.is_empty() {
        return Err(format!("article {id:?} has neither a title nor any text"));
    }
    let keywords = keywords::keywords(&title, &body);
    let formatted = Formatted {
        id,
        feed: article.feed.as_deref().unwrap_or_default(),
        link: article.link.as_deref().map(str::trim).unwrap_or_default(),
        published: article.published.as_deref(),
        summary: text::summary(&body, SUMMARY_CHARS),
        title,
        keywords,
    };
    let json = serde_json::to_vec(&formatted).map_err(|e| format!("cannot encode article {id:?}: {e}"))?;
    Ok(FormattedArticle { id: id.to_string(), json })
}

#[eddy_processor::map]
fn format(record: &Record) -> Result<Output, Error> {
    match format_article(record.value) {
        Ok(article) => Ok(Output::new(article.json).key(article.id)),
        Err(reason) => {
            eddy_processor::warn!("{}/{}@{}: {reason}", record.topic, record.partition, record.offset);
            Err(Error::msg(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn format_json(article: Value) -> Result<Value, String> {
        let out = format_article(article.to_string().as_bytes())?;
        let value: Value = serde_json::from_slice(&out.json).unwrap();
        assert_eq!(value["id"], out.id);
        Ok(value)
    }

    #[test]
    fn an_article_becomes_clean_json_keyed_by_id() {
        let out = format_json(json!({
            "feed": "space", "id": " urn:x:1 ", "title": "Mars &amp; <em>moons</em>",
            "link": "https://example.org/a", "published": "2024-04-02T10:00:00Z",
            "content": "<p>Phobos and Deimos orbit <b>Mars</b>.</p><script>track()</script><p>Moons!</p>"
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "id": "urn:x:1", "feed": "space", "title": "Mars & moons", "link": "https://example.org/a",
                "published": "2024-04-02T10:00:00Z", "summary": "Phobos and Deimos orbit Mars. Moons!",
                "keywords": ["mars", "moons", "deimos", "orbit", "phobos"]
            })
        );
    }

    #[test]
    fn optional_fields_may_be_missing_or_null() {
        let out = format_json(json!({"id": "a", "title": null, "content": "Only text here"})).unwrap();
        assert_eq!(out["title"], "");
        assert_eq!(out["feed"], "");
        assert_eq!(out["link"], "");
        assert_eq!(out["published"], Value::Null);
        assert_eq!(out["summary"], "Only text here");
        assert_eq!(out["keywords"], json!(["text"]));
        let out = format_json(json!({"id": "b", "title": "Title only"})).unwrap();
        assert_eq!((out["title"].as_str(), out["summary"].as_str()), (Some("Title only"), Some("")));
    }

    #[test]
    fn records_that_are_not_articles_fail_with_a_reason() {
        let err = |v: &[u8]| format_article(v).unwrap_err();
        assert!(err(b"not json").starts_with("not a valid article"));
        assert!(err(b"").starts_with("not a valid article"));
        assert!(err(br#"{"title": "no id"}"#).contains("missing field `id`"));
        assert!(err(br#"{"id": 7, "title": "x"}"#).starts_with("not a valid article"));
        assert!(err(br#"{"id": "  ", "title": "x"}"#).contains("id is empty"));
        assert!(err(br#"{"id": "e", "title": " <br> ", "content": "<script>x</script>&#32;"}"#)
            .contains("neither a title nor any text"));
    }

    #[test]
    fn a_huge_article_is_fine() {
        let paragraph = "<p>Stream processing with <b>Wasm</b> &amp; Rust keeps latency low.</p>\n";
        let content = paragraph.repeat(40_000); // about 3 MB
        let out = format_json(json!({"id": "big", "title": "Big", "content": content})).unwrap();
        let summary = out["summary"].as_str().unwrap();
        assert!(summary.ends_with('…') && summary.chars().count() <= SUMMARY_CHARS + 1);
        // 40,000 occurrences each beat the title's 3.
        assert_eq!(out["keywords"], json!(["keeps", "latency", "low", "processing", "rust", "stream", "wasm", "big"]));
    }
}
