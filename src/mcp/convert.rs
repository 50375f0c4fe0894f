//! Conversions between MCP shapes and what the model sees.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, PromptMessage, ResourceContents, Role, Tool};
use serde_json::{Map, Value, json};

use crate::domain::{Image, Message, ResourceLink, ToolAttachments, ToolSpec};

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
    ToolSpec::new(model_name, description, parameters_schema(&tool.input_schema).into())
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

/// A tool's answer as the chat service uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAnswer {
    /// False when the tool reported an error or its structured content broke its schema.
    pub ok: bool,
    /// Every content block as text (an image as `[image: …]`), whole.
    pub text: String,
    pub attachments: ToolAttachments,
    /// What was returned but is passed on to no one (audio, binary resources), phrased
    /// for the client.
    pub notices: Vec<String>,
}

impl ToolAnswer {
    pub fn failed(text: String) -> Self {
        Self { ok: false, text, attachments: ToolAttachments::default(), notices: Vec::new() }
    }
}

/// Reads a tool result: text for the model, images, structured content and resource links
/// for the client (and images for a model that reads them).
///
/// `structuredContent` is checked against the tool's `outputSchema`: a mismatch is an error
/// the model reads, because the tool broke its own contract. The JSON is added to the text
/// unless a text block already carries it (servers are asked to mirror it for older clients).
pub fn tool_answer(tool: &str, result: &CallToolResult, output_schema: Option<&JsonObject>) -> ToolAnswer {
    let mut parts: Vec<String> = result.content.iter().map(content_text).collect();
    let mut attachments = ToolAttachments::default();
    let mut notices = Vec::new();
    for block in &result.content {
        match block {
            ContentBlock::Image(image) => {
                attachments.images.push(Image { mime_type: image.mime_type.clone(), data: image.data.clone() })
            }
            ContentBlock::ResourceLink(link) => attachments.resource_links.push(ResourceLink {
                uri: link.uri.clone(),
                name: link.name.clone(),
                description: link.description.clone(),
                mime_type: link.mime_type.clone(),
            }),
            ContentBlock::Audio(audio) => notices.push(format!(
                "`{tool}` returned audio ({}, {} bytes), which is not passed on",
                audio.mime_type,
                base64_size(&audio.data)
            )),
            ContentBlock::Resource(embedded) => {
                if let ResourceContents::BlobResourceContents { uri, mime_type, blob, .. } = &embedded.resource {
                    notices.push(format!(
                        "`{tool}` returned binary data ({uri}: {}, {} bytes), which is not passed on",
                        mime_type.as_deref().unwrap_or("binary"),
                        base64_size(blob)
                    ));
                }
            }
            _ => {}
        }
    }
    let mut ok = result.is_error != Some(true);
    if let Some(structured) = &result.structured_content {
        let mirrored = parts.iter().any(|part| serde_json::from_str::<Value>(part).ok().as_ref() == Some(structured));
        if !mirrored {
            parts.push(structured.to_string());
        }
        match output_schema.map(|schema| schema_violations(schema, structured)) {
            Some(Err(problem)) => {
                ok = false;
                parts.push(format!("the structured content of `{tool}` does not match its outputSchema: {problem}"));
            }
            _ => attachments.structured = Some(structured.clone()),
        }
    } else if output_schema.is_some() && ok {
        ok = false;
        parts.push(format!("`{tool}` declares an outputSchema but returned no structured content"));
    }
    ToolAnswer { ok, text: parts.join("\n"), attachments, notices }
}

/// `Err` with the first problems when `value` breaks `schema`; a schema that does not
/// compile is not held against the tool's answer.
fn schema_violations(schema: &JsonObject, value: &Value) -> Result<(), String> {
    let Ok(validator) = jsonschema::validator_for(&Value::Object(schema.clone())) else {
        return Ok(());
    };
    let problems: Vec<String> =
        validator.iter_errors(value).take(3).map(|error| format!("{} at `{}`", error, error.instance_path())).collect();
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
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
    fn results_describe_every_content_kind_and_carry_what_is_beyond_text() {
        let mut result = CallToolResult::success(vec![
            ContentBlock::text("hello"),
            ContentBlock::image("aGVsbG8=", "image/png"),
            ContentBlock::audio("aGk=", "audio/wav"),
            ContentBlock::ResourceLink(Resource::new("file:///a.txt", "a")),
            ContentBlock::Resource(EmbeddedResource::new(ResourceContents::text("inside", "mem://x"))),
        ]);
        result.structured_content = Some(json!({"n": 1}));
        let answer = tool_answer("t", &result, None);
        assert!(answer.ok);
        assert_eq!(
            answer.text,
            "hello\n[image: image/png, 5 bytes]\n[audio: audio/wav, 2 bytes]\n\
             [resource link file:///a.txt (a)]\n[resource mem://x]\ninside\n{\"n\":1}"
        );
        assert_eq!(answer.attachments.images, [Image { mime_type: "image/png".into(), data: "aGVsbG8=".into() }]);
        assert_eq!(answer.attachments.structured, Some(json!({"n": 1})));
        assert_eq!(answer.attachments.resource_links[0].uri, "file:///a.txt");
        assert_eq!(answer.notices, ["`t` returned audio (audio/wav, 2 bytes), which is not passed on"]);
        assert!(!tool_answer("t", &CallToolResult::error(vec![ContentBlock::text("bad")]), None).ok);
    }

    #[test]
    fn structured_content_that_breaks_the_output_schema_is_an_error() {
        let Value::Object(schema) =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
        else {
            unreachable!()
        };
        let mut result = CallToolResult::success(vec![ContentBlock::text("{\"n\":\"one\"}")]);
        result.structured_content = Some(json!({"n": "one"}));
        let answer = tool_answer("count", &result, Some(&schema));
        assert!(!answer.ok);
        assert!(answer.text.contains("does not match its outputSchema"), "{}", answer.text);
        assert_eq!(answer.attachments.structured, None);
        result.structured_content = Some(json!({"n": 1}));
        let answer = tool_answer("count", &result, Some(&schema));
        assert!(answer.ok, "{}", answer.text);
        assert_eq!(answer.attachments.structured, Some(json!({"n": 1})));
    }

    #[test]
    fn templates_match_uris() {
        assert!(template_matches("demo://greeting/{name}", "demo://greeting/ada"));
        assert!(!template_matches("demo://greeting/{name}", "demo://greeting/"));
        assert!(template_matches("a://{x}/b/{y}", "a://1/b/2"));
        assert!(!template_matches("a://{x}/b/{y}", "a://1/c/2"));
    }
}
