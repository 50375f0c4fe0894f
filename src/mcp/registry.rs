//! What every MCP server offers, as the model and the clients name it: model-facing tool
//! names (`<server>__<tool>`, see `names`), their schemas and argument validation, and which
//! server serves a tool, a prompt or a resource.
//!
//! Separate from supervision: the names depend on every server's lists at once (two servers
//! with the same tool), so they are computed here whenever any server's lists change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::{Map, Value};

use super::server::{McpServer, McpServerState, Status};
use super::{ApprovalFacts, ToolError, convert, names};
use crate::config::ApprovalPolicy;
use crate::domain::{ToolCall, ToolSpec};

/// A tool as the registry knows it: where it goes and how its arguments are checked.
struct RegisteredTool {
    server: usize,
    original: String,
    spec: Arc<ToolSpec>,
    validator: Option<Arc<jsonschema::Validator>>,
    /// As the server declares them; `{}` when it declares none.
    annotations: Value,
    read_only: bool,
}

/// The tools of every server under their model-facing names, as last computed.
#[derive(Default)]
pub struct ToolTable {
    tools: HashMap<String, RegisteredTool>,
    /// Model-facing names in a stable order (server, then the server's order).
    order: Vec<String>,
    names: HashMap<(String, String), String>,
}

impl ToolTable {
    /// The model-facing name of `tool` on `server`, if the tool is offered.
    pub fn model_name(&self, server: &str, tool: &str) -> Option<&String> {
        self.names.get(&(server.to_owned(), tool.to_owned()))
    }
}

/// The model-facing names of a server's prompts, by `(server, prompt)`.
pub fn prompt_names(server: &McpServer, status: &Status) -> BTreeMap<(String, String), String> {
    names::assign(
        &status.lists.prompts.iter().map(|prompt| (server.name.clone(), prompt.name.clone())).collect::<Vec<_>>(),
    )
}

/// A tool call the registry accepted: where it goes, under the server's own tool name.
pub struct Routed<'a> {
    pub server: &'a Arc<McpServer>,
    pub tool: String,
    pub arguments: Map<String, Value>,
}

pub struct Registry {
    servers: Vec<Arc<McpServer>>,
    table: RwLock<Arc<ToolTable>>,
    /// Held for a whole rebuild: two servers connecting at once each rebuild, and the one that
    /// read the statuses first must not write its older table last.
    rebuilding: Mutex<()>,
}

impl Registry {
    pub fn new(servers: Vec<Arc<McpServer>>) -> Self {
        Self { servers, table: RwLock::default(), rebuilding: Mutex::new(()) }
    }

    pub fn servers(&self) -> &[Arc<McpServer>] {
        &self.servers
    }

    pub fn table(&self) -> Arc<ToolTable> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Recomputes model-facing names from every server's last known tools, so a server that
    /// is restarting does not rename the tools of another.
    pub fn rebuild(&self) {
        let _rebuilding = self.rebuilding.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pairs = Vec::new();
        let mut entries = Vec::new();
        for (index, server) in self.servers.iter().enumerate() {
            let status = server.status();
            for tool in &status.lists.tools {
                if server.allowed(&tool.name) {
                    pairs.push((server.name.clone(), tool.name.to_string()));
                    entries.push((index, tool.clone()));
                }
            }
        }
        let names = names::assign(&pairs);
        let mut table = ToolTable { names: names.clone().into_iter().collect(), ..ToolTable::default() };
        for (pair, (index, tool)) in pairs.iter().zip(entries) {
            let name = names[pair].clone();
            let validator = match jsonschema::validator_for(&Value::Object((*tool.input_schema).clone())) {
                Ok(validator) => Some(Arc::new(validator)),
                Err(error) => {
                    tracing::warn!(server = %pair.0, tool = %pair.1, %error, "tool input schema does not compile; arguments are passed unchecked");
                    None
                }
            };
            table.order.push(name.clone());
            table.tools.insert(
                name.clone(),
                RegisteredTool {
                    server: index,
                    original: pair.1.clone(),
                    spec: Arc::new(convert::tool_spec(&name, &tool)),
                    validator,
                    annotations: tool
                        .annotations
                        .as_ref()
                        .and_then(|annotations| serde_json::to_value(annotations).ok())
                        .unwrap_or_else(|| Value::Object(Map::new())),
                    read_only: tool.annotations.as_ref().and_then(|annotations| annotations.read_only_hint)
                        == Some(true),
                },
            );
        }
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// Tools offered to the model now: those of connected servers whose circuit is not open.
    pub fn offered_tools(&self) -> Vec<Arc<ToolSpec>> {
        let table = self.table();
        table
            .order
            .iter()
            .filter_map(|name| table.tools.get(name))
            .filter(|tool| self.servers[tool.server].state() == McpServerState::Connected)
            .map(|tool| tool.spec.clone())
            .collect()
    }

    /// Finds the tool of a call and checks its arguments against the tool's schema; the
    /// error is for the model to read.
    pub fn route(&self, call: &ToolCall) -> Result<Routed<'_>, String> {
        let table = self.table();
        let Some(tool) = table.tools.get(&call.name) else {
            return Err(format!("unknown tool `{}`: no MCP server offers a tool by that name", call.name));
        };
        let no_arguments = Value::Object(Map::new());
        let arguments = if call.arguments.is_null() { &no_arguments } else { &call.arguments };
        let Value::Object(object) = arguments else {
            return Err(format!("arguments of `{}` must be a JSON object, not {arguments}", call.name));
        };
        validate(tool, arguments)?;
        Ok(Routed { server: &self.servers[tool.server], tool: tool.original.clone(), arguments: object.clone() })
    }

