//! An independent plain-Rust reference of what the crawl -> format ->
//! recommend pipeline computes on the bundled data
//! (examples/crawl-format-recommend/data/): which articles reach `formatted`
//! with which title, summary and keywords, and which recommendations the
//! bundled user profiles get.
//!
//! It shares no code with the processors (examples/crawl-format-recommend/
//! processors/): it restates their rules from the record contract with its own
//! HTML scanner, entity table, tokenizer and scoring loop, so that a mistake
//! in either shows up as a difference. What it computes for the bundled data
//! is checked in as data/expected-recommendations.json, which the pipeline's
//! end-to-end test compares with what the real processors produced.
//! `EDDY_BLESS=1 cargo test -p eddy-tests --test e2e expected_recommendations`
//! rewrites that file.
//!
//! The rules, as this file restates them:
//! * Articles: every entry of every feed in data/feeds/ (file names sorted),
//!   parsed by feed-rs as the crawler does: id = the entry's id, else its
//!   link; title; link = the first `alternate` (or rel-less) link, else the
//!   first link; content = the content body if not blank, else the summary,
//!   else empty. An id seen before is skipped (the crawler publishes it once);
//!   all copies of an id must format alike.
//! * Format: HTML to text (tags of non-inline elements separate words; the
//!   contents of script, style, noscript, iframe and template are dropped;
//!   character references decoded; whitespace collapsed). An article whose
//!   title and text are both empty is dead-lettered. Keywords: runs of
//!   alphanumeric characters, lowercased; at least 3 characters, not all
//!   numeric, not a stop word; counted 3 per title occurrence and 1 per text
//!   occurrence; the 20 most frequent, ties alphabetical.
//! * Recommend: a user's score for an article is the sum of the user's
//!   weights (keys trimmed and lowercased) of the article's keywords, rounded
//!   to 3 decimals; users with at least one matching keyword and a score of at
//!   least [`THRESHOLD`] are recommended the article, the [`MAX_PER_ARTICLE`]
//!   best (ties by user id), with the matching keywords, sorted, as reasons.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

/// The recommend processor's default `threshold` parameter.
pub const THRESHOLD: f64 = 2.0;
/// The recommend processor's default `max_per_article` parameter.
pub const MAX_PER_ARTICLE: usize = 5;
/// The summary's length limit, in characters.
const SUMMARY_CHARS: usize = 280;
/// The most keywords an article gets.
const MAX_KEYWORDS: usize = 20;

/// The example's bundled data directory.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/crawl-format-recommend/data")
}

/// The checked-in expected recommendations for the bundled data.
pub fn expected_file(data_dir: &Path) -> PathBuf {
    data_dir.join("expected-recommendations.json")
}

/// An article as the crawler publishes it to `articles`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawArticle {
    pub feed: String,
    pub id: String,
    pub title: String,
    pub link: String,
    pub published: Option<String>,
    pub content: String,
}

impl RawArticle {
    /// The `articles` record value.
    pub fn to_json(&self) -> Value {
        json!({"feed": self.feed, "id": self.id, "title": self.title, "link": self.link,
            "published": self.published, "content": self.content})
    }
}

/// What format makes of an article.
#[derive(Debug, Clone, PartialEq)]
pub struct FormattedArticle {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub keywords: Vec<String>,
}

/// One recommendation, without the article's link and title.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub user: String,
    pub article: String,
    /// Rounded to 3 decimals.
    pub score: f64,
    /// Sorted.
    pub reasons: Vec<String>,
}

