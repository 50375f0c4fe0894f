//! `demo-server`: the MCP server shipped with mcp-platform, over stdio, or over streamable
//! HTTP with `--http ADDRESS` (`--http 127.0.0.1:0` picks a free port and prints the URL).
//!
//! Arithmetic and echo tools for the offline demo, `slow_count` to show progress and
//! cancellation, notes to show tool approval (`delete_note` is destructive; the notes live in
//! the file `DEMO_NOTES_FILE` names, one per line, so a test can see what happened), `ask_name`
//! to show elicitation, a prompt with an argument, a static resource and a resource template.
//! Logs go to stderr: stdout carries the protocol (stdio) or the one line with the URL.
//! Over HTTP, `DEMO_REQUIRE_BEARER=TOKEN` makes every request without
//! `Authorization: Bearer TOKEN` fail with 401, as a remote server behind a token would.
//! `DEMO_WITHOUT_DISCOVERY=1` makes it an older server that knows only the `initialize`
//! handshake, so both ways a server asks the user (the question returned with the call in
//! 2026-07-28, `elicitation/create` before) can be shown over either transport.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;

use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt,
    handler::server::{
        router::{prompt::PromptRouter, tool::ToolRouter},
        tool::{InputResponses, RequestState},
        wrapper::Parameters,
    },
    model::{
        CallToolResponse, CallToolResult, ContentBlock, DiscoverRequestMethod, DiscoverResult, ElicitRequest,
        ElicitRequestParams, InputRequest, InputRequiredResult, ListResourceTemplatesResult, ListResourcesResult,
        PaginatedRequestParams, ProgressNotificationParam, PromptMessage, ReadResourceRequestParams,
        ReadResourceResponse, ReadResourceResult, RequestMetaObject, Resource, ResourceContents, ResourceTemplate,
        Role, ServerCapabilities, ServerConfig,
    },
    prompt, prompt_handler, prompt_router,
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const ABOUT_URI: &str = "demo://about";
const GREETING_TEMPLATE: &str = "demo://greeting/{name}";
const GREETING_PREFIX: &str = "demo://greeting/";

