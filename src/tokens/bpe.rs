//! tiktoken's encodings, counted without a backtracking regex engine.
//!
//! Every tiktoken split pattern has one alternative that looks ahead, `\s+(?!\S)` (a run of
//! whitespace leaves its last character to the word that follows), and tiktoken-rs's `cl100k`
//! pattern adds possessive quantifiers. Either makes `fancy_regex` run the whole pattern in its
//! backtracking VM, which was the largest part of counting a text and a sixth of a plain turn's
//! instructions. Here the pattern runs in `regex-automata`'s engines without that alternative,
//! and the look-ahead is applied before it: the text is cut where `\s+(?!\S)` ends a piece, and
//! in each part the pattern's `\s+$` or `\s*[\r\n]+` alternatives end the same pieces at the cut.
//! The BPE ranks are tiktoken-rs's own, and the counts are its counts (the tests compare them on
//! random texts).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::LazyLock;

use regex_automata::{Anchored, Input, meta};
use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, Rank};

/// tiktoken-rs's `cl100k_base` pattern without its look-ahead alternative, and with greedy
/// quantifiers for its possessive ones: none of them is followed by anything that could take
/// back what it matched, so both match the same.
pub const CL100K_SPLIT: &str =
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+$|\s*[\r\n]|\s";

/// tiktoken-rs's `o200k_base` pattern without its look-ahead alternative.
pub const O200K_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+"
);

/// Ranks in a row that decode to nothing after which no more are looked for: the encodings'
/// ordinary tokens are numbered without gaps, and only a few special tokens follow them.
const RANKS_PAST_THE_LAST: Rank = 1024;

/// `cl100k_base`, built on first use (about a tenth of a second).
pub fn cl100k_base() -> &'static Bpe {
    static CL100K: LazyLock<Bpe> =
        LazyLock::new(|| Bpe::new(tiktoken_rs::cl100k_base().expect("tiktoken-rs ships cl100k_base"), CL100K_SPLIT, 0));
    &CL100K
}

/// `o200k_base`, built on first use.
pub fn o200k_base() -> &'static Bpe {
    static O200K: LazyLock<Bpe> =
        LazyLock::new(|| Bpe::new(tiktoken_rs::o200k_base().expect("tiktoken-rs ships o200k_base"), O200K_SPLIT, 1));
    &O200K
}

/// Ordinary tokens of the largest encoding, `o200k_base`: the ranks are gathered into a table of
/// this size, never grown.
const LARGEST_VOCABULARY: usize = 200_000;

/// Text the split pattern's caches are warmed with at start: every letter in lower and upper
/// case inside words and after spaces, contractions, digits, dates, punctuation, a JSON object,
/// line breaks and indentation, a few non-Latin letters. (The lazy DFA computes a transition
/// per state and byte class the first time a text needs it; letters fall into several classes.)
const WARM_UP_TEXT: &str = "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!\n\
    Sphinx of black quartz, judge my vow; Jackdaws love my big sphinx of quartz? It's I'm we'll \
    A well-known answer: ask me about this, or call a tool and I will read the notes for you. \
    they've you'd we're DON'T. In 2026-11-21 the sum of 2+3 is 5 (about 17.5%, #4 @ $9).\n\n  \
    - Item one: \"quoted\" [x/y] <a> a_b `c` ~d* e=f|g\\h ^i & j'k\n\
    {\"a\": 2, \"b\": [3, 4.5], \"ok\": true, \"name\": \"demo__sum\"}\tÉté, straße, Привет, 你好 — done…\r\n";

/// Encodings a thread keeps split caches for ([`Bpe::slot`]).
const ENCODINGS: usize = 2;

thread_local! {
    /// This thread's cache of each encoding's split pattern: kept by the thread that uses it, as
    /// the `regex` crate keeps its own, but started as a copy of the warmed one.
    static SPLIT_CACHES: RefCell<[Option<meta::Cache>; ENCODINGS]> = const { RefCell::new([None, None]) };
}

/// One encoding: its tables and a warmed cache of its split pattern.
pub struct Bpe {
    tables: Tables,
    /// The split pattern's lazy DFA builds its states as texts need them, which for the first
    /// sentence takes most of a millisecond; a thread starting with an empty cache (as with the
    /// `regex` crate's per-thread caches) paid it on each worker's first turns. This one is
    /// warmed at start, and each thread's first count copies it.
    warm_cache: meta::Cache,
    /// This encoding's place in [`SPLIT_CACHES`].
    slot: usize,
}

/// What counting a text needs besides a cache: the ordinary tokens' ranks and the split pattern.
struct Tables {
    ranks: FxHashMap<Vec<u8>, Rank>,
    split: meta::Regex,
}

