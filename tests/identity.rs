//! Identity over real sockets (SPEC §8): who may upgrade (credentials, `Origin`), what one user
//! can see of another's conversations and requests, and the admin endpoints. Every token is
//! made here, every API key in `support::users`.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_platform::config::AuthMode;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::LineEnding;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use support::users::{ALICE_KEY, BOB_KEY, OPS_KEY, api_keys, bearer, connect_as};
use support::*;

const ISSUER: &str = "https://id.example.com/";
const AUDIENCE: &str = "mcp-platform";

async fn api_keys_app() -> TestApp {
    TestApp::start(Options { configure: Box::new(api_keys), ..Options::default() }).await
}

async fn refused(app: &TestApp, headers: &[(&str, &str)]) -> Refusal {
    match WsClient::connect_with(app.addr, headers).await {
        Ok(_) => panic!("the upgrade with {headers:?} was admitted"),
        Err(refusal) => refusal,
    }
}

/// `GET`/`POST` of an `/api` path with an optional key: status and JSON body.
async fn api(app: &TestApp, method: reqwest::Method, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("http://{}{path}", app.addr));
    if let Some(key) = key {
        request = request.header("authorization", bearer(key));
    }
    let response = request.send().await.expect("HTTP request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// One RSA key for the test binary: generating it is the slow part.
fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signed(claims: &Value) -> String {
    let der = rsa_key().to_pkcs1_der().expect("encode the key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).expect("sign")
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600})
}

/// An app in mode `jwt` with the test's RSA key in its JWKS file (in the returned folder).
async fn jwt_app(script: Option<Value>) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = rsa_key();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                                "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}]});
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("write the JWKS file");
    let app = TestApp::start(Options {
        script,
        configure: Box::new(move |settings| {
            settings.auth.mode = AuthMode::Jwt;
            settings.auth.jwt.jwks_path = path;
            settings.auth.jwt.issuer = ISSUER.to_owned();
            settings.auth.jwt.audience = AUDIENCE.to_owned();
        }),
        ..Options::default()
    })
    .await;
    (app, dir)
}

fn assert_unauthorized(refusal: &Refusal, says: &str) {
    assert_eq!(refusal.status, 401, "{refusal:?}");
    assert_eq!(refusal.www_authenticate.as_deref(), Some("Bearer"), "{refusal:?}");
    assert!(refusal.body.contains(says), "{says:?} not in {refusal:?}");
}

