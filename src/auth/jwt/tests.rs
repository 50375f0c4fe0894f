//! Every way a token is accepted or refused, with keys made here: RSA by the `rsa` crate,
//! P-256 and Ed25519 by `ring`, written into a JWKS file as an identity provider publishes it.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::json;

use super::*;
use crate::auth::Authenticator;
use crate::auth::tests::settings;
use crate::config::{AuthMode, Secret};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "mcp-platform";
const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key to sign test tokens with, and its public half as a JWK.
struct TestKey {
    algorithm: Algorithm,
    signing: EncodingKey,
    jwk: Value,
}

/// One RSA key for the whole test binary: generating it is the slow part.
fn rsa_private_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key"))
}

fn rsa_key(kid: &str) -> TestKey {
    let private = rsa_private_key();
    let der = private.to_pkcs1_der().expect("encode the RSA key");
    TestKey {
        algorithm: Algorithm::RS256,
        signing: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                    "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be())}),
    }
}

fn es256_key(kid: &str) -> TestKey {
    let random = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).expect("generate P-256");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random).unwrap();
    // An uncompressed point: 0x04, then x and y of 32 bytes each.
    let point = pair.public_key().as_ref();
    TestKey {
        algorithm: Algorithm::ES256,
        signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
    }
}

fn ed25519_key(kid: &str) -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate Ed25519");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    TestKey {
        algorithm: Algorithm::EdDSA,
        signing: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}),
    }
}

impl TestKey {
    fn sign(&self, claims: &Value) -> String {
        let kid = self.jwk["kid"].as_str().map(str::to_owned);
        let header = Header { kid, ..Header::new(self.algorithm) };
        jsonwebtoken::encode(&header, claims, &self.signing).expect("sign a test token")
    }
}

/// Claims that pass every check of [`jwks_settings`] at [`NOW`].
fn claims(user: &str) -> Value {
    json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 600, "nbf": NOW - 5, "iat": NOW - 5})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// JWT settings reading `keys` from a JWKS file in `dir`, with issuer and audience required.
fn jwks_settings(dir: &tempfile::TempDir, keys: &[&TestKey]) -> JwtSettings {
    let path = dir.path().join("jwks.json");
    let set = json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(&path, set.to_string()).unwrap();
    JwtSettings {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_path: path,
        ..settings(AuthMode::Jwt).jwt
    }
}

fn verifier(settings: &JwtSettings) -> JwtVerifier {
    JwtVerifier::new(settings).unwrap_or_else(|error| panic!("{error}"))
}

/// Refuses `token` and checks that the message holds no part of it.
fn refused(verifier: &JwtVerifier, token: &str) -> AuthError {
    let error = verifier.authenticate(token, at(NOW)).expect_err("the token should be refused");
    let message = error.to_string();
    for part in token.split('.').filter(|part| part.len() > 3) {
        assert!(!message.contains(part), "{message:?} shows part of the token");
    }
    error
}

#[test]
fn tokens_signed_by_any_key_of_the_jwks_file_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (rsa_key("rsa-1"), es256_key("ec-1"), ed25519_key("ed-1"));
    let verifier = verifier(&jwks_settings(&dir, &[&rsa, &ec, &ed]));

    for (key, user) in [(&rsa, "alice"), (&ec, "bob"), (&ed, "carol")] {
        let authenticated = verifier.authenticate(&key.sign(&claims(user)), at(NOW)).unwrap();
        assert_eq!(authenticated.principal, Principal { user: user.to_owned(), role: Role::User });
        assert_eq!(authenticated.expires_at, Some(at(NOW + 600 + 30)), "exp plus the leeway");
    }
}

#[test]
fn the_admin_claim_makes_an_admin_as_a_string_or_in_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let verifier = verifier(&jwks_settings(&dir, &[&key]));
    let role = |roles: Value| verifier.authenticate(&key.sign(&with(claims("a"), "roles", roles)), at(NOW)).unwrap();

    assert_eq!(role(json!("admin")).principal.role, Role::Admin);
    assert_eq!(role(json!(["user", "admin"])).principal.role, Role::Admin);
    assert_eq!(role(json!("superadmin")).principal.role, Role::User, "a name containing admin is not admin");
    assert_eq!(role(json!(["user"])).principal.role, Role::User);
    assert_eq!(role(json!({"admin": true})).principal.role, Role::User);
}

