//! `faulty-server`: an MCP server that misbehaves on demand, for the supervision tests.
//!
//! Start-up flags:
//! - `--exit-at-start`: exit with status 2 before speaking MCP (a server that cannot start);
//! - `--grandchild PIDFILE`: spawn `sleep 1000` in our process group and write its pid to PIDFILE;
//! - `--ignore-sigterm`: ignore SIGTERM and keep running after stdin closes (only SIGKILL stops it);
//! - `--marker-dir DIR`: where `hang` records that its cancellation arrived (`DIR/hang-cancelled`);
//! - `--exit-on-discover`: exit when the first request is `server/discover`, as some servers
//!   older than the 2026-07-28 revision do with any first request but `initialize`.
//!
//! Tools: `ok`, `sum`, `crash` (exits the process), `hang` (never answers), `fail` (a JSON-RPC
//! error), `garbage` (non-JSON on stdout, then an answer), `flood` (a burst of stderr),
//! `add_tool` (adds `extra` and sends `tools/list_changed`), `break_listing` (fails every later
//! `tools/list`, then sends `tools/list_changed`), `end_subscriptions` (ends the client's
//! `subscriptions/listen`, as a 2026-07-28 server that restarts would), and two awkwardly
//! named tools.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter, Tool,
    },
    service::{RequestContext, SubscriptionContext, SubscriptionSink},
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// A tool name beyond the 64 characters models accept, to exercise the registry's cutting.
const LONG_TOOL_NAME: &str = "report_every_single_detail_of_the_current_configuration_in_a_very_verbose_way";

#[derive(Clone)]
struct Faulty {
    marker_dir: Option<PathBuf>,
    extra_tool: Arc<AtomicBool>,
    listing_broken: Arc<AtomicBool>,
    /// Clients listening for list changes (2026-07-28 `subscriptions/listen`); older
    /// revisions get them unasked through the request's peer.
    listeners: Arc<Mutex<Vec<SubscriptionSink>>>,
    /// Woken by `end_subscriptions`: every `subscriptions/listen` then ends gracefully.
    end_listening: Arc<tokio::sync::Notify>,
}

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let Value::Object(object) = json!({
        "type": "object",
        "properties": properties,
        "required": required,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    Arc::new(object)
}

fn no_arguments() -> Arc<JsonObject> {
    schema(json!({}), &[])
}

fn text(value: impl Into<String>) -> CallToolResponse {
    CallToolResponse::Complete(CallToolResult::success(vec![ContentBlock::text(value)]))
}

fn number_argument(arguments: &JsonObject, name: &str) -> Result<f64, McpError> {
    arguments
        .get(name)
        .and_then(Value::as_f64)
        .ok_or_else(|| McpError::invalid_params(format!("{name} must be a number"), None))
}

impl Faulty {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            Tool::new("ok", "Answer ok.", no_arguments()),
            Tool::new(
                "sum",
                "Add two numbers.",
                schema(json!({"a": {"type": "number"}, "b": {"type": "number"}}), &["a", "b"]),
            ),
            Tool::new("crash", "Exit the server process at once.", no_arguments()),
            Tool::new("hang", "Never answer; record the cancellation.", no_arguments()),
            Tool::new("fail", "Answer with a JSON-RPC error.", no_arguments()),
            Tool::new(
                "garbage",
                "Write non-JSON lines and one oversized line to stdout, then answer.",
                schema(json!({"lines": {"type": "integer"}, "blob_mb": {"type": "integer"}}), &[]),
            ),
            Tool::new(
                "flood",
                "Write many lines and one very long line to stderr, then answer.",
                schema(json!({"lines": {"type": "integer"}}), &[]),
            ),
            Tool::new("add_tool", "Offer the tool `extra` from now on.", no_arguments()),
            Tool::new(
                "break_listing",
                "Fail every tools/list from now on, and announce a list change.",
                no_arguments(),
            ),
            Tool::new("end_subscriptions", "End every subscriptions/listen of the client.", no_arguments()),
            Tool::new(LONG_TOOL_NAME, "A tool with a long name.", no_arguments()),
            Tool::new("dotted.name", "A tool with a dot in its name.", no_arguments()),
        ];
        if self.extra_tool.load(Ordering::SeqCst) {
            tools.push(Tool::new("extra", "Added at run time.", no_arguments()));
        }
        tools
    }

    async fn announce_tool_list_change(&self, context: &RequestContext<RoleServer>) {
        let listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let sent = if listeners.is_empty() {
            context.peer.notify_tool_list_changed().await.map_err(|error| error.to_string())
        } else {
            let mut sent = Ok(());
            for listener in listeners {
                sent = sent.and(listener.notify_tool_list_changed().await.map_err(|error| error.to_string()));
            }
            sent
        };
        if let Err(error) = sent {
            eprintln!("cannot send tools/list_changed: {error}");
        }
    }

    async fn hang(&self, context: &RequestContext<RoleServer>) -> CallToolResponse {
        context.ct.cancelled().await;
        eprintln!("hang cancelled (request {})", context.id);
        if let Some(dir) = &self.marker_dir
            && let Err(error) = std::fs::write(dir.join("hang-cancelled"), context.id.to_string())
        {
            eprintln!("cannot write the cancellation marker: {error}");
        }
        text("cancelled")
    }
}

