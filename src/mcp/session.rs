//! One MCP session with a server, whatever transport carries it: the rmcp client handler
//! that receives the server's notifications, the session as calls see it, and listing what
//! the server offers.
//!
//! Separate from the supervisor and the transports because both build on it: a transport
//! runs the handshake with [`ClientEvents`], the supervisor lists and publishes the session.

use std::sync::{Arc, Mutex};

use rmcp::{
    ClientHandler, ErrorData as McpError, Peer, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, ClientRequest, ElicitRequestParams, ElicitResult, ElicitationCapability,
        FormElicitationCapability, Implementation, ListPromptsRequest, ListResourceTemplatesRequest,
        ListResourcesRequest, ListToolsRequest, PaginatedRequestParams, ProgressNotificationParam, Prompt,
        ProtocolVersion, Resource, ResourceTemplate, ServerCapabilities, ServerNotification, ServerResult,
        SubscriptionFilter, Tool, UrlElicitationCapability,
    },
    service::{
        ClientLifecycleMode, ClientServiceExt, InboundStreamOrigin, NotificationContext, RequestContext, RunningService,
    },
    transport::Transport,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::elicitation::{self, ElicitationRouter};
use super::progress::ProgressRouter;
use crate::domain::ElicitationReply;

/// A running rmcp client session, owned by the server's supervisor.
pub type McpService = RunningService<RoleClient, ClientEvents>;

/// The session as calls see it. `dead` fires the moment the server is gone (its process
/// exited, its transport closed), so calls in flight fail at once instead of at their timeout.
pub struct McpSession {
    pub peer: Peer<RoleClient>,
    pub generation: u64,
    pub dead: CancellationToken,
    death: Mutex<Option<String>>,
}

impl McpSession {
    pub fn new(peer: Peer<RoleClient>, generation: u64) -> Self {
        Self { peer, generation, dead: CancellationToken::new(), death: Mutex::new(None) }
    }

    pub fn mark_dead(&self, reason: &str) {
        let mut death = self.death.lock().unwrap_or_else(|p| p.into_inner());
        death.get_or_insert_with(|| reason.to_owned());
        drop(death);
        self.dead.cancel();
    }

    pub fn death_reason(&self) -> String {
        self.death
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "the connection closed".to_owned())
    }
}

/// What a server offers, as last listed.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    pub tools: Vec<Tool>,
    pub prompts: Vec<Prompt>,
    pub resources: Vec<Resource>,
    pub resource_templates: Vec<ResourceTemplate>,
}

/// Receives the server's notifications and requests for one session: progress goes to the
/// calls, list_changed wakes the supervisor to list again, questions go to the user behind
/// the call that caused them.
pub struct ClientEvents {
    pub server: String,
    pub generation: u64,
    /// Whether the handshake starts with `server/discover` (see [`handshake`]).
    pub probe_discovery: bool,
    pub progress: Arc<ProgressRouter>,
    pub elicitations: Arc<ElicitationRouter>,
    pub relist: Arc<Notify>,
}

impl ClientEvents {
    fn refresh(&self) {
        self.relist.notify_one();
    }
}

