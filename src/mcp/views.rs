//! The `/api` views of the MCP servers (`/api/servers`, `/api/tools`, `/api/prompts`,
//! `/api/resources`, the server states of `/readyz`) and `check`'s report: serialisable
//! snapshots taken from the supervisors' status and the registry's names.
//!
//! Separate because these shapes are a wire contract for clients: they change with the API,
//! not with how servers are supervised or called.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::breaker::CircuitState;
use super::convert;
use super::manager::McpManager;
use super::registry::{ToolTable, prompt_names};
use super::server::{McpServer, McpServerState, lock};
use crate::config::ServerTransport;
use crate::domain::Schema;

/// What a header value is shown as.
const HIDDEN: &str = "***";

#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    /// The model-facing name.
    pub name: String,
    pub original_name: String,
    pub description: String,
    pub parameters: Schema,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptArgumentView {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptView {
    /// `<server>__<prompt>`, what [`ToolProvider::get_prompt`](super::ToolProvider::get_prompt) takes.
    pub name: String,
    pub original_name: String,
    pub description: Option<String>,
    pub arguments: Vec<PromptArgumentView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceView {
    pub uri: String,
    pub name: String,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceTemplateView {
    pub uri_template: String,
    pub name: String,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

/// One server as `/api/servers` and `check` show it.
#[derive(Debug, Clone, Serialize)]
pub struct McpServerSnapshot {
    pub name: String,
    pub state: McpServerState,
    pub circuit: CircuitState,
    pub last_error: Option<String>,
    /// Restarts after the server had been connected.
    pub restarts: u32,
    /// Consecutive failed start attempts.
    pub failed_attempts: u32,
    /// When the next start attempt is due, while restarting.
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `stdio` (a local process) or `http` (a remote server).
    pub transport: ServerTransport,
    /// A remote server's endpoint.
    pub url: Option<String>,
    /// A remote server's header names, each value shown as `***`: they carry tokens.
    pub headers: BTreeMap<String, String>,
    pub pid: Option<u32>,
    pub server_info: Option<String>,
    /// The MCP revision the live session speaks (`2026-07-28`, `2025-06-18`).
    pub protocol_version: Option<String>,
    pub tools: Vec<ToolView>,
    pub prompts: Vec<PromptView>,
    pub resources: Vec<ResourceView>,
    pub resource_templates: Vec<ResourceTemplateView>,
}

/// Tools, prompts or resources with the server offering them, for `/api/*`.
#[derive(Debug, Clone, Serialize)]
pub struct Offered<T> {
    pub server: String,
    #[serde(flatten)]
    pub item: T,
}

/// A listed resource or a resource template: the first has `uri`, the second `uri_template`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ResourceListing {
    Resource(ResourceView),
    Template(ResourceTemplateView),
}

fn offered<T>(servers: Vec<McpServerSnapshot>, items: impl Fn(McpServerSnapshot) -> Vec<T>) -> Vec<Offered<T>> {
    servers
        .into_iter()
        .flat_map(|server| {
            let name = server.name.clone();
            items(server).into_iter().map(move |item| Offered { server: name.clone(), item })
        })
        .collect()
}

/// One server as `/api/servers` shows it, its tools under the names `table` gives them.
fn snapshot(server: &McpServer, table: &ToolTable) -> McpServerSnapshot {
    let status = server.status();
    let circuit = lock(&server.breaker).state();
    let state = McpServer::shown_state(status.state, circuit);
    let tools = status
        .lists
        .tools
        .iter()
        .filter(|tool| server.allowed(&tool.name))
        .filter_map(|tool| {
            let name = table.model_name(&server.name, &tool.name)?;
            let spec = convert::tool_spec(name, tool);
            Some(ToolView {
                name: spec.name,
                original_name: tool.name.to_string(),
                description: spec.description,
                parameters: spec.parameters,
            })
        })
        .collect();
    let prompt_names = prompt_names(server, &status);
    McpServerSnapshot {
        name: server.name.clone(),
        state,
        circuit,
        last_error: status.last_error.clone(),
        restarts: status.restarts,
        failed_attempts: status.failed_attempts,
        next_attempt_at: status.next_attempt_at.map(chrono::DateTime::from),
        transport: server.config.transport(),
        url: server.config.url.clone(),
        headers: server.config.headers.keys().map(|name| (name.clone(), HIDDEN.to_owned())).collect(),
        pid: status.pid,
        server_info: status.server_info.clone(),
        protocol_version: status.protocol_version.clone(),
        tools,
        prompts: status
            .lists
            .prompts
            .iter()
            .map(|prompt| PromptView {
                name: prompt_names[&(server.name.clone(), prompt.name.clone())].clone(),
                original_name: prompt.name.clone(),
                description: prompt.description.clone(),
                arguments: prompt
                    .arguments
                    .iter()
                    .flatten()
                    .map(|argument| PromptArgumentView {
                        name: argument.name.clone(),
                        description: argument.description.clone(),
                        required: argument.required.unwrap_or(false),
                    })
                    .collect(),
            })
            .collect(),
        resources: status
            .lists
            .resources
            .iter()
            .map(|resource| ResourceView {
                uri: resource.uri.clone(),
                name: resource.name.clone(),
                description: resource.description.clone(),
                mime_type: resource.mime_type.clone(),
            })
            .collect(),
        resource_templates: status
            .lists
            .resource_templates
            .iter()
            .map(|template| ResourceTemplateView {
                uri_template: template.uri_template.clone(),
                name: template.name.clone(),
                description: template.description.clone(),
                mime_type: template.mime_type.clone(),
            })
            .collect(),
    }
}

impl McpManager {
    /// Every enabled server: state, circuit, last error, and what it offers (`/api/servers`).
    pub fn servers_view(&self) -> Vec<McpServerSnapshot> {
        let table = self.registry.table();
        self.registry.servers().iter().map(|server| snapshot(server, &table)).collect()
    }

    pub fn server(&self, name: &str) -> Option<McpServerSnapshot> {
        self.servers_view().into_iter().find(|server| server.name == name)
    }

    /// Restarts the named server (`POST /api/servers/{name}/restart`); false when no enabled
    /// server has that name.
    pub fn restart(&self, name: &str) -> bool {
        self.find(name).map(|server| server.request_restart()).is_some()
    }

    /// Closes the named server's circuit breaker (`POST /api/servers/{name}/breaker/reset`).
    pub fn reset_breaker(&self, name: &str) -> bool {
        self.find(name).map(|server| lock(&server.breaker).reset()).is_some()
    }

    fn find(&self, name: &str) -> Option<&Arc<McpServer>> {
        self.registry.servers().iter().find(|server| server.name == name)
    }

    /// Each server's state by name, for `/readyz`.
    pub fn server_states(&self) -> BTreeMap<String, McpServerState> {
        self.registry.servers().iter().map(|server| (server.name.clone(), server.state())).collect()
    }

    /// Tools of every server, offered right now or not (`/api/tools`).
    pub fn tools_view(&self) -> Vec<Offered<ToolView>> {
        offered(self.servers_view(), |server| server.tools)
    }

    /// `/api/prompts`.
    pub fn prompts_view(&self) -> Vec<Offered<PromptView>> {
        offered(self.servers_view(), |server| server.prompts)
    }

    /// Resources, then resource templates (`/api/resources`).
    pub fn resources_view(&self) -> Vec<Offered<ResourceListing>> {
        offered(self.servers_view(), |server| {
            let resources = server.resources.into_iter().map(ResourceListing::Resource);
            let templates = server.resource_templates.into_iter().map(ResourceListing::Template);
            resources.chain(templates).collect()
        })
    }
}
