//! `demo-server`: the MCP server shipped with mcp-platform, over stdio, or over streamable
//! HTTP with `--http ADDRESS` (`--http 127.0.0.1:0` picks a free port and prints the URL).
//!
//! Arithmetic and echo tools for the offline demo, `slow_count` to show progress and
//! cancellation, a prompt with an argument, a static resource and a resource template.
//! Logs go to stderr: stdout carries the protocol (stdio) or the one line with the URL.
//! Over HTTP, `DEMO_REQUIRE_BEARER=TOKEN` makes every request without
//! `Authorization: Bearer TOKEN` fail with 401, as a remote server behind a token would.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse as _;

use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt,
    handler::server::{
        router::{prompt::PromptRouter, tool::ToolRouter},
        wrapper::Parameters,
    },
    model::{
        CallToolResult, ContentBlock, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
        ProgressNotificationParam, PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        RequestMetaObject, Resource, ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
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
}

#[tool_router]
impl Demo {
    #[tool(description = "Add two numbers: a + b.")]
    fn sum(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a + b)
    }

    #[tool(description = "Subtract two numbers: a - b.")]
    fn subtract(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a - b)
    }

    #[tool(description = "Multiply two numbers: a * b.")]
    fn multiply(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        number_result(a * b)
    }

    #[tool(description = "Divide two numbers: a / b. Dividing by zero is an error.")]
    fn divide(&self, Parameters(TwoNumbers { a, b }): Parameters<TwoNumbers>) -> CallToolResult {
        if b == 0.0 {
            return CallToolResult::error(vec![ContentBlock::text("division by zero: b must not be 0")]);
        }
        number_result(a / b)
    }

    #[tool(description = "Raise base to the power exponent.")]
    fn power(&self, Parameters(PowerArgs { base, exponent }): Parameters<PowerArgs>) -> CallToolResult {
        number_result(base.powf(exponent))
    }

    #[tool(description = "Return the given text unchanged.")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(
        description = "Count from 1 to n, one progress notification per step, pausing delay_ms before each step. Stops when cancelled."
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
            "demo-server: tools sum, subtract, multiply, divide, power, echo, slow_count; \
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
        Demo { tool_router: Demo::tool_router(), prompt_router: Demo::prompt_router() }
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
