//! One model call over HTTP: sending, retrying, timing out, and handing the body to a decoder.
//! The rules for retries and timeouts are documented on [`RetryPolicy`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use super::sse::{self, DecodeFailure, StreamDecoder, WireError};
use super::{LlmError, LlmEvent, LlmStream};

/// How hard a provider is tried: `llm.max_retries` and `llm.request_timeout`.
///
/// 429, 5xx, connection failures and streams cut short are retried with exponential backoff
/// and jitter (or after the provider's `Retry-After`, up to 60 s), but only while the call has
/// yielded nothing. `request_timeout` bounds each attempt: a non-streaming attempt must deliver
/// its whole answer within it; a streaming attempt its response headers, and then no silence
/// between two reads may last longer, so a long answer that keeps streaming is not cut off.
/// A timeout is not retried and ends the call as [`LlmError::Timeout`] (504).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub request_timeout: Duration,
}

/// First backoff delay; doubled per retry up to [`MAX_BACKOFF`], then jittered down by up to
/// half so that clients failing together do not retry together.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// A `Retry-After` longer than this is not waited out: the user would rather see the error.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long opening a connection ahead of the first call may hold up start-up.
const CONNECT_AHEAD_LIMIT: Duration = Duration::from_secs(2);
/// How much of an unreadable error body goes into the error message.
const MAX_ERROR_BODY_CHARS: usize = 300;

/// Where and how one provider is called.
pub(crate) struct Endpoint {
    /// The provider's key in `llm.providers`, for error messages.
    pub name: String,
    pub url: String,
    pub headers: HeaderMap,
    pub client: reqwest::Client,
    pub policy: RetryPolicy,
}

impl Endpoint {
    pub fn new(name: &str, url: String, headers: HeaderMap, policy: RetryPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("mcp-platform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| anyhow::anyhow!("cannot set up the HTTP client: {error}"))?;
        Ok(Self { name: name.to_owned(), url, headers, client, policy })
    }

    /// See [`LlmProvider::connect_ahead`](super::LlmProvider::connect_ahead). A `GET` of the
    /// call's URL: every API answers it at once with an error status and runs no model, and
    /// the connection it opened stays in the client's pool for the first call.
    pub async fn connect_ahead(self: Arc<Self>) {
        let probe = async {
            let response = self.client.get(&self.url).headers(self.headers.clone()).send().await?;
            // Read to its end, so the connection goes back to the pool.
            response.bytes().await
        };
        match tokio::time::timeout(CONNECT_AHEAD_LIMIT, probe).await {
            Ok(Ok(_)) => {
                tracing::debug!(provider = %self.name, "connected to the LLM provider ahead of the first call")
            }
            Ok(Err(error)) => {
                tracing::debug!(provider = %self.name, error = %error_chain(&error), "cannot connect to the LLM provider yet")
            }
            Err(_) => tracing::debug!(provider = %self.name, "the LLM provider did not answer the connection probe"),
        }
    }
}

/// How an API's answers are read: a streaming decoder and a whole-body decoder.
pub(crate) struct Wire<D> {
    pub stream_decoder: fn() -> D,
    pub decode_complete: fn(&[u8]) -> Result<Vec<LlmEvent>, WireError>,
}

impl<D> Clone for Wire<D> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<D> Copy for Wire<D> {}

/// Starts a call with the already serialised request `body`.
pub(crate) fn call<D: StreamDecoder + 'static>(
    endpoint: Arc<Endpoint>,
    body: Bytes,
    streaming: bool,
    wire: Wire<D>,
) -> LlmStream {
    let call = Call {
        endpoint,
        body,
        streaming,
        wire,
        retries: 0,
        yielded_any: false,
        pending: VecDeque::new(),
        body_events: None,
        finished: false,
    };
    Box::pin(futures::stream::unfold(call, |mut call| async move {
        let item = call.next().await?;
        Some((item, call))
    }))
}

type BodyEvents = Pin<Box<dyn Stream<Item = Result<LlmEvent, DecodeFailure<BodyError>>> + Send>>;

struct Call<D> {
    endpoint: Arc<Endpoint>,
    body: Bytes,
    streaming: bool,
    wire: Wire<D>,
    retries: u32,
    yielded_any: bool,
    pending: VecDeque<LlmEvent>,
    body_events: Option<BodyEvents>,
    finished: bool,
}

/// A failed attempt and whether another attempt may succeed.
struct Failure {
    error: LlmError,
    retry: Retry,
}