impl Bpe {
    /// Takes the ordinary tokens' ranks out of `encoding` (tiktoken-rs's, built from the tables
    /// it ships); the encoding itself is dropped, as its own regex is the one not to run.
    fn new(encoding: CoreBPE, split: &str, slot: usize) -> Bpe {
        let special = encoding.special_tokens();
        let mut ranks = FxHashMap::with_capacity_and_hasher(LARGEST_VOCABULARY, Default::default());
        let mut last_found = 0;
        for rank in 0.. {
            match encoding.decode_bytes(&[rank]) {
                Ok(bytes) => {
                    last_found = rank;
                    if std::str::from_utf8(&bytes).map_or(true, |text| !special.contains(text)) {
                        ranks.insert(bytes, rank);
                    }
                }
                Err(_) if rank - last_found > RANKS_PAST_THE_LAST => break,
                Err(_) => {}
            }
        }
        let tables = Tables { ranks, split: meta::Regex::new(split).expect("the split patterns are valid") };
        let mut warm_cache = tables.split.create_cache();
        tables.count(&mut warm_cache, WARM_UP_TEXT);
        Bpe { tables, warm_cache, slot }
    }

    /// Tokens of `text`, its special-token markers counted as the ordinary text they are.
    pub fn count(&self, text: &str) -> usize {
        SPLIT_CACHES.with_borrow_mut(|caches| {
            let cache = caches[self.slot].get_or_insert_with(|| self.warm_cache.clone());
            self.tables.count(cache, text)
        })
    }
}

impl Tables {
    fn count(&self, cache: &mut meta::Cache, text: &str) -> usize {
        let mut tokens = 0;
        for_each_part(text, |part| {
            // Every character is matched by some alternative of the patterns (a letter, a
            // number, whitespace or anything else), so each piece starts where the last one
            // ended: searches anchored there need only find the end, and a DFA finds only ends
            // (an unanchored search runs a second, reverse DFA for the start). Every
            // alternative matches at least one character, so the loop ends.
            let mut input = Input::new(part).anchored(Anchored::Yes);
            while let Some(end) = self.split.search_half_with(cache, &input) {
                let piece = &part.as_bytes()[input.start()..end.offset()];
                input.set_start(end.offset());
                tokens += if self.ranks.contains_key(piece) { 1 } else { merged_len(piece, &self.ranks) };
            }
        });
        tokens
    }
}

/// How many tokens the byte-pair merge makes of `piece`, a piece of two bytes or more that is
/// not one token itself (every single byte is one). The merge joins the neighbouring pair of
/// lowest rank, the leftmost among equals, until no pair is a token. tiktoken-rs exports only a
/// merge that looks for that pair among all of them each time, quadratic in the length: a
/// megabyte of tool output without a space took minutes. Here the pairs wait in a heap, as in
/// tiktoken's own encoder for long pieces, and only the count is kept.
fn merged_len(piece: &[u8], ranks: &FxHashMap<Vec<u8>, Rank>) -> usize {
    /// A token of the merge so far, at its start's index.
    struct Part {
        /// The previous part's start.
        previous: usize,
        end: usize,
        /// The rank of this part joined with the next, `Rank::MAX` when that is no token (or
        /// this part was joined into the previous one).
        joined_rank: Rank,
    }
    let rank_of = |start: usize, end: usize| ranks.get(&piece[start..end]).copied().unwrap_or(Rank::MAX);
    let mut parts: Vec<Part> = (0..piece.len())
        .map(|start| Part { previous: start.wrapping_sub(1), end: start + 1, joined_rank: Rank::MAX })
        .collect();
    let mut pairs = BinaryHeap::with_capacity(piece.len());
    let consider = |parts: &mut [Part], pairs: &mut BinaryHeap<Reverse<(Rank, usize)>>, start: usize| {
        let next = parts[start].end;
        let rank = if next < piece.len() { rank_of(start, parts[next].end) } else { Rank::MAX };
        parts[start].joined_rank = rank;
        if rank != Rank::MAX {
            pairs.push(Reverse((rank, start)));
        }
    };
    for start in 0..piece.len() {
        consider(&mut parts, &mut pairs, start);
    }
    let mut tokens = piece.len();
    while let Some(Reverse((rank, start))) = pairs.pop() {
        // A pair whose parts have changed since it was pushed has another rank now, or none.
        if rank != parts[start].joined_rank {
            continue;
        }
        let joined = parts[start].end;
        let after = parts[joined].end;
        parts[start].end = after;
        parts[joined].joined_rank = Rank::MAX;
        if after < piece.len() {
            parts[after].previous = start;
        }
        tokens -= 1;
        consider(&mut parts, &mut pairs, start);
        if start > 0 {
            let previous = parts[start].previous;
            consider(&mut parts, &mut pairs, previous);
        }
    }
    tokens
}

