//! The rules of `config.yaml` that tie keys to each other, beyond what each key's shape says:
//! which secrets the settings use, numbers that must stay in order, the active provider, and
//! the keys each authentication mode needs (SPEC §4, §8).

use serde_json::Value;

use super::schema::{Checker, KeyPath, closest, quoted_list};

/// Checks every rule on a tree whose shape has been checked; keys already reported are left
/// alone, so one mistake gives one message.
pub(super) fn check_settings(checker: &mut Checker, tree: &Value) {
    check_orderings(checker, tree);
    check_active_provider(checker, tree);
    check_auth(checker, tree);
    check_postgres_url(checker, tree);
}

/// Two numeric settings whose order matters: `lower` must stay below `upper`.
struct Ordering {
    lower: &'static str,
    upper: &'static str,
    /// Whether `lower` may equal `upper`.
    equal_allowed: bool,
}

const ORDERINGS: &[Ordering] = &[
    Ordering {
        lower: "chat.service.context.reserve_tokens",
        upper: "chat.service.context.max_tokens",
        equal_allowed: false,
    },
    Ordering {
        lower: "mcp.connection.initial_reconnect_delay",
        upper: "mcp.connection.max_reconnect_delay",
        equal_allowed: true,
    },
];

const ACTIVE_PROVIDER: &str = "llm.active";
const PROVIDERS: &str = "llm.providers";
const AUTH_MODE: &str = "auth.mode";
const API_KEYS: &str = "auth.api_keys";
const JWT: &str = "auth.jwt";
const WEBSOCKET_HOST: &str = "websocket.host";
const STORE_BACKEND: &str = "store.backend";
const POSTGRES: &str = "store.postgres";

