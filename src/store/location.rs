//! Where a store lives, as the command line names it: a JSONL file path or a `postgres://`
//! URL (`export --store`, `replay`, `migrate --store`), or as `config.yaml` says.

use std::path::{Path, PathBuf};

use crate::config::{StoreBackend, StoreSettings};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Jsonl(PathBuf),
    /// The URL, password included: show it only through [`super::postgres::redacted_url`].
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL names a database; anything else a file.
    pub fn parse(text: &Path) -> StoreLocation {
        match text.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreLocation::Postgres(url.to_owned())
            }
            _ => StoreLocation::Jsonl(text.to_path_buf()),
        }
    }

    pub fn from_settings(store: &StoreSettings) -> StoreLocation {
        match store.backend {
            StoreBackend::Jsonl => StoreLocation::Jsonl(store.path.clone()),
            StoreBackend::Postgres => StoreLocation::Postgres(store.postgres.url.expose().to_owned()),
        }
    }
}