#[tokio::test]
async fn api_keys_admit_by_header_or_subprotocol_and_refuse_anything_else_before_the_upgrade() {
    let app = api_keys_app().await;
    assert_unauthorized(&refused(&app, &[]).await, "missing bearer credential");
    assert_unauthorized(&refused(&app, &[("authorization", "Bearer not-a-key")]).await, "unknown API key");
    let wrong_protocol = "mcp-platform.v1, bearer.not-a-key";
    assert_unauthorized(&refused(&app, &[("sec-websocket-protocol", wrong_protocol)]).await, "unknown API key");
    assert_eq!(api(&app, reqwest::Method::GET, "/api/tools", None).await.0, 401);
    assert_eq!(api(&app, reqwest::Method::GET, "/api/tools", Some("not-a-key")).await.0, 401);

    let offer = format!("mcp-platform.v1, bearer.{ALICE_KEY}");
    let (mut browser, selected) =
        WsClient::connect_with(app.addr, &[("sec-websocket-protocol", &offer)]).await.expect("admitted");
    assert_eq!(selected.as_deref(), Some("mcp-platform.v1"), "the credential is never echoed");
    let answer = browser.chat("b-1", json!({"text": "what is 2+3"})).await;
    assert_eq!(answer.last().expect("terminal")["status"], "complete");
    let (status, me) = api(&app, reqwest::Method::GET, "/api/me", Some(ALICE_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!((me["user"].as_str(), me["role"].as_str()), (Some("alice"), Some("user")), "{me}");
    assert_eq!(me["limits"]["chats_per_minute"], 30, "{me}");
    assert_eq!(me["limits"]["connections_open"], 1, "{me}");
    app.shutdown().await;
}

#[tokio::test]
async fn every_refused_jwt_is_a_401_without_an_upgrade() {
    let (app, _jwks) = jwt_app(None).await;
    let other_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("another key");
    let other_der = other_key.to_pkcs1_der().expect("der");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".to_owned());
    let wrong_key =
        jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_rsa_der(other_der.as_bytes())).unwrap();
    let alg_none =
        format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims("alice").to_string().as_bytes()));
    let public_pem = rsa_key().to_public_key().to_pkcs1_pem(LineEnding::LF).expect("pem");
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    let with = |change: Value| {
        let mut claims = claims("alice");
        claims.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        signed(&claims)
    };
    let cases = [
        (wrong_key, "signature is invalid"),
        (with(json!({"exp": now() - 120})), "token expired"),
        (with(json!({"nbf": now() + 120})), "not yet valid"),
        (with(json!({"iss": "https://elsewhere.example/"})), "wrong issuer"),
        (with(json!({"aud": "another-service"})), "wrong audience"),
        (alg_none, "malformed token"),
        (confused, "HS256 is not accepted"),
    ];
    for (token, says) in &cases {
        assert_unauthorized(&refused(&app, &[("authorization", &bearer(token))]).await, says);
    }

    let token = bearer(&signed(&claims("alice")));
    let (mut client, _) = WsClient::connect_with(app.addr, &[("authorization", &token)]).await.expect("ok");
    let answer = client.chat("j-1", json!({"text": "what is 2+3"})).await;
    assert_eq!(answer.last().expect("terminal")["status"], "complete");
    assert!(app.events().iter().all(|event| event["user"] == "alice"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_socket_whose_jwt_expires_is_closed_with_1008_and_its_request_goes_on() {
    let words = "one two three four five six seven eight";
    let (app, _jwks) = jwt_app(Some(json!([{"text": words, "delay_ms": 500}]))).await;
    // 28 s past `exp`: the 30 s leeway leaves it two more seconds.
    let token = signed(&json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 28}));
    let (mut client, _) = WsClient::connect_with(app.addr, &[("authorization", &bearer(&token))]).await.expect("ok");
    client.send(json!({"action": "chat", "request_id": "long", "payload": {"text": "talk"}})).await;
    assert_eq!(client.recv().await["status"], "processing");
    let started = Instant::now();
    assert_eq!(client.recv_close().await, Some((1008, "credential expired".to_owned())));
    assert!(started.elapsed() < Duration::from_secs(10));

    let fresh = bearer(&signed(&claims("alice")));
    let (mut again, _) = WsClient::connect_with(app.addr, &[("authorization", &fresh)]).await.expect("ok");
    again.send(json!({"action": "resume", "request_id": "long", "after_seq": 0})).await;
    let rest = again.collect("long", &mut Vec::new()).await;
    assert_eq!(rest.last().expect("terminal")["status"], "complete", "the request went on: {rest:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_foreign_origin_is_forbidden_in_mode_none_and_the_own_and_listed_ones_are_admitted() {
    let app = TestApp::start(Options {
        configure: Box::new(|settings| settings.auth.allowed_origins = vec!["https://app.example.com".to_owned()]),
        ..Options::default()
    })
    .await;
    let evil = refused(&app, &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.status, 403, "{evil:?}");
    assert!(evil.body.contains("auth.allowed_origins"), "{evil:?}");
    let own = format!("http://{}", app.addr);
    for origin in [own.as_str(), "https://app.example.com"] {
        let (mut client, _) = WsClient::connect_with(app.addr, &[("origin", origin)]).await.expect("admitted");
        client.send(json!({"action": "ping", "request_id": "p"})).await;
        assert_eq!(client.recv().await["status"], "pong");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn bob_can_neither_see_nor_touch_alices_conversations_and_requests() {
    let script = json!([
        {"text": "for alice"},
        {"text": "alice's long answer goes on and on and on", "delay_ms": 300},
        {"text": "bob's first"},
        {"text": "for bob"}
    ]);
    let app =
        TestApp::start(Options { script: Some(script), configure: Box::new(api_keys), ..Options::default() }).await;
    let mut alice = connect_as(&app, ALICE_KEY).await;
    let mut bob = connect_as(&app, BOB_KEY).await;

    let first = alice.chat("shared-id", json!({"text": "hello"})).await;
    let conversation = first[0]["conversation_id"].as_str().expect("conversation").to_owned();
    alice.send(json!({"action": "chat", "request_id": "alice-long", "payload": {"text": "talk"}})).await;
    assert_eq!(alice.recv().await["status"], "processing");

    let taken = bob.chat("b-1", json!({"text": "let me in", "conversation_id": conversation})).await;
    assert_eq!(taken[0]["error"]["code"], 404, "{taken:?}");
    let fresh = bob.chat("b-2", json!({"text": "mine", "conversation_id": "bob-own"})).await;
    assert_eq!(fresh.last().unwrap()["status"], "complete");

    for action in [
        json!({"action": "resume", "request_id": "alice-long", "after_seq": 0}),
        json!({"action": "cancel", "request_id": "alice-long"}),
    ] {
        bob.send(action.clone()).await;
        let theirs = bob.recv().await;
        let mut unknown_action = action.clone();
        unknown_action["request_id"] = json!("never-sent");
        bob.send(unknown_action).await;
        let unknown = bob.recv().await;
        assert_eq!(theirs["error"]["code"], 404, "{theirs}");
        let words = |message: &Value| message["error"]["message"].as_str().unwrap().replace("alice-long", "never-sent");
        assert_eq!(words(&theirs), words(&unknown), "indistinguishable from a missing one");
    }
    let long = alice.collect("alice-long", &mut Vec::new()).await;
    assert_eq!(long.last().unwrap()["status"], "complete", "bob's cancel did not reach alice's request");

    let own = bob.chat("shared-id", json!({"text": "hello"})).await;
    assert_eq!(own[0]["replayed"], Value::Null, "bob's shared-id is his own request: {own:?}");
    assert_eq!(text_of(&own), "for bob");

    let (status, hers) =
        api(&app, reqwest::Method::GET, &format!("/api/conversations/{conversation}"), Some(BOB_KEY)).await;
    let (missing_status, missing) = api(&app, reqwest::Method::GET, "/api/conversations/nothing", Some(BOB_KEY)).await;
    assert_eq!((status, missing_status), (404, 404));
    assert_eq!(hers["error"].as_str().unwrap().replace(&conversation, "nothing"), missing["error"].as_str().unwrap());
    let (_, listed) = api(&app, reqwest::Method::GET, "/api/conversations", Some(BOB_KEY)).await;
    let ids: Vec<&str> =
        listed["conversations"].as_array().unwrap().iter().filter_map(|c| c["conversation_id"].as_str()).collect();
    assert!(ids.contains(&"bob-own") && !ids.contains(&conversation.as_str()), "{listed}");
    assert_eq!(
        api(&app, reqwest::Method::GET, &format!("/api/conversations/{conversation}"), Some(ALICE_KEY)).await.0,
        200
    );
    assert_eq!(
        api(&app, reqwest::Method::GET, &format!("/api/conversations/{conversation}"), Some(OPS_KEY)).await.0,
        200
    );

    let events = app.events();
    let users = |request: &str| {
        events
            .iter()
            .filter(|event| event["request_id"] == request)
            .map(|event| event["user"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(users("alice-long").iter().all(|user| user == "alice"));
    let shared = users("shared-id");
    assert_eq!(
        (shared.iter().filter(|u| *u == "alice").count(), shared.iter().filter(|u| *u == "bob").count()),
        (2, 2)
    );
    assert_verifies(&app.store_path);
    app.shutdown().await;
}

#[tokio::test]
async fn only_admins_use_the_admin_endpoints_and_each_action_is_logged() {
    let app = api_keys_app().await;
    assert_eq!(api(&app, reqwest::Method::GET, "/api/servers", Some(ALICE_KEY)).await.0, 403);
    assert_eq!(api(&app, reqwest::Method::POST, "/api/servers/demo/restart", Some(ALICE_KEY)).await.0, 403);
    assert_eq!(api(&app, reqwest::Method::POST, "/api/servers/demo/breaker/reset", Some(ALICE_KEY)).await.0, 403);
    assert_eq!(api(&app, reqwest::Method::POST, "/api/servers/nope/restart", Some(OPS_KEY)).await.0, 404);

    let restarts =
        || async { api(&app, reqwest::Method::GET, "/api/servers", Some(OPS_KEY)).await.1["servers"][0].clone() };
    let before = restarts().await;
    assert_eq!(before["state"], "connected", "{before}");
    assert_eq!(api(&app, reqwest::Method::POST, "/api/servers/demo/restart", Some(OPS_KEY)).await.0, 200);
    assert_eq!(api(&app, reqwest::Method::POST, "/api/servers/demo/breaker/reset", Some(OPS_KEY)).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let server = restarts().await;
        if server["restarts"].as_u64() > before["restarts"].as_u64() && server["state"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "the server restarted and reconnected: {server}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let meta: Vec<Value> = app.events().into_iter().filter(|event| event["type"] == "meta").collect();
    assert_eq!(meta.len(), 2, "{meta:?}");
    assert!(meta.iter().all(|event| event["user"] == "ops" && event["extra"]["server"] == "demo"), "{meta:?}");
    assert_eq!(
        (meta[0]["extra"]["action"].as_str(), meta[1]["extra"]["action"].as_str()),
        (Some("restart"), Some("breaker_reset"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_unusable_jwks_file_stops_the_app_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = support::settings("http://127.0.0.1:9/v1", dir.path().join("events.jsonl"));
    settings.auth.mode = AuthMode::Jwt;
    settings.auth.jwt.jwks_path = dir.path().join("not-there.json");
    let servers = mcp_platform::config::ServersConfig::default();
    let error = mcp_platform::app::App::build(settings.clone(), &servers).await.err().expect("refused");
    assert!(
        error.to_string().contains("auth.jwt.jwks_path: cannot read") && error.to_string().contains("not-there.json"),
        "{error}"
    );

    std::fs::write(dir.path().join("not-there.json"), "{\"keys\": 5}").expect("write");
    let error = mcp_platform::app::App::build(settings, &servers).await.err().expect("refused");
    assert!(error.to_string().contains("is not a JWKS file"), "{error}");
}