enum Retry {
    No,
    Backoff,
    /// The provider said when (`Retry-After`).
    After(Duration),
}

impl Failure {
    fn fatal(error: LlmError) -> Self {
        Self { error, retry: Retry::No }
    }
}

/// Why reading the response body stopped.
enum BodyError {
    Transport(reqwest::Error),
    /// No byte within `request_timeout`.
    Silent,
}

impl<D: StreamDecoder + 'static> Call<D> {
    async fn next(&mut self) -> Option<Result<LlmEvent, LlmError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.yielded_any = true;
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let attempt = match self.body_events.as_mut() {
                None => self.start_attempt().await,
                Some(events) => match events.next().await {
                    Some(Ok(event)) => {
                        self.yielded_any = true;
                        return Some(Ok(event));
                    }
                    Some(Err(failure)) => Err(self.body_failure(failure)),
                    None => {
                        self.finished = true;
                        continue;
                    }
                },
            };
            let Err(failure) = attempt else { continue };
            self.body_events = None;
            match self.retry_delay(&failure) {
                Some(delay) => {
                    self.retries += 1;
                    crate::metrics::model_retry();
                    tracing::warn!(
                        provider = %self.endpoint.name,
                        retry = self.retries,
                        max_retries = self.endpoint.policy.max_retries,
                        delay_ms = delay.as_millis() as u64,
                        error = %failure.error,
                        "LLM call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    self.finished = true;
                    return Some(Err(self.final_error(failure)));
                }
            }
        }
    }

    /// Sends the request; on success either installs the body decoder (streaming) or queues
    /// the whole answer.
    async fn start_attempt(&mut self) -> Result<(), Failure> {
        let endpoint = Arc::clone(&self.endpoint);
        let limit = endpoint.policy.request_timeout;
        let deadline = Instant::now() + limit;
        let send = endpoint.client.post(&endpoint.url).headers(endpoint.headers.clone()).body(self.body.clone()).send();
        let response = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(Failure::fatal(timeout_error(limit))),
            Ok(Err(error)) => {
                return Err(Failure {
                    error: LlmError::Provider(format!(
                        "cannot reach {} at {}: {}",
                        endpoint.name,
                        endpoint.url,
                        error_chain(&error)
                    )),
                    retry: Retry::Backoff,
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(status_failure(&endpoint, status, response, deadline).await);
        }
        // A server that ignores `stream: true` answers with one JSON body: read it as such.
        let json_answer = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        if self.streaming && !json_answer {
            let bytes = silence_limited(response.bytes_stream(), limit);
            let events = sse::decode(bytes, (self.wire.stream_decoder)());
            self.body_events = Some(Box::pin(events));
            return Ok(());
        }
        let body = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(Failure::fatal(timeout_error(limit))),
            Ok(Err(error)) => {
                return Err(Failure { error: self.broke_off(&error), retry: Retry::Backoff });
            }
            Ok(Ok(body)) => body,
        };
        let events = (self.wire.decode_complete)(&body).map_err(|wire| self.wire_failure(wire))?;
        self.pending.extend(events);
        self.finished = true;
        Ok(())
    }

    fn body_failure(&self, failure: DecodeFailure<BodyError>) -> Failure {
        match failure {
            DecodeFailure::Transport(BodyError::Silent) => {
                Failure::fatal(timeout_error(self.endpoint.policy.request_timeout))
            }
            DecodeFailure::Transport(BodyError::Transport(error)) => {
                Failure { error: self.broke_off(&error), retry: Retry::Backoff }
            }
            DecodeFailure::Wire(wire) => self.wire_failure(wire),
        }
    }

    fn wire_failure(&self, wire: WireError) -> Failure {
        Failure {
            error: LlmError::Provider(format!("{}: {}", self.endpoint.name, wire.message)),
            retry: if wire.retryable { Retry::Backoff } else { Retry::No },
        }
    }

    fn broke_off(&self, error: &reqwest::Error) -> LlmError {
        LlmError::Provider(format!(
            "the connection to {} broke off mid-answer: {}",
            self.endpoint.name,
            error_chain(error)
        ))
    }

    /// How long to wait before the next attempt, or `None` when the failure is final.
    fn retry_delay(&self, failure: &Failure) -> Option<Duration> {
        if self.yielded_any || self.retries >= self.endpoint.policy.max_retries {
            return None;
        }
        match failure.retry {
            Retry::No => None,
            Retry::After(delay) if delay > MAX_RETRY_AFTER => None,
            Retry::After(delay) => Some(delay),
            Retry::Backoff => {
                let exponential = INITIAL_BACKOFF.saturating_mul(1 << self.retries.min(16));
                Some(exponential.min(MAX_BACKOFF).mul_f64(rand::random_range(0.5..=1.0)))
            }
        }
    }

    fn final_error(&self, failure: Failure) -> LlmError {
        let retried = match self.retries {
            0 => String::new(),
            1 => " (after 1 retry)".to_owned(),
            n => format!(" (after {n} retries)"),
        };
        let why_not_retried = match failure.retry {
            _ if self.yielded_any => "; the partial answer was not retried, so that no text is repeated".to_owned(),
            Retry::After(delay) if delay > MAX_RETRY_AFTER => format!(
                "; it asks to retry after {} s, longer than the {} s mcp-platform waits",
                delay.as_secs(),
                MAX_RETRY_AFTER.as_secs()
            ),
            _ => String::new(),
        };
        match failure.error {
            LlmError::Provider(message) => LlmError::Provider(format!("{message}{retried}{why_not_retried}")),
            timeout @ LlmError::Timeout(_) => timeout,
        }
    }
}

