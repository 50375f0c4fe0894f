//! `mcp-platform replay`: transcripts, token totals and chain verification of an events file,
//! for auditing (SPEC §6, §7).
//!
//! Replay reads the file directly and read-only, without opening a store, so it works on a
//! copy, on a read-only medium, and on a file a running server is appending to: it reads up to
//! the last complete line, and a partial last line (one being written right now, or the torn
//! tail of a crash not yet moved aside) is left out and mentioned, not treated as an error.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::domain::Usage;
use crate::store::ChatEvent;
use crate::store::location::StoreLocation;
use crate::store::postgres::redacted_url;
use crate::store::verify::ChainCheck;

mod database;
use crate::store::lines::{ScanEnd, ScanError, scan_lines};

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The events file, or a postgres:// URL (with --verify). A file may be one a running
    /// server is appending to: replay reads up to the last complete line and mentions a
    /// partial one.
    pub file: PathBuf,
    /// Only this conversation.
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Only the events of this request.
    #[arg(long, value_name = "ID")]
    pub request: Option<String>,
    /// Only the events of this user (`anonymous` with auth off and on lines written before
    /// events named their user).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only events at or after this time: RFC 3339 (2026-11-21T00:27:40Z) or a UTC date
    /// (2026-11-21).
    #[arg(long, value_name = "T", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Check the whole file instead of printing transcripts: every line's hash, the chain of
    /// `prev` links and each conversation's `seq` (1, 2, 3, … without gap or repeat). Exits
    /// non-zero naming the first bad line. Filters do not apply.
    #[arg(long)]
    pub verify: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable transcripts.
    Text,
    /// One JSON document.
    Json,
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|time| time.and_utc())
        .ok_or_else(|| format!("{text:?} is not a time: use RFC 3339 (2026-11-21T00:27:40Z) or a date (2026-11-21)"))
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let StoreLocation::Postgres(url) = StoreLocation::parse(&args.file) {
        anyhow::ensure!(
            args.verify,
            "replay reads transcripts from a file: run `mcp-platform export --store URL > events.jsonl` \
             and replay that, or add --verify to check the database's chain"
        );
        let report = database::verify(&url).await?;
        let (output, code) = render_verification(args.format, &redacted_url(&url), &report);
        print_out(&output)?;
        return Ok(code);
    }
    tokio::task::spawn_blocking(move || run_blocking(&args)).await.context("the replay task failed")?
}

fn print_out(output: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()).context("cannot write to stdout")
}

fn run_blocking(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(&args.file).with_context(|| {
        format!(
            "cannot open the events file {}: check the path (the server writes it where \
             store.path in config.yaml says)",
            args.file.display()
        )
    })?;
    let length = file.metadata().with_context(|| format!("cannot read {}", args.file.display()))?.len();
    let progress = progress_bar(length);
    let result = if args.verify {
        verify(&file, &progress)
            .map(|report| render_verification(args.format, &args.file.display().to_string(), &report))
    } else {
        transcripts(&file, args, &progress).map(|report| render_transcripts(args, &report))
    };
    progress.finish_and_clear();
    let (output, code) = result.map_err(|error| match error {
        ScanError::Io(error) => {
            anyhow::Error::new(error).context(format!("cannot read the events file {}", args.file.display()))
        }
        ScanError::Visit(problem) => anyhow::anyhow!("{}: {problem}", args.file.display()),
    })?;
    print_out(&output)?;
    Ok(code)
}