#[test]
fn the_user_and_admin_claims_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let settings = JwtSettings {
        user_claim: "email".to_owned(),
        admin_claim: "groups".to_owned(),
        ..jwks_settings(&dir, &[&key])
    };
    let verifier = verifier(&settings);

    let token =
        key.sign(&with(with(claims("ignored"), "email", json!("dana@example.com")), "groups", json!(["admin"])));
    let principal = verifier.authenticate(&token, at(NOW)).unwrap().principal;
    assert_eq!(principal, Principal { user: "dana@example.com".to_owned(), role: Role::Admin });

    let error = refused(&verifier, &key.sign(&claims("no-email")));
    assert_eq!(error.to_string(), "token has no \"email\" claim");
    for bad in [json!(""), json!(42), json!(["dana"])] {
        let error = refused(&verifier, &key.sign(&with(claims("x"), "email", bad)));
        assert_eq!(error.to_string(), "token claim \"email\" is not a non-empty string");
    }
}

#[test]
fn exp_and_nbf_are_checked_with_thirty_seconds_of_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let verifier = verifier(&jwks_settings(&dir, &[&key]));
    let accepts = |claims: Value| verifier.authenticate(&key.sign(&claims), at(NOW)).is_ok();

    assert!(accepts(with(claims("a"), "exp", json!(NOW - 29))));
    assert!(accepts(with(claims("a"), "nbf", json!(NOW + 29))));
    assert!(accepts(without(claims("a"), "nbf")));
    assert!(accepts(with(claims("a"), "exp", json!(NOW as f64 + 0.5))), "NumericDate may be fractional");

    let error = refused(&verifier, &key.sign(&with(claims("a"), "exp", json!(NOW - 31))));
    assert_eq!((error.clone(), error.to_string()), (AuthError::Expired, "token expired".to_owned()));
    let error = refused(&verifier, &key.sign(&with(claims("a"), "nbf", json!(NOW + 31))));
    assert_eq!(error.to_string(), "token not yet valid (nbf is in the future)");
    let error = refused(&verifier, &key.sign(&without(claims("a"), "exp")));
    assert_eq!(error.to_string(), "token has no \"exp\" claim");
    for bad in [json!("tomorrow"), json!(-1), json!(1e300)] {
        let error = refused(&verifier, &key.sign(&with(claims("a"), "exp", bad)));
        assert_eq!(error.to_string(), "token claim \"exp\" is not a time in seconds since 1970");
    }
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let verifier = verifier(&jwks_settings(&dir, &[&key]));

    let error = refused(&verifier, &key.sign(&with(claims("a"), "iss", json!("https://evil.example"))));
    assert_eq!((error.clone(), error.to_string()), (AuthError::WrongIssuer, "wrong issuer".to_owned()));
    let error = refused(&verifier, &key.sign(&with(claims("a"), "aud", json!("another-app"))));
    assert_eq!((error.clone(), error.to_string()), (AuthError::WrongAudience, "wrong audience".to_owned()));
    assert_eq!(refused(&verifier, &key.sign(&without(claims("a"), "iss"))).to_string(), "token has no \"iss\" claim");
    assert_eq!(refused(&verifier, &key.sign(&without(claims("a"), "aud"))).to_string(), "token has no \"aud\" claim");
    let several_audiences = with(claims("a"), "aud", json!(["other", AUDIENCE]));
    assert!(verifier.authenticate(&key.sign(&several_audiences), at(NOW)).is_ok());

    let unchecked = verifier_without_issuer_and_audience(&dir, &key);
    let anything = with(with(claims("a"), "iss", json!("whoever")), "aud", json!("whatever"));
    assert!(unchecked.authenticate(&key.sign(&anything), at(NOW)).is_ok());
    assert!(unchecked.authenticate(&key.sign(&without(without(claims("a"), "iss"), "aud")), at(NOW)).is_ok());
}

fn verifier_without_issuer_and_audience(dir: &tempfile::TempDir, key: &TestKey) -> JwtVerifier {
    verifier(&JwtSettings { issuer: String::new(), audience: String::new(), ..jwks_settings(dir, &[key]) })
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, impostor) = (ed25519_key("ed-1"), ed25519_key("ed-1"));
    let verifier = verifier(&jwks_settings(&dir, &[&trusted]));

    let error = refused(&verifier, &impostor.sign(&claims("mallory")));
    assert_eq!((error.clone(), error.to_string()), (AuthError::BadSignature, "token signature is invalid".to_owned()));

    // A valid token with its claims swapped keeps the signature of the old ones.
    let token = trusted.sign(&claims("alice"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(claims("root").to_string().as_bytes()), parts[2]);
    assert_eq!(refused(&verifier, &forged), AuthError::BadSignature);
}

