//! Mode `api_keys`: a key names a user when its SHA-256 is one of `auth.api_keys`; and
//! `mcp-platform key`, which makes a key and the hash to configure.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{AuthError, AuthSetupError, Principal};
use crate::config::ApiKeyEntry;

/// Bytes of OS randomness in a new key: 256 bits, beyond any guessing.
const KEY_BYTES: usize = 32;

pub(super) struct ApiKeys {
    known: Vec<KnownKey>,
}

struct KnownKey {
    sha256: [u8; 32],
    principal: Principal,
}

impl ApiKeys {
    /// Without entries every key is refused; `load_settings` does not let that happen.
    pub(super) fn new(entries: &[ApiKeyEntry]) -> Result<Self, AuthSetupError> {
        let known = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let mut sha256 = [0; 32];
                hex::decode_to_slice(entry.key_sha256.expose(), &mut sha256).map_err(|_| {
                    AuthSetupError(format!(
                        "auth.api_keys[{index}].key_sha256: expected the key's SHA-256 as 64 hexadecimal digits"
                    ))
                })?;
                Ok(KnownKey { sha256, principal: Principal { user: entry.user.clone(), role: entry.role } })
            })
            .collect::<Result<_, AuthSetupError>>()?;
        Ok(ApiKeys { known })
    }

    /// Compares the key's hash with every configured hash in constant time, and goes through
    /// all of them whatever matched, so the time taken tells nothing about which user (if any)
    /// a guess came close to.
    pub(super) fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (position, known) in self.known.iter().enumerate() {
            let matches = known.sha256.ct_eq(&presented);
            index.conditional_assign(&(position as u64), matches);
            found |= matches;
        }
        if bool::from(found) { Ok(self.known[index as usize].principal.clone()) } else { Err(AuthError::UnknownApiKey) }
    }
}

/// The lowercase hexadecimal SHA-256 of `key`: what `auth.api_keys[].key_sha256` holds.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh API key and the hash that configures it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// URL-safe base64 without padding, so it also fits a `bearer.<key>` subprotocol.
    pub key: String,
    pub key_sha256: String,
}

impl NewApiKey {
    /// Draws the key from the operating system's random source.
    pub fn generate() -> Result<Self, rand::rngs::SysError> {
        let mut bytes = [0; KEY_BYTES];
        rand::rngs::SysRng.try_fill_bytes(&mut bytes)?;
        let key = URL_SAFE_NO_PAD.encode(bytes);
        let key_sha256 = key_sha256(&key);
        Ok(NewApiKey { key, key_sha256 })
    }
}

/// Shows the hash only: the key is a credential.
impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey").field("key", &"***").field("key_sha256", &self.key_sha256).finish()
    }
}

/// `mcp-platform key` (SPEC §7): the key for its user, and the config line for the server.
pub fn print_new_key() -> anyhow::Result<std::process::ExitCode> {
    let new = NewApiKey::generate().map_err(|error| anyhow::anyhow!("cannot read the OS random source: {error}"))?;
    println!("key: {}", new.key);
    println!("key_sha256: \"{}\"", new.key_sha256);
    println!();
    println!("# Give the key to its user; it is not stored anywhere, only its hash is configured.");
    println!("# In config.yaml (auth.mode: \"api_keys\"), keep the hash out of the file with env:");
    println!("#   auth:");
    println!("#     api_keys:");
    println!("#       - {{user: \"alice\", role: \"user\", key_sha256: \"env:ALICE_KEY_SHA256\"}}");
    println!("# and start the server with ALICE_KEY_SHA256={} in its environment.", new.key_sha256);
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Secret};

    fn entry(user: &str, role: Role, key: &str) -> ApiKeyEntry {
        ApiKeyEntry { user: user.to_owned(), role, key_sha256: Secret::new(key_sha256(key)) }
    }

    #[test]
    fn a_configured_key_names_its_user_and_role() {
        let keys = ApiKeys::new(&[
            entry("alice", Role::User, "alice-key"),
            entry("root", Role::Admin, "root-key"),
            entry("alice", Role::User, "alice-second-key"),
        ])
        .unwrap();

        assert_eq!(keys.authenticate("alice-key"), Ok(Principal { user: "alice".to_owned(), role: Role::User }));
        assert_eq!(keys.authenticate("root-key"), Ok(Principal { user: "root".to_owned(), role: Role::Admin }));
        assert_eq!(keys.authenticate("alice-second-key").unwrap().user, "alice");
    }

    #[test]
    fn an_unknown_key_is_refused_without_showing_it() {
        let keys = ApiKeys::new(&[entry("alice", Role::User, "alice-key")]).unwrap();

        for wrong in ["alice-key ", "ALICE-KEY", "", "bob-secret-4711", &key_sha256("alice-key")] {
            let error = keys.authenticate(wrong).unwrap_err();
            assert_eq!(error, AuthError::UnknownApiKey);
            assert_eq!(error.to_string(), "unknown API key");
        }
    }

    #[test]
    fn hashes_in_upper_case_work_too() {
        let upper = ApiKeyEntry {
            user: "carol".to_owned(),
            role: Role::User,
            key_sha256: Secret::new(key_sha256("carol-key").to_uppercase()),
        };
        assert_eq!(ApiKeys::new(&[upper]).unwrap().authenticate("carol-key").unwrap().user, "carol");
    }

    #[test]
    fn settings_without_usable_hashes_are_refused_without_showing_them() {
        let bad =
            ApiKeyEntry { user: "alice".to_owned(), role: Role::User, key_sha256: Secret::new("not-a-hash-4711") };
        let error = ApiKeys::new(&[entry("root", Role::Admin, "k"), bad]).err().unwrap();
        assert_eq!(
            error.to_string(),
            "auth.api_keys[1].key_sha256: expected the key's SHA-256 as 64 hexadecimal digits"
        );
    }

    #[test]
    fn new_keys_are_random_url_safe_and_hashed() {
        let first = NewApiKey::generate().unwrap();
        let second = NewApiKey::generate().unwrap();

        assert_ne!(first.key, second.key);
        assert_eq!(URL_SAFE_NO_PAD.decode(&first.key).unwrap().len(), KEY_BYTES);
        assert!(first.key.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
        assert_eq!(first.key_sha256, key_sha256(&first.key));
        assert!(!format!("{first:?}").contains(&first.key));
    }
}
