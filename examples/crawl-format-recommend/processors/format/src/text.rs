//! HTML to plain text, and the summary cut.
//!
//! The rules (the recommend test's reference implementation in
//! tests/tests/e2e/pipeline_reference.rs restates them independently):
//! * HTML is tokenized by html5gum (WHATWG tokenizer, which decodes character
//!   references), with the raw-text states of `<script>`, `<style>` and the
//!   like switched on so that their contents stay text tokens.
//! * The contents of the [`SKIPPED_RAW`] elements and of `<template>` are
//!   dropped; comments and doctypes too.
//! * Every tag, start or end, separates words (a space) except the tags of the
//!   [`INLINE`] elements, so `<p>a</p><p>b</p>` is "a b" and `in<b>cred</b>ible`
//!   is "incredible".
//! * Whitespace (Unicode `White_Space`, so no-break spaces too) is collapsed
//!   to one space and trimmed.

use std::convert::Infallible;

use html5gum::emitters::callback::{CallbackEmitter, CallbackEvent};
use html5gum::{Span, Tokenizer};

/// Elements whose contents are not text: code, styles, fallbacks. Their
/// contents are raw text (one text token up to their end tag).
pub const SKIPPED_RAW: [&str; 4] = ["iframe", "noscript", "script", "style"];

/// The element whose contents are not text either, but parsed HTML that may
/// nest.
pub const TEMPLATE: &[u8] = b"template";

/// Inline (phrasing) elements, sorted: their tags do not separate words.
/// Any other tag, known or not, does.
pub const INLINE: [&str; 32] = [
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em", "font", "i", "ins", "kbd",
    "mark", "nobr", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var",
    "wbr",
];

fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names.binary_search_by(|n| n.as_bytes().cmp(name)).is_ok()
}

/// The text of an HTML fragment (or of plain text, which is a fragment without
/// tags): entities decoded, whitespace normalized.
pub fn html_to_text(html: &str) -> String {
    let mut raw: Vec<u8> = Vec::with_capacity(html.len());
    // Inside a SKIPPED_RAW element, and how many templates are open.
    let mut in_skipped_raw = false;
    let mut templates = 0u32;
    {
        let mut emitter = CallbackEmitter::new(|event: CallbackEvent<'_>, _: Span<()>| -> Option<Infallible> {
            match event {
                CallbackEvent::OpenStartTag { name } | CallbackEvent::EndTag { name } => {
                    let start = matches!(event, CallbackEvent::OpenStartTag { .. });
                    if start && is_one_of(name, &SKIPPED_RAW) {
                        in_skipped_raw = true;
                    } else if !start {
                        // In raw text only the element's own end tag ends it.
                        in_skipped_raw = false;
                    }
                    if name == TEMPLATE {
                        templates = if start { templates + 1 } else { templates.saturating_sub(1) };
                    }
                    if !is_one_of(name, &INLINE) {
                        raw.push(b' ');
                    }
                }
                CallbackEvent::String { value } if !in_skipped_raw && templates == 0 => raw.extend_from_slice(value),
                _ => {}
            }
            None
        });
        emitter.naively_switch_states(true);
        // The callback returns no tokens: running the tokenizer to the end is all.
        Tokenizer::new_with_emitter(html, emitter).for_each(drop);
    }
    normalize_whitespace(&String::from_utf8_lossy(&raw))
}