async fn write_garbage(lines: u64, blob_mb: u64) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::stdout().lock();
        for i in 0..lines {
            writeln!(stdout, "this is not JSON, line {i} {{{{")?;
        }
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..blob_mb {
            stdout.write_all(&chunk)?;
        }
        stdout.write_all(b"\n")?;
        stdout.flush()
    })
    .await?
}

async fn flood_stderr(lines: u64) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr().lock();
        for i in 0..lines {
            writeln!(stderr, "flood line {i}")?;
        }
        let long_line = vec![b'y'; 1 << 20];
        stderr.write_all(&long_line)?;
        stderr.write_all(b"\n")?;
        stderr.flush()
    })
    .await?
}

fn integer_argument(arguments: &JsonObject, name: &str, default: u64) -> u64 {
    arguments.get(name).and_then(Value::as_u64).unwrap_or(default)
}

impl ServerHandler for Faulty {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        if self.listing_broken.load(Ordering::SeqCst) {
            return Err(McpError::internal_error("tools/list is broken on purpose", None));
        }
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build().intersection(requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).push(context.sink().clone());
        tokio::select! {
            _ = context.cancelled() => {}
            _ = self.end_listening.notified() => {}
        }
        Ok(())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = request.arguments.unwrap_or_default();
        let io_error = |error: std::io::Error| McpError::internal_error(error.to_string(), None);
        match request.name.as_ref() {
            "ok" => Ok(text("ok")),
            "sum" => {
                let total = number_argument(&arguments, "a")? + number_argument(&arguments, "b")?;
                Ok(text(format!("faulty sum {total}")))
            }
            "crash" => {
                eprintln!("crashing on request");
                std::process::exit(3);
            }
            "hang" => Ok(self.hang(&context).await),
            "fail" => Err(McpError::internal_error("failing on purpose", None)),
            "garbage" => {
                let lines = integer_argument(&arguments, "lines", 100);
                let blob_mb = integer_argument(&arguments, "blob_mb", 0);
                write_garbage(lines, blob_mb).await.map_err(io_error)?;
                Ok(text("garbage written"))
            }
            "flood" => {
                flood_stderr(integer_argument(&arguments, "lines", 10_000)).await.map_err(io_error)?;
                Ok(text("flooded"))
            }
            "add_tool" => {
                self.extra_tool.store(true, Ordering::SeqCst);
                self.announce_tool_list_change(&context).await;
                Ok(text("added"))
            }
            "break_listing" => {
                self.listing_broken.store(true, Ordering::SeqCst);
                self.announce_tool_list_change(&context).await;
                Ok(text("broken"))
            }
            "end_subscriptions" => {
                self.end_listening.notify_waiters();
                Ok(text("ended"))
            }
            "extra" if self.extra_tool.load(Ordering::SeqCst) => Ok(text("extra")),
            LONG_TOOL_NAME => Ok(text("long")),
            "dotted.name" => Ok(text("dotted")),
            other => Err(McpError::invalid_params(format!("no tool {other}"), None)),
        }
    }
}

struct Options {
    exit_at_start: bool,
    exit_on_discover: bool,
    grandchild_pidfile: Option<PathBuf>,
    ignore_sigterm: bool,
    marker_dir: Option<PathBuf>,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options = Options {
        exit_at_start: false,
        exit_on_discover: false,
        grandchild_pidfile: None,
        ignore_sigterm: false,
        marker_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exit-at-start" => options.exit_at_start = true,
            "--ignore-sigterm" => options.ignore_sigterm = true,
            "--exit-on-discover" => options.exit_on_discover = true,
            "--grandchild" => {
                options.grandchild_pidfile =
                    Some(args.next().ok_or_else(|| anyhow::anyhow!("--grandchild needs a file"))?.into())
            }
            "--marker-dir" => {
                options.marker_dir =
                    Some(args.next().ok_or_else(|| anyhow::anyhow!("--marker-dir needs a folder"))?.into())
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    if options.exit_at_start {
        eprintln!("faulty-server: exiting at start as asked");
        std::process::exit(2);
    }
    if options.ignore_sigterm {
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    // Held until exit so the grandchild outlives nothing but our own process group.
    let _grandchild = match &options.grandchild_pidfile {
        Some(pidfile) => {
            let child = std::process::Command::new("sleep").arg("1000").spawn()?;
            std::fs::write(pidfile, child.id().to_string())?;
            Some(child)
        }
        None => None,
    };
    let server = Faulty {
        marker_dir: options.marker_dir,
        extra_tool: Arc::new(AtomicBool::new(false)),
        listing_broken: Arc::new(AtomicBool::new(false)),
        listeners: Arc::default(),
        end_listening: Arc::default(),
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut first = String::new();
    if options.exit_on_discover {
        stdin.read_line(&mut first).await?;
        if first.contains("\"server/discover\"") {
            eprintln!("faulty-server: the first request is not initialize; exiting as asked");
            std::process::exit(4);
        }
    }
    let stdin = std::io::Cursor::new(first.into_bytes()).chain(stdin);
    let service = server.serve((stdin, tokio::io::stdout())).await?;
    service.waiting().await?;
    if options.ignore_sigterm {
        eprintln!("faulty-server: stdin closed, staying alive anyway");
        loop {
            std::thread::park();
        }
    }
    Ok(())
}
