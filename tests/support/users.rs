//! Users with API keys (auth mode `api_keys`): Alice and Bob, two plain users, and Ops, an
//! admin; each key is made here and known to the app only by its hash.

use mcp_platform::auth::{Role, key_sha256};
use mcp_platform::config::{ApiKeyEntry, AuthMode, Secret, Settings};

use super::app::TestApp;
use super::ws::WsClient;

pub const ALICE_KEY: &str = "alice-key-made-for-this-test";
pub const BOB_KEY: &str = "bob-key-made-for-this-test";
pub const OPS_KEY: &str = "ops-key-made-for-this-test";

/// Auth mode `api_keys` with the keys of alice, bob and ops.
pub fn api_keys(settings: &mut Settings) {
    settings.auth.mode = AuthMode::ApiKeys;
    let entry =
        |user: &str, role, key| ApiKeyEntry { user: user.to_owned(), role, key_sha256: Secret::new(key_sha256(key)) };
    settings.auth.api_keys = vec![
        entry("alice", Role::User, ALICE_KEY),
        entry("bob", Role::User, BOB_KEY),
        entry("ops", Role::Admin, OPS_KEY),
    ];
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A socket of the user whose key is `key`.
pub async fn connect_as(app: &TestApp, key: &str) -> WsClient {
    let (client, _) = WsClient::connect_with(app.addr, &[("authorization", &bearer(key))]).await.expect("admitted");
    client
}
