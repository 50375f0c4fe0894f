//! The script format of the mock model (see the module documentation for an example).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Turns the mock answers with, one per model request, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Script {
    pub turns: Vec<Turn>,
}

impl Script {
    /// Reads a script: a JSON array of turns, or an object `{"turns": [...]}`.
    pub fn from_json(json: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Turns(Vec<Value>),
            Object { turns: Vec<Value> },
        }
        let form: Form =
            serde_json::from_str(json).map_err(|error| format!("a script is a JSON array of turns: {error}"))?;
        let (Form::Turns(turns) | Form::Object { turns }) = form;
        let turns = turns
            .into_iter()
            .enumerate()
            .map(|(position, turn)| {
                let turn: Turn =
                    serde_json::from_value(turn).map_err(|error| format!("turn {}: {error}", position + 1))?;
                turn.check().map_err(|error| format!("turn {}: {error}", position + 1))?;
                Ok(turn)
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { turns })
    }

    pub(crate) fn into_queue(self) -> VecDeque<Turn> {
        self.turns.into()
    }
}

/// One scripted model answer (or failure). Every field is optional; an empty turn answers with
/// an empty text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Turn {
    /// The answer text, streamed word by word.
    pub text: Option<String>,
    /// The answer text in exactly these stream chunks (instead of `text`).
    pub chunks: Option<Vec<String>>,
    /// Tool calls, several for parallel calls.
    pub tool_calls: Vec<ScriptedToolCall>,
    /// Answer with this HTTP error instead.
    pub error: Option<ScriptedError>,
    /// Pause between two stream chunks.
    pub delay_ms: u64,
    /// Pause before the response starts (before the status line).
    pub first_byte_delay_ms: u64,
    /// Cut the connection after this many content chunks (text or tool-call deltas).
    pub disconnect_after: Option<usize>,
    /// Usage figures to report instead of the counted ones.
    pub usage: Option<Usage>,
    /// Report no usage at all.
    pub no_usage: bool,
    /// `stop`, `length` or `tool_calls`; by default `tool_calls` when the turn has calls.
    pub finish_reason: Option<ScriptedFinish>,
    /// Keep answering with this turn instead of moving on.
    pub repeat: bool,
}

impl Turn {
    fn check(&self) -> Result<(), String> {
        if self.text.is_some() && self.chunks.is_some() {
            return Err("give either text or chunks, not both".to_owned());
        }
        if let Some(error) = &self.error
            && !(400..=599).contains(&error.status)
        {
            return Err(format!("error.status is {} but must be an HTTP error status (400-599)", error.status));
        }
        Ok(())
    }

    /// The answer text in its stream chunks: `chunks` as given, else `text` word by word.
    pub(crate) fn text_chunks(&self) -> Vec<String> {
        match (&self.chunks, &self.text) {
            (Some(chunks), _) => chunks.clone(),
            (None, Some(text)) => super::demo::words(text),
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    /// Generated (`call_<n>`) when absent.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    /// The arguments object; a JSON string is sent verbatim as the arguments text, to script a
    /// model that produces invalid JSON.
    #[serde(default = "empty_object")]
    pub arguments: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedError {
    pub status: u16,
    /// Seconds, sent as the `Retry-After` header.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Put into an error body of the API's own shape.
    #[serde(default)]
    pub message: Option<String>,
    /// The whole body instead: a string is sent as plain text, anything else as JSON.
    #[serde(default)]
    pub body: Option<Value>,
}

/// Token figures as the mock reports them, scripted or counted. The mock speaks the providers'
/// wire formats, so this is their shape rather than the server's `domain::Usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// OpenAI's `total_tokens`; Anthropic reports no total.
    pub fn total_tokens(self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptedFinish {
    Stop,
    Length,
    ToolCalls,
}