#[derive(Debug, Deserialize, JsonSchema)]
struct TwoNumbers {
    /// The left operand.
    a: f64,
    /// The right operand.
    b: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct PowerArgs {
    /// The base.
    base: f64,
    /// The exponent.
    exponent: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct EchoArgs {
    /// Text to send back unchanged.
    text: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct SlowCountArgs {
    /// Count from 1 to n.
    n: u32,
    /// Pause before each step, in milliseconds.
    #[serde(default = "default_delay_ms")]
    delay_ms: u64,
}

fn default_delay_ms() -> u64 {
    100
}

#[derive(Debug, Deserialize, JsonSchema)]
struct NoteArgs {
    /// The note's text, as list_notes shows it.
    note: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct AskNameArgs {
    /// Pause before asking, in milliseconds.
    #[serde(default)]
    delay_ms: u64,
}

/// The notes: a file (`DEMO_NOTES_FILE`, one note per line) when given, else kept in memory.
#[derive(Debug, Clone, Default)]
struct Notes {
    file: Option<std::path::PathBuf>,
    memory: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Notes {
    fn from_env() -> Self {
        let notes = Self { file: std::env::var_os("DEMO_NOTES_FILE").map(Into::into), ..Self::default() };
        if notes.file.is_none() {
            notes.store(vec!["buy milk".to_owned(), "call Ada".to_owned()]);
        }
        notes
    }

    fn load(&self) -> Vec<String> {
        match &self.file {
            Some(file) => std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_owned).collect(),
            None => self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        }
    }

    fn store(&self, notes: Vec<String>) {
        match &self.file {
            Some(file) => {
                let text: String = notes.iter().map(|note| format!("{note}\n")).collect();
                if let Err(error) = std::fs::write(file, text) {
                    tracing::warn!("cannot write {}: {error}", file.display());
                }
            }
            None => *self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = notes,
        }
    }
}

/// The form `ask_name` sends. Its answer holds nothing secret, so the server says the client
/// may log it (`_meta.sensitive: false`).
fn name_question() -> ElicitRequestParams {
    serde_json::from_value(serde_json::json!({
        "mode": "form",
        "message": "What is your name?",
        "requestedSchema": {
            "type": "object",
            "properties": {"name": {"type": "string", "title": "Name", "minLength": 1}},
            "required": ["name"]
        },
        "_meta": {"sensitive": false}
    }))
    .expect("a valid elicitation request")
}

/// The tool's answer to the user's answer, `{"action", "content"?}` as MCP sends it.
fn greeting(answer: &serde_json::Value) -> CallToolResult {
    match answer["action"].as_str() {
        Some("accept") => match answer["content"]["name"].as_str() {
            Some(name) => CallToolResult::success(vec![ContentBlock::text(format!("Hello, {name}!"))]),
            None => CallToolResult::error(vec![ContentBlock::text("accepted without a name")]),
        },
        Some("decline") => CallToolResult::success(vec![ContentBlock::text("the user declined to give a name")]),
        Some("cancel") => CallToolResult::success(vec![ContentBlock::text("the user cancelled the question")]),
        _ => CallToolResult::error(vec![ContentBlock::text(format!("unexpected answer {answer}"))]),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
struct ExplainArgs {
    /// The topic to explain.
    topic: String,
}

/// Formats a number the way a person writes it: `5`, not `5.0`.
fn format_number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn number_result(value: f64) -> CallToolResult {
    if value.is_finite() {
        CallToolResult::success(vec![ContentBlock::text(format_number(value))])
    } else {
        CallToolResult::error(vec![ContentBlock::text(format!("the result is not a finite number ({value})"))])
    }
}

#[derive(Debug, Clone)]
struct Demo {
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
    notes: Notes,
    /// `DEMO_WITHOUT_DISCOVERY=1`: answers `server/discover` as a server of a revision before
    /// 2026-07-28 does (method not found), so clients meet it with the `initialize` handshake
    /// and its questions go out as `elicitation/create`.
    without_discovery: bool,
}

#[tool_router]
impl Demo {
    #[tool(description = "Add two numbers: a + b.", annotations(read_only_hint = true))]
    fn sum(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a + b)
    }

    #[tool(description = "Subtract two numbers: a - b.", annotations(read_only_hint = true))]
    fn subtract(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a - b)
    }

    #[tool(description = "Multiply two numbers: a * b.", annotations(read_only_hint = true))]
    fn multiply(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a * b)
    }

    #[tool(
        description = "Divide two numbers: a / b. Dividing by zero is an error.",
        annotations(read_only_hint = true)
    )]
    fn divide(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        if b == 0.0 {
            return CallToolResult::error(vec![ContentBlock::text("division by zero: b must not be 0")]);
        }
        number_result(a / b)
    }

    #[tool(description = "Raise base to the power exponent.", annotations(read_only_hint = true))]
    fn power(&self, Parameters(PowerArgs { base, exponent }): Parameters<PowerArgs>) -> CallToolResult {
        number_result(base.powf(exponent))
    }

    #[tool(description = "Return the given text unchanged.", annotations(read_only_hint = true))]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(
        description = "Count from 1 to n, one progress notification per step, pausing delay_ms before each step. Stops when cancelled.",
        annotations(read_only_hint = true)
    )]
    async fn slow_count(
        &self,
        Parameters(SlowCountArgs { n, delay_ms }): Parameters<SlowCountArgs>,
        meta: RequestMetaObject,
        client: Peer<RoleServer>,
        cancelled: CancellationToken,
    ) -> CallToolResult {
        let token = meta.get_progress_token();
        for step in 1..=n {
            tokio::select! {
                _ = cancelled.cancelled() => {
                    tracing::warn!("slow_count cancelled at {}", step - 1);
                    // Lets tests see that the cancellation reached the server.
                    if let Ok(marker) = std::env::var("DEMO_CANCEL_MARKER")
                        && let Err(error) = std::fs::write(&marker, format!("cancelled at {}", step - 1))
                    {
                        tracing::warn!("cannot write {marker}: {error}");
                    }
                    return CallToolResult::error(vec![ContentBlock::text(format!(
                        "cancelled at {}", step - 1
                    ))]);
                }
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            }
            if let Some(token) = &token {
                let notification = ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(n))
                    .with_message(format!("counted to {step}"));
                if let Err(error) = client.notify_progress(notification).await {
                    tracing::warn!("slow_count cannot send progress: {error}");
                }
            }
        }
        CallToolResult::success(vec![ContentBlock::text(format!("counted to {n}"))])
    }

    #[tool(description = "List the notes, one per line.", annotations(read_only_hint = true))]
    fn list_notes(&self) -> String {
        self.notes.load().join("\n")
    }

    #[tool(
        description = "Delete a note for good (its text as list_notes shows it).",
        annotations(read_only_hint = false, destructive_hint = true)
    )]
    fn delete_note(&self, Parameters(NoteArgs { note }): Parameters<NoteArgs>) -> CallToolResult {
        let mut notes = self.notes.load();
        let before = notes.len();
        notes.retain(|kept| *kept != note);
        if notes.len() == before {
            return CallToolResult::error(vec![ContentBlock::text(format!("no note {note:?}"))]);
        }
        self.notes.store(notes);
        CallToolResult::success(vec![ContentBlock::text(format!("deleted {note:?}"))])
    }

    /// Elicitation the way the session's revision allows: a 2026-07-28 client gets the question
    /// with the call's answer (`input_required`) and sends the call again with the answer; an
    /// older one is sent `elicitation/create` while the call waits.
    #[tool(description = "Ask the user for their name (a form), then greet them.", annotations(read_only_hint = true))]
    async fn ask_name(
        &self,
        Parameters(AskNameArgs { delay_ms }): Parameters<AskNameArgs>,
        context: RequestContext<RoleServer>,
        RequestState(state): RequestState,
        InputResponses(responses): InputResponses,
    ) -> Result<CallToolResponse, McpError> {
        // A 2026-07-28 session names its revision in each request, an older one in `initialize`.
        let modern = context.protocol_version().is_some_and(|revision| !revision.has_initialize());
        if modern {
            if state.is_none() {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let question = InputRequest::Elicitation(ElicitRequest::new(name_question()));
                let requests = [("name".to_owned(), question)].into_iter().collect();
                return Ok(InputRequiredResult::new(Some(requests), Some("ask_name".to_owned())).into());
            }
            let answer = responses.and_then(|mut responses| responses.remove("name")).unwrap_or_default();
            return Ok(greeting(&answer).into());
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let answer = context
            .peer
            .create_elicitation(name_question())
            .await
            .map_err(|error| McpError::internal_error(format!("the client did not answer: {error}"), None))?;
        Ok(greeting(&serde_json::to_value(answer).unwrap_or_default()).into())
    }
}