impl Expected {
    /// Reads a `recommendations` record value (or an entry of the expected
    /// file): link and title are ignored.
    pub fn from_json(value: &Value) -> anyhow::Result<Expected> {
        let text = |field: &str| {
            value[field].as_str().map(str::to_string).with_context(|| format!("no string `{field}` in {value}"))
        };
        let reasons = value["reasons"].as_array().with_context(|| format!("no `reasons` in {value}"))?;
        Ok(Expected {
            user: text("user")?,
            article: text("article")?,
            score: value["score"].as_f64().with_context(|| format!("no number `score` in {value}"))?,
            reasons: reasons
                .iter()
                .map(|r| r.as_str().map(str::to_string).context("a reason is not a string"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn to_json(&self) -> Value {
        json!({"user": self.user, "article": self.article, "score": self.score, "reasons": self.reasons})
    }
}

/// The bundled articles in crawl order (feed files sorted by name, entries in
/// feed order), each id once.
pub fn raw_articles(data_dir: &Path) -> Vec<RawArticle> {
    let feeds = data_dir.join("feeds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&feeds)
        .unwrap_or_else(|e| panic!("reading {}: {e}", feeds.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut articles: Vec<RawArticle> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for file in files {
        let feed_id = file.file_stem().and_then(|s| s.to_str()).expect("UTF-8 file name").to_string();
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        // No made-up ids for entries without one: the link stands in, as in the crawler.
        let parser = feed_rs::parser::Builder::new().id_generator(|_, _, _| String::new()).build();
        let feed = parser.parse(&bytes[..]).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
        for entry in feed.entries {
            let link = entry
                .links
                .iter()
                .find(|l| l.rel.as_deref().is_none_or(|rel| rel == "alternate"))
                .or(entry.links.first())
                .map(|l| l.href.trim().to_string())
                .unwrap_or_default();
            let id = if entry.id.trim().is_empty() { link.clone() } else { entry.id.trim().to_string() };
            assert!(!id.is_empty(), "{}: an entry has neither an id nor a link", file.display());
            let body = entry.content.and_then(|c| c.body).filter(|b| !b.trim().is_empty());
            let article = RawArticle {
                feed: feed_id.clone(),
                id,
                title: entry.title.map(|t| t.content).unwrap_or_default(),
                link,
                published: entry.published.or(entry.updated).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                content: body.or(entry.summary.map(|s| s.content)).unwrap_or_default(),
            };
            match by_id.get(&article.id) {
                // The crawler publishes the copy of the first feed in its list
                // (the demo lists them sorted); the expected results must not
                // depend on that.
                Some(&first) => assert_eq!(
                    format(&articles[first]),
                    format(&article),
                    "{}: id {} is also in feed {}, and formats differently there",
                    file.display(),
                    article.id,
                    articles[first].feed
                ),
                None => {
                    by_id.insert(article.id.clone(), articles.len());
                    articles.push(article);
                }
            }
        }
    }
    articles
}

/// What format makes of an article; `None` if it dead-letters it (no title
/// and no text).
pub fn format(article: &RawArticle) -> Option<FormattedArticle> {
    let title = html_text(&article.title);
    let text = html_text(&article.content);
    if title.is_empty() && text.is_empty() {
        return None;
    }
    Some(FormattedArticle { id: article.id.clone(), summary: summary(&text), keywords: keywords(&title, &text), title })
}

/// The bundled articles that reach `formatted`, as format writes them.
pub fn formatted_articles(data_dir: &Path) -> Vec<FormattedArticle> {
    raw_articles(data_dir).iter().filter_map(format).collect()
}

/// The bundled user profiles (data/users.json), the last one of each user
/// winning: user id -> keyword -> weight.
pub fn profiles(data_dir: &Path) -> BTreeMap<String, BTreeMap<String, f64>> {
    let path = data_dir.join("users.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let list: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let mut profiles = BTreeMap::new();
    for profile in list {
        let user = profile["user"].as_str().expect("a profile has a string `user`").trim().to_string();
        // Keys in sorted order, then normalized: equal keys add up in that order.
        let raw: BTreeMap<String, f64> = profile["interests"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_f64().expect("numeric weights"))).collect())
            .unwrap_or_default();
        let mut interests = BTreeMap::new();
        for (keyword, weight) in raw {
            let keyword = keyword.trim().to_lowercase();
            if !keyword.is_empty() {
                *interests.entry(keyword).or_insert(0.0) += weight;
            }
        }
        profiles.insert(user, interests);
    }
    profiles
}

/// The recommendations the pipeline must produce for the bundled data with
/// the default parameters, sorted by user, then article.
pub fn expected_recommendations(data_dir: &Path) -> Vec<Expected> {
    let profiles = profiles(data_dir);
    let mut all = Vec::new();
    for article in formatted_articles(data_dir) {
        let mut distinct: Vec<&str> = Vec::new();
        for k in &article.keywords {
            if !distinct.contains(&k.as_str()) {
                distinct.push(k);
            }
        }
        let mut candidates: Vec<Expected> = Vec::new();
        for (user, interests) in &profiles {
            let mut sum = 0.0;
            let mut reasons = Vec::new();
            for keyword in &distinct {
                if let Some(weight) = interests.get(*keyword) {
                    sum += weight;
                    reasons.push(keyword.to_string());
                }
            }
            // Rounded to 3 decimals, -0 made 0.
            let score = (sum * 1000.0).round() / 1000.0 + 0.0;
            if !reasons.is_empty() && score >= THRESHOLD {
                reasons.sort();
                candidates.push(Expected { user: user.clone(), article: article.id.clone(), score, reasons });
            }
        }
        candidates.sort_by(|a, b| b.score.partial_cmp(&a.score).expect("finite").then(a.user.cmp(&b.user)));
        candidates.truncate(MAX_PER_ARTICLE);
        all.extend(candidates);
    }
    all.sort_by(|a, b| (&a.user, &a.article).cmp(&(&b.user, &b.article)));
    all
}

/// The recommendations in the file format of data/expected-recommendations.json:
/// a JSON list, one recommendation per line.
pub fn to_file_text(recommendations: &[Expected]) -> String {
    let lines: Vec<String> = recommendations
        .iter()
        .map(|e| {
            format!(
                "  {{\"user\": {}, \"article\": {}, \"score\": {}, \"reasons\": {}}}",
                json!(e.user),
                json!(e.article),
                json!(e.score),
                json!(e.reasons)
            )
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

/// Reads data/expected-recommendations.json.
pub fn read_expected_file(path: &Path) -> anyhow::Result<Vec<Expected>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let list: Vec<Value> = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    list.iter().map(Expected::from_json).collect()
}

// ---- HTML to text -------------------------------------------------------

/// Inline elements: their tags do not separate words.
const INLINE: &[&str] = &[
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em", "font", "i", "ins", "kbd",
    "mark", "nobr", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var",
    "wbr",
];

/// Elements whose contents are dropped; the first four hold raw text.
const DROPPED_RAW: &[&str] = &["script", "style", "noscript", "iframe"];
/// Elements whose contents are raw text that is kept as it is.
const KEPT_RAW: &[&str] = &["xmp", "noembed", "noframe"];
/// Elements whose contents are text with character references but no tags.
const RCDATA: &[&str] = &["title", "textarea"];

/// The text of an HTML fragment, whitespace collapsed.
pub fn html_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len());
    let mut template_depth = 0usize;
    let mut i = 0;
    let mut text_start = 0;
    // Copies html[text_start..end] (plain text, no markup) to the output.
    macro_rules! flush {
        ($end:expr) => {
            if template_depth == 0 {
                out.push_str(&html[text_start..$end]);
            }
        };
    }
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                flush!(i);
                i = markup(html, i, &mut out, &mut template_depth);
                text_start = i;
            }
            b'&' => {
                flush!(i);
                let (decoded, len) = char_ref(&html[i..]);
                if template_depth == 0 {
                    out.push_str(&decoded);
                }
                i += len;
                text_start = i;
            }
            _ => i += 1,
        }
    }
    flush!(bytes.len());
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Handles the markup (or lone '<') at `html[at]`, writing what it means to
/// `out`; returns where the text after it starts.
fn markup(html: &str, at: usize, out: &mut String, template_depth: &mut usize) -> usize {
    let rest = &html[at..];
    let b = rest.as_bytes();
    let end_tag = b.get(1) == Some(&b'/');
    let name_at = if end_tag { 2 } else { 1 };
    if b.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
        let Some((name, len)) = tag(&rest[name_at..]) else { return html.len() }; // unclosed tag: dropped
        let after = at + name_at + len;
        if !INLINE.contains(&name.as_str()) {
            out.push(' ');
        }
        if name == "template" {
            *template_depth = if end_tag { template_depth.saturating_sub(1) } else { *template_depth + 1 };
        }
        if name == "plaintext" && !end_tag {
            // Everything after it is text.
            if *template_depth == 0 {
                out.push_str(&html[after..]);
            }
            return html.len();
        }
        let raw = DROPPED_RAW.contains(&name.as_str()) || KEPT_RAW.contains(&name.as_str());
        if end_tag || !(raw || RCDATA.contains(&name.as_str())) {
            return after;
        }
        // Raw text up to the matching end tag (not included), or to the end.
        let content_end = find_end_tag(&html[after..], &name).map_or(html.len(), |n| after + n);
        let content = &html[after..content_end];
        if *template_depth == 0 {
            if RCDATA.contains(&name.as_str()) {
                out.push_str(&html_text_without_tags(content));
            } else if KEPT_RAW.contains(&name.as_str()) {
                out.push_str(content);
            }
        }
        return content_end;
    }
    if let Some(body) = rest.strip_prefix("<!--") {
        let len = if body.starts_with('>') {
            5
        } else if body.starts_with("->") {
            6
        } else {
            body.find("-->").map_or(rest.len(), |n| 4 + n + 3)
        };
        return at + len;
    }
    if rest.starts_with("</>") {
        return at + 3;
    }
    if matches!(b.get(1), Some(b'!' | b'?' | b'/')) {
        // A bogus comment, up to the next '>'.
        return rest.find('>').map_or(html.len(), |n| at + n + 1);
    }
    out.push('<');
    at + 1
}

/// The lowercase name of the tag whose name starts `s`, and the length of
/// the rest of the tag up to and including its '>'; `None` if it never ends.
fn tag(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let name_len = b.iter().position(|c| matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>'))?;
    let name = s[..name_len].to_ascii_lowercase();
    let mut i = name_len;
    while i < b.len() {
        match b[i] {
            b'>' => return Some((name, i + 1)),
            b'=' => {
                i += 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if let Some(&q @ (b'"' | b'\'')) = b.get(i) {
                    i += 2 + s[i + 1..].find(q as char)?;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Where the end tag `</name` (case-insensitive, followed by whitespace, '/'
/// or '>') starts in `s`.
fn find_end_tag(s: &str, name: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let needle = format!("</{name}");
    let mut from = 0;
    while let Some(n) = lower[from..].find(&needle) {
        let at = from + n;
        if matches!(lower.as_bytes().get(at + needle.len()), Some(b'\t' | b'\n' | b'\x0c' | b'\r' | b' ' | b'/' | b'>'))
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// RCDATA: character references decoded, '<' is text.
fn html_text_without_tags(s: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(n) = s[i..].find('&') {
        out.push_str(&s[i..i + n]);
        let (decoded, len) = char_ref(&s[i + n..]);
        out.push_str(&decoded);
        i += n + len;
    }
    out.push_str(&s[i..]);
    out
}

/// Named character references this reference knows (the common ones, not all
/// of HTML's); an unknown one stays text. The format processor's output on the
/// bundled data is compared with this reference (pipeline_processors.rs), so
/// a reference the data uses and this table lacks shows up there.
const ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{a0}"),
    ("ndash", "–"),
    ("mdash", "—"),
    ("hellip", "…"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("lsaquo", "‹"),
    ("rsaquo", "›"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("deg", "°"),
    ("middot", "·"),
    ("bull", "•"),
    ("dagger", "†"),
    ("sect", "§"),
    ("para", "¶"),
    ("shy", "\u{ad}"),
    ("zwj", "\u{200d}"),
    ("zwnj", "\u{200c}"),
    ("thinsp", "\u{2009}"),
    ("ensp", "\u{2002}"),
    ("emsp", "\u{2003}"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("minus", "−"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("micro", "µ"),
    ("rarr", "→"),
    ("larr", "←"),
    ("harr", "↔"),
    ("uarr", "↑"),
    ("darr", "↓"),
    ("hearts", "♥"),
    ("star", "☆"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("auml", "ä"),
    ("atilde", "ã"),
    ("aring", "å"),
    ("aelig", "æ"),
    ("ccedil", "ç"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("euml", "ë"),
    ("iacute", "í"),
    ("igrave", "ì"),
    ("icirc", "î"),
    ("iuml", "ï"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("ograve", "ò"),
    ("ocirc", "ô"),
    ("ouml", "ö"),
    ("otilde", "õ"),
    ("oslash", "ø"),
    ("uacute", "ú"),
    ("ugrave", "ù"),
    ("ucirc", "û"),
    ("uuml", "ü"),
    ("yacute", "ý"),
    ("szlig", "ß"),
    ("Aacute", "Á"),
    ("Agrave", "À"),
    ("Auml", "Ä"),
    ("Ccedil", "Ç"),
    ("Eacute", "É"),
    ("Egrave", "È"),
    ("Ntilde", "Ñ"),
    ("Oacute", "Ó"),
    ("Ouml", "Ö"),
    ("Uuml", "Ü"),
    ("Oslash", "Ø"),
    ("AElig", "Æ"),
];

/// References that HTML also decodes without the ';' (in text), longest first
/// where one is a prefix of another.
const LEGACY: &[&str] = &["amp", "lt", "gt", "quot", "nbsp", "copy", "reg", "AMP", "LT", "GT", "QUOT", "COPY", "REG"];

/// Windows-1252 characters that numeric references 0x80..=0x9F stand for.
const C1: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘', '’',
    '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// The character reference at the start of `s` (which starts with '&'):
/// what it stands for and its length; a lone '&' is itself.
fn char_ref(s: &str) -> (String, usize) {
    let b = s.as_bytes();
    if b.get(1) == Some(&b'#') {
        let hex = matches!(b.get(2), Some(b'x' | b'X'));
        let digits_at = if hex { 3 } else { 2 };
        let digits =
            b[digits_at..].iter().take_while(|c| if hex { c.is_ascii_hexdigit() } else { c.is_ascii_digit() }).count();
        if digits == 0 {
            return ("&".to_string(), 1);
        }
        let code =
            u32::from_str_radix(&s[digits_at..digits_at + digits], if hex { 16 } else { 10 }).unwrap_or(u32::MAX);
        let c = match code {
            0x80..=0x9f => C1[(code - 0x80) as usize],
            0 => '\u{fffd}',
            _ => char::from_u32(code).unwrap_or('\u{fffd}'),
        };
        let len = digits_at + digits + usize::from(b.get(digits_at + digits) == Some(&b';'));
        return (c.to_string(), len);
    }
    let name_len = b[1..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
    let name = &s[1..1 + name_len];
    if name_len > 0 && b.get(1 + name_len) == Some(&b';') {
        if let Some((_, decoded)) = ENTITIES.iter().find(|(n, _)| *n == name) {
            return (decoded.to_string(), name_len + 2);
        }
    }
    match LEGACY.iter().filter(|l| name.starts_with(**l)).max_by_key(|l| l.len()) {
        Some(legacy) => {
            let (_, decoded) = ENTITIES.iter().find(|(n, _)| n.eq_ignore_ascii_case(legacy)).expect("legacy is known");
            (decoded.to_string(), 1 + legacy.len())
        }
        None => ("&".to_string(), 1),
    }
}

// ---- Summary and keywords -----------------------------------------------

/// At most [`SUMMARY_CHARS`] characters, cut at the last space that keeps
/// whole words (inside the first word if it alone is too long), '…' appended.
fn summary(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= SUMMARY_CHARS {
        return text.to_string();
    }
    let mut end = SUMMARY_CHARS;
    if chars[SUMMARY_CHARS] != ' ' {
        if let Some(space) = chars[..SUMMARY_CHARS].iter().rposition(|&c| c == ' ') {
            end = space;
        }
    }
    let cut: String = chars[..end].iter().collect();
    format!("{}…", cut.trim_end())
}

/// Stop words (a copy of the processor's list: data, not code).
const STOP_WORDS: &str = "about above across after again against all almost along also although always among and \
    another any are aren around because been before being below between both but can cannot could couldn did didn \
    does doesn doing don done down during each either else enough even ever every few for from further get gets \
    getting got had hadn has hasn have haven having her here hers herself him himself his how however into isn its \
    itself just least less let like made make makes many may might more most much must mustn neither nor not now off \
    often once one only other others our ours ourselves out over own per put rather said same say says see shall \
    shan she should shouldn since some still such than that the their theirs them themselves then there these they \
    this those though through thus too under until upon use used uses using very via was wasn way well were weren \
    what when where whether which while who whom whose why will with within without won would wouldn yet you your \
    yours yourself yourselves";

fn keywords(title: &str, text: &str) -> Vec<String> {
    let stop: HashSet<&str> = STOP_WORDS.split_whitespace().collect();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for (source, weight) in [(title, 3), (text, 1)] {
        let mut word = String::new();
        for c in source.chars().chain([' ']) {
            if c.is_alphanumeric() {
                word.push(c);
                continue;
            }
            let lower = word.to_lowercase();
            word.clear();
            let n = lower.chars().count();
            if n >= 3 && !lower.chars().all(char::is_numeric) && !stop.contains(lower.as_str()) {
                *counts.entry(lower).or_default() += weight;
            }
        }
    }
    // BTreeMap order is alphabetical; a stable sort by count keeps it for ties.
    let mut ranked: Vec<(String, u32)> = counts.into_iter().collect();
    ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    ranked.into_iter().take(MAX_KEYWORDS).map(|(word, _)| word).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_html_scanner_reads_fragments_like_a_browser() {
        assert_eq!(html_text("<p>Hello</p><p>world</p>"), "Hello world");
        assert_eq!(html_text("in<b>cred</b>ible <a href='x>y'>link</a>s"), "incredible links");
        assert_eq!(html_text("a<script>if (a<b) x('</p>')</script>b<style>p{}</style>c"), "a b c");
        assert_eq!(html_text("x<!-- <p>hidden</p> -->y<!---->z"), "xyz");
        assert_eq!(
            html_text("Rust &amp; Go&#8217;s &lt;3 &#x263A; caf&eacute; &amp &copy2025 &#150;"),
            "Rust & Go’s <3 ☺ café & ©2025 –"
        );
        assert_eq!(html_text("AT&T; Q&A, a < b"), "AT&T; Q&A, a < b");
        assert_eq!(html_text("<template><p>t</p></template>kept <title>a <b> &amp;</title>"), "kept a <b> &");
        assert_eq!(html_text("open <p class=\"never closed"), "open");
        assert_eq!(html_text("<template>a</script>b</template>c <plaintext><b>&amp;"), "c <b>&amp;");
    }

    #[test]
    fn the_reference_summary_and_keywords_follow_the_rules() {
        let long = "word ".repeat(100);
        let s = summary(long.trim());
        assert!(s.ends_with("word…") && s.chars().count() <= SUMMARY_CHARS + 1);
        assert_eq!(summary("short"), "short");
        assert_eq!(keywords("Mango", "zebra apple zebra apple mango the 2024 ab"), ["mango", "apple", "zebra"]);
        assert_eq!(STOP_WORDS.split_whitespace().count(), 180);
    }

    #[test]
    fn expected_recommendations_file_matches_the_reference() -> anyhow::Result<()> {
        let data = data_dir();
        let expected = expected_recommendations(&data);
        let path = expected_file(&data);
        if std::env::var_os("EDDY_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, to_file_text(&expected))?;
            eprintln!("wrote {} recommendations to {}", expected.len(), path.display());
            return Ok(());
        }
        let checked_in = read_expected_file(&path)?;
        let as_set = |list: &[Expected]| -> BTreeSet<String> { list.iter().map(|e| e.to_json().to_string()).collect() };
        let (ours, theirs) = (as_set(&expected), as_set(&checked_in));
        let missing: Vec<_> = ours.difference(&theirs).take(10).collect();
        let extra: Vec<_> = theirs.difference(&ours).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} differs from the reference (regenerate with EDDY_BLESS=1 if the data changed on purpose)\n\
             in the reference only: {missing:#?}\nin the file only: {extra:#?}",
            path.display()
        );
        assert_eq!(expected.len(), checked_in.len());
        Ok(())
    }
}