impl ClientHandler for ClientEvents {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.progress.route(self.generation, params);
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let origin = match context.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id),
            _ => None,
        };
        let Some(question) = elicitation::question(&self.server, request, Some(&context.meta)) else {
            return Ok(elicitation::result(ElicitationReply::declined()));
        };
        let reply = match self.elicitations.addressee(self.generation, origin) {
            Some((user, _asking)) => user.elicit(question).await,
            None => {
                tracing::warn!(
                    server = %self.server,
                    "declined an elicitation that cannot be tied to one request (calls of several requests in flight)"
                );
                ElicitationReply::declined()
            }
        };
        Ok(elicitation::result(reply))
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh();
    }

    fn get_info(&self) -> ClientConfig {
        // What the `initialize` handshake offers a server that does not know discovery.
        ClientConfig::new(capabilities(), Implementation::new("mcp-platform", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

/// Elicitation in both modes; form answers are checked against the schema before they go back.
fn capabilities() -> ClientCapabilities {
    let mut capabilities = ClientCapabilities::default();
    capabilities.elicitation = Some(
        ElicitationCapability::new()
            .with_form(FormElicitationCapability::new().with_schema_validation(true))
            .with_url(UrlElicitationCapability::new()),
    );
    capabilities
}

/// Starts a session in the newest revision the server offers: `server/discover` (2026-07-28)
/// first; a server that answers it with a JSON-RPC error (every older server: an unknown
/// method) gets the `initialize` handshake on the same connection, in which it names its own
/// revision. The probe costs older servers one round trip. Without `probe_discovery`, only
/// the `initialize` handshake: for a server that could not start after the probe (some older
/// servers close the connection on any first request but `initialize`).
pub async fn handshake<T>(client: ClientEvents, transport: T) -> Result<McpService, String>
where
    T: Transport<RoleClient> + 'static,
{
    let lifecycle = if client.probe_discovery {
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::NO_INITIALIZE],
            legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
        }
    } else {
        ClientLifecycleMode::Initialize
    };
    client
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .map_err(|error| format!("MCP initialisation failed: {error}"))
}

/// The revision a session speaks, as `/api/servers` shows it (`2026-07-28`).
pub fn revision(peer: &Peer<RoleClient>) -> Option<String> {
    peer.peer_info().map(|info| info.protocol_version.to_string())
}

/// From 2026-07-28 on, list_changed notifications come only to a client that listens for
/// them (`subscriptions/listen`); older revisions send them unasked, to [`ClientEvents`].
/// Listens for the lists the server says can change and wakes `relist` for each change, for
/// as long as the session lasts. `None` when there is nothing to listen for, or the server
/// refuses to be listened to (a warning: its lists then change only with a new session).
pub async fn listen_for_list_changes(
    server: &str,
    peer: &Peer<RoleClient>,
    relist: Arc<Notify>,
) -> Option<tokio::task::JoinHandle<()>> {
    let info = peer.peer_info()?;
    if info.protocol_version.has_initialize() {
        return None;
    }
    let capabilities = &info.capabilities;
    let changes = |declared: Option<Option<bool>>| declared.flatten().unwrap_or(false);
    let mut filter = SubscriptionFilter::builder();
    let (tools, prompts, resources) = (
        changes(capabilities.tools.as_ref().map(|c| c.list_changed)),
        changes(capabilities.prompts.as_ref().map(|c| c.list_changed)),
        changes(capabilities.resources.as_ref().map(|c| c.list_changed)),
    );
    if !(tools || prompts || resources) {
        return None;
    }
    if tools {
        filter = filter.tools_list_changed();
    }
    if prompts {
        filter = filter.prompts_list_changed();
    }
    if resources {
        filter = filter.resources_list_changed();
    }
    let mut subscription = match peer.listen(filter.build()).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(
                server,
                "the server announces list changes but refused subscriptions/listen ({error}); \
                 its tools are listed again only when it reconnects"
            );
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(Some(notification)) = subscription.next().await {
            if matches!(
                notification,
                ServerNotification::ToolListChangedNotification(_)
                    | ServerNotification::PromptListChangedNotification(_)
                    | ServerNotification::ResourceListChangedNotification(_)
            ) {
                relist.notify_one();
            }
        }
    }))
}

/// A server that answers with endless cursors is cut off here.
const MAX_PAGES: usize = 1000;

/// Every page of one list. Sent as plain requests: rmcp's list helpers fall back to a
/// cached answer when the server fails, which would hide a failed refresh.
async fn list_pages<T>(
    peer: &Peer<RoleClient>,
    what: &str,
    request: impl Fn(PaginatedRequestParams) -> ClientRequest,
    take: impl Fn(ServerResult) -> Option<(Vec<T>, Option<String>)>,
) -> Result<Vec<T>, String> {
    let mut items = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = PaginatedRequestParams::default().with_cursor(cursor.take());
        let answer = peer.send_request(request(params)).await.map_err(|error| format!("{what} failed: {error}"))?;
        let (page, next) = take(answer).ok_or_else(|| format!("{what}: the server sent an unexpected answer"))?;
        items.extend(page);
        match next {
            Some(next) if !next.is_empty() => cursor = Some(next),
            _ => return Ok(items),
        }
    }
    Err(format!("{what}: more than {MAX_PAGES} pages"))
}

/// Lists tools, prompts, resources and resource templates. Prompts and resources are only
/// asked of servers that declare them.
pub async fn list_all(peer: &Peer<RoleClient>, capabilities: &ServerCapabilities) -> Result<Lists, String> {
    let tools = list_pages(
        peer,
        "tools/list",
        |p| ClientRequest::ListToolsRequest(ListToolsRequest::with_param(p)),
        |answer| match answer {
            ServerResult::ListToolsResult(r) => Some((r.tools, r.next_cursor)),
            _ => None,
        },
    );
    let tools = if capabilities.tools.is_some() {
        tools.await?
    } else {
        // Undeclared: ask anyway, some servers forget the capability.
        tools.await.unwrap_or_default()
    };
    let mut lists = Lists { tools, ..Lists::default() };
    if capabilities.prompts.is_some() {
        lists.prompts = list_pages(
            peer,
            "prompts/list",
            |p| ClientRequest::ListPromptsRequest(ListPromptsRequest::with_param(p)),
            |answer| match answer {
                ServerResult::ListPromptsResult(r) => Some((r.prompts, r.next_cursor)),
                _ => None,
            },
        )
        .await?;
    }
    if capabilities.resources.is_some() {
        lists.resources = list_pages(
            peer,
            "resources/list",
            |p| ClientRequest::ListResourcesRequest(ListResourcesRequest::with_param(p)),
            |answer| match answer {
                ServerResult::ListResourcesResult(r) => Some((r.resources, r.next_cursor)),
                _ => None,
            },
        )
        .await?;
        lists.resource_templates = list_pages(
            peer,
            "resources/templates/list",
            |p| ClientRequest::ListResourceTemplatesRequest(ListResourceTemplatesRequest::with_param(p)),
            |answer| match answer {
                ServerResult::ListResourceTemplatesResult(r) => Some((r.resource_templates, r.next_cursor)),
                _ => None,
            },
        )
        .await?;
    }
    Ok(lists)
}
