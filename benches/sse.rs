//! SSE parsing plus delta accumulation of an OpenAI-compatible stream on one core, through the
//! same code the provider runs on a response body (`llm::sse::decode` with
//! `OpenAiStreamDecoder`), without a network: chunks per second.
//!
//! `cargo bench --bench sse`

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use mcp_platform::llm::LlmEvent;
use mcp_platform::llm::openai::OpenAiStreamDecoder;
use mcp_platform::llm::sse::{self, Flow, SseParser, StreamDecoder};
use serde_json::json;

const ANSWERS: usize = 2_000;
const TEXT_CHUNKS: usize = 200;
const ARGUMENT_FRAGMENTS: usize = 20;
const TARGET_CHUNKS_PER_SECOND: f64 = 500_000.0;

/// One answer as a server streams it: a role chunk, text deltas, two parallel tool calls in
/// fragments, the finish reason, usage, `[DONE]`. Returns the SSE events and the chunk count.
fn answer_events() -> (Vec<String>, usize) {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({
            "id": "chatcmpl-9f2c6a3e1b7d4c58a0e2", "object": "chat.completion.chunk",
            "created": 1_763_683_660, "model": "llama-3.3-70b-versatile",
            "system_fingerprint": "fp_3f3b593e33",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), json!(null))];
    let words = ["The ", "result ", "of ", "adding ", "these ", "numbers ", "is ", "five, "];
    for position in 0..TEXT_CHUNKS {
        events.push(chunk(json!({"content": words[position % words.len()]}), json!(null)));
    }
    for index in 0..2 {
        events.push(chunk(
            json!({"tool_calls": [{"index": index, "id": format!("call_{index}abcdef"), "type": "function",
                   "function": {"name": "demo__sum", "arguments": ""}}]}),
            json!(null),
        ));
        events.push(chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": "{\"a\": ["}}]}),
            json!(null),
        ));
        for fragment in 0..ARGUMENT_FRAGMENTS - 2 {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": format!("{fragment}, ")}}]}),
                json!(null),
            ));
        }
        events.push(chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": "0], \"b\": 3}"}}]}),
            json!(null),
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    let mut usage = json!({"id": "chatcmpl-9f2c6a3e1b7d4c58a0e2", "object": "chat.completion.chunk",
        "created": 1_763_683_660, "model": "llama-3.3-70b-versatile", "choices": []});
    usage["usage"] = json!({"prompt_tokens": 412, "completion_tokens": 260, "total_tokens": 672});
    events.push(usage);
    let chunks = events.len();
    let mut frames: Vec<String> = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    frames.push("data: [DONE]\n\n".to_owned());
    (frames, chunks)
}

/// Decodes every answer from `reads` (the body as the network hands it over) and returns the
/// chunks per second.
fn measure(label: &str, reads: &[Bytes], chunks_per_answer: usize) -> f64 {
    let started = Instant::now();
    let mut texts = 0;
    let mut calls = 0;
    for _ in 0..ANSWERS {
        let body = futures::stream::iter(reads.iter().cloned().map(Ok::<_, Infallible>));
        let events = sse::decode(body, OpenAiStreamDecoder::default());
        futures::executor::block_on(events.for_each(|event| {
            match event {
                Ok(LlmEvent::Text(_)) => texts += 1,
                Ok(LlmEvent::ToolCall(call)) => {
                    assert_eq!(call.arguments["b"], 3);
                    calls += 1;
                }
                Ok(_) => {}
                Err(_) => panic!("the benchmark stream must decode"),
            }
            futures::future::ready(())
        }));
    }
    let elapsed = started.elapsed();
    assert_eq!((texts, calls), (ANSWERS * TEXT_CHUNKS, ANSWERS * 2));
    let chunks = (ANSWERS * chunks_per_answer) as f64;
    let rate = chunks / elapsed.as_secs_f64();
    println!(
        "{label:<34} {chunks:>9} chunks in {:>7.1} ms: {:>10.0} chunks/s ({:.2} µs/chunk)",
        elapsed.as_secs_f64() * 1e3,
        rate,
        1e6 / rate
    );
    rate
}

/// The two halves on their own, to see where the time goes: the SSE framing of 4 KiB reads
/// (events handed over, not decoded) and the decoder fed ready event texts.
fn parts(frames: &[String], reads: &[Bytes], chunks_per_answer: usize) {
    let chunks = (ANSWERS * chunks_per_answer) as f64;
    let started = Instant::now();
    let mut events = 0;
    for _ in 0..ANSWERS {
        let mut parser = SseParser::default();
        for read in reads {
            let flow = parser.feed(read, |_, data| {
                events += usize::from(!data.is_empty());
                Ok(Flow::More)
            });
            assert_eq!(flow, Ok(Flow::More));
        }
    }
    assert_eq!(events, ANSWERS * (chunks_per_answer + 1));
    println!("{:<34} {:>10.0} chunks/s", "SSE framing alone (4 KiB reads)", chunks / started.elapsed().as_secs_f64());
    let texts: Vec<&str> = frames.iter().map(|frame| frame.trim_start_matches("data: ").trim_end()).collect();
    let started = Instant::now();
    let mut out = Vec::new();
    for _ in 0..ANSWERS {
        let mut decoder = OpenAiStreamDecoder::default();
        for text in &texts {
            if decoder.event("message", text, &mut out) != Ok(Flow::More) {
                break;
            }
        }
        decoder.end(&mut out).expect("complete answer");
        out.clear();
    }
    println!("{:<34} {:>10.0} chunks/s", "decoder alone", chunks / started.elapsed().as_secs_f64());
}

fn main() {
    let (frames, chunks_per_answer) = answer_events();
    let body: String = frames.concat();
    println!("{ANSWERS} answers of {chunks_per_answer} chunks ({} bytes each)", body.len());
    // Token streaming: each event arrives in its own read.
    let per_event: Vec<Bytes> = frames.iter().map(|frame| Bytes::from(frame.clone())).collect();
    // A busy connection: 4 KiB reads that cut events anywhere.
    let per_4k: Vec<Bytes> = body.as_bytes().chunks(4096).map(Bytes::copy_from_slice).collect();
    parts(&frames, &per_4k, chunks_per_answer);
    let mut worst = f64::INFINITY;
    for _ in 0..2 {
        worst = worst.min(measure("one event per read", &per_event, chunks_per_answer));
        worst = worst.min(measure("4 KiB reads", &per_4k, chunks_per_answer));
    }
    println!(
        "slowest: {worst:.0} chunks/s, target {TARGET_CHUNKS_PER_SECOND:.0}: {}",
        if worst >= TARGET_CHUNKS_PER_SECOND { "met" } else { "MISSED" }
    );
}
