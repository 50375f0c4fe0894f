//! One turn: claim the request in the store, build the context, call the model, run the tools
//! it asks for, feed the results back, until it answers or `max_tool_hops` is reached.
//!
//! Every event is appended before the client is told about it (a `tool_call` chunk follows
//! the durable assistant message, `complete` follows the durable answer), so what a client
//! was told is always in the log. Only text deltas run ahead of the log, because they stream.

use std::time::Instant;

use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::cached::{self, StoredRequest};
use super::{ChatService, Run, context, internal_error, reused_request_id, running_elsewhere, shutting_down};
use crate::domain::{FinishReason, Message, Role, ToolCall, Usage};
use crate::llm::{LlmError, LlmEvent, LlmRequest};
use crate::mcp::{ToolOutcome, ToolProgress};
use crate::protocol::{
    ChatPayload, Chunk, ErrorBody, FieldError, Metadata, ProgressChunk, ServerMessage, ToolCallChunk,
};
use crate::store::{EventType, NewEvent, StoreError};
use crate::tokens::TokenCounter;

/// How a turn ended early.
enum Interruption {
    Cancelled,
    Failed(ErrorBody),
    /// The client already has its final message (a refused payload, a stored answer).
    Answered,
}

impl From<StoreError> for Interruption {
    fn from(error: StoreError) -> Self {
        Interruption::Failed(internal_error(&error))
    }
}

impl From<LlmError> for Interruption {
    fn from(error: LlmError) -> Self {
        Interruption::Failed(ErrorBody::new(error.code(), error.to_string()))
    }
}

/// Everything one turn keeps track of while it runs.
struct Turn<'a> {
    service: &'a ChatService,
    run: &'a Run,
    model: String,
    counter: TokenCounter,
    streaming: bool,
    started: Instant,
    usage: Usage,
    tool_hops: u32,
    /// Text of the answer so far, kept for the log if the turn is cut off.
    partial_text: String,
}

pub async fn run_turn(service: &ChatService, run: &Run, payload: ChatPayload) {
    let span = tracing::info_span!("turn", request_id = %run.request_id, conversation_id = %run.conversation_id);
    async {
        if answer_known_request(service, run).await {
            return;
        }
        let model = payload.model.clone().unwrap_or_else(|| service.deps.llm.default_model().to_owned());
        let mut turn = Turn {
            service,
            run,
            counter: TokenCounter::for_model(&model),
            model,
            streaming: payload.streaming.unwrap_or(service.settings.streaming.enabled),
            started: Instant::now(),
            usage: Usage::default(),
            tool_hops: 0,
            partial_text: String::new(),
        };
        let outcome = turn.execute(payload).await;
        turn.finish(outcome).await;
    }
    .instrument(span)
    .await
}

/// A request the store already holds is never processed twice: its stored result is sent
/// instead. Returns whether the request was known.
async fn answer_known_request(service: &ChatService, run: &Run) -> bool {
    match service.deps.store.request(&run.request_id).await {
        Ok(events) => publish_stored(run, cached::stored_request(&events)),
        Err(error) => {
            run.push(ServerMessage::rejection(Some(run.request_id.clone()), internal_error(&error)));
            true
        }
    }
}

fn publish_stored(run: &Run, stored: StoredRequest) -> bool {
    let reject = |error| run.push(ServerMessage::rejection(Some(run.request_id.clone()), error));
    match stored {
        StoredRequest::Unknown => return false,
        StoredRequest::Running { fingerprint } | StoredRequest::Finished { fingerprint, .. }
            if fingerprint.as_deref() != Some(run.fingerprint.as_str()) =>
        {
            reject(reused_request_id(&run.request_id))
        }
        StoredRequest::Running { .. } => reject(running_elsewhere(&run.request_id)),
        StoredRequest::Finished { messages, .. } => messages.into_iter().for_each(|message| run.push(message)),
    }
    true
}

