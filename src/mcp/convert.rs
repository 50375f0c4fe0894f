//! Conversions between MCP shapes and what the model sees.

use rmcp::model::{CallToolResult, ContentBlock, PromptMessage, ResourceContents, Role, Tool};
use serde_json::{Map, Value, json};

use crate::domain::{Message, ToolSpec};

/// Top-level schema keys every model API understands; anything else (`$schema`, vendor
/// extensions, `anyOf` at the root) is dropped because some providers reject it.
const ROOT_SCHEMA_KEYS: &[&str] =
    &["type", "properties", "required", "additionalProperties", "description", "$defs", "definitions"];

/// The argument schema offered to the model: always an object schema with `properties`.
pub fn parameters_schema(input_schema: &Map<String, Value>) -> Value {
    let mut schema: Map<String, Value> = input_schema
        .iter()
        .filter(|(key, _)| ROOT_SCHEMA_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    schema.insert("type".into(), json!("object"));
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema.insert("properties".into(), json!({}));
    }
    Value::Object(schema)
}

pub fn tool_spec(model_name: &str, tool: &Tool) -> ToolSpec {
    let description = tool.description.as_deref().or(tool.title.as_deref()).unwrap_or_default().to_owned();
    ToolSpec { name: model_name.to_owned(), description, parameters: parameters_schema(&tool.input_schema) }
}

/// Decoded size of base64 data, without decoding it.
fn base64_size(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

fn resource_text(resource: &ResourceContents) -> String {
    match resource {
        ResourceContents::TextResourceContents { uri, text, .. } => {
            format!("[resource {uri}]\n{text}")
        }
        ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } => {
            format!("[resource {uri}: {}, {} bytes]", mime_type.as_deref().unwrap_or("binary"), base64_size(blob))
        }
        other => format!("[resource: {}]", serde_json::to_string(other).unwrap_or_default()),
    }
}

fn content_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image: {}, {} bytes]", image.mime_type, base64_size(&image.data)),
        ContentBlock::Audio(audio) => format!("[audio: {}, {} bytes]", audio.mime_type, base64_size(&audio.data)),
        ContentBlock::ResourceLink(link) => match &link.description {
            Some(description) => format!("[resource link {}: {description}]", link.uri),
            None => format!("[resource link {} ({})]", link.uri, link.name),
        },
        ContentBlock::Resource(embedded) => resource_text(&embedded.resource),
        // A content kind newer than this build: the raw JSON beats dropping it.
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The text the model reads for a tool result, and whether the tool reported an error.
///
/// `structuredContent` is included as JSON unless a text block already carries the same
/// JSON (servers are asked to mirror it there for older clients).
pub fn result_text(result: &CallToolResult) -> (bool, String) {
    let mut parts: Vec<String> = result.content.iter().map(content_text).collect();
    if let Some(structured) = &result.structured_content {
        let mirrored = parts.iter().any(|part| serde_json::from_str::<Value>(part).ok().as_ref() == Some(structured));
        if !mirrored {
            parts.push(structured.to_string());
        }
    }
    (result.is_error != Some(true), parts.join("\n"))
}

pub fn prompt_message(message: &PromptMessage) -> Message {
    let text = content_text(&message.content);
    match message.role {
        Role::User => Message::user(text),
        Role::Assistant => Message::assistant(text, Vec::new()),
    }
}

pub fn resource_contents_text(contents: &[ResourceContents]) -> String {
    contents
        .iter()
        .map(|content| match content {
            ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => resource_text(other),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `uri` matches an RFC 6570 template at the level MCP servers use
/// (`{var}` expressions standing for one or more characters).
pub fn template_matches(template: &str, uri: &str) -> bool {
    let mut rest = uri;
    let mut pieces = template.split('{');
    let Some(prefix) = pieces.next() else {
        return false;
    };
    let Some(after_prefix) = rest.strip_prefix(prefix) else {
        return false;
    };
    rest = after_prefix;
    for piece in pieces {
        let Some((_, literal)) = piece.split_once('}') else {
            return false;
        };
        // The variable takes at least one character, up to the next literal.
        if literal.is_empty() {
            return !rest.is_empty();
        }
        let Some(position) = rest.get(1..).and_then(|tail| tail.find(literal)) else {
            return false;
        };
        rest = &rest[position + 1 + literal.len()..];
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use rmcp::model::{EmbeddedResource, Resource};

    use super::*;

    #[test]
    fn schema_is_always_an_object_with_properties() {
        let schema = parameters_schema(&Map::new());
        assert_eq!(schema, json!({"type": "object", "properties": {}}));
        let Value::Object(input) = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"a": {"type": "number"}},
            "required": ["a"],
            "x-vendor": true
        }) else {
            unreachable!()
        };
        assert_eq!(
            parameters_schema(&input),
            json!({"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]})
        );
    }

    #[test]
    fn results_describe_every_content_kind() {
        let mut result = CallToolResult::success(vec![
            ContentBlock::text("hello"),
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::audio("aGk=", "audio/wav"),
            ContentBlock::ResourceLink(Resource::new("file:///a.txt", "a")),
            ContentBlock::Resource(EmbeddedResource::new(ResourceContents::text("inside", "mem://x"))),
        ]);
        result.structured_content = Some(json!({"n": 1}));
        let (ok, text) = result_text(&result);
        assert!(ok);
        assert_eq!(
            text,
            "hello\n[image: image/png, 5 bytes]\n[audio: audio/wav, 2 bytes]\n\
             [resource link file:///a.txt (a)]\n[resource mem://x]\ninside\n{\"n\":1}"
        );
        let (ok, _) = result_text(&CallToolResult::error(vec![ContentBlock::text("bad")]));
        assert!(!ok);
    }

    #[test]
    fn templates_match_uris() {
        assert!(template_matches("demo://greeting/{name}", "demo://greeting/ada"));
        assert!(!template_matches("demo://greeting/{name}", "demo://greeting/"));
        assert!(template_matches("a://{x}/b/{y}", "a://1/b/2"));
        assert!(!template_matches("a://{x}/b/{y}", "a://1/c/2"));
    }
}
