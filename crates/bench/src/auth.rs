//! Authentication of the bench's sockets: a server per `auth.mode` (SPEC §8), configured with a
//! credential the bench made, so the cost of checking it on every upgrade is what is measured.
//!
//! The credential is made fresh for each run (a random API key; a 2048-bit RSA key whose public
//! half the server reads from a JWKS file), so no secret is kept in the repository.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest as _, Sha256};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

const ISSUER: &str = "mcp-platform-bench";
const AUDIENCE: &str = "mcp-platform";
/// Long enough for any run: the server closes a socket when its token expires.
const TOKEN_LIFETIME_SECONDS: u64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AuthMode {
    None,
    ApiKeys,
    /// A JWT signed with RS256, checked against a JWKS file.
    Jwt,
}

impl AuthMode {
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKeys => "api_keys",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// What a server of one mode is started with, and what its clients present.
pub struct ServerAuth {
    pub mode: AuthMode,
    /// `MCP__…` variables for `serve`.
    pub env: Vec<(String, String)>,
    /// The configuration file replacing `config.yaml` (the list `auth.api_keys` cannot be set
    /// by an environment variable).
    pub config_file: Option<std::path::PathBuf>,
    /// Sent as `Authorization: Bearer …` on every upgrade.
    pub bearer: Option<String>,
}

impl ServerAuth {
    pub fn none() -> Self {
        ServerAuth { mode: AuthMode::None, env: Vec::new(), config_file: None, bearer: None }
    }

    /// Writes what `mode` needs into `dir`; mode `api_keys` copies the configuration file the
    /// server would read otherwise (`$MCP_CONFIG_PATH`, else `config.yaml` here) with a key added.
    pub fn prepare(mode: AuthMode, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mode_variable = ("MCP__AUTH__MODE".to_owned(), mode.name().to_owned());
        match mode {
            AuthMode::None => Ok(Self::none()),
            AuthMode::ApiKeys => {
                let key = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
                let config_file = dir.join("config.yaml");
                write_config_with_api_key(&config_file, &hex::encode(Sha256::digest(key.as_bytes())))?;
                Ok(ServerAuth { mode, env: vec![mode_variable], config_file: Some(config_file), bearer: Some(key) })
            }
            AuthMode::Jwt => {
                let (jwks, token) = rs256_key_and_token()?;
                let jwks_path = dir.join("jwks.json");
                std::fs::write(&jwks_path, jwks.to_string())
                    .with_context(|| format!("cannot write {}", jwks_path.display()))?;
                let env = vec![
                    mode_variable,
                    ("MCP__AUTH__JWT__JWKS_PATH".to_owned(), jwks_path.display().to_string()),
                    ("MCP__AUTH__JWT__ISSUER".to_owned(), ISSUER.to_owned()),
                    ("MCP__AUTH__JWT__AUDIENCE".to_owned(), AUDIENCE.to_owned()),
                ];
                Ok(ServerAuth { mode, env, config_file: None, bearer: Some(token) })
            }
        }
    }
}

/// The server's configuration file with one API key (of role `user`) in `auth.api_keys`.
fn write_config_with_api_key(path: &Path, key_sha256: &str) -> anyhow::Result<()> {
    let source = std::env::var_os("MCP_CONFIG_PATH").map_or_else(|| "config.yaml".into(), std::path::PathBuf::from);
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {} (run the bench where `serve` finds its config)", source.display()))?;
    let mut documents =
        YamlLoader::load_from_str(&text).with_context(|| format!("{}: invalid YAML", source.display()))?;
    let Some(Yaml::Hash(root)) = documents.first_mut() else {
        anyhow::bail!("{}: expected a mapping at the top", source.display());
    };
    let Some(Yaml::Hash(auth)) = root.get_mut(&Yaml::String("auth".to_owned())) else {
        anyhow::bail!("{}: no `auth` section", source.display());
    };
    let entry = [("user", "bench"), ("role", "user"), ("key_sha256", key_sha256)]
        .into_iter()
        .map(|(name, value)| (Yaml::String(name.to_owned()), Yaml::String(value.to_owned())))
        .collect();
    auth.insert(Yaml::String("api_keys".to_owned()), Yaml::Array(vec![Yaml::Hash(entry)]));
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&documents[0]).context("write YAML")?;
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// A JWKS holding a new RSA key's public half, and an RS256 token signed with it.
fn rs256_key_and_token() -> anyhow::Result<(serde_json::Value, String)> {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).context("generate an RSA key")?;
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())}]});
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let claims =
        serde_json::json!({"sub": "bench", "iss": ISSUER, "aud": AUDIENCE, "exp": now + TOKEN_LIFETIME_SECONDS});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("bench".to_owned());
    let der = key.to_pkcs1_der().context("encode the RSA key")?;
    let token = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
        .context("sign the token")?;
    Ok((jwks, token))
}
