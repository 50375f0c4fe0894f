//! Vocabulary shared by the chat service, the LLM providers, the MCP layer and the store.
//!
//! These types sit below every other module so that the modules can exchange them without
//! knowing each other: the LLM layer produces [`ToolCall`]s, the MCP layer runs them, the store
//! records them, and none of the three imports another.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// An MCP prompt (`<server>__<prompt>`) with its arguments, as a client names it for its turn
/// and as the log records it. The map is sorted, so equal references serialise equally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRef {
    pub name: String,
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
}

/// Who speaks a message, in the vocabulary every chat API shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call the model asked for, with its arguments already parsed.
///
/// `name` is the model-facing name (`<server>__<tool>`); the MCP layer maps it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// Token figures of one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// A tool as offered to the model: model-facing name, description, JSON schema of arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Schema,
    #[serde(skip)]
    pub encoded: Encoded,
    /// Its token count when offered to the model, per token encoding.
    #[serde(skip)]
    pub tokens: Memo<usize>,
}

impl ToolSpec {
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Schema) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
            encoded: Memo::default(),
            tokens: Memo::default(),
        }
    }
}

/// A tool's JSON schema, shared rather than copied: every model call of every turn is handed
/// the whole tool list, and a deep copy of each schema cost more than the rest of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema(Arc<Value>);

impl std::ops::Deref for Schema {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl From<Value> for Schema {
    fn from(schema: Value) -> Self {
        Schema(Arc::new(schema))
    }
}

impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Schema::from)
    }
}

/// An image a tool returned, base64-encoded as MCP carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub mime_type: String,
    pub data: String,
}

/// A resource a tool pointed to; its `uri` can be read in a later turn (`payload.resources`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceLink {
    pub uri: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// What a tool returned beyond text (SPEC §2.2): shown to the client with the result and
/// kept in the log with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolAttachments {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// The tool's `structuredContent`, valid against its `outputSchema` when it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_links: Vec<ResourceLink>,
}

impl ToolAttachments {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.structured.is_none() && self.resource_links.is_empty()
    }
}

/// One message of the conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Images of a tool message, for a model that reads images; providers without vision
    /// leave them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// Tool calls of an assistant message; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip)]
    pub encoded: Encoded,
}

/// Something worked out from the value that holds it, kept for the next time: an event's model
/// message, a message's or tool's wire encoding, a tool's token count. The history and the
/// tool list go out with every model call and are shared by every later call (`Arc`), so each
/// is worked out once rather than once per call. Not part of the value: a clone starts empty,
/// as it may be changed, and two values compare equal whatever they keep.
pub struct Kept<T>(OnceLock<T>);

impl<T> Kept<T> {
    pub fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(make)
    }
}

/// A [`Kept`] value named by how it was worked out (a wire format, a token encoding): what one
/// key made is never handed to another.
pub type Memo<T> = Kept<(&'static str, T)>;

/// A message's or tool's encoding in a provider's wire format.
pub type Encoded = Memo<Box<RawValue>>;

impl<T> Memo<T> {
    /// What `make` works out under `key`, made the first time; `None` when the value was first
    /// worked out under another key (the caller then works it out itself).
    pub fn get_or_make(&self, key: &'static str, make: impl FnOnce() -> T) -> Option<&T> {
        let (made_by, made) = self.0.get_or_init(|| (key, make()));
        (*made_by == key).then_some(made)
    }
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept(OnceLock::new())
    }
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Kept::default()
    }
}

impl<T> PartialEq for Kept<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self::plain(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::plain(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self { tool_calls, ..Self::plain(Role::Assistant, content) }
    }
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self { tool_call_id: Some(tool_call_id.into()), ..Self::plain(Role::Tool, content) }
    }
    fn plain(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            encoded: Encoded::default(),
        }
    }
}

/// Why the model stopped, as reported to the client in `metadata.finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ToolLimit,
    Cancelled,
}

/// A user's decision on a tool call that waited for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// How a user answered an MCP server's question (MCP elicitation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElicitationAction {
    Accept,
    Decline,
    Cancel,
}

/// An MCP server's question for the user whose tool call it is serving.
#[derive(Debug, Clone, PartialEq)]
pub struct Elicitation {
    pub server: String,
    pub message: String,
    pub mode: ElicitationMode,
    /// Whether the answer may be written to the log: only when the server marked it not
    /// sensitive (`_meta: {"sensitive": false}`); answers may hold secrets.
    pub log_content: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ElicitationMode {
    /// The answer is `content` satisfying this JSON Schema.
    Form { requested_schema: Value },
    /// The user goes to `url`; the answer carries no content.
    Url { url: String },
}

/// What goes back to the MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct ElicitationReply {
    pub action: ElicitationAction,
    pub content: Option<Value>,
}

impl ElicitationReply {
    pub fn declined() -> Self {
        Self { action: ElicitationAction::Decline, content: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_key_made_is_reused_only_under_that_key_and_never_copied() {
        let message = Message::user("hi");
        let raw = |text: &str| RawValue::from_string(text.to_owned()).expect("JSON");
        assert_eq!(message.encoded.get_or_make("a", || raw("1")).map(|raw| raw.get()), Some("1"));
        let unused = || -> Box<RawValue> { panic!("the first encoding is kept") };
        assert_eq!(message.encoded.get_or_make("a", unused).map(|raw| raw.get()), Some("1"));
        assert!(message.encoded.get_or_make("b", || raw("2")).is_none(), "another format encodes it itself");
        let copy = message.clone();
        assert_eq!(copy.encoded.get_or_make("b", || raw("2")).map(|raw| raw.get()), Some("2"), "a copy starts afresh");
        assert_eq!(copy, message, "equal whatever their encodings");
    }
}