#[prompt_router]
impl Demo {
    #[prompt(description = "Ask for a short explanation of a topic.")]
    async fn explain(&self, Parameters(ExplainArgs { topic }): Parameters<ExplainArgs>) -> Vec<PromptMessage> {
        vec![PromptMessage::new_text(Role::User, format!("Explain {topic} in three short sentences."))]
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_prompts().enable_resources().build())
            .with_instructions("Arithmetic, echo and a slow counter for the mcp-platform demo.")
    }

    async fn discover(&self, _context: RequestContext<RoleServer>) -> Result<DiscoverResult, McpError> {
        if self.without_discovery {
            return Err(McpError::method_not_found::<DiscoverRequestMethod>());
        }
        Ok(DiscoverResult::from_server_info(self.supported_protocol_versions().into_owned(), self.get_info()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(ABOUT_URI, "about").with_description("What this server offers").with_mime_type("text/plain"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(GREETING_TEMPLATE, "greeting")
                .with_description("A greeting for the given name")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let text = if request.uri == ABOUT_URI {
            "demo-server: tools sum, subtract, multiply, divide, power, echo, slow_count, list_notes, \
             delete_note, ask_name; \
             prompt explain; resources demo://about and demo://greeting/{name}."
                .to_owned()
        } else if let Some(name) = request.uri.strip_prefix(GREETING_PREFIX)
            && !name.is_empty()
        {
            format!("Hello, {name}!")
        } else {
            return Err(McpError::resource_not_found(format!("no resource {}", request.uri), None));
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }
}

impl Demo {
    fn new() -> Self {
        Demo {
            tool_router: Demo::tool_router(),
            prompt_router: Demo::prompt_router(),
            notes: Notes::from_env(),
            without_discovery: std::env::var("DEMO_WITHOUT_DISCOVERY").is_ok_and(|value| value == "1"),
        }
    }
}

/// Refuses requests without the expected bearer token.
async fn require_bearer(
    expected: Arc<str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authorized = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| token == &*expected);
    if authorized {
        next.run(request).await
    } else {
        (axum::http::StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
    }
}

/// Serves MCP at `/mcp` until SIGINT or SIGTERM.
async fn serve_http(address: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let service = StreamableHttpService::new(
        || Ok(Demo::new()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let mut router = axum::Router::new().nest_service("/mcp", service);
    if let Ok(token) = std::env::var("DEMO_REQUIRE_BEARER") {
        let token: Arc<str> = token.into();
        router =
            router.layer(axum::middleware::from_fn(move |request, next| require_bearer(token.clone(), request, next)));
    }
    let address = listener.local_addr()?;
    println!("demo-server listening on {address} (MCP endpoint http://{address}/mcp)");
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => {
            let service = Demo::new().serve(rmcp::transport::stdio_pipes()).await?;
            service.waiting().await?;
            Ok(())
        }
        (Some("--http"), Some(address)) => serve_http(&address).await,
        _ => anyhow::bail!(
            "usage: demo-server [--http ADDRESS]  (stdio without arguments; --http 127.0.0.1:0 for any port)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::format_number;

    #[test]
    fn integers_have_no_fraction() {
        assert_eq!(format_number(5.0), "5");
        assert_eq!(format_number(-3.0), "-3");
        assert_eq!(format_number(2.5), "2.5");
    }
}
