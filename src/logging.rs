//! Process-wide logging: JSON lines by default (one object per event, for log shippers), or
//! human-readable. `RUST_LOG` overrides `logging.level` for finer filters.
//!
//! Field values can come from clients (a `request_id`, an error message quoting a frame).
//! JSON escapes them by construction; the pretty format writes values as they are, so there
//! every control character of a value is escaped: a newline or an escape code in a value
//! cannot start a forged line or repaint the terminal.

use std::fmt::Write as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

use crate::config::{LogFormat, LoggingSettings};

pub fn init(settings: &LoggingSettings) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&settings.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match settings.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.fmt_fields(escaped_fields()).try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

/// The pretty format's fields, `name=value` separated by spaces (the message bare), with every
/// control character of a value escaped.
fn escaped_fields() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer: &mut Writer<'_>, field, value| {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" { write!(writer, "{text}") } else { write!(writer, "{field}={text}") }
    })
    .delimited(" ")
}

/// `text` with each control character written as a `\u{..}` escape.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(
                |character| {
                    if character.is_control() { character.escape_unicode().to_string() } else { character.to_string() }
                },
            )
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("r-1 ✓"), "r-1 ✓");
        assert_eq!(escape_controls("a\nFORGED\r\u{1b}[31m"), "a\\u{a}FORGED\\u{d}\\u{1b}[31m");
    }
}
