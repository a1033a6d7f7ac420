//! The bundled example data in `data/`: feed files under `data/feeds/`
//! (well-formed RSS 2.0, RSS 1.0 and Atom), broken ones under
//! `data/malformed/`, and the user profiles in `data/users.json`. The demo
//! serves `data/` with [`crate::feed_server::FeedServer`] and crawls the
//! feeds' URLs.

use std::path::{Path, PathBuf};

use crate::crawler::{FeedSource, Location};

/// The `data/` directory of this crate (an absolute path fixed at build time).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The bundled user profiles.
pub fn users_file() -> PathBuf {
    data_dir().join("users.json")
}

/// Files of `data/<subdir>` (`feeds` or `malformed`) as `/`-separated paths
/// relative to `data/` (`feeds/space.atom`), sorted by name.
pub fn files(subdir: &str) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(data_dir().join(subdir))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(format!("{subdir}/{name}"));
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Feed sources for the given `data/`-relative files served under
/// `base_url` (the feed server's), with ids from their file stems.
pub fn sources_at(base_url: &str, files: &[String]) -> Vec<FeedSource> {
    files
        .iter()
        .map(|file| {
            let url = format!("{}/{}", base_url.trim_end_matches('/'), file);
            let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or(file).to_string();
            FeedSource::new(stem, Location::Http(url))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use feed_rs::model::FeedType;

    use super::*;
    use crate::crawler::parse_feed;

    /// Every bundled feed: file, format, entries.
    const FEEDS: &[(&str, FeedType, usize)] = &[
        ("feeds/climate.atom", FeedType::Atom, 20),
        ("feeds/cooking.rdf", FeedType::RSS1, 20),
        ("feeds/finance.rdf", FeedType::RSS1, 20),
        ("feeds/football.xml", FeedType::RSS2, 22),
        ("feeds/gaming.xml", FeedType::RSS2, 22),
        ("feeds/health.atom", FeedType::Atom, 20),
        ("feeds/music.xml", FeedType::RSS2, 20),
        ("feeds/programming.xml", FeedType::RSS2, 24),
        ("feeds/space.atom", FeedType::Atom, 22),
        ("feeds/tech-digest.xml", FeedType::RSS2, 15),
        ("feeds/travel.rdf", FeedType::RSS1, 18),
        ("feeds/weekend-reads.atom", FeedType::Atom, 12),
    ];

    fn read(file: &str) -> Vec<u8> {
        std::fs::read(data_dir().join(file)).unwrap()
    }

    #[test]
    fn every_bundled_feed_parses_with_its_format_and_entry_count() {
        let names = files("feeds").unwrap();
        assert_eq!(names, FEEDS.iter().map(|f| f.0.to_string()).collect::<Vec<_>>());
        for &(file, ref format, entries) in FEEDS {
            let feed = feed_rs::parser::parse(&read(file)[..]).unwrap();
            assert_eq!(&feed.feed_type, format, "{file}");
            let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
            let articles = parse_feed(stem, None, &read(file)).unwrap();
            assert_eq!(articles.len(), entries, "{file}");
            assert!(articles.iter().all(|a| a.feed == stem && !a.id.is_empty()), "{file}");
        }
    }

    #[test]
    fn bundled_articles_are_what_the_pipeline_expects() {
        let mut all = Vec::new();
        for &(file, _, _) in FEEDS {
            let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
            all.extend(parse_feed(stem, None, &read(file)).unwrap());
        }
        let ids: HashSet<&str> = all.iter().map(|a| a.id.as_str()).collect();
        // 235 entries; one is a cross-post of another feed's entry.
        assert_eq!((all.len(), ids.len()), (235, 234));
        // Exactly one entry has neither title, text nor link (dead-lettered by `format`).
        let empty: Vec<_> =
            all.iter().filter(|a| a.title.is_empty() && a.content.is_empty() && a.link.is_empty()).collect();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].id, "tech-digest-empty-0001");
        let well_formed = ids.len() - empty.len();
        assert!(well_formed >= 200, "{well_formed}");
        // Raw HTML and entities reach the content; some titles carry markup or entities.
        assert!(all.iter().any(|a| a.content.contains("<p>")));
        assert!(all.iter().any(|a| a.content.contains("&#8217;")));
        assert!(all.iter().any(|a| a.content.contains("&amp;")));
        assert!(all.iter().any(|a| a.title.contains("<em>")));
        assert!(all.iter().any(|a| a.title.contains("&#8217;") || a.title.contains("&amp;")));
        // Dates are RFC 3339 where the feed has them, and some entries have none.
        assert!(all.iter().filter_map(|a| a.published.as_deref()).all(|p| p.len() == 20 && p.ends_with('Z')));
        assert!(all.iter().any(|a| a.published.is_none()));
    }

    #[test]
    fn the_malformed_feed_is_refused() {
        assert_eq!(files("malformed").unwrap(), ["malformed/broken.xml"]);
        assert!(parse_feed("broken", None, &read("malformed/broken.xml")).is_err());
    }

    #[test]
    fn sources_point_at_the_server() {
        let sources = sources_at("http://127.0.0.1:9/", &["feeds/space.atom".to_string()]);
        assert_eq!(sources, [FeedSource::new("space", Location::Http("http://127.0.0.1:9/feeds/space.atom".into()))]);
    }
}
