//! `mcp-platform mock-llm`: a stand-in model speaking the OpenAI chat completions API
//! (`POST /v1/chat/completions`) and Anthropic's Messages API (`POST /v1/messages`), streamed
//! and not, for tests and the offline demo. It is clearly not a real model and never a default.
//!
//! Point a provider at it with `base_url: "http://127.0.0.1:PORT/v1"` (`kind: openai`) or
//! `base_url: "http://127.0.0.1:PORT"` (`kind: anthropic`).
//!
//! # Demo behaviour
//!
//! Without a script (or once the script has run out) it streams its answer word by word. For
//! arithmetic in the last user message ("what is 2+3", "multiply 6 by 7", "7 minus 2",
//! "10 divided by 4", "2 to the power of 8") with a fitting tool offered (a name ending in
//! `sum` or `add`, `subtract`, `multiply`, `divide`, `power`) it calls that tool with
//! `{"a": .., "b": ..}`; given the tool's result it answers "2 + 3 = 5.". Anything else gets a
//! sentence saying it is the offline demo model, and the user's text echoed. Usage figures are
//! word counts: of the text of the request's messages and system prompt (prompt) and of the answer
//! (completion).
//!
//! # Scripts
//!
//! A script is a JSON array of turns (or `{"turns": [...]}`), read from `--script FILE` or
//! `POST /__script` (which replaces the queue). Each model request consumes the next turn; a
//! turn with `"repeat": true` is never consumed. Every field is optional:
//!
//! ```json
//! [
//!   {"text": "Hello there", "delay_ms": 20},
//!   {"chunks": ["Hel", "lo"], "usage": {"prompt_tokens": 12, "completion_tokens": 2}},
//!   {"tool_calls": [{"id": "call_1", "name": "demo__sum", "arguments": {"a": 2, "b": 3}},
//!                   {"name": "demo__multiply", "arguments": {"a": 6, "b": 7}}]},
//!   {"tool_calls": [{"name": "demo__sum", "arguments": "{not json"}]},
//!   {"error": {"status": 429, "retry_after": 1, "message": "slow down"}},
//!   {"error": {"status": 500, "body": "plain text body"}, "repeat": true},
//!   {"text": "cut short here", "disconnect_after": 2},
//!   {"text": "late", "first_byte_delay_ms": 2000},
//!   {"text": "truncated", "finish_reason": "length", "no_usage": true}
//! ]
//! ```
//!
//! - `text` is streamed word by word; `chunks` gives the exact stream chunks instead.
//! - `tool_calls`: several are parallel calls; `id` defaults to `call_<n>`; `arguments` given as
//!   a JSON string is sent verbatim as the arguments text (a model writing broken JSON).
//!   Streams send each call's arguments in fragments, with `index` and `id` on the first only.
//! - `error`: answer with this HTTP status, an optional `Retry-After` (seconds), and an error
//!   body of the API's shape holding `message`, or `body` verbatim.
//! - `delay_ms` paces the stream chunks; `first_byte_delay_ms` holds back the whole response.
//! - `disconnect_after: N` cuts the connection after N content chunks (text or tool-call
//!   deltas; 0 cuts before any), or right after the headers of a non-streamed answer.
//! - `usage` replaces the counted figures; `no_usage` reports none.
//! - `finish_reason`: `stop`, `length` or `tool_calls` (default: `tool_calls` if the turn calls
//!   tools, else `stop`).
//!
//! # Inspection
//!
//! `GET /__requests` returns every request received so far, in order, as
//! `[{"path", "headers", "body"}]`; `DELETE /__requests` forgets them. Tests use it to assert
//! what the chat server sent to the model.

mod demo;
mod render;
pub mod script;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use self::demo::{Conversation, DemoAnswer};
use self::render::{Api, Reply, ReplyCall};
pub use self::script::{Script, Turn};
use self::script::{ScriptedFinish, ScriptedToolCall, Usage};

#[derive(Debug, clap::Args)]
pub struct MockLlmArgs {
    /// Port to listen on; 0 picks a free one (the chosen address is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// A JSON script of turns to answer with before the demo behaviour (see the docs).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Pause between the words of a demo answer, so streaming is visible in the demo.
    #[arg(long, default_value_t = 30)]
    pub word_delay_ms: u64,
}

/// Serves until interrupted; prints `mock-llm listening on http://HOST:PORT` once bound.
pub async fn run(args: MockLlmArgs) -> anyhow::Result<ExitCode> {
    let script = match &args.script {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read the script {}", path.display()))?;
            let script = Script::from_json(&text)
                .map_err(|error| anyhow::anyhow!("the script {} is invalid: {error}", path.display()))?;
            Some(script)
        }
    };
    let address = SocketAddr::new(args.host, args.port);
    let word_delay = Duration::from_millis(args.word_delay_ms);
    let mock = MockLlm::serve(address, script, word_delay)
        .await
        .with_context(|| format!("cannot listen on {address} (is the port in use?)"))?;
    println!("mock-llm listening on {}", mock.base_url());
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

/// A running mock model, for tests in this process. Stops when dropped.
pub struct MockLlm {
    address: SocketAddr,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

/// A request the mock received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The JSON body (a string when the body was not JSON).
    pub body: Value,
}

struct MockState {
    script: Mutex<VecDeque<Turn>>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_id: AtomicU64,
    demo_word_delay: Duration,
}

