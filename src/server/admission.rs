//! Who may open `/ws/chat` and call `/api` (SPEC §8): the `Origin` check against cross-site
//! WebSocket hijacking, and the caller's credential turned into a [`Principal`].
//!
//! Both run before any upgrade, so a refused browser or a bad credential never gets a socket.
//! Refusals say what is wrong in words and never repeat the credential.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::auth::{Authenticated, Principal, presented_credential};

/// A caller turned away before any upgrade or handler: the status, the reason in words, and
/// the header that says what to do (`WWW-Authenticate`, `Retry-After`).
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    message: String,
    hint: Option<(HeaderName, &'static str)>,
}

impl Refused {
    /// Over a connection limit: waiting helps once a socket closes; a minute is a polite first retry.
    pub fn too_many(message: String) -> Self {
        Refused { status: StatusCode::TOO_MANY_REQUESTS, message, hint: Some((header::RETRY_AFTER, "60")) }
    }

    fn forbidden(message: String) -> Self {
        Refused { status: StatusCode::FORBIDDEN, message, hint: None }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some((name, value)) = self.hint {
            response.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// An `Origin` that is neither the server's own nor listed in `auth.allowed_origins`: a web
/// page of another site trying to use the visitor's browser. No `Origin` (apps, scripts) passes.
pub fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), Refused> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
    let own = !host.is_empty()
        && ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme).is_some_and(|rest| rest.eq_ignore_ascii_case(host)));
    if own || allowed.iter().any(|listed| listed.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let message = format!(
        "origin {origin:?} may not open this socket: it is neither this server's own origin nor listed in \
         auth.allowed_origins"
    );
    Err(Refused::forbidden(message))
}

/// The principal of an upgrade: its credential from `Authorization: Bearer` or a
/// `bearer.<credential>` subprotocol offer.
pub fn authenticate_upgrade(state: &AppState, headers: &HeaderMap) -> Result<Authenticated, Refused> {
    let protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|value| value.to_str().ok());
    authenticate(state, presented_credential(authorization(headers), protocols))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok())
}

fn authenticate(state: &AppState, credential: Option<&str>) -> Result<Authenticated, Refused> {
    state.authenticator.authenticate(credential, SystemTime::now()).map_err(|error| {
        tracing::info!(reason = %error, "credential refused");
        Refused {
            status: StatusCode::UNAUTHORIZED,
            message: error.to_string(),
            hint: Some((header::WWW_AUTHENTICATE, "Bearer")),
        }
    })
}

/// The caller of an `/api` endpoint, from `Authorization: Bearer` (401 without a good one).
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let credential = presented_credential(authorization(&parts.headers), []);
        Ok(Caller(authenticate(state, credential)?.principal))
    }
}

/// The caller of an admin endpoint: an authenticated admin, else 403.
pub struct Admin(pub Principal);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        if !principal.is_admin() {
            let message = format!("user {:?} is not an admin; this endpoint is for admins only", principal.user);
            return Err(Refused::forbidden(message));
        }
        Ok(Admin(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_own_origin_a_listed_one_and_none_pass_others_are_forbidden() {
        let listed = vec!["https://app.example.com".to_owned()];
        assert!(check_origin(&headers(None, "127.0.0.1:8000"), &[]).is_ok());
        assert!(check_origin(&headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"), &[]).is_ok());
        assert!(check_origin(&headers(Some("https://chat.example.com"), "chat.example.com"), &[]).is_ok());
        assert!(check_origin(&headers(Some("https://app.example.com"), "chat.example.com"), &listed).is_ok());
        let refused = check_origin(&headers(Some("https://evil.example"), "127.0.0.1:8000"), &listed).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(check_origin(&headers(Some("http://127.0.0.1:9999"), "127.0.0.1:8000"), &[]).is_err());
        assert!(check_origin(&headers(Some("null"), "127.0.0.1:8000"), &[]).is_err());
    }
}
