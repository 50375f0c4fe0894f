//! Process-wide logging: JSON lines by default (one object per event, for log shippers), or
//! human-readable. `RUST_LOG` overrides `logging.level` for finer filters.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

pub fn init(settings: &LoggingSettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&settings.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match settings.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}
