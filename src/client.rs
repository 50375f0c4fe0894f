//! `mcp-platform chat URL`: a terminal client of the WebSocket protocol.
//!
//! Each line typed is one `chat` request in the socket's conversation; the answer streams as
//! it arrives, with tool calls and results on lines of their own. `/cancel` stops the request
//! in flight, `/quit` (or end of input) leaves. While a request asks something (a tool call to
//! approve, an MCP server's form), the lines typed answer it (`questions`).

mod questions;

use std::io::Write;
use std::process::ExitCode;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{Chunk, ServerMessage, Status};
use questions::{Question, Questions};

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The server's chat endpoint, e.g. ws://localhost:8000/ws/chat
    pub url: String,
    /// Ask for the whole answer at once instead of streamed text.
    #[arg(long)]
    pub no_stream: bool,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let (socket, _) = tokio_tungstenite::connect_async(args.url.as_str()).await.map_err(|error| {
        anyhow::anyhow!("cannot connect to {}: {error} (is `mcp-platform serve` running?)", args.url)
    })?;
    let (mut sink, mut stream) = socket.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight: Option<String> = None;
    let mut questions = Questions::default();
    let mut conversation_id: Option<String> = None;
    // Piped input ends before its last answer arrives: that answer is still awaited.
    let mut input_done = false;
    eprintln!("connected to {}; type a message, /cancel to stop an answer, /quit to leave", args.url);
    loop {
        tokio::select! {
            line = lines.next_line(), if !input_done => {
                let Some(line) = line? else {
                    input_done = true;
                    if in_flight.is_none() {
                        break;
                    }
                    continue;
                };
                let line = line.trim();
                if questions.is_asking() {
                    if let Some(frame) = questions.answer(line) {
                        sink.send(Message::text(frame.to_string())).await?;
                    }
                    continue;
                }
                match line {
                    "" => continue,
                    "/quit" => break,
                    "/cancel" => {
                        if let Some(request_id) = &in_flight {
                            let frame = json!({"action": "cancel", "request_id": request_id});
                            sink.send(Message::text(frame.to_string())).await?;
                        }
                    }
                    text => {
                        let request_id = uuid::Uuid::now_v7().to_string();
                        let mut payload = json!({"text": text, "streaming": !args.no_stream});
                        if let Some(conversation_id) = &conversation_id {
                            payload["conversation_id"] = json!(conversation_id);
                        }
                        let frame = json!({"action": "chat", "request_id": request_id, "payload": payload});
                        sink.send(Message::text(frame.to_string())).await?;
                        in_flight = Some(request_id);
                    }
                }
            }
            message = stream.next() => {
                let Some(message) = message else {
                    eprintln!("\nthe server closed the connection");
                    break;
                };
                if let Message::Text(text) = message? {
                    let message: ServerMessage = serde_json::from_str(text.as_str())?;
                    let refused_answer = message.status == Status::Error && message.seq.is_none() && questions.refused();
                    if message.status.is_terminal() && message.request_id == in_flight && !refused_answer {
                        in_flight = None;
                    }
                    follow_questions(&mut questions, &message);
                    conversation_id = conversation_id.or(message.conversation_id.clone());
                    render(&message);
                    if input_done && in_flight.is_none() {
                        break;
                    }
                }
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(ExitCode::SUCCESS)
}

/// Queues a request's questions and clears the ones the server settled.
fn follow_questions(questions: &mut Questions, message: &ServerMessage) {
    let request_id = message.request_id.clone().unwrap_or_default();
    match &message.chunk {
        Some(Chunk::ApprovalRequest(chunk)) => questions.push(Question::Approval { request_id, chunk: chunk.clone() }),
        Some(Chunk::Elicitation(chunk)) => questions.push(Question::Elicitation { request_id, chunk: chunk.clone() }),
        Some(Chunk::Approval(approval)) => questions.settled(&approval.id),
        Some(Chunk::ElicitationResult(result)) => questions.settled(&result.id),
        _ => {}
    }
}

fn render(message: &ServerMessage) {
    let mut out = std::io::stdout().lock();
    let _ = match (&message.status, &message.chunk) {
        (Status::Chunk, Some(Chunk::Text(text))) => write!(out, "{text}"),
        (Status::Chunk, Some(Chunk::ToolCall(call))) => writeln!(out, "\n  → {}({})", call.name, call.arguments),
        (Status::Chunk, Some(Chunk::ToolResult(result))) => {
            let mark = if result.ok { "←" } else { "✗" };
            writeln!(out, "  {mark} {} = {} ({:.1} ms)", result.name, result.content, result.duration_ms)
        }
        (Status::Chunk, Some(Chunk::Progress(progress))) => {
            writeln!(
                out,
                "  … {} {}{}",
                progress.id,
                progress.progress,
                progress.total.map(|total| format!("/{total}")).unwrap_or_default()
            )
        }
        (Status::Chunk, Some(Chunk::Notice(notice))) => writeln!(out, "\n  ! {notice}"),
        (Status::Chunk, Some(Chunk::Approval(approval))) => writeln!(
            out,
            "  = {} {}{}{}",
            approval.id,
            word(&approval.decision),
            approval.by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default(),
            approval.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default()
        ),
        (Status::Chunk, Some(Chunk::ElicitationResult(result))) => writeln!(
            out,
            "  = {} {}{}{}",
            result.id,
            word(&result.action),
            result.by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default(),
            result.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default()
        ),
        (Status::Complete, _) => {
            let metadata = message.metadata.as_ref();
            writeln!(
                out,
                "\n  [{} tokens, {} tool hops, {}{}]",
                metadata.map_or(0, |m| m.tokens),
                metadata.map_or(0, |m| m.tool_hops),
                metadata.map_or(String::new(), |m| m.model.clone()),
                if metadata.is_some_and(|m| m.cached) { ", cached" } else { "" }
            )
        }
        (Status::Cancelled, _) => writeln!(out, "\n  [cancelled]"),
        (Status::Error, _) => {
            let error = message.error.as_ref();
            writeln!(out, "\n  [error {}: {}]", error.map_or(0, |e| e.code), error.map_or("", |e| e.message.as_str()))
        }
        _ => Ok(()),
    };
    let _ = out.flush();
}

/// A protocol enum as the wire spells it.
fn word(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}