async fn status_failure(
    endpoint: &Endpoint,
    status: StatusCode,
    response: reqwest::Response,
    deadline: Instant,
) -> Failure {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok());
    let body = tokio::time::timeout_at(deadline, response.bytes()).await.ok().and_then(Result::ok).unwrap_or_default();
    let error = LlmError::Provider(format!("{} answered HTTP {}: {}", endpoint.name, status, provider_message(&body)));
    let retry = if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        retry_after.map_or(Retry::Backoff, Retry::After)
    } else {
        Retry::No
    };
    Failure { error, retry }
}

fn timeout_error(limit: Duration) -> LlmError {
    LlmError::Timeout(limit.as_secs_f64())
}

/// Ends the body with [`BodyError::Silent`] when no bytes arrive for `limit`.
fn silence_limited(
    bytes: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    limit: Duration,
) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + Unpin {
    let started = Instant::now();
    SilenceLimited {
        bytes: Box::pin(bytes),
        alarm: Box::pin(tokio::time::sleep_until(started + limit)),
        limit,
        last_heard: started,
        done: false,
    }
}

/// The body of [`silence_limited`]. A streamed answer arrives in dozens of pieces a second, and
/// a timer started afresh for each piece is registered with the runtime and taken off again
/// each time; this one alarm is set once and, when it rings, moved to `limit` after the last
/// piece heard, so it ends the body only after a silence of `limit`.
struct SilenceLimited<S> {
    bytes: Pin<Box<S>>,
    alarm: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    last_heard: Instant,
    done: bool,
}

impl<S: Stream<Item = reqwest::Result<Bytes>>> Stream for SilenceLimited<S> {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.bytes.as_mut().poll_next(cx) {
            this.last_heard = Instant::now();
            this.done = item.is_none();
            return Poll::Ready(item.map(|item| item.map_err(BodyError::Transport)));
        }
        while this.alarm.as_mut().poll(cx).is_ready() {
            let due = this.last_heard + this.limit;
            if due <= Instant::now() {
                this.done = true;
                return Poll::Ready(Some(Err(BodyError::Silent)));
            }
            this.alarm.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// The provider's own words from an error body: the `message` of the shapes OpenAI-compatible
/// servers, Anthropic and Ollama use, else the body text itself.
pub(crate) fn provider_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = json.get("error").unwrap_or(&json);
        if let Some(text) = error.as_str() {
            return text.to_owned();
        }
        if let Some(message) = error.get("message").and_then(|m| m.as_str()) {
            return match error.get("type").and_then(|t| t.as_str()) {
                Some(kind) if !message.contains(kind) => format!("{message} ({kind})"),
                _ => message.to_owned(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no error message in the response)".to_owned();
    }
    match text.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// reqwest's top-level message is generic ("error sending request"); the cause says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `{base_url}{path}`, checked once at start-up so a typo is reported with the key to fix.
pub(crate) fn endpoint_url(provider: &str, base_url: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(url),
        _ => anyhow::bail!("llm.providers.{provider}.base_url is {base_url:?} but must be an http:// or https:// URL"),
    }
}

/// A header carrying the API key, kept out of debug output.
pub(crate) fn secret_header(provider: &str, key: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
        anyhow::anyhow!(
            "llm.providers.{provider}.api_key contains characters not allowed in an HTTP header \
             (a line break or control character?)"
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}
