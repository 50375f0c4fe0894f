//! `mcp-platform key`: a new API key, and a `key_sha256` that configures it.

mod support;

use std::time::SystemTime;

use mcp_platform::auth::{Authenticator, Principal, Role};
use mcp_platform::config::load_settings;
use sha2::{Digest, Sha256};
use support::{mcp_platform, text};

/// Runs `mcp-platform key` and returns the key and the hash it printed.
fn new_key() -> (String, String) {
    let output = mcp_platform(&["key"]).output().expect("run mcp-platform key");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let line = |prefix: &str| {
        stdout.lines().find_map(|line| line.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
    };
    let key = line("key: ").to_owned();
    let hash = line("key_sha256: ").trim_matches('"').to_owned();
    assert!(stdout.contains("key_sha256: \"env:ALICE_KEY_SHA256\""), "the env: hint: {stdout}");
    (key, hash)
}

#[test]
fn the_printed_hash_is_the_sha256_of_a_new_random_url_safe_key() {
    let (key, hash) = new_key();
    let (other_key, other_hash) = new_key();

    assert_eq!(hash, hex::encode(Sha256::digest(key.as_bytes())));
    assert!(key.len() >= 43, "32 bytes in base64 or more: {key}");
    assert!(key.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'), "{key}");
    assert_ne!((key, hash), (other_key, other_hash));
}

#[test]
fn the_printed_line_configures_the_key_for_its_user() {
    let (key, hash) = new_key();
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).expect("config.yaml");
    let entry = format!("  api_keys:\n    - {{user: \"alice\", role: \"user\", key_sha256: \"{hash}\"}}");
    // Ollama needs no provider key, so only the auth section decides.
    let config = shipped
        .replacen("  api_keys: []", &entry, 1)
        .replacen("mode: \"none\"", "mode: \"api_keys\"", 1)
        .replacen("active: \"groq\"", "active: \"ollama\"", 1);
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).expect("write config");
    let settings = load_settings(Some(&path)).expect("the printed line is a valid key_sha256");

    let authenticator = Authenticator::new(&settings.auth).expect("authenticator");
    let authenticated = authenticator.authenticate(Some(&key), SystemTime::now()).expect("the key is accepted");
    assert_eq!(authenticated.principal, Principal { user: "alice".to_owned(), role: Role::User });
    assert!(authenticator.authenticate(Some(&hash), SystemTime::now()).is_err(), "the hash is not a key");
}
