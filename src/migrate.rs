//! `mcp-platform migrate`: brings a PostgreSQL store's schema up to date without starting
//! the server (which also migrates at start), for deployments that migrate as a separate step.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::ConfigArgs;
use crate::export::chosen_store;
use crate::store::StoreError;
use crate::store::location::StoreLocation;
use crate::store::postgres::{connect_pool, migrations, redacted_url};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The database: a postgres:// URL [default: store.postgres.url of config.yaml]
    #[arg(long, value_name = "URL")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub files: ConfigArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = match chosen_store(args.store.as_deref(), &args.files)? {
        StoreLocation::Postgres(url) => url,
        StoreLocation::Jsonl(path) => anyhow::bail!(
            "{} is a JSONL store, which has no schema to migrate: give --store postgres://… or set \
             store.backend: postgres",
            path.display()
        ),
    };
    let shown = redacted_url(&url);
    let unavailable = |message: String| StoreError::Unavailable { store: shown.clone(), message };
    let pool = connect_pool(&url, 1)?;
    let mut client = pool.get().await.map_err(|error| unavailable(error.to_string()))?;
    let applied = migrations::migrate(&mut client).await.map_err(|error| unavailable(error.to_string()))?;
    match applied.as_slice() {
        [] => println!("{shown}: the schema is up to date"),
        versions => println!("{shown}: applied migrations {versions:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