#[test]
fn a_key_id_picks_the_key_and_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ed25519_key("2025"), ed25519_key("2026"));
    let verifier = verifier(&jwks_settings(&dir, &[&old, &new]));
    assert!(verifier.authenticate(&old.sign(&claims("a")), at(NOW)).is_ok());
    assert!(verifier.authenticate(&new.sign(&claims("a")), at(NOW)).is_ok());

    let stranger = ed25519_key("2027");
    let error = refused(&verifier, &stranger.sign(&claims("a")));
    assert_eq!(error.to_string(), "token key id (kid) is not among the server's keys");

    // Without a kid, each key of the token's algorithm is tried.
    let unnamed = TestKey { jwk: without(new.jwk.clone(), "kid"), ..new };
    assert!(verifier.authenticate(&unnamed.sign(&claims("a")), at(NOW)).is_ok());
}

#[test]
fn alg_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let verifier = verifier(&jwks_settings(&dir, &[&key]));
    let payload = b64(claims("root").to_string().as_bytes());

    for header in [json!({"alg": "none", "typ": "JWT"}), json!({"alg": "None", "kid": "ed-1"})] {
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{}.{payload}.{signature}", b64(header.to_string().as_bytes()));
            let error = refused(&verifier, &token);
            assert_eq!(error, AuthError::MalformedToken);
            assert_eq!(
                error.to_string(),
                "malformed token: not a JWT signed with a supported algorithm (alg \"none\" is never accepted)"
            );
        }
    }
    for garbage in ["", "abc", "a.b", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30"] {
        assert_eq!(refused(&verifier, garbage), AuthError::MalformedToken, "{garbage:?}");
    }
    // A well-formed EdDSA header: the signature is checked before anything else is believed.
    assert_eq!(refused(&verifier, "eyJhbGciOiJFZERTQSJ9.bm90IGpzb24.c2ln"), AuthError::BadSignature);
}

#[test]
fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa, ec, ed) = (rsa_key("rsa-1"), es256_key("ec-1"), ed25519_key("ed-1"));
    let verifier = verifier(&jwks_settings(&dir, &[&rsa, &ec, &ed]));
    let public = rsa_private_key().to_public_key();
    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    let pkcs1 = public.to_pkcs1_der().unwrap();

    for (secret, kid) in [
        (pem.as_bytes(), Some("rsa-1")),
        (pkcs1.as_bytes(), Some("rsa-1")),
        (&public.n().to_bytes_be()[..], None),
        (rsa.jwk.to_string().as_bytes(), None),
    ] {
        let header = Header { kid: kid.map(str::to_owned), ..Header::new(Algorithm::HS256) };
        let token = jsonwebtoken::encode(&header, &claims("root"), &EncodingKey::from_secret(secret)).unwrap();
        let error = refused(&verifier, &token);
        let allowed = if kid.is_some() { "RS256" } else { "ES256, EdDSA, RS256" };
        assert_eq!(error, AuthError::AlgorithmNotAllowed { token: "HS256".to_owned(), allowed: allowed.to_owned() });
        assert_eq!(
            error.to_string(),
            format!("token algorithm HS256 is not accepted: the server's keys sign with {allowed}")
        );
    }

    // Nor may a token name another key's algorithm for a key: RS256 under the EdDSA kid.
    let header = Header { kid: Some("ed-1".to_owned()), ..Header::new(Algorithm::RS256) };
    let token = jsonwebtoken::encode(&header, &claims("root"), &rsa.signing).unwrap();
    assert!(matches!(refused(&verifier, &token), AuthError::AlgorithmNotAllowed { .. }));
}

