//! Property tests of the frame parser (`protocol::parse_client_message`): whatever a client
//! sends (arbitrary text, arbitrary JSON, a valid frame with a mutation) it never panics, and
//! a refused frame is one structured 400 with at least one `validation_errors` entry.

use mcp_platform::protocol::{Rejection, parse_client_message};
use proptest::prelude::*;
use serde_json::Value;

const VALID_FRAMES: &[&str] = &[
    r#"{"action":"chat","request_id":"r-1","payload":{"text":"What is 2+3?","conversation_id":"c-42","model":"m","streaming":true}}"#,
    r#"{"action":"cancel","request_id":"r-1"}"#,
    r#"{"action":"resume","request_id":"r-1","after_seq":7}"#,
    r#"{"action":"ping","request_id":"p-1"}"#,
    r#"{"action":"chat","request_id":"r-2","payload":{"prompt":{"name":"demo__greet","arguments":{"name":"Ada"}},"resources":["demo://readme"]}}"#,
];

fn assert_structured(rejection: &Rejection) {
    assert_eq!(rejection.error.code, 400);
    let errors = &rejection.error.data.as_ref().expect("validation data")["validation_errors"];
    let errors = errors.as_array().expect("validation_errors is an array");
    assert!(!errors.is_empty(), "a refusal says why");
    for error in errors {
        assert!(error["field"].is_string() && error["message"].is_string() && error["type"].is_string(), "{error}");
    }
}

fn check(frame: &str) {
    if let Err(rejection) = parse_client_message(frame) {
        assert_structured(&rejection);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(vec!["chat", "cancel", "resume", "ping", "r-1", ""]).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "action",
            "request_id",
            "payload",
            "after_seq",
            "text",
            "conversation_id",
            "model",
            "streaming",
            "prompt",
            "name",
            "arguments",
            "resources",
            "other",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().map(|(key, value)| (key.to_owned(), value)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(frame in ".{0,200}") {
        check(&frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        // A text frame is UTF-8 by the time it is parsed (invalid UTF-8 closes with 1007).
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        check(&value.to_string());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        frame in prop::sample::select(VALID_FRAMES),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut bytes = frame.as_bytes().to_vec();
        let position = at.index(bytes.len());
        match how {
            0 => { bytes.remove(position); }
            1 => bytes.insert(position, byte),
            _ => bytes[position] = byte,
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn the_valid_frames_parse() {
    for frame in VALID_FRAMES {
        assert!(parse_client_message(frame).is_ok(), "{frame}");
    }
}
