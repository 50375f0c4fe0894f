//! Mode `jwt`: a bearer JWT, checked for its signature against the public keys of a JWKS file
//! or an HS256 secret, for `exp` / `nbf` and, when configured, `iss` and `aud` (SPEC §8).
//!
//! Which algorithm a token may use comes from the key that checks it, never from the token's
//! header: the header only picks among the server's keys. So `alg: none` and algorithm
//! confusion (an HS256 token "signed" with an RSA public key as the HMAC secret) find no key.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, AuthSetupError, Authenticated, Principal, Role};
use crate::config::JwtSettings;

/// Clock skew tolerated on `exp` and `nbf` (SPEC §8).
const LEEWAY: Duration = Duration::from_secs(30);

/// The value of `admin_claim` that makes an admin.
const ADMIN: &str = "admin";

pub(super) struct JwtVerifier {
    keys: Vec<VerifyingKey>,
    user_claim: String,
    admin_claim: String,
}

/// One key and the single algorithm it accepts.
struct VerifyingKey {
    /// Tokens naming another `kid` are not tried with this key; `None` matches any token.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub(super) fn new(settings: &JwtSettings) -> Result<Self, AuthSetupError> {
        let keys = if !settings.jwks_path.as_os_str().is_empty() {
            read_jwks(&settings.jwks_path)?
                .into_iter()
                .map(|(kid, algorithm, key)| VerifyingKey::new(kid, algorithm, key, settings))
                .collect()
        } else if !settings.hs256_secret.is_empty() {
            let key = DecodingKey::from_secret(settings.hs256_secret.expose().as_bytes());
            vec![VerifyingKey::new(None, Algorithm::HS256, key, settings)]
        } else {
            return Err(AuthSetupError(
                "auth.jwt: auth.mode \"jwt\" needs jwks_path or hs256_secret to check token signatures".to_owned(),
            ));
        };
        Ok(JwtVerifier { keys, user_claim: settings.user_claim.clone(), admin_claim: settings.admin_claim.clone() })
    }

    pub(super) fn authenticate(&self, token: &str, now: SystemTime) -> Result<Authenticated, AuthError> {
        let claims = self.verified_claims(token)?;
        let expires_at = check_times(&claims, now)?;
        let user = match claims.get(&self.user_claim) {
            None => return Err(AuthError::MissingClaim(self.user_claim.clone())),
            Some(Value::String(user)) if !user.is_empty() => user.clone(),
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: self.user_claim.clone(),
                    problem: "is not a non-empty string",
                });
            }
        };
        let is_admin = |value: &Value| value.as_str() == Some(ADMIN);
        let admin = match claims.get(&self.admin_claim) {
            Some(Value::Array(values)) => values.iter().any(is_admin),
            Some(value) => is_admin(value),
            None => false,
        };
        let role = if admin { Role::Admin } else { Role::User };
        Ok(Authenticated { principal: Principal { user, role }, expires_at: Some(expires_at) })
    }

    /// The claims of a token whose signature one of the keys accepts, with `iss` and `aud`
    /// checked.
    fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        let named: Vec<&VerifyingKey> =
            self.keys.iter().filter(|key| key.kid.is_none() || header.kid.is_none() || key.kid == header.kid).collect();
        if named.is_empty() {
            return Err(AuthError::UnknownKeyId);
        }
        let candidates = named.iter().filter(|key| key.algorithm == header.alg);
        let mut outcome =
            Err(AuthError::AlgorithmNotAllowed { token: format!("{:?}", header.alg), allowed: algorithm_list(&named) });
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
                Ok(data) => return Ok(data.claims),
                // Several keys may share an algorithm (a rotation): the next one may fit.
                Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {
                    outcome = Err(AuthError::BadSignature);
                }
                Err(error) => return Err(refusal(error.kind())),
            }
        }
        outcome
    }
}