    /// Whether a call of the tool `name` waits for a person under `global` (SPEC §2.6, §5):
    /// the server's `auto_approve_tools` / `approve_tools` first, then its `approval` or the
    /// global policy; under `annotations` a tool is asked unless it is `readOnlyHint`, and
    /// only a `trusted` server's hints are believed. An unknown tool is not asked: its call
    /// fails without reaching any server.
    pub fn needs_approval(&self, name: &str, global: ApprovalPolicy) -> Option<ApprovalFacts> {
        let table = self.table();
        let tool = table.tools.get(name)?;
        let server = &self.servers[tool.server];
        let asked = match server.approval_rule(&tool.original) {
            Some(asked) => asked,
            None => match server.approval_policy().unwrap_or(global) {
                ApprovalPolicy::Never => false,
                ApprovalPolicy::Always => true,
                ApprovalPolicy::Annotations => !(server.trusted() && tool.read_only),
            },
        };
        asked.then(|| ApprovalFacts { server: server.name.clone(), annotations: tool.annotations.clone() })
    }

    /// The server offering the prompt `<server>__<prompt>`, and the prompt's own name.
    pub fn prompt(&self, name: &str) -> Result<(&Arc<McpServer>, String), ToolError> {
        self.servers
            .iter()
            .find_map(|server| {
                prompt_names(server, &server.status())
                    .into_iter()
                    .find(|(_, model_name)| model_name == name)
                    .map(|((_, original), _)| (server, original))
            })
            .ok_or_else(|| ToolError(format!("unknown prompt `{name}`: no MCP server offers it")))
    }

    /// The server offering `uri`: one that lists it, else one with a template matching it.
    pub fn resource_server(&self, uri: &str) -> Result<&Arc<McpServer>, ToolError> {
        let offers = |server: &Arc<McpServer>, by_template: bool| {
            let status = server.status();
            if by_template {
                status
                    .lists
                    .resource_templates
                    .iter()
                    .any(|template| convert::template_matches(&template.uri_template, uri))
            } else {
                status.lists.resources.iter().any(|resource| resource.uri == uri)
            }
        };
        self.servers
            .iter()
            .find(|server| offers(server, false))
            .or_else(|| self.servers.iter().find(|server| offers(server, true)))
            .ok_or_else(|| {
                ToolError(format!("no MCP server offers the resource `{uri}` (neither listed nor matching a template)"))
            })
    }
}

fn validate(tool: &RegisteredTool, arguments: &Value) -> Result<(), String> {
    let Some(validator) = &tool.validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(arguments)
        .take(5)
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() {
                format!("{error}")
            } else {
                format!("field `{}`: {error}", path.trim_start_matches('/'))
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("invalid arguments for `{}`: {}", tool.spec.name, problems.join("; ")))
    }
}