/// `text` with every run of whitespace turned into one space, trimmed.
pub fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The first `max_chars` characters of normalized `text`, cut at a word
/// boundary, with '…' appended if anything was cut.
///
/// If the text is longer: the cut is just before the space that follows the
/// last whole word of the first `max_chars` characters; a first word longer
/// than `max_chars` is cut inside it.
pub fn summary(text: &str, max_chars: usize) -> String {
    let Some((end, next)) = text.char_indices().nth(max_chars) else { return text.to_string() };
    let head = &text[..end];
    let cut = if next == ' ' { head } else { head.rfind(' ').map_or(head, |space| &head[..space]) };
    let mut out = cut.trim_end().to_string();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lists_are_sorted_for_binary_search() {
        assert!(SKIPPED_RAW.windows(2).all(|w| w[0] < w[1]));
        assert!(INLINE.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tags_go_block_elements_separate_words_inline_ones_do_not() {
        assert_eq!(html_to_text("<p>Hello</p><p>world</p>"), "Hello world");
        assert_eq!(html_to_text("in<b>cred</b>ible <a href='x'>link</a>s"), "incredible links");
        assert_eq!(
            html_to_text("one<br>two<br/>three<li>four</li><custom-el>five</custom-el>"),
            "one two three four five"
        );
        assert_eq!(html_to_text("<DIV CLASS=x>Upper</DIV>case"), "Upper case");
    }

    #[test]
    fn scripts_styles_and_comments_are_not_text() {
        let html = "<p>a</p><script>if (x < y) { document.write('<b>no</b>') }</script>\
                    <style>p > b { color: red }</style><!-- hidden <b>comment</b> --><noscript><img src=x>js off</noscript>b\
                    <template><p>t</p><template>u</template>v</template>c";
        assert_eq!(html_to_text(html), "a b c");
        // An unclosed script hides the rest, as in a browser.
        assert_eq!(html_to_text("visible<script>var a = 1;"), "visible");
        // A stray end tag does not start skipping, nor end a template.
        assert_eq!(html_to_text("x</script>y"), "x y");
        assert_eq!(html_to_text("<template>a</script>b</template>c"), "c");
    }

    #[test]
    fn entities_are_decoded_and_stray_markup_characters_kept() {
        assert_eq!(
            html_to_text("Rust &amp; Go &lt;3 &#8217; &#x263A; &eacute;t&eacute; caf&eacute;&nbsp;bar"),
            "Rust & Go <3 ’ ☺ été café bar"
        );
        assert_eq!(html_to_text("a < b and c > d, AT&T; Q&A"), "a < b and c > d, AT&T; Q&A");
        // Double-escaped markup stays visible text, once decoded.
        assert_eq!(html_to_text("&lt;b&gt;bold&lt;/b&gt;"), "<b>bold</b>");
    }

    #[test]
    fn edge_cases_read_like_a_browser() {
        assert_eq!(html_to_text("in<b>cred</b>ible <a href='x>y'>link</a>s"), "incredible links");
        assert_eq!(html_to_text("a<script>if (a<b) x('</p>')</script>b<style>p{}</style>c"), "a b c");
        assert_eq!(html_to_text("x<!-- <p>hidden</p> -->y<!---->z"), "xyz");
        assert_eq!(
            html_to_text("Rust &amp; Go&#8217;s &lt;3 &#x263A; caf&eacute; &amp &copy2025 &#150;"),
            "Rust & Go’s <3 ☺ café & ©2025 –"
        );
        assert_eq!(html_to_text("<template><p>t</p></template>kept <title>a <b> &amp;</title>"), "kept a <b> &");
        assert_eq!(html_to_text("<template>a</script>b</template>c <plaintext><b>&amp;"), "c <b>&amp;");
        assert_eq!(html_to_text("open <p class=\"never closed"), "open");
    }

    #[test]
    fn whitespace_is_collapsed_and_trimmed() {
        assert_eq!(html_to_text("  a \n\t b\u{a0}\u{a0}c\r\n"), "a b c");
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<p> </p><br>"), "");
        assert_eq!(normalize_whitespace("\u{2003}x\u{3000}y "), "x y");
    }

    #[test]
    fn summary_cuts_at_a_word_boundary() {
        assert_eq!(summary("short text", 280), "short text");
        assert_eq!(summary("exactly ten", 11), "exactly ten");
        // The cut lands inside "brown": back to the space before it.
        assert_eq!(summary("the quick brown fox", 12), "the quick…");
        // The cut lands just before a space: the whole word is kept.
        assert_eq!(summary("the quick brown fox", 9), "the quick…");
        assert_eq!(summary("the quick brown fox", 10), "the quick…");
        // One long word: cut inside it.
        assert_eq!(summary("abcdefghij klm", 4), "abcd…");
        // Characters, not bytes.
        assert_eq!(summary("été été été", 5), "été…");
        let long = "word ".repeat(100);
        let s = summary(long.trim(), 280);
        assert!(s.ends_with("word…") && s.chars().count() <= 281, "{s}");
    }
}