#[test]
fn an_hs256_secret_accepts_hs256_tokens_only() {
    let settings = JwtSettings { hs256_secret: Secret::new(HS256_SECRET), ..settings(AuthMode::Jwt).jwt };
    let verifier = verifier(&settings);
    let sign = |secret: &str, claims: &Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    };

    let authenticated = verifier.authenticate(&sign(HS256_SECRET, &claims("erin")), at(NOW)).unwrap();
    assert_eq!(authenticated.principal, Principal { user: "erin".to_owned(), role: Role::User });

    let error = refused(&verifier, &sign("another-secret-of-at-least-32-bytes!!", &claims("erin")));
    assert_eq!(error, AuthError::BadSignature);
    let error = refused(&verifier, &rsa_key("rsa-1").sign(&claims("erin")));
    assert_eq!(error.to_string(), "token algorithm RS256 is not accepted: the server's keys sign with HS256");
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims("erin"),
        &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )
    .unwrap();
    assert!(matches!(refused(&verifier, &hs512), AuthError::AlgorithmNotAllowed { .. }));
}

#[test]
fn the_authenticator_in_mode_jwt_uses_the_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_key("ed-1");
    let auth = crate::config::AuthSettings { jwt: jwks_settings(&dir, &[&key]), ..settings(AuthMode::Jwt) };
    let authenticator = Authenticator::new(&auth).unwrap();

    let token = key.sign(&claims("frank"));
    assert_eq!(authenticator.authenticate(Some(&token), at(NOW)).unwrap().principal.user, "frank");
    assert_eq!(authenticator.authenticate(None, at(NOW)), Err(AuthError::MissingCredential));
    assert_eq!(authenticator.authenticate(Some(&token), at(NOW + 700)), Err(AuthError::Expired));

    let neither = settings(AuthMode::Jwt);
    assert_eq!(
        Authenticator::new(&neither).err().unwrap().to_string(),
        "auth.jwt: auth.mode \"jwt\" needs jwks_path or hs256_secret to check token signatures"
    );
}

/// The message `JwtVerifier::new` gives for a JWKS file holding `text`, with its path as `JWKS`.
fn jwks_problem(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let settings = jwks_settings(&dir, &[]);
    std::fs::write(&settings.jwks_path, text).unwrap();
    let error = JwtVerifier::new(&settings).err().expect("the JWKS file should be refused");
    error.to_string().replace(&settings.jwks_path.display().to_string(), "JWKS")
}

#[test]
fn unusable_jwks_files_are_refused_with_the_reason() {
    let ed = ed25519_key("ed-1").jwk;
    let ec = es256_key("ec-1").jwk;
    let problem = |keys: Value| jwks_problem(&json!({ "keys": keys }).to_string());
    let prefix = "auth.jwt.jwks_path: JWKS";

    assert_eq!(problem(json!([])), format!("{prefix} holds no signing keys"));
    assert_eq!(problem(json!([with(ed.clone(), "use", json!("enc"))])), format!("{prefix} holds no signing keys"));
    assert_eq!(
        problem(json!([ed.clone(), {"kty": "oct", "k": "c2VjcmV0"}])),
        format!(
            "{prefix}: key 1 is a shared secret (kty \"oct\"); the JWKS file holds public keys, \
             an HS256 secret belongs in auth.jwt.hs256_secret"
        )
    );
    assert_eq!(
        problem(json!([with(ec.clone(), "crv", json!("P-521"))])),
        format!("{prefix}: key 0 (kid \"ec-1\") uses the curve P521; supported are P-256 and P-384")
    );
    assert_eq!(
        problem(json!([with(ec.clone(), "alg", json!("ES384"))])),
        format!("{prefix}: key 0 (kid \"ec-1\") names alg ES384, which does not fit its key type and curve")
    );
    assert_eq!(
        problem(json!([with(ed.clone(), "alg", json!("HS256"))])),
        format!("{prefix}: key 0 (kid \"ed-1\") names alg HS256, which does not fit its key type and curve")
    );
    assert_eq!(
        problem(json!([with(ed.clone(), "x", json!("c2hvcnQ"))])),
        format!("{prefix}: key 0 (kid \"ed-1\") is not an Ed25519 public key of 32 bytes")
    );
    assert!(jwks_problem("[1, 2]").starts_with(&format!("{prefix} is not a JWKS file ({{\"keys\": [...]}}): ")));

    let missing = JwtSettings { jwks_path: "/nonexistent/jwks.json".into(), ..settings(AuthMode::Jwt).jwt };
    assert_eq!(
        JwtVerifier::new(&missing).err().unwrap().to_string(),
        "auth.jwt.jwks_path: cannot read /nonexistent/jwks.json: No such file or directory (os error 2)"
    );
}
