//! The terminal client's side of SPEC §2.6: a request's questions asked on the terminal, one
//! line per answer. An approval is `y` or `n`; a form is asked one field at a time (an empty
//! line skips an optional field; `/decline` or `/cancel` answer the whole form); a URL is shown
//! with its host and accepted with `y`.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use crate::protocol::{ApprovalRequestChunk, ElicitationChunk, ElicitationMode};

/// A question of a request, as the terminal asks it.
#[derive(Debug, Clone)]
pub enum Question {
    Approval { request_id: String, chunk: ApprovalRequestChunk },
    Elicitation { request_id: String, chunk: ElicitationChunk },
}

impl Question {
    fn id(&self) -> &str {
        match self {
            Question::Approval { chunk, .. } => &chunk.id,
            Question::Elicitation { chunk, .. } => &chunk.id,
        }
    }
}

/// One form field being asked.
struct Field {
    name: String,
    schema: Value,
    required: bool,
}

/// The question being answered now, and the ones after it.
#[derive(Default)]
pub struct Questions {
    waiting: VecDeque<Question>,
    /// The form fields of the front question still to ask, and the answers so far.
    fields: VecDeque<Field>,
    content: Map<String, Value>,
    /// The question whose answer was sent and not yet settled by its chunk.
    sent: Option<Question>,
}

impl Questions {
    pub fn is_asking(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Queues a question; asks it now when nothing else is being asked.
    pub fn push(&mut self, question: Question) {
        self.waiting.push_back(question);
        if self.waiting.len() == 1 {
            self.ask_front();
        }
    }

    /// The server settled question `id` (`approval` / `elicitation_result`).
    pub fn settled(&mut self, id: &str) {
        if self.sent.as_ref().is_some_and(|sent| sent.id() == id) {
            self.sent = None;
        }
        if self.waiting.front().is_some_and(|front| front.id() == id) {
            self.waiting.pop_front();
            self.ask_front();
        } else {
            self.waiting.retain(|question| question.id() != id);
        }
    }

    /// A refused answer (an error without `seq`): the question is asked again. False when no
    /// answer was outstanding, so the error is the request's own.
    pub fn refused(&mut self) -> bool {
        match self.sent.take() {
            Some(question) => {
                self.waiting.push_front(question);
                self.ask_front();
                true
            }
            None => false,
        }
    }

    /// A line typed while a question is asked; returns the frame to send once the question is
    /// answered.
    pub fn answer(&mut self, line: &str) -> Option<Value> {
        let front = self.waiting.front()?.clone();
        let frame = match &front {
            Question::Approval { request_id, chunk } => {
                let decision = match yes_or_no(line) {
                    Some(true) => "allow",
                    Some(false) => "deny",
                    None => {
                        println!("  answer y or n");
                        return None;
                    }
                };
                json!({"action": "approve", "request_id": request_id,
                       "payload": {"call_id": chunk.id, "decision": decision}})
            }
            Question::Elicitation { request_id, chunk } => {
                let action = match (line, chunk.mode) {
                    ("/decline", _) => Some("decline"),
                    ("/cancel", _) => Some("cancel"),
                    (_, ElicitationMode::Url) => match yes_or_no(line) {
                        Some(true) => Some("accept"),
                        Some(false) => Some("decline"),
                        None => {
                            println!("  answer y (done) or n (decline)");
                            return None;
                        }
                    },
                    (_, ElicitationMode::Form) => self.fill(line).then_some("accept"),
                };
                let action = action?;
                let mut payload = json!({"elicitation_id": chunk.id, "action": action});
                if action == "accept" && chunk.mode == ElicitationMode::Form {
                    payload["content"] = Value::Object(std::mem::take(&mut self.content));
                }
                json!({"action": "elicit", "request_id": request_id, "payload": payload})
            }
        };
        self.waiting.pop_front();
        self.sent = Some(front);
        self.fields.clear();
        self.content.clear();
        self.ask_front();
        Some(frame)
    }

    /// Takes `line` as the current field's value; true once every field has one.
    fn fill(&mut self, line: &str) -> bool {
        if let Some(field) = self.fields.pop_front() {
            match parse_field(&field, line) {
                Ok(Some(value)) => {
                    self.content.insert(field.name, value);
                }
                Ok(None) => {}
                Err(problem) => {
                    println!("  {problem}");
                    self.fields.push_front(field);
                }
            }
        }
        match self.fields.front() {
            Some(next) => {
                prompt_field(next);
                false
            }
            None => true,
        }
    }

    fn ask_front(&mut self) {
        let Some(front) = self.waiting.front() else { return };
        match front {
            Question::Approval { chunk, .. } => {
                println!(
                    "\n  ? allow {} (server {}) with {}? [y/n] (denied after {:.0} s)",
                    chunk.name, chunk.server, chunk.arguments, chunk.timeout_seconds
                );
            }
            Question::Elicitation { chunk, .. } if chunk.mode == ElicitationMode::Url => {
                println!(
                    "\n  ? {} asks you to open {} (host {}): {}\n    done? [y = done, n = decline, /cancel]",
                    chunk.server,
                    chunk.url.as_deref().unwrap_or(""),
                    chunk.host.as_deref().unwrap_or("unknown"),
                    chunk.message
                );
            }
            Question::Elicitation { chunk, .. } => {
                println!("\n  ? {} asks: {} (/decline or /cancel to refuse)", chunk.server, chunk.message);
                self.fields = form_fields(chunk.requested_schema.as_ref());
                match self.fields.front() {
                    Some(first) => prompt_field(first),
                    None => println!("    (no fields) accept? [y / /decline]"),
                }
            }
        }
    }
}

fn form_fields(schema: Option<&Value>) -> VecDeque<Field> {
    let required: Vec<&str> = schema
        .and_then(|schema| schema["required"].as_array())
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema
        .and_then(|schema| schema["properties"].as_object())
        .map(|properties| {
            properties
                .iter()
                .map(|(name, schema)| Field {
                    name: name.clone(),
                    schema: schema.clone(),
                    required: required.contains(&name.as_str()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn prompt_field(field: &Field) {
    let title = field.schema["title"].as_str().unwrap_or(&field.name);
    let kind = field.schema["type"].as_str().unwrap_or("string");
    let choices = field.schema["enum"]
        .as_array()
        .map(|values| format!(" one of {}", Value::Array(values.clone())))
        .unwrap_or_default();
    let optional = if field.required { "" } else { ", empty to skip" };
    println!("    {title} ({kind}{choices}{optional}):");
}

/// The typed value of a field; `None` for a skipped optional one.
fn parse_field(field: &Field, line: &str) -> Result<Option<Value>, String> {
    if line.is_empty() {
        return if field.required { Err(format!("{} is required", field.name)) } else { Ok(None) };
    }
    let value = match field.schema["type"].as_str() {
        Some("integer") => line.parse::<i64>().map(Value::from).map_err(|_| "expected a whole number".to_owned())?,
        Some("number") => line.parse::<f64>().map(Value::from).map_err(|_| "expected a number".to_owned())?,
        Some("boolean") => Value::Bool(yes_or_no(line).ok_or_else(|| "expected y or n".to_owned())?),
        _ => Value::String(line.to_owned()),
    };
    Ok(Some(value))
}

fn yes_or_no(line: &str) -> Option<bool> {
    match line.to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" => Some(true),
        "n" | "no" | "false" => Some(false),
        _ => None,
    }
}