fn progress_bar(length: u64) -> indicatif::ProgressBar {
    if length < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The first problem `--verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

#[derive(Debug, Serialize)]
struct Verification {
    ok: bool,
    lines: u64,
    conversations: usize,
    /// Bytes after the last complete line, left out.
    partial_last_line_bytes: u64,
    first_problem: Option<Problem>,
}

/// Checks every complete line of the file; stops at the first bad one.
fn verify(file: &std::fs::File, progress: &indicatif::ProgressBar) -> Result<Verification, ScanError<Problem>> {
    let mut check = ChainCheck::default();
    let scanned = scan_lines(file, 0, |offset, bytes| {
        progress.set_position(offset);
        check.check(bytes).map(drop).map_err(|reason| Problem { line: check.lines() + 1, reason })
    });
    let (first_problem, end) = match scanned {
        Ok(end) => (None, end),
        Err(ScanError::Visit(problem)) => (Some(problem), ScanEnd::default()),
        Err(ScanError::Io(error)) => return Err(ScanError::Io(error)),
    };
    Ok(Verification {
        ok: first_problem.is_none(),
        lines: check.lines(),
        conversations: check.conversations(),
        partial_last_line_bytes: end.trailing,
        first_problem,
    })
}

fn render_verification(format: Format, source: &str, report: &Verification) -> (String, ExitCode) {
    let code = if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let mut out = String::new();
    match format {
        Format::Json => out = json_line(report),
        Format::Text => {
            match &report.first_problem {
                Some(problem) => {
                    let _ = writeln!(out, "FAILED {}: {problem}\n{} lines before it are intact.", source, report.lines);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "OK {}: {} lines, {} conversations; every hash, prev link and seq checks out.",
                        source, report.lines, report.conversations
                    );
                }
            }
            if report.ok && report.partial_last_line_bytes > 0 {
                let _ = writeln!(out, "{}", partial_note(report.partial_last_line_bytes));
            }
        }
    }
    (out, code)
}

fn partial_note(bytes: u64) -> String {
    format!(
        "note: the last {bytes} bytes are not a complete line yet (a writer is appending, or a \
         crash left a torn tail that the server moves aside when it next opens the file); \
         they were left out."
    )
}

fn json_line(value: &impl Serialize) -> String {
    // Plain data with string keys always serialises.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[derive(Debug, Default, Serialize)]
struct Totals {
    events: u64,
    token_count: u64,
    usage: Usage,
}

impl Totals {
    fn add(&mut self, event: &ChatEvent) {
        self.events += 1;
        self.token_count += event.token_count;
        if let Some(usage) = event.usage {
            self.usage.add(usage);
        }
    }
}

#[derive(Debug, Serialize)]
struct Transcript {
    conversation_id: String,
    totals: Totals,
    events: Vec<ChatEvent>,
}

#[derive(Debug, Serialize)]
struct TranscriptReport {
    lines_read: u64,
    partial_last_line_bytes: u64,
    conversations: Vec<Transcript>,
    totals: Totals,
    per_model: BTreeMap<String, Totals>,
}

fn transcripts(
    file: &std::fs::File,
    args: &ReplayArgs,
    progress: &indicatif::ProgressBar,
) -> Result<TranscriptReport, ScanError<Problem>> {
    let mut lines = 0u64;
    let mut conversations: Vec<Transcript> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    let mut totals = Totals::default();
    let mut per_model: BTreeMap<String, Totals> = BTreeMap::new();
    let scanned = scan_lines(file, 0, |offset, bytes| {
        lines += 1;
        progress.set_position(offset);
        let event: ChatEvent = serde_json::from_slice(bytes).map_err(|error| Problem {
            line: lines,
            reason: format!(
                "not a valid event line: {error} (run `mcp-platform replay {} --verify` \
                 for a full check)",
                args.file.display()
            ),
        })?;
        if !selected(args, &event, lines)? {
            return Ok(());
        }
        totals.add(&event);
        if let Some(model) = &event.model {
            per_model.entry(model.clone()).or_default().add(&event);
        }
        let at = *positions.entry(event.conversation_id.clone()).or_insert_with(|| {
            conversations.push(Transcript {
                conversation_id: event.conversation_id.clone(),
                totals: Totals::default(),
                events: Vec::new(),
            });
            conversations.len() - 1
        });
        conversations[at].totals.add(&event);
        conversations[at].events.push(event);
        Ok(())
    })?;
    Ok(TranscriptReport {
        lines_read: lines,
        partial_last_line_bytes: scanned.trailing,
        conversations,
        totals,
        per_model,
    })
}

fn selected(args: &ReplayArgs, event: &ChatEvent, line: u64) -> Result<bool, Problem> {
    if args.conversation.as_ref().is_some_and(|wanted| *wanted != event.conversation_id) {
        return Ok(false);
    }
    if args.request.as_ref().is_some_and(|wanted| event.request_id.as_ref() != Some(wanted)) {
        return Ok(false);
    }
    if args.user.as_ref().is_some_and(|wanted| wanted != event.user()) {
        return Ok(false);
    }
    if let Some(since) = args.since {
        let time = DateTime::parse_from_rfc3339(&event.timestamp).map_err(|error| Problem {
            line,
            reason: format!("timestamp {:?} is not RFC 3339: {error}", event.timestamp),
        })?;
        return Ok(time >= since);
    }
    Ok(true)
}

fn render_transcripts(args: &ReplayArgs, report: &TranscriptReport) -> (String, ExitCode) {
    if args.format == Format::Json {
        return (json_line(report), ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for transcript in &report.conversations {
        let _ = writeln!(
            out,
            "== conversation {} ({} events, {} tokens) ==",
            transcript.conversation_id, transcript.totals.events, transcript.totals.token_count
        );
        for event in &transcript.events {
            render_event(&mut out, event);
        }
        out.push('\n');
    }
    if report.conversations.is_empty() {
        let _ = writeln!(out, "No events match in {} ({} lines read).", args.file.display(), report.lines_read);
    }
    let _ = writeln!(out, "== token totals ==");
    let _ = writeln!(
        out,
        "all: {} tokens in {} events{}",
        report.totals.token_count,
        report.totals.events,
        usage_text(&report.totals.usage)
    );
    for transcript in &report.conversations {
        let _ = writeln!(
            out,
            "conversation {}: {} tokens in {} events{}",
            transcript.conversation_id,
            transcript.totals.token_count,
            transcript.totals.events,
            usage_text(&transcript.totals.usage)
        );
    }
    for (model, totals) in &report.per_model {
        let _ = writeln!(
            out,
            "model {model}: {} tokens in {} events{}",
            totals.token_count,
            totals.events,
            usage_text(&totals.usage)
        );
    }
    if report.partial_last_line_bytes > 0 {
        let _ = writeln!(out, "{}", partial_note(report.partial_last_line_bytes));
    }
    (out, ExitCode::SUCCESS)
}

fn usage_text(usage: &Usage) -> String {
    if *usage == Usage::default() {
        return String::new();
    }
    format!(
        "; provider usage: {} prompt + {} completion = {} total",
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
    )
}

fn render_event(out: &mut String, event: &ChatEvent) {
    let kind =
        serde_json::to_value(event.kind).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default();
    let mut header = format!("#{} {} {kind}", event.seq, event.timestamp);
    if let Some(role) = event.role {
        let role =
            serde_json::to_value(role).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default();
        let _ = write!(header, " [{role}]");
    }
    if let Some(request_id) = &event.request_id {
        let _ = write!(header, " request {request_id}");
    }
    let _ = write!(header, " by {}", event.user());
    if let Some(model) = &event.model {
        let _ = write!(header, " model {model}");
    }
    let _ = write!(header, " · {} tokens", event.token_count);
    let _ = writeln!(out, "{header}");
    if let Some(call_id) = &event.tool_call_id {
        let _ = writeln!(out, "    result of tool call {call_id}:");
    }
    if let Some(content) = event.content.as_deref().filter(|text| !text.is_empty()) {
        for line in content.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    for call in event.tool_calls.iter().flatten() {
        let _ = writeln!(out, "    tool call {} {} {}", call.id, call.name, call.arguments);
    }
    if !event.extra.is_empty() {
        let _ = writeln!(out, "    extra {}", serde_json::Value::Object(event.extra.clone()));
    }
}