impl MockLlm {
    /// Listens on `address` (port 0: any free port) and serves `script`, then the demo.
    /// Demo answers come at once, so tests never wait for pacing.
    pub async fn start(address: SocketAddr, script: Option<Script>) -> std::io::Result<Self> {
        Self::serve(address, script, Duration::ZERO).await
    }

    async fn serve(address: SocketAddr, script: Option<Script>, demo_word_delay: Duration) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(MockState {
            script: Mutex::new(script.map(Script::into_queue).unwrap_or_default()),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            demo_word_delay,
        });
        let app = router(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "mock-llm stopped serving");
            }
        });
        Ok(Self { address, state, server })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://HOST:PORT`: the `base_url` of an Anthropic provider.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://HOST:PORT/v1`: the `base_url` of an OpenAI-compatible provider.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Replaces the turns still to come.
    pub fn set_script(&self, script: Script) {
        *lock(&self.state.script) = script.into_queue();
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The state stays usable after a panic elsewhere: the mock's data has no invariants to break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(state), uri: Uri, headers: HeaderMap, body: Bytes| async move {
                model_call(state, Api::OpenAi, uri, headers, body).await
            }),
        )
        .route(
            "/v1/messages",
            post(|State(state), uri: Uri, headers: HeaderMap, body: Bytes| async move {
                model_call(state, Api::Anthropic, uri, headers, body).await
            }),
        )
        .route("/__script", post(replace_script))
        .route("/__requests", get(list_requests).delete(clear_requests))
        .with_state(state)
}

async fn replace_script(State(state): State<Arc<MockState>>, body: String) -> Response {
    match Script::from_json(&body) {
        Ok(script) => {
            let turns = script.turns.len();
            *lock(&state.script) = script.into_queue();
            axum::Json(serde_json::json!({"turns": turns})).into_response()
        }
        Err(error) => (StatusCode::BAD_REQUEST, error).into_response(),
    }
}

async fn list_requests(State(state): State<Arc<MockState>>) -> Response {
    axum::Json(lock(&state.requests).clone()).into_response()
}

async fn clear_requests(State(state): State<Arc<MockState>>) -> StatusCode {
    lock(&state.requests).clear();
    StatusCode::NO_CONTENT
}

async fn model_call(state: Arc<MockState>, api: Api, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    lock(&state.requests).push(RecordedRequest {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: parsed.as_ref().map_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()), Clone::clone),
    });
    let body = match parsed {
        Ok(body) if body.is_object() => body,
        _ => {
            let status = StatusCode::BAD_REQUEST;
            let message = "the request body is not a JSON object";
            return (status, axum::Json(render::api_error(api, status, message))).into_response();
        }
    };
    let turn = {
        let mut script = lock(&state.script);
        match script.front() {
            Some(turn) if turn.repeat => Some(turn.clone()),
            _ => script.pop_front(),
        }
    };
    let turn = turn.unwrap_or_else(|| state.demo_turn(api, &body));
    if turn.first_byte_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(turn.first_byte_delay_ms)).await;
    }
    if let Some(error) = &turn.error {
        return render::error_response(api, error);
    }
    let streaming = body["stream"].as_bool().unwrap_or(false);
    let reply = state.reply(&turn, &body);
    render::respond(api, reply, streaming)
}

impl MockState {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The demo behaviour, as the turn a script would give for it.
    fn demo_turn(&self, api: Api, body: &Value) -> Turn {
        let conversation = match api {
            Api::OpenAi => Conversation::from_openai(body),
            Api::Anthropic => Conversation::from_anthropic(body),
        };
        let delay_ms = self.demo_word_delay.as_millis() as u64;
        match conversation.demo_answer() {
            DemoAnswer::Text(text) => Turn { text: Some(text), delay_ms, ..Turn::default() },
            DemoAnswer::Call { name, arguments } => {
                Turn { tool_calls: vec![ScriptedToolCall { id: None, name, arguments }], ..Turn::default() }
            }
        }
    }

    fn reply(&self, turn: &Turn, body: &Value) -> Reply {
        let chunks = turn.text_chunks();
        let calls: Vec<ReplyCall> = turn
            .tool_calls
            .iter()
            .map(|call| ReplyCall {
                id: call.id.clone().unwrap_or_else(|| format!("call_{}", self.next_id())),
                name: call.name.clone(),
                arguments_text: match &call.arguments {
                    Value::String(raw) => raw.clone(),
                    arguments => arguments.to_string(),
                },
            })
            .collect();
        let counted = || {
            let prompt = demo::count_words(&body["messages"]) + demo::count_words(&body["system"]);
            let answer = demo::count_words(&Value::String(chunks.concat()));
            let calls_words: u64 = calls
                .iter()
                .map(|call| demo::count_words(&Value::String(format!("{} {}", call.name, call.arguments_text))))
                .sum();
            Usage { prompt_tokens: prompt, completion_tokens: answer + calls_words }
        };
        let usage = if turn.no_usage { None } else { Some(turn.usage.unwrap_or_else(counted)) };
        let finish = turn.finish_reason.unwrap_or(if calls.is_empty() {
            ScriptedFinish::Stop
        } else {
            ScriptedFinish::ToolCalls
        });
        Reply {
            id: format!("mock-{}", self.next_id()),
            model: body["model"].as_str().unwrap_or("mock-llm").to_owned(),
            chunks,
            calls,
            usage,
            finish,
            delay: Duration::from_millis(turn.delay_ms),
            disconnect_after: turn.disconnect_after,
        }
    }
}