impl VerifyingKey {
    fn new(kid: Option<String>, algorithm: Algorithm, key: DecodingKey, settings: &JwtSettings) -> Self {
        let mut validation = Validation::new(algorithm);
        // `exp` and `nbf` are checked against the caller's clock in `check_times`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = HashSet::new();
        if !settings.issuer.is_empty() {
            validation.set_issuer(&[&settings.issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&settings.audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        VerifyingKey { kid, algorithm, key, validation }
    }
}

fn algorithm_list(keys: &[&VerifyingKey]) -> String {
    let mut names: Vec<String> = keys.iter().map(|key| format!("{:?}", key.algorithm)).collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// What a refusal by `jsonwebtoken` after the signature check (or of a token it cannot parse)
/// means to the caller.
fn refusal(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_) => AuthError::MalformedToken,
        _ => AuthError::BadSignature,
    }
}

/// Checks `exp` (required: a socket closes when its token expires) and `nbf` at `now`, with
/// [`LEEWAY`]; returns when the token stops being accepted.
fn check_times(claims: &Map<String, Value>, now: SystemTime) -> Result<SystemTime, AuthError> {
    let expiry = time_claim(claims, "exp")?.ok_or_else(|| AuthError::MissingClaim("exp".to_owned()))?;
    let accepted_until = expiry
        .checked_add(LEEWAY)
        .and_then(|since_epoch| UNIX_EPOCH.checked_add(since_epoch))
        .ok_or_else(|| not_a_time("exp"))?;
    if now > accepted_until {
        return Err(AuthError::Expired);
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if let Some(not_before) = time_claim(claims, "nbf")?
        && since_epoch + LEEWAY < not_before
    {
        return Err(AuthError::NotYetValid);
    }
    Ok(accepted_until)
}

/// A NumericDate claim (seconds since the epoch, possibly fractional), if present.
fn time_claim(claims: &Map<String, Value>, claim: &str) -> Result<Option<Duration>, AuthError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let seconds = value.as_f64().ok_or_else(|| not_a_time(claim))?;
    Duration::try_from_secs_f64(seconds).map(Some).map_err(|_| not_a_time(claim))
}

fn not_a_time(claim: &str) -> AuthError {
    AuthError::InvalidClaim { claim: claim.to_owned(), problem: "is not a time in seconds since 1970" }
}

/// The signing keys of a JWKS file, each with the one algorithm it accepts.
fn read_jwks(path: &Path) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, AuthSetupError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|error| AuthSetupError(format!("auth.jwt.jwks_path: cannot read {shown}: {error}")))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|error| {
        AuthSetupError(format!("auth.jwt.jwks_path: {shown} is not a JWKS file ({{\"keys\": [...]}}): {error}"))
    })?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let problem = |problem: String| {
            let kid = jwk.common.key_id.as_ref().map(|kid| format!(" (kid \"{kid}\")")).unwrap_or_default();
            AuthSetupError(format!("auth.jwt.jwks_path: {shown}: key {index}{kid} {problem}"))
        };
        let algorithm = signing_algorithm(jwk).map_err(problem)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|error| problem(format!("cannot be read: {error}")))?;
        // The Ed25519 verifier slices the first 32 bytes without checking the length.
        if algorithm == Algorithm::EdDSA && key.try_get_as_bytes().map_or(true, |bytes| bytes.len() != 32) {
            return Err(problem("is not an Ed25519 public key of 32 bytes".to_owned()));
        }
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    if keys.is_empty() {
        return Err(AuthSetupError(format!("auth.jwt.jwks_path: {shown} holds no signing keys")));
    }
    Ok(keys)
}

/// The algorithm a public key signs with: what its `alg` says, which must fit its type and
/// curve, or else the usual one for the type (RS256 for RSA).
fn signing_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(parameters) => match parameters.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref curve => return Err(format!("uses the curve {curve:?}; supported are P-256 and P-384")),
        },
        AlgorithmParameters::OctetKeyPair(parameters) => match parameters.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref curve => return Err(format!("uses the curve {curve:?}; supported is Ed25519")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("is a shared secret (kty \"oct\"); the JWKS file holds public keys, \
                        an HS256 secret belongs in auth.jwt.hs256_secret"
                .to_owned());
        }
        _ => return Err("has a key type other than RSA, EC and OKP".to_owned()),
    };
    let Some(named) = jwk.common.key_algorithm else {
        return Ok(implied);
    };
    let named = Algorithm::try_from(named).map_err(|_| format!("names alg {named:?}, which does not sign tokens"))?;
    // RSA keys sign with any RS or PS algorithm; a curve fixes its one algorithm.
    let fits = if implied == Algorithm::RS256 { named.family() == implied.family() } else { named == implied };
    if fits { Ok(named) } else { Err(format!("names alg {named:?}, which does not fit its key type and curve")) }
}

#[cfg(test)]
mod tests;
