//! Where a feed comes from ([`Location`]: an HTTP(S) URL or a local file) and
//! the short stable id that keys its records ([`FeedSource`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest feed id accepted.
pub const MAX_FEED_ID_BYTES: usize = 128;

/// File stems too generic to identify a feed on their own (`/feed.xml`).
const GENERIC_STEMS: &[&str] = &["feed", "feeds", "rss", "rss2", "atom", "index", "rdf", "all"];

/// Why a feed specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A URL with a scheme other than `http`, `https` or `file`.
    #[error("unsupported URL scheme in {0:?}: use http://, https://, file:// or a path")]
    UnsupportedScheme(String),
    /// An empty specification or one without a usable id.
    #[error("invalid feed {spec:?}: {reason}")]
    Invalid {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where the bytes of a feed are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An `http://` or `https://` URL.
    Http(String),
    /// A local file (given as a path or a `file://` URL).
    File(PathBuf),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Http(url) => f.write_str(url),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A feed to crawl: its id (the record key of its articles) and location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSource {
    /// Short stable id: records of this feed are keyed by it.
    pub id: String,
    /// Where to read it.
    pub location: Location,
}

impl FeedSource {
    /// Parses `[ID=]URL-OR-PATH`. Without `ID=` the id is derived from the
    /// location: the last path segment without its extension
    /// (`.../space.atom` -> `space`), or, when that is generic (`feed.xml`,
    /// `rss`, ...), the host name (URLs) or parent directory (files).
    pub fn parse(spec: &str) -> Result<FeedSource, SourceError> {
        let spec = spec.trim();
        let invalid = |reason: &str| SourceError::Invalid { spec: spec.to_string(), reason: reason.to_string() };
        if spec.is_empty() {
            return Err(invalid("empty"));
        }
        let (explicit_id, rest) = match spec.split_once('=') {
            Some((id, rest)) if is_valid_id(id) => (Some(id.to_string()), rest),
            _ => (None, spec),
        };
        let location = parse_location(rest)?;
        let id = match explicit_id {
            Some(id) => id,
            None => derive_id(&location).ok_or_else(|| invalid("cannot derive an id; write it as ID=URL"))?,
        };
        Ok(FeedSource { id, location })
    }

    /// A source with an explicit id.
    pub fn new(id: impl Into<String>, location: Location) -> FeedSource {
        FeedSource { id: id.into(), location }
    }
}

/// Ids are what record keys and log lines show: keep them short and plain.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_FEED_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_location(spec: &str) -> Result<Location, SourceError> {
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(Location::Http(spec.to_string()))
    } else if lower.starts_with("file://") {
        Ok(Location::File(PathBuf::from(&spec["file://".len()..])))
    } else if spec.contains("://") {
        Err(SourceError::UnsupportedScheme(spec.to_string()))
    } else {
        Ok(Location::File(PathBuf::from(spec)))
    }
}

fn derive_id(location: &Location) -> Option<String> {
    let (stem, fallback) = match location {
        Location::Http(url) => {
            let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
            let (authority, path) = after_scheme.split_once('/').unwrap_or((after_scheme, ""));
            let path = path.split(['?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = host.split(':').next().unwrap_or(host).trim_start_matches("www.");
            let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            (file_stem(last), host.to_string())
        }
        Location::File(path) => {
            let stem = path.file_name().and_then(|n| n.to_str()).map(file_stem).unwrap_or_default();
            let parent =
                path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default().to_string();
            (stem, parent)
        }
    };
    let sanitize = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' }).collect()
    };
    let id = if stem.is_empty() || GENERIC_STEMS.contains(&stem.to_ascii_lowercase().as_str()) {
        sanitize(&fallback)
    } else {
        sanitize(&stem)
    };
    let id: String = id.chars().take(MAX_FEED_ID_BYTES).collect();
    is_valid_id(&id).then_some(id)
}

/// A file name without its last extension (`space.atom` -> `space`).
fn file_stem(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(spec: &str) -> String {
        FeedSource::parse(spec).unwrap().id
    }

    #[test]
    fn ids_come_from_the_file_stem() {
        assert_eq!(id_of("http://127.0.0.1:4000/feeds/space.atom"), "space");
        assert_eq!(id_of("https://example.org/blog/rust-news.rss?x=1"), "rust-news");
        assert_eq!(id_of("data/feeds/cooking.rdf"), "cooking");
        assert_eq!(id_of("file:///tmp/feeds/music.xml"), "music");
    }

    #[test]
    fn generic_names_fall_back_to_host_or_directory() {
        assert_eq!(id_of("https://www.blog.example.com/feed.xml"), "blog.example.com");
        assert_eq!(id_of("https://example.com/"), "example.com");
        assert_eq!(id_of("https://user@example.com:8443/rss"), "example.com");
        assert_eq!(id_of("/srv/news/feed.xml"), "news");
    }

    #[test]
    fn explicit_ids_and_locations() {
        let s = FeedSource::parse("rust=https://blog.rust-lang.org/feed.xml").unwrap();
        assert_eq!(s, FeedSource::new("rust", Location::Http("https://blog.rust-lang.org/feed.xml".into())));
        // An '=' inside a URL is not an id separator.
        let s = FeedSource::parse("https://x.org/q?format=rss").unwrap();
        assert_eq!(s.location, Location::Http("https://x.org/q?format=rss".into()));
        assert_eq!(FeedSource::parse("a.xml").unwrap().location, Location::File("a.xml".into()));
        assert!(matches!(FeedSource::parse("ftp://x/y.xml"), Err(SourceError::UnsupportedScheme(_))));
        assert!(matches!(FeedSource::parse("  "), Err(SourceError::Invalid { .. })));
    }
}