/// A part of `config.yaml` whose secrets the server reads only with some settings (SPEC §4:
/// "for the settings in use"), so that its `env:` variables need not be set otherwise.
enum SecretsInUse {
    /// Of the map at `entries`, only the entry that the key `selector` names.
    EntryNamedBy { entries: &'static str, selector: &'static str },
    /// The subtree `scope`, only while the key `selector` holds `value`.
    When { scope: &'static str, selector: &'static str, value: &'static str },
}

const SECRETS_IN_USE: &[SecretsInUse] = &[
    SecretsInUse::EntryNamedBy { entries: PROVIDERS, selector: ACTIVE_PROVIDER },
    SecretsInUse::When { scope: API_KEYS, selector: AUTH_MODE, value: "api_keys" },
    SecretsInUse::When { scope: JWT, selector: AUTH_MODE, value: "jwt" },
    SecretsInUse::When { scope: POSTGRES, selector: STORE_BACKEND, value: "postgres" },
];

/// HS256 keys shorter than the hash (RFC 7518 §3.2) can be guessed offline from one token.
const HS256_MINIMUM_BYTES: usize = 32;

/// The subtrees of [`SECRETS_IN_USE`] that these settings leave unused.
pub(super) fn unused_secret_scopes(tree: &Value) -> Vec<KeyPath> {
    let text_at = |dotted: &str| KeyPath::parse_dotted(dotted).lookup(tree).and_then(Value::as_str);
    let mut unused = Vec::new();
    for rule in SECRETS_IN_USE {
        match rule {
            SecretsInUse::EntryNamedBy { entries, selector } => {
                let entries_path = KeyPath::parse_dotted(entries);
                let chosen = text_at(selector);
                if let Some(names) = entries_path.lookup(tree).and_then(Value::as_object) {
                    let others = names.keys().filter(|name| Some(name.as_str()) != chosen);
                    unused.extend(others.map(|name| entries_path.key(name)));
                }
            }
            SecretsInUse::When { scope, selector, value } => {
                if text_at(selector) != Some(value) {
                    unused.push(KeyPath::parse_dotted(scope));
                }
            }
        }
    }
    unused
}

fn check_orderings(checker: &mut Checker, tree: &Value) {
    for ordering in ORDERINGS {
        let lower = KeyPath::parse_dotted(ordering.lower);
        let upper = KeyPath::parse_dotted(ordering.upper);
        if checker.was_reported(&lower) || checker.was_reported(&upper) {
            continue;
        }
        let number = |path: &KeyPath| path.lookup(tree).and_then(Value::as_f64);
        let (Some(low), Some(high)) = (number(&lower), number(&upper)) else {
            continue;
        };
        let in_order = low < high || (ordering.equal_allowed && low == high);
        if !in_order {
            let relation = if ordering.equal_allowed { "at most" } else { "less than" };
            let (shown_low, shown_high) = (lower.lookup(tree), upper.lookup(tree));
            checker.report(
                &lower,
                format!(
                    "expected {relation} {upper} ({}), found {}",
                    shown_high.map(Value::to_string).unwrap_or_default(),
                    shown_low.map(Value::to_string).unwrap_or_default(),
                ),
            );
        }
    }
}

fn check_active_provider(checker: &mut Checker, tree: &Value) {
    let active_path = KeyPath::parse_dotted(ACTIVE_PROVIDER);
    if checker.was_reported(&active_path) {
        return;
    }
    let active = active_path.lookup(tree).and_then(Value::as_str);
    let providers = KeyPath::parse_dotted(PROVIDERS).lookup(tree).and_then(Value::as_object);
    let (Some(active), Some(providers)) = (active, providers) else {
        return;
    };
    if providers.contains_key(active) {
        return;
    }
    let names: Vec<&str> = providers.keys().map(String::as_str).collect();
    let suggestion =
        closest(active, names.iter().copied()).map(|name| format!("; did you mean \"{name}\"?")).unwrap_or_default();
    checker.report(
        &active_path,
        format!(
            "expected the name of a provider under {PROVIDERS} ({}), found \"{active}\"{suggestion}",
            quoted_list(&names)
        ),
    );
}

/// The `postgres` backend needs its database; the URL is a secret (it holds the password),
/// so it is described, never shown.
fn check_postgres_url(checker: &mut Checker, tree: &Value) {
    if KeyPath::parse_dotted(STORE_BACKEND).lookup(tree).and_then(Value::as_str) != Some("postgres") {
        return;
    }
    let url_path = KeyPath::parse_dotted(POSTGRES).key("url");
    let Some(url) = text_at_unreported(checker, tree, &url_path) else {
        return;
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        checker.report(
            &url_path,
            format!(
                "store.backend \"postgres\" needs a URL postgres://user:pass@host:5432/db \
                 (\"env:DATABASE_URL\"), found {} characters not starting with postgres://",
                url.len()
            ),
        );
    }
}

/// The rules of SPEC §8 that tie `auth` keys to each other and to `websocket.host`. Secrets
/// are described by their length at most, never shown.
fn check_auth(checker: &mut Checker, tree: &Value) {
    let mode_path = KeyPath::parse_dotted(AUTH_MODE);
    if checker.was_reported(&mode_path) {
        return;
    }
    let mode = mode_path.lookup(tree).and_then(Value::as_str);
    check_api_keys(checker, tree, mode == Some("api_keys"));
    match mode {
        Some("jwt") => check_jwt_key(checker, tree),
        Some("none") => check_anonymous_host(checker, tree, &mode_path),
        _ => {}
    }
}

/// In mode `api_keys`: at least one key, and each a distinct SHA-256. In other modes only the
/// hashes that are there (not left empty by an unset variable) are checked, so that a typo is
/// found before the mode is switched on.
fn check_api_keys(checker: &mut Checker, tree: &Value, in_use: bool) {
    let keys_path = KeyPath::parse_dotted(API_KEYS);
    if checker.was_reported(&keys_path) {
        return;
    }
    let Some(entries) = keys_path.lookup(tree).and_then(Value::as_array) else {
        return;
    };
    if in_use && entries.is_empty() {
        checker.report(
            &keys_path,
            "auth.mode \"api_keys\" needs at least one key; add entries \
             {user: \"alice\", role: \"user\", key_sha256: \"env:ALICE_KEY_SHA256\"} \
             (`mcp-platform key` makes a key and its hash)",
        );
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    for index in 0..entries.len() {
        let hash_path = keys_path.index(index).key("key_sha256");
        let Some(hash) = text_at_unreported(checker, tree, &hash_path) else {
            continue;
        };
        if hash.is_empty() && !in_use {
            continue;
        }
        let found = match hash.chars().count() {
            64 if hash.bytes().all(|byte| byte.is_ascii_hexdigit()) => None,
            64 => Some("64 characters, not all hexadecimal digits".to_owned()),
            length => Some(format!("{length} characters")),
        };
        if let Some(found) = found {
            checker.report(
                &hash_path,
                format!(
                    "expected the key's SHA-256 as 64 hexadecimal digits (as `mcp-platform key` \
                     prints it), found {found}"
                ),
            );
            continue;
        }
        let hash = hash.to_ascii_lowercase();
        match seen.iter().find(|(earlier, _)| *earlier == hash) {
            Some((_, earlier)) => checker.report(
                &hash_path,
                format!("the same key as {keys_path}[{earlier}]; each key must be distinct so that it names one user"),
            ),
            None => seen.push((hash, index)),
        }
    }
}

/// In mode `jwt`: exactly one way to check signatures, and an HMAC secret long enough.
fn check_jwt_key(checker: &mut Checker, tree: &Value) {
    let jwt_path = KeyPath::parse_dotted(JWT);
    let jwks_path = jwt_path.key("jwks_path");
    let secret_path = jwt_path.key("hs256_secret");
    let (Some(jwks), Some(secret)) =
        (text_at_unreported(checker, tree, &jwks_path), text_at_unreported(checker, tree, &secret_path))
    else {
        return;
    };
    match (jwks.is_empty(), secret.is_empty()) {
        (true, true) => checker.report(
            &jwt_path,
            "auth.mode \"jwt\" needs a key to check token signatures: set jwks_path (a JWKS file \
             of RS256, ES256 or EdDSA public keys) or hs256_secret (\"env:NAME\")",
        ),
        (false, false) => checker.report(
            &jwt_path,
            "set one of jwks_path and hs256_secret, not both: the key, not the token, decides \
             which algorithm is accepted",
        ),
        (true, false) if secret.len() < HS256_MINIMUM_BYTES => checker.report(
            &secret_path,
            format!(
                "expected a secret of at least {HS256_MINIMUM_BYTES} bytes (HS256 needs a key as long \
                 as its hash), found {} bytes",
                secret.len()
            ),
        ),
        _ => {}
    }
}

/// In mode `none` every caller is an admin named `anonymous`: fine on loopback, an open door
/// anywhere else unless a proxy in front authenticates, which the operator must say.
fn check_anonymous_host(checker: &mut Checker, tree: &Value, mode_path: &KeyPath) {
    let remote_allowed = KeyPath::parse_dotted("auth.allow_anonymous_remote");
    let host_path = KeyPath::parse_dotted(WEBSOCKET_HOST);
    if remote_allowed.lookup(tree).and_then(Value::as_bool) != Some(false) {
        return;
    }
    let Some(host) = text_at_unreported(checker, tree, &host_path) else {
        return;
    };
    if is_loopback_host(host) {
        return;
    }
    checker.report(
        mode_path,
        format!(
            "\"none\" lets anyone who reaches {WEBSOCKET_HOST} \"{host}\" chat on your LLM budget \
             and use the admin endpoints; turn authentication on (auth.mode \"api_keys\" or \"jwt\"), \
             bind to a loopback host such as \"127.0.0.1\", or, if a proxy in front authenticates \
             every caller, set auth.allow_anonymous_remote: true"
        ),
    );
}

fn is_loopback_host(host: &str) -> bool {
    let unbracketed = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || unbracketed.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The string at `path`, unless it is missing, not a string, or already reported.
fn text_at_unreported<'t>(checker: &Checker, tree: &'t Value, path: &KeyPath) -> Option<&'t str> {
    if checker.was_reported(path) {
        return None;
    }
    path.lookup(tree).and_then(Value::as_str)
}
