//! Keyword extraction: the most frequent meaningful words of an article.
//!
//! The rules (restated independently by the recommend test's reference
//! implementation in tests/tests/e2e/pipeline_reference.rs):
//! 1. Tokens are the maximal runs of alphanumeric characters (Unicode
//!    `char::is_alphanumeric`) of the plain-text title and of the plain text,
//!    each lowercased with `str::to_lowercase`.
//! 2. Dropped: tokens of fewer than 3 characters, tokens whose characters are
//!    all numeric (`char::is_numeric`), and the [`STOP_WORDS`].
//! 3. A token's count is 3 per occurrence in the title plus 1 per occurrence
//!    in the text.
//! 4. Ranked by count, highest first, ties in ascending (byte) order; the
//!    first [`MAX_KEYWORDS`] are the keywords.

use rustc_hash::FxHashMap as HashMap;

/// The most keywords an article gets.
pub const MAX_KEYWORDS: usize = 20;

/// How much more a title occurrence counts than a text occurrence.
pub const TITLE_WEIGHT: u32 = 3;

/// Common English words that say nothing about a topic, sorted, all of at
/// least 3 characters (shorter tokens are dropped anyway). Includes
/// the halves of contractions split at the apostrophe ("doesn't" -> "doesn").
pub const STOP_WORDS: [&str; 180] = [
    "about",
    "above",
    "across",
    "after",
    "again",
    "against",
    "all",
    "almost",
    "along",
    "also",
    "although",
    "always",
    "among",
    "and",
    "another",
    "any",
    "are",
    "aren",
    "around",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "cannot",
    "could",
    "couldn",
    "did",
    "didn",
    "does",
    "doesn",
    "doing",
    "don",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "enough",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "got",
    "had",
    "hadn",
    "has",
    "hasn",
    "have",
    "haven",
    "having",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "into",
    "isn",
    "its",
    "itself",
    "just",
    "least",
    "less",
    "let",
    "like",
    "made",
    "make",
    "makes",
    "many",
    "may",
    "might",
    "more",
    "most",
    "much",
    "must",
    "mustn",
    "neither",
    "nor",
    "not",
    "now",
    "off",
    "often",
    "once",
    "one",
    "only",
    "other",
    "others",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "put",
    "rather",
    "said",
    "same",
    "say",
    "says",
    "see",
    "shall",
    "shan",
    "she",
    "should",
    "shouldn",
    "since",
    "some",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "though",
    "through",
    "thus",
    "too",
    "under",
    "until",
    "upon",
    "use",
    "used",
    "uses",
    "using",
    "very",
    "via",
    "was",
    "wasn",
    "way",
    "well",
    "were",
    "weren",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "won",
    "would",
    "wouldn",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// The longest stop word, in bytes.
const MAX_STOP_WORD_BYTES: usize = 16;

/// `word`'s bytes as one big-endian number, if it has at most 16 (no word has
/// a NUL byte, so different words give different numbers).
const fn pack(word: &[u8]) -> u128 {
    let mut packed = 0u128;
    let mut i = 0;
    while i < word.len() {
        packed = (packed << 8) | word[i] as u128;
        i += 1;
    }
    packed
}

/// The stop words packed and sorted: comparing numbers is several times
/// faster than comparing strings, and this check runs for every token.
static PACKED_STOP_WORDS: [u128; STOP_WORDS.len()] = {
    let mut packed = [0u128; STOP_WORDS.len()];
    let mut i = 0;
    while i < STOP_WORDS.len() {
        assert!(STOP_WORDS[i].len() <= MAX_STOP_WORD_BYTES);
        packed[i] = pack(STOP_WORDS[i].as_bytes());
        // Insertion sort: const-evaluated once, at compile time.
        let mut j = i;
        while j > 0 && packed[j - 1] > packed[j] {
            let t = packed[j - 1];
            packed[j - 1] = packed[j];
            packed[j] = t;
            j -= 1;
        }
        i += 1;
    }
    packed
};

/// Whether `word` (lowercase) is a stop word.
pub fn is_stop_word(word: &str) -> bool {
    word.len() <= MAX_STOP_WORD_BYTES && PACKED_STOP_WORDS.binary_search(&pack(word.as_bytes())).is_ok()
}

/// Adds `weight` to the count of every kept token of `text`.
fn count_tokens(text: &str, weight: u32, counts: &mut HashMap<String, u32>) {
    let mut lower = String::new();
    for token in text.split(|c: char| !c.is_alphanumeric()) {
        // Fewer than 3 bytes is fewer than 3 characters, also once lowercased
        // (only 'İ', 2 bytes, lowercases to 2 characters).
        if token.len() < 3 {
            continue;
        }
        lower.clear();
        let dropped = if token.is_ascii() {
            lower.extend(token.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            token.bytes().all(|b| b.is_ascii_digit())
        } else {
            lower.push_str(&token.to_lowercase());
            lower.chars().count() < 3 || lower.chars().all(char::is_numeric)
        };
        if dropped || is_stop_word(&lower) {
            continue;
        }
        match counts.get_mut(lower.as_str()) {
            Some(count) => *count += weight,
            None => {
                counts.insert(lower.clone(), weight);
            }
        }
    }
}

/// The keywords of an article with plain-text `title` and `text`, best first.
pub fn keywords(title: &str, text: &str) -> Vec<String> {
    let mut counts = HashMap::default();
    count_tokens(title, TITLE_WEIGHT, &mut counts);
    count_tokens(text, 1, &mut counts);
    let mut ranked: Vec<(String, u32)> = counts.into_iter().collect();
    let order = |a: &(String, u32), b: &(String, u32)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if ranked.len() > MAX_KEYWORDS {
        ranked.select_nth_unstable_by(MAX_KEYWORDS - 1, order);
        ranked.truncate(MAX_KEYWORDS);
    }
    ranked.sort_unstable_by(order);
    ranked.into_iter().map(|(word, _)| word).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_lowercase_and_long_enough() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(STOP_WORDS.iter().all(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase())));
        assert!(is_stop_word("the") && is_stop_word("yourselves") && is_stop_word("doesn"));
        assert!(!is_stop_word("rust") && !is_stop_word("The"));
    }

    #[test]
    fn tokens_are_lowercased_filtered_and_split_on_non_alphanumerics() {
        let k = keywords("", "The Rust-based compiler's 2024 release: 3D, v2, IPv6; don't use it. Ωμέγα ΟΔΟΣ");
        let mut sorted = k.clone();
        sorted.sort();
        // "ΟΔΟΣ" lowercases with a final sigma.
        assert_eq!(sorted, ["based", "compiler", "ipv6", "release", "rust", "οδος", "ωμέγα"]);
    }

    #[test]
    fn title_words_count_three_times_and_ties_are_alphabetical() {
        // text: zebra 2, apple 2, mango 1; title: mango +3.
        let k = keywords("Mango", "zebra apple zebra apple mango");
        assert_eq!(k, ["mango", "apple", "zebra"]);
    }

    #[test]
    fn at_most_twenty_keywords_the_most_frequent() {
        let text: String = (0..30).map(|i| format!("{} ", format!("word{i:02} ").repeat(i + 1))).collect();
        let k = keywords("", &text);
        let expected: Vec<String> = (10..30).rev().map(|i| format!("word{i:02}")).collect();
        assert_eq!(k, expected);
        assert!(keywords("", "").is_empty());
        assert!(keywords("a an of 12 345", "to be or not").is_empty());
    }
}