impl Turn<'_> {
    async fn execute(&mut self, payload: ChatPayload) -> Result<(String, FinishReason), Interruption> {
        let user_text = match self.user_turn(&payload).await {
            Ok(text) => text,
            Err(error) => {
                self.run.push(ServerMessage::rejection(Some(self.run.request_id.clone()), error));
                return Err(Interruption::Answered);
            }
        };
        let history = self.service.deps.store.conversation(&self.run.conversation_id).await?;
        if !self.claim(&payload, &user_text).await? {
            return Err(Interruption::Answered);
        }
        self.run.push(ServerMessage::processing(&self.run.request_id, &self.run.conversation_id, false));
        for issue in self.service.deps.tools.unavailable() {
            self.chunk(Chunk::Notice(format!(
                "MCP server {:?} is unavailable ({}); answering without its tools",
                issue.server, issue.reason
            )));
        }

        let settings = &self.service.settings;
        let tools = self.service.deps.tools.tools();
        let mut messages = context::build(
            &settings.system_prompt,
            &history,
            vec![Message::user(user_text)],
            &tools,
            &self.counter,
            &settings.context,
        );
        loop {
            let tool_limit_reached = self.tool_hops >= settings.max_tool_hops;
            let offered = if tool_limit_reached { Vec::new() } else { self.service.deps.tools.tools() };
            let (text, calls, finish) = self.call_model(&messages, offered).await?;
            if calls.is_empty() || tool_limit_reached {
                let finish = if tool_limit_reached { FinishReason::ToolLimit } else { finish };
                return Ok((text, finish));
            }
            let results = self.run_tools(&text, &calls).await?;
            messages.push(Message::assistant(text, calls.clone()));
            messages.extend(calls.iter().zip(results).map(|(call, outcome)| Message::tool(&call.id, outcome.content)));
            self.tool_hops += 1;
        }
    }

    /// The user turn as the model sees it: resource contents, the rendered prompt, the text.
    async fn user_turn(&self, payload: &ChatPayload) -> Result<String, ErrorBody> {
        let tools = &self.service.deps.tools;
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        for (index, uri) in payload.resources.iter().enumerate() {
            match tools.read_resource(uri).await {
                Ok(content) => parts.push(format!("Resource {uri}:\n{content}")),
                Err(error) => errors.push(FieldError {
                    field: format!("payload.resources[{index}]"),
                    message: error.0,
                    kind: "value_error",
                }),
            }
        }
        if let Some(prompt) = &payload.prompt {
            let arguments: Map<String, Value> =
                prompt.arguments.iter().map(|(key, value)| (key.clone(), Value::String(value.clone()))).collect();
            match tools.get_prompt(&prompt.name, arguments).await {
                Ok(rendered) => parts.extend(rendered.into_iter().map(|message| message.content)),
                Err(error) => errors.push(FieldError {
                    field: "payload.prompt.name".into(),
                    message: error.0,
                    kind: "value_error",
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ErrorBody::validation(errors));
        }
        parts.extend(payload.text.clone());
        Ok(parts.join("\n\n"))
    }

    /// Appends the user message, which claims the `request_id` store-wide. Returns false when
    /// another process claimed it first; the client then gets the stored answer instead.
    async fn claim(&self, payload: &ChatPayload, user_text: &str) -> Result<bool, StoreError> {
        let mut extra = Map::new();
        extra.insert(cached::FINGERPRINT.into(), Value::String(self.run.fingerprint.clone()));
        if let Some(prompt) = &payload.prompt {
            extra.insert("prompt".into(), json!(prompt));
        }
        if !payload.resources.is_empty() {
            extra.insert("resources".into(), json!(payload.resources));
        }
        let event = self.event(EventType::UserMessage, Role::User, user_text.to_owned(), extra);
        match self.service.deps.store.append(vec![event]).await {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateRequest { .. }) => {
                let events = self.service.deps.store.request(&self.run.request_id).await?;
                publish_stored(self.run, cached::stored_request(&events));
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// One model call: streams text to the client, collects tool calls and usage.
    async fn call_model(
        &mut self,
        messages: &[Message],
        tools: Vec<crate::domain::ToolSpec>,
    ) -> Result<(String, Vec<ToolCall>, FinishReason), Interruption> {
        let estimated_prompt = self.counter.count_messages(messages) + self.counter.count_tools(&tools);
        let request = LlmRequest {
            model: Some(self.model.clone()),
            messages: messages.to_vec(),
            tools,
            streaming: self.streaming,
        };
        let started = Instant::now();
        let mut stream = self.service.deps.llm.chat(request);
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut usage = None;
        let mut finish = FinishReason::Stop;
        loop {
            let event = tokio::select! {
                biased;
                _ = self.run.cancel.cancelled() => return Err(self.interruption()),
                event = stream.next() => event,
            };
            match event {
                None => break,
                Some(Ok(LlmEvent::Text(delta))) => {
                    text.push_str(&delta);
                    self.partial_text.push_str(&delta);
                    self.chunk(Chunk::Text(delta));
                }
                Some(Ok(LlmEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(LlmEvent::Usage(reported))) => usage = Some(reported),
                Some(Ok(LlmEvent::Finish(reason))) => finish = reason,
                Some(Err(error)) => {
                    tracing::warn!(model = %self.model, duration_ms = started.elapsed().as_millis() as u64, %error, "model call failed");
                    return Err(error.into());
                }
            }
        }
        let usage = usage.unwrap_or_else(|| {
            let completion = self.counter.count(&text)
                + calls.iter().map(|call| self.counter.count(&call.arguments.to_string())).sum::<usize>();
            Usage {
                prompt_tokens: estimated_prompt as u64,
                completion_tokens: completion as u64,
                total_tokens: (estimated_prompt + completion) as u64,
            }
        });
        self.usage.add(usage);
        tracing::info!(
            model = %self.model,
            duration_ms = started.elapsed().as_millis() as u64,
            tool_calls = calls.len(),
            total_tokens = usage.total_tokens,
            "model call"
        );
        Ok((text, calls, finish))
    }

    /// Logs the assistant's tool calls, runs them concurrently and logs their results, in call
    /// order. Results go back to the model; each is also streamed to the client.
    async fn run_tools(&mut self, text: &str, calls: &[ToolCall]) -> Result<Vec<ToolOutcome>, Interruption> {
        let mut assistant = self.event(EventType::AssistantMessage, Role::Assistant, text.to_owned(), Map::new());
        assistant.tool_calls = Some(calls.to_vec());
        assistant.token_count += calls
            .iter()
            .map(|call| self.counter.count(&call.arguments.to_string()) + self.counter.count(&call.name))
            .sum::<usize>() as u64;
        self.service.deps.store.append(vec![assistant]).await?;
        self.partial_text.clear();
        for call in calls {
            self.chunk(Chunk::ToolCall(ToolCallChunk {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            }));
        }

        // Tool calls are not raced against the cancel token: they observe it themselves and
        // return promptly, and awaiting them is what lets the MCP layer tell each server.
        let outcomes = futures::future::join_all(calls.iter().map(|call| self.run_tool(call))).await;
        if self.run.cancel.is_cancelled() {
            return Err(self.interruption());
        }
        let events = calls
            .iter()
            .zip(&outcomes)
            .map(|(call, outcome)| {
                let mut extra = Map::new();
                extra.insert(cached::TOOL_NAME.into(), Value::String(call.name.clone()));
                extra.insert(cached::TOOL_OK.into(), Value::Bool(outcome.ok));
                extra.insert(cached::TOOL_DURATION_MS.into(), json!(duration_ms(outcome.duration)));
                let mut event = self.event(EventType::ToolResult, Role::Tool, outcome.content.clone(), extra);
                event.tool_call_id = Some(call.id.clone());
                event
            })
            .collect();
        self.service.deps.store.append(events).await?;
        for (call, outcome) in calls.iter().zip(&outcomes) {
            self.chunk(cached::tool_result_chunk(
                call.id.clone(),
                call.name.clone(),
                outcome.ok,
                &outcome.content,
                duration_ms(outcome.duration),
            ));
        }
        Ok(outcomes)
    }

    async fn run_tool(&self, call: &ToolCall) -> ToolOutcome {
        let (progress_sender, mut progress) = mpsc::unbounded_channel::<ToolProgress>();
        let execute = self.service.deps.tools.call_tool(call, progress_sender, self.run.cancel.child_token());
        let relay = async {
            while let Some(update) = progress.recv().await {
                self.chunk(Chunk::Progress(ProgressChunk {
                    id: call.id.clone(),
                    progress: update.progress,
                    total: update.total,
                    message: update.message,
                }));
            }
        };
        let (outcome, ()) = tokio::join!(execute, relay);
        tracing::info!(tool = %call.name, ok = outcome.ok, duration_ms = duration_ms(outcome.duration), "tool call");
        outcome
    }

    /// Records how the turn ended, then tells the client.
    async fn finish(&mut self, outcome: Result<(String, FinishReason), Interruption>) {
        let request_id = self.run.request_id.clone();
        let seq = 0; // numbered by the run
        let (event, message) = match outcome {
            Ok((text, finish_reason)) => {
                let metadata = Metadata {
                    tokens: self.usage.total_tokens,
                    usage: self.usage,
                    model: self.model.clone(),
                    tool_hops: self.tool_hops,
                    finish_reason,
                    duration_ms: self.started.elapsed().as_millis() as u64,
                    cached: false,
                };
                let mut extra = Map::new();
                extra.insert(cached::STATUS.into(), json!("complete"));
                extra.insert(cached::METADATA.into(), json!(metadata));
                let mut event = self.event(EventType::AssistantMessage, Role::Assistant, text, extra);
                event.usage = Some(self.usage);
                (Some(event), ServerMessage::complete(&request_id, seq, metadata))
            }
            Err(Interruption::Answered) => return,
            Err(Interruption::Cancelled) => {
                let mut extra = Map::new();
                extra.insert(cached::STATUS.into(), json!("cancelled"));
                let partial = std::mem::take(&mut self.partial_text);
                (
                    Some(self.event(EventType::Meta, Role::Assistant, partial, extra)),
                    ServerMessage::cancelled(&request_id, seq),
                )
            }
            Err(Interruption::Failed(error)) => {
                let mut extra = Map::new();
                extra.insert(cached::STATUS.into(), json!("error"));
                extra.insert(cached::ERROR.into(), json!(error));
                let partial = std::mem::take(&mut self.partial_text);
                let event = self.run.is_started().then(|| self.event(EventType::Meta, Role::Assistant, partial, extra));
                let message = if self.run.is_started() {
                    ServerMessage::failed(&request_id, seq, error)
                } else {
                    ServerMessage::rejection(Some(request_id.clone()), error)
                };
                (event, message)
            }
        };
        if let Some(event) = event
            && let Err(error) = self.service.deps.store.append(vec![event]).await
        {
            self.run.push(ServerMessage::failed(&request_id, seq, internal_error(&error)));
            return;
        }
        self.run.push(message);
    }

    fn interruption(&self) -> Interruption {
        if self.service.abort.is_cancelled() { Interruption::Failed(shutting_down()) } else { Interruption::Cancelled }
    }

    fn chunk(&self, chunk: Chunk) {
        self.run.push(ServerMessage::chunk(&self.run.request_id, 0, chunk));
    }

    fn event(&self, kind: EventType, role: Role, content: String, extra: Map<String, Value>) -> NewEvent {
        NewEvent {
            conversation_id: self.run.conversation_id.clone(),
            request_id: Some(self.run.request_id.clone()),
            kind,
            role: Some(role),
            token_count: self.counter.count(&content) as u64,
            content: Some(content),
            tool_calls: None,
            tool_call_id: None,
            model: (role == Role::Assistant).then(|| self.model.clone()),
            usage: None,
            extra,
        }
    }
}

fn duration_ms(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
