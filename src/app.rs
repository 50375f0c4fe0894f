//! The application wired in one place: settings in, a ready-to-serve [`App`] out.
//!
//! `serve`, `check` and the integration tests all build the application through
//! [`App::build`], so what the tests exercise is what users run, and a new collaborator
//! (a store backend, an authenticator) is wired once. Only the sources of the settings
//! differ: the command line reads the two config files, the tests build typed settings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::chat::{ChatDeps, ChatService};
use crate::config::{ConfigError, ServersConfig, Settings, StoreBackend};
use crate::mcp::{McpManager, ToolDefaults};
use crate::server::{RunningServer, Starting};
use crate::store::EventStore;
use crate::store::jsonl::{JsonlStore, OpenReport};
use crate::store::metered::MeteredStore;
use crate::store::postgres::{PostgresStore, redacted_url};
use crate::tokens::TokenCounter;

/// Where the two config files are, as every command that reads them takes it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// config.yaml to use [default: $MCP_CONFIG_PATH, else ./config.yaml]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// servers_config.json to use [default: $MCP_SERVERS_CONFIG_PATH, else ./servers_config.json]
    #[arg(long)]
    pub servers: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads and validates both files, reporting every problem of each.
    pub fn load(&self) -> anyhow::Result<(Settings, ServersConfig)> {
        let settings = crate::config::load_settings(self.config.as_deref()).map_err(ConfigError::into_startup_error)?;
        let servers =
            crate::config::load_servers_config(self.servers.as_deref()).map_err(ConfigError::into_startup_error)?;
        Ok((settings, servers))
    }
}

/// The store, the model, the MCP servers and the chat service over them, not yet listening.
pub struct App {
    settings: Settings,
    authenticator: Arc<Authenticator>,
    chat: Arc<ChatService>,
    mcp: Arc<McpManager>,
    store_report: Option<OpenReport>,
}

impl App {
    /// Sets up authentication, opens the store, configures the LLM provider and launches the
    /// MCP servers, without waiting for them ([`McpManager::settled`] does), while the default
    /// model's token table is built and a connection to the provider is opened: the app is
    /// returned only once both are done (the connection given up after two seconds), so no
    /// first turn stalls on them.
    ///
    /// Fails on auth settings that cannot work (an unreadable JWKS file), a store that cannot be
    /// opened or a provider that cannot be configured; an MCP
    /// server that does not start is not a failure (the chat service answers without it and
    /// `/readyz` reports it). Nothing is started before the store is open, so dropping this
    /// future (a signal during start-up) leaves no MCP server behind.
    pub async fn build(settings: Settings, servers: &ServersConfig) -> anyhow::Result<Self> {
        let authenticator = Arc::new(Authenticator::new(&settings.auth)?);
        crate::metrics::handle();
        let llm = crate::llm::from_settings(&settings.llm)?;
        let token_tables = TokenCounter::warm_up(llm.default_model());
        let provider_connected = tokio::spawn(llm.connect_ahead());
        let (store, store_report) = open_store(&settings).await?;
        let store: Arc<dyn EventStore> = Arc::new(MeteredStore(store));
        crate::chat::leases::finish_orphans(store.as_ref()).await;
        let mcp = McpManager::launch(servers, &settings.mcp, ToolDefaults::from_chat(&settings.chat.service));
        if let Some(token_tables) = token_tables {
            // A panic there was reported on its thread; the first turn then builds the table.
            let _ = tokio::task::spawn_blocking(move || token_tables.join()).await;
        }
        let _ = provider_connected.await;
        let chat = ChatService::new(settings.chat.service.clone(), ChatDeps { llm, tools: mcp.clone(), store });
        Ok(Self { settings, authenticator, chat, mcp, store_report })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn mcp(&self) -> &Arc<McpManager> {
        &self.mcp
    }

    /// What opening the JSONL store found (events indexed, a torn tail moved aside); `None`
    /// for PostgreSQL.
    pub fn store_report(&self) -> Option<&OpenReport> {
        self.store_report.as_ref()
    }

    /// Starts serving HTTP and WebSockets on `listener`; the returned server owns the app and
    /// shuts all of it down.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<RunningServer> {
        let starting = Starting::listen(listener, &self.settings)?;
        Ok(self.serve_on(starting))
    }

