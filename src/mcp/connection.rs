//! One live MCP session with a server process: the rmcp client, its notifications, listing.

use std::sync::{Mutex, Weak};

use rmcp::{
    ClientHandler, Peer, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, ClientRequest, Implementation, ListPromptsRequest,
        ListResourceTemplatesRequest, ListResourcesRequest, ListToolsRequest, PaginatedRequestParams,
        ProgressNotificationParam, Prompt, ProtocolVersion, Resource, ResourceTemplate, ServerCapabilities,
        ServerResult, Tool,
    },
    service::{NotificationContext, RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio_util::sync::CancellationToken;

use super::manager::Server;

/// The session as calls see it. `dead` fires the moment the process exits or the
/// transport closes, so calls in flight fail at once instead of at their timeout.
pub struct Connection {
    pub peer: Peer<RoleClient>,
    pub generation: u64,
    pub dead: CancellationToken,
    death: Mutex<Option<String>>,
}

impl Connection {
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

/// Receives the server's notifications for one session.
pub struct ClientEvents {
    pub server: Weak<Server>,
    pub generation: u64,
}

impl ClientEvents {
    fn refresh(&self) {
        if let Some(server) = self.server.upgrade() {
            server.refresh.notify_one();
        }
    }
}

impl ClientHandler for ClientEvents {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        if let Some(server) = self.server.upgrade() {
            server.route_progress(self.generation, params);
        }
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
        // The last revision with the `initialize` handshake: every server we meet speaks it,
        // and list_changed notifications arrive without a subscription.
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("mcp-platform", env!("CARGO_PKG_VERSION")))
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

/// The stdio transport, reporting when the server's stdout ends.
pub struct WatchedTransport<T> {
    pub inner: T,
    pub closed: CancellationToken,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for WatchedTransport<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.closed.cancel();
        }
        message
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
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
