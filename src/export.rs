//! `mcp-platform export` (SPEC §7): the store's lines on stdout, byte for byte as they were
//! hashed, from a JSONL file or a PostgreSQL database alike — for auditors and backups. The
//! whole store exported is a file `replay --verify` accepts; one conversation's lines are a
//! transcript, not a chain.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;

use crate::app::ConfigArgs;
use crate::store::StoreError;
use crate::store::lines::{ScanError, scan_lines};
use crate::store::location::StoreLocation;
use crate::store::postgres::rows::for_each_row;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The store: an events file or a postgres:// URL [default: the store config.yaml names]
    #[arg(long, value_name = "URL")]
    pub store: Option<PathBuf>,
    /// Only this conversation's lines.
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    #[command(flatten)]
    pub files: ConfigArgs,
}

/// The store `--store` names, else the one `config.yaml` configures.
pub fn chosen_store(store: Option<&std::path::Path>, files: &ConfigArgs) -> anyhow::Result<StoreLocation> {
    match store {
        Some(store) => Ok(StoreLocation::parse(store)),
        None => {
            let (settings, _) = files.load().context("no --store given, so the store config.yaml names is used")?;
            Ok(StoreLocation::from_settings(&settings.store))
        }
    }
}

pub async fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let location = chosen_store(args.store.as_deref(), &args.files)?;
    match location {
        StoreLocation::Jsonl(path) => {
            tokio::task::spawn_blocking(move || export_file(&path, args.conversation.as_deref()))
                .await
                .context("the export task failed")??
        }
        StoreLocation::Postgres(url) => export_database(&url, args.conversation.as_deref()).await?,
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
struct ConversationOf<'a> {
    #[serde(borrow)]
    conversation_id: std::borrow::Cow<'a, str>,
}

fn export_file(path: &std::path::Path, conversation: Option<&str>) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the events file {}: check --store or store.path", path.display()))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    scan_lines(&file, 0, |_, line| {
        let wanted = match conversation {
            None => true,
            Some(wanted) => {
                serde_json::from_slice::<ConversationOf>(line).is_ok_and(|event| event.conversation_id == wanted)
            }
        };
        if wanted {
            out.write_all(line).and_then(|()| out.write_all(b"\n"))?;
        }
        Ok(())
    })
    .map_err(|error: ScanError<std::io::Error>| match error {
        ScanError::Io(error) => anyhow::Error::new(error).context(format!("cannot read {}", path.display())),
        ScanError::Visit(error) => anyhow::Error::new(error).context("cannot write to stdout"),
    })?;
    out.flush().context("cannot write to stdout")
}

/// Why a database export stopped.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write to stdout: {0}")]
    Output(#[from] std::io::Error),
}

async fn export_database(url: &str, conversation: Option<&str>) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout());
    for_each_row(url, conversation, |row| {
        out.write_all(row.line.as_bytes()).and_then(|()| out.write_all(b"\n")).map_err(ExportError::Output)
    })
    .await?;
    out.flush().context("cannot write to stdout")
}
