//! What the store knows of a request, and the compact replay of a finished one (SPEC §2.4):
//! `processing` with `replayed: true`, one chunk per tool call, tool result and the final
//! text, then the terminal message. The replay is unnumbered; the run that publishes it
//! numbers it from `seq` 0.

use super::questions;
use crate::protocol::{Chunk, ErrorBody, Metadata, RequestMessage, ToolCallChunk, ToolResultChunk};
use crate::store::ChatEvent;
use crate::store::record::{AnswerFigures, Ending, Failure, Record, RecordError, ToolResult, UserTurn};

/// Longest tool output shown to the client; the model gets up to `max_tool_result_chars`.
const PREVIEW_CHARS: usize = 2000;

pub enum StoredRequest {
    Unknown,
    /// Claimed, not finished: another process is answering it (or died while it did).
    Running {
        fingerprint: String,
    },
    Finished {
        fingerprint: String,
        replay: Vec<RequestMessage>,
    },
}

/// Reads a request's stored events (in log order). Every event must read back as a record:
/// a replay with a part missing would contradict what the client was first told.
pub fn stored_request(events: &[ChatEvent]) -> Result<StoredRequest, RecordError> {
    let records = events.iter().map(Record::from_event).collect::<Result<Vec<_>, _>>()?;
    let Some((user, UserTurn { fingerprint, .. })) =
        events.iter().zip(&records).find_map(|(event, record)| match record {
            Record::UserTurn(turn) => Some((event, turn)),
            _ => None,
        })
    else {
        return Ok(StoredRequest::Unknown);
    };
    let fingerprint = fingerprint.clone();
    if !records.iter().any(Record::is_end) {
        return Ok(StoredRequest::Running { fingerprint });
    }
    let processing = RequestMessage::Processing { conversation_id: user.conversation_id.clone(), replayed: true };
    let replay = std::iter::once(processing).chain(records.into_iter().flat_map(replay_record)).collect();
    Ok(StoredRequest::Finished { fingerprint, replay })
}

fn replay_record(record: Record) -> Vec<RequestMessage> {
    match record {
        Record::UserTurn(_) => Vec::new(),
        Record::ToolCalls { calls, .. } => calls
            .into_iter()
            .map(|call| {
                RequestMessage::Chunk(Chunk::ToolCall(ToolCallChunk {
                    id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                }))
            })
            .collect(),
        Record::ToolResult(result) => vec![RequestMessage::Chunk(tool_result_chunk(&result))],
        Record::Answer { text, figures } => {
            let answer = (!text.is_empty()).then_some(RequestMessage::Chunk(Chunk::Text(text)));
            answer.into_iter().chain([RequestMessage::Complete(metadata(figures, true))]).collect()
        }
        Record::Ended { ending: Ending::Cancelled, .. } => vec![RequestMessage::Cancelled],
        Record::Ended { ending: Ending::Failed(failure), .. } => vec![RequestMessage::Failed(failure.into())],
        Record::Question(question) => vec![RequestMessage::Chunk(questions::chunk(question))],
    }
}

/// The client's view of a tool result: long output shortened, saying so.
pub fn tool_result_chunk(result: &ToolResult) -> Chunk {
    Chunk::ToolResult(ToolResultChunk {
        id: result.call_id.clone(),
        name: result.name.clone(),
        ok: result.ok,
        content: crate::text::truncate(result.content.clone(), PREVIEW_CHARS),
        attachments: result.attachments.clone(),
        duration_ms: result.duration_ms,
    })
}

/// The `complete` metadata of an answer; `cached` when it is sent again from the log.
pub fn metadata(figures: AnswerFigures, cached: bool) -> Metadata {
    let AnswerFigures { tokens, usage, model, tool_hops, finish_reason, duration_ms } = figures;
    Metadata { tokens, usage, model, tool_hops, finish_reason, duration_ms, cached }
}

impl From<ErrorBody> for Failure {
    fn from(ErrorBody { code, message, data }: ErrorBody) -> Self {
        Failure { code, message, data }
    }
}

impl From<Failure> for ErrorBody {
    fn from(Failure { code, message, data }: Failure) -> Self {
        ErrorBody { code, message, data }
    }
}