    /// Takes over a listener that has served start-up's `/healthz` and `/readyz` so far.
    pub fn serve_on(self, starting: Starting) -> RunningServer {
        let store_problem =
            self.store_report.as_ref().and_then(|report| report.chain_break.as_ref()).map(ToString::to_string);
        starting.serve(Arc::new(self.settings), self.chat, self.mcp, self.authenticator, store_problem)
    }

    /// Stops an app that never served (its MCP servers are the only thing running).
    pub async fn shutdown(self) {
        self.mcp.shutdown().await;
    }
}

/// Opens the backend `store.backend` names; PostgreSQL is migrated to the current schema.
async fn open_store(settings: &Settings) -> anyhow::Result<(Arc<dyn EventStore>, Option<OpenReport>)> {
    match settings.store.backend {
        StoreBackend::Jsonl => {
            let (store, report) = open_jsonl(settings).await?;
            Ok((store, Some(report)))
        }
        StoreBackend::Postgres => {
            let postgres = &settings.store.postgres;
            let store = PostgresStore::open(postgres.url.expose(), postgres.pool_size).await?;
            tracing::info!(url = %redacted_url(postgres.url.expose()), "event store open");
            Ok((Arc::new(store), None))
        }
    }
}

/// Opening indexes the whole file, which can take seconds on a large log: it runs on a
/// blocking thread so the runtime keeps serving meanwhile.
async fn open_jsonl(settings: &Settings) -> anyhow::Result<(Arc<dyn EventStore>, OpenReport)> {
    let path = settings.store.path.clone();
    let fsync = settings.store.fsync;
    let (store, report) = tokio::task::spawn_blocking(move || JsonlStore::open(path, fsync)).await??;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            line = torn.line,
            bytes = torn.bytes,
            moved_to = %torn.moved_to.display(),
            reason = %torn.reason,
            "events file ended in a torn line (a crash mid-append); it was moved aside"
        );
    }
    if let Some(chain_break) = &report.chain_break {
        tracing::error!(
            line = chain_break.line,
            reason = %chain_break.reason,
            path = %settings.store.path.display(),
            "the events file's hash chain is broken; serving anyway, new events chain onto the last line. \
             Run `mcp-platform replay <file> --verify` and restore the file from a backup"
        );
    }
    tracing::info!(
        events = report.events,
        conversations = report.conversations,
        path = %settings.store.path.display(),
        "event store open"
    );
    Ok((Arc::new(store), report))
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub files: ConfigArgs,
    /// Listen on this port instead of websocket.port (0: any free port; the address is printed).
    #[arg(long)]
    pub port: Option<u16>,
}

/// `mcp-platform serve`: runs until SIGTERM or SIGINT, then shuts down gracefully.
///
/// The port is bound first: `/healthz` answers and `/readyz` says 503 while the store opens.
/// A signal during start-up stops it through the same path as later (nothing of the MCP
/// servers outlives the process). The address line on stdout comes once the server is ready.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut signals = ShutdownSignals::install()?;
    let (settings, servers) = args.files.load()?;
    crate::logging::init(&settings.logging)?;
    let port = args.port.unwrap_or(settings.websocket.port);
    let host = settings.websocket.host.clone();
    let listener = TcpListener::bind((host.as_str(), port)).await.map_err(|error| {
        anyhow::anyhow!("cannot listen on {host}:{port}: {error} (websocket.host / websocket.port)")
    })?;
    let starting = Starting::listen(listener, &settings)?;
    tracing::info!(addr = %starting.addr(), "listening; starting up");
    let built = tokio::select! {
        built = App::build(settings, &servers) => built,
        () = signals.received() => {
            starting.stop().await;
            tracing::info!("shutdown complete (during start-up)");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let app = match built {
        Ok(app) => app,
        Err(error) => {
            starting.stop().await;
            return Err(error);
        }
    };
    let server = app.serve_on(starting);
    // A plain line on stdout, for scripts and tests that start the server on port 0.
    println!("mcp-platform listening on http://{}", server.addr);
    tracing::info!(addr = %server.addr, "ready");

    signals.received().await;
    server.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT, caught from the first moment of `serve` so that a signal during
/// start-up also takes the shutdown path instead of killing the process outright.
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
    }
}
