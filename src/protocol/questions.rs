//! The human-in-the-loop part of the protocol (SPEC §2.6): the `approve` and `elicit` answers
//! and their validation, and the chunks that carry questions and their outcomes. Kept apart
//! from the chat messages because it grows with MCP's elicitation modes, not with the chat.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{FieldError, MAX_ID_CHARS, optional_string, reject_unknown_fields, type_error};
pub use crate::domain::{Decision, ElicitationAction};

/// The `payload` of an `approve` action.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalAnswer {
    pub call_id: String,
    pub decision: Decision,
    pub reason: Option<String>,
}

/// The `payload` of an `elicit` action.
#[derive(Debug, Clone, PartialEq)]
pub struct ElicitationAnswer {
    pub elicitation_id: String,
    pub action: ElicitationAction,
    /// Checked against the question's `requested_schema` by the chat service, which knows it.
    pub content: Option<Value>,
}

/// The payload object of `approve` / `elicit`, with no keys but `allowed`.
fn answer_payload<'v>(
    value: Option<&'v Value>,
    action: &str,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<&'v Map<String, Value>> {
    match value {
        Some(Value::Object(payload)) => {
            reject_unknown_fields(payload, "payload.", allowed, errors);
            Some(payload)
        }
        None => {
            errors.push(FieldError::new("payload", format!("is required for {action}"), "missing"));
            None
        }
        Some(other) => {
            errors.push(type_error("payload", "an object", other));
            None
        }
    }
}

/// A required, non-empty string of at most [`MAX_ID_CHARS`] characters inside the payload.
fn payload_id(payload: &Map<String, Value>, key: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let field = format!("payload.{key}");
    match optional_string(payload, &field, key, errors) {
        None if payload.get(key).is_none_or(|value| value.is_null()) => {
            errors.push(FieldError::new(field, "is required", "missing"));
            None
        }
        Some(id) if id.is_empty() || id.chars().count() > MAX_ID_CHARS => {
            errors.push(FieldError::new(
                field,
                format!("must be a non-empty string of at most {MAX_ID_CHARS} characters"),
                "value_error",
            ));
            None
        }
        id => id,
    }
}

/// A required string field that must be one of `choices`, parsed into `T`.
fn payload_choice<T: serde::de::DeserializeOwned>(
    payload: &Map<String, Value>,
    key: &str,
    choices: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let field = format!("payload.{key}");
    match payload.get(key) {
        Some(Value::String(choice)) if choices.contains(&choice.as_str()) => {
            serde_json::from_value(Value::String(choice.clone())).ok()
        }
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, format!("is required: one of {}", choices.join(", ")), "missing"));
            None
        }
        Some(other) => {
            errors.push(FieldError::new(
                field,
                format!("expected one of {}, found {other}", choices.join(", ")),
                "value_error",
            ));
            None
        }
    }
}

pub(super) fn validate_approval(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<ApprovalAnswer> {
    let payload = answer_payload(value, "approve", &["call_id", "decision", "reason"], errors)?;
    let call_id = payload_id(payload, "call_id", errors);
    let decision = payload_choice(payload, "decision", &["allow", "deny"], errors);
    let reason = optional_string(payload, "payload.reason", "reason", errors);
    Some(ApprovalAnswer { call_id: call_id?, decision: decision?, reason })
}

pub(super) fn validate_elicitation(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<ElicitationAnswer> {
    let payload = answer_payload(value, "elicit", &["elicitation_id", "action", "content"], errors)?;
    let elicitation_id = payload_id(payload, "elicitation_id", errors);
    let action = payload_choice(payload, "action", &["accept", "decline", "cancel"], errors);
    let content = match payload.get("content") {
        None | Some(Value::Null) => None,
        Some(content @ Value::Object(_)) => Some(content.clone()),
        Some(other) => {
            errors.push(type_error("payload.content", "an object", other));
            None
        }
    };
    if content.is_some() && action.is_some_and(|action| action != ElicitationAction::Accept) {
        errors.push(FieldError::new("payload.content", "is only sent with action accept", "value_error"));
    }
    Some(ElicitationAnswer { elicitation_id: elicitation_id?, action: action?, content })
}

/// A tool call waiting for the user's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequestChunk {
    /// The tool call's id: what `approve` names as `call_id`.
    pub id: String,
    pub name: String,
    pub server: String,
    pub arguments: Value,
    /// The tool's MCP annotations as its server declares them (`{}` when none).
    pub annotations: Value,
    pub timeout_seconds: f64,
}

/// How an approval was decided: by a user, or, without `by`, by the timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalChunk {
    pub id: String,
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An MCP server's question to the user, in form or URL mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElicitationChunk {
    /// What `elicit` names as `elicitation_id`.
    pub id: String,
    pub server: String,
    pub mode: ElicitationMode,
    pub message: String,
    /// Form mode: the JSON Schema the answer's `content` must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_schema: Option<Value>,
    /// URL mode: where the server sends the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// URL mode: the host of `url`, so the user sees where the link leads before opening it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub timeout_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElicitationMode {
    Form,
    Url,
}

/// What went back to the server: the user's action, or `cancel` without `by` after the timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElicitationResultChunk {
    pub id: String,
    pub action: ElicitationAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::super::{ClientMessage, parse_client_message, tests::fields, tests::rejection};
    use super::*;

    #[test]
    fn approve_and_elicit_frames_parse_and_report_every_bad_field() {
        let approve = parse_client_message(
            r#"{"action":"approve","request_id":"r-1","payload":{"call_id":"call_1","decision":"deny","reason":"no"}}"#,
        )
        .expect("valid");
        assert_eq!(
            approve,
            ClientMessage::Approve {
                request_id: "r-1".into(),
                answer: ApprovalAnswer {
                    call_id: "call_1".into(),
                    decision: Decision::Deny,
                    reason: Some("no".into())
                }
            }
        );
        let elicit = parse_client_message(
            r#"{"action":"elicit","request_id":"r-1","payload":{"elicitation_id":"e-1","action":"accept","content":{"name":"Ada"}}}"#,
        )
        .expect("valid");
        let ClientMessage::Elicit { answer, .. } = elicit else { panic!("not an elicit: {elicit:?}") };
        assert_eq!(answer.content, Some(serde_json::json!({"name": "Ada"})));

        let mut found =
            fields(&rejection(r#"{"action":"approve","request_id":"r","payload":{"decision":"maybe","x":1}}"#));
        found.sort();
        assert_eq!(found, ["payload.call_id", "payload.decision", "payload.x"]);
        let found = fields(&rejection(
            r#"{"action":"elicit","request_id":"r","payload":{"elicitation_id":"e","action":"decline","content":{}}}"#,
        ));
        assert_eq!(found, ["payload.content"]);
        assert_eq!(fields(&rejection(r#"{"action":"elicit","request_id":"r"}"#)), ["payload"]);
    }
}
