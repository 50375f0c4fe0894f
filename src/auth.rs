//! Who is calling (SPEC §8): the [`Principal`] a socket or an HTTP request acts as, established
//! once from the credential it presents, by the [`Authenticator`] that `auth.mode` chooses.
//!
//! This module knows settings and cryptography only. The server finds the credential with
//! [`presented_credential`], calls [`Authenticator::authenticate`] before any upgrade, and hands
//! the principal on; nothing here logs, so a credential cannot reach a log line from here, and
//! no [`AuthError`] or [`AuthSetupError`] message contains one.

mod api_keys;
mod credential;
mod jwt;

use std::time::SystemTime;

use crate::config::{AuthMode, AuthSettings};

pub use crate::config::Role;
pub use api_keys::{NewApiKey, key_sha256, print_new_key};
pub use credential::{BEARER_PROTOCOL_PREFIX, presented_credential};

/// A user and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

impl Principal {
    /// The one name everyone has when auth is off (mode `none`); events written then carry it.
    pub const ANONYMOUS: &str = "anonymous";

    /// Everyone, when auth is off. An admin on purpose: with no identities there is nobody to
    /// keep out, and SPEC §3 makes the admin endpoints admin-only "when auth is on". That is
    /// safe only because mode `none` is refused on a non-loopback host unless
    /// `allow_anonymous_remote` says a proxy in front authenticates.
    pub fn anonymous() -> Self {
        Principal { user: Self::ANONYMOUS.to_owned(), role: Role::Admin }
    }

    /// Whether the admin endpoints, `/metrics` and every conversation are open to this caller.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The outcome of a successful [`Authenticator::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    /// When the credential stops being accepted (a JWT's `exp` plus the leeway): a socket
    /// opened with it is closed then with 1008. `None`: the credential does not expire.
    pub expires_at: Option<SystemTime>,
}

/// Why a credential was refused (HTTP 401). Messages say what is wrong and never contain the
/// credential or any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "missing bearer credential: send `Authorization: Bearer <credential>`, or from a browser \
         the subprotocol `bearer.<credential>` beside `mcp-platform.v1`"
    )]
    MissingCredential,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("malformed token: not a JWT signed with a supported algorithm (alg \"none\" is never accepted)")]
    MalformedToken,
    #[error("token algorithm {token} is not accepted: the server's keys sign with {allowed}")]
    AlgorithmNotAllowed { token: String, allowed: String },
    #[error("token key id (kid) is not among the server's keys")]
    UnknownKeyId,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf is in the future)")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("token has no \"{0}\" claim")]
    MissingClaim(String),
    #[error("token claim \"{claim}\" {problem}")]
    InvalidClaim { claim: String, problem: &'static str },
}

/// Settings an [`Authenticator`] cannot work with: an unreadable or unusable JWKS file, or
/// keys that [`crate::config::load_settings`] would have refused. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(String);

/// Checks credentials the way `auth.mode` says. Built once at start-up; cheap to share.
pub struct Authenticator {
    method: Method,
}

/// Shows the mode only: the keys are not for logs.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("mode", &self.mode()).finish_non_exhaustive()
    }
}

enum Method {
    Anonymous,
    ApiKeys(api_keys::ApiKeys),
    Jwt(Box<jwt::JwtVerifier>),
}

impl Authenticator {
    /// Reads what the mode needs (the JWKS file in mode `jwt`) and refuses what cannot work.
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        let method = match settings.mode {
            AuthMode::None => Method::Anonymous,
            AuthMode::ApiKeys => Method::ApiKeys(api_keys::ApiKeys::new(&settings.api_keys)?),
            AuthMode::Jwt => Method::Jwt(Box::new(jwt::JwtVerifier::new(&settings.jwt)?)),
        };
        Ok(Authenticator { method })
    }

    pub fn mode(&self) -> AuthMode {
        match self.method {
            Method::Anonymous => AuthMode::None,
            Method::ApiKeys(_) => AuthMode::ApiKeys,
            Method::Jwt(_) => AuthMode::Jwt,
        }
    }

    /// Who `credential` (from [`presented_credential`]) belongs to, checked at `now`. In mode
    /// `none` every caller is [`Principal::anonymous`], with or without a credential.
    pub fn authenticate(&self, credential: Option<&str>, now: SystemTime) -> Result<Authenticated, AuthError> {
        let credential = || credential.ok_or(AuthError::MissingCredential);
        match &self.method {
            Method::Anonymous => Ok(Authenticated { principal: Principal::anonymous(), expires_at: None }),
            Method::ApiKeys(keys) => {
                Ok(Authenticated { principal: keys.authenticate(credential()?)?, expires_at: None })
            }
            Method::Jwt(verifier) => verifier.authenticate(credential()?, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKeyEntry, JwtSettings, Secret};

    pub(super) fn settings(mode: AuthMode) -> AuthSettings {
        AuthSettings {
            mode,
            allow_anonymous_remote: false,
            allowed_origins: Vec::new(),
            api_keys: Vec::new(),
            jwt: JwtSettings {
                issuer: String::new(),
                audience: String::new(),
                jwks_path: Default::default(),
                hs256_secret: Secret::default(),
                user_claim: "sub".to_owned(),
                admin_claim: "roles".to_owned(),
            },
        }
    }

    #[test]
    fn with_auth_off_everyone_is_the_anonymous_admin() {
        let authenticator = Authenticator::new(&settings(AuthMode::None)).unwrap();
        assert_eq!(authenticator.mode(), AuthMode::None);

        for credential in [None, Some("anything")] {
            let authenticated = authenticator.authenticate(credential, SystemTime::now()).unwrap();
            assert_eq!(authenticated.principal, Principal { user: "anonymous".to_owned(), role: Role::Admin });
            assert!(authenticated.principal.is_admin());
            assert_eq!(authenticated.expires_at, None);
        }
    }

    #[test]
    fn with_auth_on_a_missing_credential_is_refused_and_says_how_to_send_one() {
        let mut api_keys = settings(AuthMode::ApiKeys);
        api_keys.api_keys =
            vec![ApiKeyEntry { user: "alice".to_owned(), role: Role::User, key_sha256: Secret::new(key_sha256("k")) }];
        let authenticator = Authenticator::new(&api_keys).unwrap();
        assert_eq!(authenticator.mode(), AuthMode::ApiKeys);

        assert_eq!(format!("{authenticator:?}"), "Authenticator { mode: ApiKeys, .. }");
        let error = authenticator.authenticate(None, SystemTime::now()).unwrap_err();
        assert_eq!(error, AuthError::MissingCredential);
        assert_eq!(
            error.to_string(),
            "missing bearer credential: send `Authorization: Bearer <credential>`, or from a browser \
             the subprotocol `bearer.<credential>` beside `mcp-platform.v1`"
        );
    }

    #[test]
    fn a_user_is_an_admin_only_with_the_admin_role() {
        assert!(!Principal { user: "bob".to_owned(), role: Role::User }.is_admin());
        assert!(Principal { user: "root".to_owned(), role: Role::Admin }.is_admin());
    }
}