/// Calls `part` with the parts of `text` between the places where `\s+(?!\S)` ends a piece.
/// That alternative matches in a run of whitespace followed by a non-space, after the run's last
/// line break (the earlier alternatives take everything up to it): when at least two whitespace
/// characters follow that break, it matches all but the last of them. So the text is cut after
/// the last line break and before the last character.
fn for_each_part<'a>(text: &'a str, mut part: impl FnMut(&'a str)) {
    struct Run {
        /// Where the whitespace after the run's last line break starts, if it has one.
        after_break: Option<usize>,
        /// Where its last character starts.
        last: usize,
        /// How many characters follow the last line break (or make the run, without one).
        after_break_chars: usize,
    }
    let mut start = 0;
    let mut run: Option<Run> = None;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            let run = run.get_or_insert(Run { after_break: None, last: at, after_break_chars: 0 });
            run.last = at;
            if c == '\r' || c == '\n' {
                run.after_break = Some(at + 1);
                run.after_break_chars = 0;
            } else {
                run.after_break_chars += 1;
            }
        } else if let Some(Run { after_break, last, after_break_chars }) = run.take()
            && after_break_chars >= 2
        {
            for cut in after_break.into_iter().chain([last]) {
                part(&text[start..cut]);
                start = cut;
            }
        }
    }
    part(&text[start..]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parts(text: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        for_each_part(text, |part| parts.push(part));
        parts
    }

    #[test]
    fn text_is_cut_where_the_look_ahead_ends_a_piece() {
        assert_eq!(parts("a   b"), ["a  ", " b"]);
        assert_eq!(parts("a \n  b"), ["a \n", " ", " b"]);
        assert_eq!(parts("a\n b"), ["a\n b"], "one space after the break: nothing to cut");
        assert_eq!(parts("a b  "), ["a b  "], "a run at the end is not followed by a non-space");
        assert_eq!(parts(""), [""]);
    }

    /// Texts built from the characters the patterns treat differently: spaces of several kinds,
    /// line breaks, letters of each case and script, digits, punctuation, apostrophes, slashes,
    /// characters of no class.
    fn tricky_text() -> impl Strategy<Value = String> {
        let alphabet = prop::sample::select(vec![
            " ",
            " ",
            " ",
            "\t",
            "\n",
            "\r",
            "\r\n",
            "\u{a0}",
            "\u{3000}",
            "a",
            "Ab",
            "HELLO",
            "é",
            "ß",
            "中文",
            "ок",
            "1",
            "2024",
            "!",
            "?!",
            "'s",
            "'LL",
            "'",
            "/",
            ",",
            ".",
            "😀",
            "\u{301}",
            "<|endoftext|>",
            "-",
            "\"",
            // Neither letters, numbers nor whitespace: a control, a format and a private-use
            // character, which only the patterns' catch-all alternative matches.
            "\u{7}",
            "\u{200d}",
            "\u{e000}",
        ]);
        prop::collection::vec(alphabet, 0..40).prop_map(|parts| parts.concat())
    }

    fn counts_match(text: &str) {
        let tiktoken = |encoding: &CoreBPE| encoding.encode_ordinary(text).len();
        assert_eq!(cl100k_base().count(text), tiktoken(tiktoken_rs::cl100k_base_singleton()), "cl100k {text:?}");
        assert_eq!(o200k_base().count(text), tiktoken(tiktoken_rs::o200k_base_singleton()), "o200k {text:?}");
    }

    #[test]
    fn every_ordinary_token_is_kept_and_no_special_one() {
        // tiktoken numbers the ordinary tokens 0..=100_255 and 0..=199_997; the special ones
        // (`<|endoftext|>` and the like) come after.
        assert_eq!(cl100k_base().tables.ranks.len(), 100_256);
        assert_eq!(o200k_base().tables.ranks.len(), 199_998);
        assert!(!cl100k_base().tables.ranks.contains_key(b"<|endoftext|>".as_slice()));
    }

    #[test]
    fn a_long_piece_without_spaces_counts_as_tiktoken_counts_it() {
        let word = "abcdefghij".repeat(2_000);
        let digits_and_marks = "1+2=3;".repeat(5_000);
        for text in [word, digits_and_marks] {
            counts_match(&text);
        }
    }

    #[test]
    fn counts_are_tiktokens_on_a_real_document() {
        counts_match(include_str!("../../README.md"));
    }

    proptest! {
        #[test]
        fn counts_are_tiktokens(text in tricky_text()) {
            counts_match(&text);
        }

        /// Words of up to 300 letters: pieces that take many merges, on both sides of the
        /// length from which tiktoken-rs merges with a heap.
        #[test]
        fn merges_of_long_words_are_tiktokens(word in "[a-zA-Z]{2,300}") {
            counts_match(&word);
        }
    }
}
