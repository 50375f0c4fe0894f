//! Token counting speed: `cargo bench --bench tokens`.
//!
//! Compares `TokenCounter::count` with tiktoken-rs's own `encode_ordinary` on the same
//! English text, alternating the two so machine noise hits both alike, and the time each takes
//! to build its tables.

use std::time::{Duration, Instant};

use mcp_platform::tokens::TokenCounter;

const ROUNDS: usize = 7;

/// About 1 MB of English prose, varied so no piece repeats in a fixed pattern.
fn english_text() -> String {
    let sentences = [
        "The committee reviewed the proposal carefully before approving the budget for next year.",
        "Rain fell steadily through the night, and by morning the river had risen above its banks.",
        "She explained that the new scheduling system would reduce waiting times at the clinic.",
        "Most of the volunteers arrived early, carrying tools, sandwiches and enthusiasm.",
        "Researchers found that participants remembered stories better than lists of facts.",
        "The old bridge, built in 1892, will be closed for repairs until the end of October.",
        "If you cannot attend the meeting, please send your comments to the secretary by Friday.",
        "He wondered whether the library still kept the maps his grandfather had donated.",
        "Customers asked for clearer instructions, so the manual was rewritten from scratch.",
        "After a long debate, the council agreed to plant two hundred trees along the avenue.",
    ];
    let mut text = String::new();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while text.len() < 1 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(sentences[(state % sentences.len() as u64) as usize]);
        text.push(if state.is_multiple_of(5) { '\n' } else { ' ' });
    }
    text
}

fn timed(rounds: &mut Vec<Duration>, run: impl FnOnce() -> usize) -> usize {
    let start = Instant::now();
    let tokens = run();
    rounds.push(start.elapsed());
    tokens
}

fn main() {
    let text = english_text();
    for model in ["gpt-4o", "llama-3.3-70b-versatile"] {
        // Each builds its tables on first use, which delays a server's start: timed once.
        let (mut ours_built, mut theirs_built) = (Vec::new(), Vec::new());
        let mut counter = None;
        timed(&mut ours_built, || counter.insert(TokenCounter::for_model(model)).count("warm up"));
        let counter = counter.expect("built above");
        let mut bpe = None;
        timed(&mut theirs_built, || {
            bpe.insert(match counter.encoding() {
                mcp_platform::tokens::Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
                mcp_platform::tokens::Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            })
            .encode_ordinary("warm up")
            .len()
        });
        let bpe = bpe.expect("built above");
        assert_eq!(counter.count("warm up"), bpe.encode_ordinary("warm up").len());
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut tokens = 0;
        for _ in 0..ROUNDS {
            tokens = timed(&mut ours, || counter.count(&text));
            let reference = timed(&mut theirs, || bpe.encode_ordinary(&text).len());
            assert_eq!(tokens, reference);
        }
        let ours = ours.into_iter().min().unwrap_or_default().as_secs_f64();
        let theirs = theirs.into_iter().min().unwrap_or_default().as_secs_f64();
        println!(
            "{model} ({:?}{}): {tokens} tokens in {:.2} MB of English",
            counter.encoding(),
            if counter.is_estimate() { ", estimate" } else { "" },
            text.len() as f64 / 1e6
        );
        println!("  TokenCounter::count          {:>10.0} tokens/s", tokens as f64 / ours);
        println!("  tiktoken-rs encode_ordinary  {:>10.0} tokens/s", tokens as f64 / theirs);
        println!("  count / encode_ordinary speed = {:.3} (target within 10%)", theirs / ours);
        println!(
            "  tables built in {:.0} ms (TokenCounter) and {:.0} ms (tiktoken-rs)",
            ours_built[0].as_secs_f64() * 1e3,
            theirs_built[0].as_secs_f64() * 1e3
        );
    }
}
