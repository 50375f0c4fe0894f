//! One turn: claim the request in the store, build the context, call the model, run the tools
//! it asks for, feed the results back, until it answers or `max_tool_hops` is reached.
//!
//! Every event is appended before the client is told about it (a `tool_call` chunk follows
//! the durable assistant message, `complete` follows the durable answer), so what a client
//! was told is always in the log. Only text deltas run ahead of the log, because they stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::answer_text::{HeldText, gather_ready_text};
use super::dedup::Standing;
use super::questions::{Asker, Verdict, Waiter};
use super::{ChatService, Run, cached, context, internal_error, shutting_down, store_error};
use crate::domain::{FinishReason, Message, ToolCall, Usage};
use crate::llm::{LlmError, LlmEvent, LlmRequest};
use crate::mcp::{ToolOutcome, ToolProgress, UserInput};
use crate::protocol::{ChatPayload, Chunk, ErrorBody, FieldError, ProgressChunk, RequestMessage, ToolCallChunk};
use crate::store::record::{AnswerFigures, Ending, Record, ToolResult, UserTurn};
use crate::store::{ChatEvent, NewEvent, RecentLimit, StoreError};
use crate::tokens::TokenCounter;

/// A new request, as the service hands it to its turn.
pub struct TurnRequest {
    pub run: Arc<Run>,
    /// Who the request belongs to; every event it writes names them.
    pub user: String,
    pub conversation_id: String,
    pub fingerprint: String,
    /// Cancelled by the client's `cancel`, and by shutdown once the grace is over.
    pub cancel: CancellationToken,
}

/// How a turn ended early.
enum Interruption {
    Cancelled,
    Failed(ErrorBody),
    /// The client already has its final message (a refused payload, a stored answer).
    Answered,
}

impl From<StoreError> for Interruption {
    fn from(error: StoreError) -> Self {
        Interruption::Failed(store_error(&error))
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
    request: &'a TurnRequest,
    model: String,
    counter: TokenCounter,
    streaming: bool,
    started: Instant,
    usage: Usage,
    tool_hops: u32,
    /// Text of the answer so far, kept for the log if the turn is cut off.
    partial_text: String,
    /// The turn's port to its user: approvals, and the MCP servers' questions.
    asker: Arc<Asker>,
}

pub async fn run_turn(service: &ChatService, request: &TurnRequest, payload: ChatPayload) {
    let span = tracing::info_span!(
        "turn",
        request_id = %request.run.request_id,
        conversation_id = %request.conversation_id,
        user = %request.user
    );
    async {
        let model = payload.model.clone().unwrap_or_else(|| service.deps.llm.default_model().to_owned());
        let counter = TokenCounter::for_model(&model);
        let asker = Arc::new(Asker::new(
            request.run.clone(),
            request.user.clone(),
            service.deps.store.clone(),
            request.conversation_id.clone(),
            counter,
            Duration::from_secs_f64(service.settings.tool_approval.timeout),
            request.cancel.clone(),
        ));
        let mut turn = Turn {
            service,
            request,
            counter,
            asker,
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

impl Turn<'_> {
    async fn execute(&mut self, payload: ChatPayload) -> Result<(String, FinishReason), Interruption> {
        let user_text = match self.user_turn(&payload).await {
            Ok(text) => text,
            Err(error) => {
                self.request.run.reject(error);
                return Err(Interruption::Answered);
            }
        };
        let history = self.history().await?;
        // Only its creator writes to a conversation (the store refuses another user's
        // `user_message`); an admin's `meta` event in it (a user who named a conversation
        // `admin-actions`) closes it to that user too.
        if history.iter().any(|event| event.user() != self.request.user) {
            self.request.run.reject(super::not_your_conversation(&self.request.conversation_id));
            return Err(Interruption::Answered);
        }
        let Some(user_tokens) = self.claim(payload, user_text.clone()).await? else {
            return Err(Interruption::Answered);
        };
        super::relay::start_sharing(&self.service.deps.store, &self.request.user, &self.request.run);
        self.request.run.push(RequestMessage::Processing {
            conversation_id: self.request.conversation_id.clone(),
            replayed: false,
        });
        for issue in self.service.deps.tools.unavailable() {
            self.chunk(Chunk::Notice(format!(
                "MCP server {:?} is unavailable ({}); answering without its tools",
                issue.server, issue.reason
            )));
        }

        let settings = &self.service.settings;
        // One request for every hop: each extends its messages, nothing copies them.
        let mut request = LlmRequest {
            model: Some(self.model.clone()),
            messages: self.context(history, user_text, user_tokens).await?,
            tools: Vec::new(),
            streaming: self.streaming,
        };
        loop {
            let tool_limit_reached = self.tool_hops >= settings.max_tool_hops;
            request.tools = if tool_limit_reached { Vec::new() } else { self.service.deps.tools.tools() };
            let (reply, finish) = self.call_model(&request).await?;
            if reply.tool_calls.is_empty() || tool_limit_reached {
                let finish = if tool_limit_reached { FinishReason::ToolLimit } else { finish };
                return Ok((reply.content, finish));
            }
            let results = self.run_tools(&reply).await?;
            request.messages.push(Arc::new(reply));
            request.messages.extend(results.iter().map(|result| Arc::new(result.for_model())));
            self.tool_hops += 1;
        }
    }

    /// The end of the conversation a context within the budget can hold, read before the claim
    /// so that it ends before this request.
    async fn history(&self) -> Result<Vec<Arc<ChatEvent>>, StoreError> {
        let limit = context::history_limit(&self.service.settings.context);
        self.service.deps.store.recent(&self.request.conversation_id, limit).await
    }

    /// The context of the first model call. When the history read was too short for the
    /// budget after all (see [`context::Context::kept_oldest`]), it is read again further back,
    /// ending at the same event.
    async fn context(
        &self,
        mut history: Vec<Arc<ChatEvent>>,
        user_text: String,
        user_tokens: usize,
    ) -> Result<Vec<Arc<Message>>, StoreError> {
        let settings = &self.service.settings;
        let tools = self.service.deps.tools.tools();
        let mut limit = context::history_limit(&settings.context);
        loop {
            let built = context::build(
                &settings.system_prompt,
                &history,
                context::NewTurn { message: Message::user(user_text.clone()), tokens: user_tokens },
                &tools,
                &self.counter,
                &settings.context,
            );
            let whole = history.first().is_none_or(|event| event.seq <= 1);
            if whole || !built.kept_oldest {
                return Ok(built.messages);
            }
            let last_seq = history.last().map_or(0, |event| event.seq);
            limit = RecentLimit { tokens: limit.tokens.saturating_mul(2).max(1), messages: limit.messages * 2 + 1 };
            history = self.service.deps.store.recent(&self.request.conversation_id, limit).await?;
            // This request's own events (already claimed) are not history.
            history.retain(|event| event.seq <= last_seq);
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

    /// Appends the user turn, which claims the `request_id` store-wide, and returns its
    /// `token_count`. Returns `None` when another process claimed it first; the client then
    /// gets what the store holds instead.
    async fn claim(&self, payload: ChatPayload, user_text: String) -> Result<Option<usize>, StoreError> {
        let user_turn = Record::UserTurn(UserTurn {
            text: user_text,
            fingerprint: self.request.fingerprint.clone(),
            prompt: payload.prompt,
            resources: payload.resources,
        });
        let event = self.event(user_turn);
        let tokens = event.token_count as usize;
        match self.service.deps.store.append(vec![event]).await {
            Ok(_) => Ok(Some(tokens)),
            Err(StoreError::ConversationOwned { .. }) => {
                // Another user created the conversation since its history was read.
                self.request.run.reject(super::not_your_conversation(&self.request.conversation_id));
                Ok(None)
            }
            Err(StoreError::DuplicateRequest { .. }) => {
                let standing = self
                    .service
                    .stored_standing(&self.request.user, &self.request.run.request_id, Some(&self.request.fingerprint))
                    .await;
                match standing {
                    Ok(Standing::Finished(replay)) => {
                        replay.into_iter().for_each(|message| self.request.run.push(message))
                    }
                    Ok(Standing::RunningElsewhere) => {
                        let (store, user) = (self.service.deps.store.clone(), self.request.user.clone());
                        super::relay::relay(store, user, self.request.run.clone()).await;
                    }
                    Ok(Standing::New | Standing::RunningHere(_)) => self.request.run.reject(internal_error(&format!(
                        "the store refused the claim of request_id {:?} but holds no user turn for it",
                        self.request.run.request_id
                    ))),
                    Err(error) => self.request.run.reject(error),
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// One model call: streams text to the client, collects tool calls and usage. The reply
    /// is the assistant message as the model wrote it.
    async fn call_model(&mut self, request: &LlmRequest) -> Result<(Message, FinishReason), Interruption> {
        let started = Instant::now();
        let mut stream = self.service.deps.llm.chat(request);
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut usage = None;
        let mut finish = FinishReason::Stop;
        let mut held = HeldText::new(self.service.settings.streaming.min_text_interval);
        let mut read_ahead = None;
        // Watched for the whole call: a watch made per streamed event registers and unregisters
        // with the token dozens of times an answer.
        let cancelled = self.request.cancel.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let event = match read_ahead.take() {
                Some(event) => event,
                None => tokio::select! {
                    biased;
                    () = &mut cancelled => {
                        self.send_text(held.take(Instant::now()));
                        return Err(self.interruption());
                    }
                    () = held.until_due() => {
                        self.send_text(held.take(Instant::now()));
                        continue;
                    }
                    event = stream.next() => event,
                },
            };
            if !matches!(event, Some(Ok(LlmEvent::Text(_)))) {
                self.send_text(held.take(Instant::now()));
            }
            match event {
                None => break,
                Some(Ok(LlmEvent::Text(mut delta))) => {
                    read_ahead = gather_ready_text(&mut stream, &mut delta).await;
                    text.push_str(&delta);
                    self.partial_text.push_str(&delta);
                    self.send_text(held.add(delta, Instant::now()));
                }
                Some(Ok(LlmEvent::ToolCall(call))) => calls.push(call),
                Some(Ok(LlmEvent::Usage(reported))) => usage = Some(reported),
                Some(Ok(LlmEvent::Finish(reason))) => finish = reason,
                Some(Err(error)) => {
                    crate::metrics::model_call(false, started.elapsed(), 0, 0);
                    tracing::warn!(model = %self.model, duration_ms = started.elapsed().as_millis() as u64, %error, "model call failed");
                    return Err(error.into());
                }
            }
        }
        let reply = Message::assistant(text, calls);
        // Counting the whole prompt is the costliest step of a turn's own work: only done when
        // the provider reports no usage.
        let usage = usage.unwrap_or_else(|| {
            let estimated_prompt = self.counter.count_messages(request.messages.iter().map(|message| &**message))
                + self.counter.count_tools(&request.tools);
            let completion = self.counter.count_content(&reply);
            Usage {
                prompt_tokens: estimated_prompt as u64,
                completion_tokens: completion as u64,
                total_tokens: (estimated_prompt + completion) as u64,
            }
        });
        self.usage.add(usage);
        crate::metrics::model_call(true, started.elapsed(), usage.prompt_tokens, usage.completion_tokens);
        tracing::info!(
            model = %self.model,
            duration_ms = started.elapsed().as_millis() as u64,
            tool_calls = reply.tool_calls.len(),
            total_tokens = usage.total_tokens,
            "model call"
        );
        Ok((reply, finish))
    }

    /// Logs the assistant's tool calls, runs them concurrently and logs their results, in call
    /// order. Results go back to the model; each is also streamed to the client.
    async fn run_tools(&mut self, reply: &Message) -> Result<Vec<ToolResult>, Interruption> {
        let calls = &reply.tool_calls;
        let asked = Record::ToolCalls { model: self.model.clone(), text: reply.content.clone(), calls: calls.clone() };
        self.service.deps.store.append(vec![self.event(asked)]).await?;
        self.partial_text.clear();
        for call in calls {
            self.chunk(Chunk::ToolCall(ToolCallChunk {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            }));
        }

        // Calls that need a person are asked about together; the others run meanwhile.
        let policy = self.service.settings.tool_approval.policy;
        let tools = &self.service.deps.tools;
        let facts: Vec<_> = calls.iter().map(|call| tools.needs_approval(call, policy)).collect();
        let asked: Vec<_> = calls.iter().zip(&facts).filter_map(|(call, facts)| Some((call, facts.clone()?))).collect();
        let mut waiters = self.asker.ask_approvals(asked).await?.into_iter();
        let waiters: Vec<_> = facts.iter().map(|facts| facts.as_ref().and_then(|_| waiters.next())).collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs_f64(self.service.settings.tool_approval.timeout);

        // Tool calls are not raced against the cancel token: they observe it themselves and
        // return promptly, and awaiting them is what lets the MCP layer tell each server.
        let outcomes = futures::future::join_all(
            calls.iter().zip(waiters).map(|(call, waiter)| self.approved_tool(call, waiter, deadline)),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
        if self.request.cancel.is_cancelled() {
            return Err(self.interruption());
        }
        let max_chars = self.service.settings.max_tool_result_chars;
        let mut notices = Vec::new();
        let results: Vec<ToolResult> = calls
            .iter()
            .zip(outcomes)
            .map(|(call, outcome)| {
                notices.extend(outcome.notices);
                ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    ok: outcome.ok,
                    model_content: crate::text::head_and_tail(&outcome.content, max_chars),
                    content: outcome.content,
                    attachments: outcome.attachments,
                    duration_ms: duration_ms(outcome.duration),
                }
            })
            .collect();
        let events = results.iter().map(|result| self.event(Record::ToolResult(result.clone()))).collect();
        self.service.deps.store.append(events).await?;
        for result in &results {
            self.chunk(cached::tool_result_chunk(result));
        }
        for notice in notices {
            self.chunk(Chunk::Notice(notice));
        }
        Ok(results)
    }

    /// Runs `call` once its user allowed it (when it had to wait for that); a refused call is
    /// the tool's error result, in the words the model reads.
    async fn approved_tool(
        &self,
        call: &ToolCall,
        waiter: Option<Waiter>,
        deadline: tokio::time::Instant,
    ) -> Result<ToolOutcome, StoreError> {
        if let Some(waiter) = waiter {
            let refusal = match self.asker.decision(call, waiter, deadline).await? {
                Some(Verdict::Allowed) => None,
                Some(Verdict::Refused(text)) => Some(text),
                None => Some("cancelled before it was approved".to_owned()),
            };
            if let Some(content) = refusal {
                return Ok(ToolOutcome::not_run(content));
            }
        }
        Ok(self.run_tool(call).await)
    }

    async fn run_tool(&self, call: &ToolCall) -> ToolOutcome {
        let (progress_sender, mut progress) = mpsc::unbounded_channel::<ToolProgress>();
        let user: Arc<dyn UserInput> = self.asker.clone();
        let execute = self.service.deps.tools.call_tool(call, progress_sender, self.request.cancel.child_token(), user);
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
        let ended = match &outcome {
            Ok(_) => "completed",
            Err(Interruption::Cancelled) => "cancelled",
            Err(Interruption::Answered) => "not_run",
            Err(Interruption::Failed(_)) => "failed",
        };
        crate::metrics::turn_ended(ended, self.started.elapsed());
        let (record, message) = match outcome {
            Ok((text, finish_reason)) => {
                let figures = AnswerFigures {
                    tokens: self.usage.total_tokens,
                    usage: self.usage,
                    model: self.model.clone(),
                    tool_hops: self.tool_hops,
                    finish_reason,
                    duration_ms: self.started.elapsed().as_millis() as u64,
                };
                let message = RequestMessage::Complete(cached::metadata(figures.clone(), false));
                (Record::Answer { text, figures }, message)
            }
            Err(Interruption::Answered) => return,
            Err(Interruption::Failed(error)) if !self.request.run.is_started() => {
                self.request.run.reject(error);
                return;
            }
            Err(Interruption::Cancelled) => (self.ended(Ending::Cancelled), RequestMessage::Cancelled),
            Err(Interruption::Failed(error)) => {
                (self.ended(Ending::Failed(error.clone().into())), RequestMessage::Failed(error))
            }
        };
        let mut event = self.event(record);
        // A request cut off has still spent its tokens: its last event carries them, like an
        // answer does, so the daily budget (SPEC §8) counts them.
        if event.usage.is_none() && self.usage.total_tokens > 0 {
            event.usage = Some(self.usage);
        }
        if let Err(error) = self.service.deps.store.append(vec![event]).await {
            self.request.run.push(RequestMessage::Failed(store_error(&error)));
            return;
        }
        self.request.run.push(message);
    }

    /// The record of a turn cut off before its answer, with the text streamed so far.
    fn ended(&mut self, ending: Ending) -> Record {
        Record::Ended { model: self.model.clone(), partial_text: std::mem::take(&mut self.partial_text), ending }
    }

    fn interruption(&self) -> Interruption {
        if self.service.abort.is_cancelled() { Interruption::Failed(shutting_down()) } else { Interruption::Cancelled }
    }

    fn chunk(&self, chunk: Chunk) {
        self.request.run.push(RequestMessage::Chunk(chunk));
    }

    fn send_text(&self, text: Option<String>) {
        if let Some(text) = text {
            self.chunk(Chunk::Text(text));
        }
    }

    /// The store event of `record`, its `token_count` counted by the one rule of `tokens`.
    fn event(&self, record: Record) -> NewEvent {
        let token_count = self.counter.count_content(&record.message()) as u64;
        record.into_event(
            self.request.conversation_id.clone(),
            self.request.run.request_id.clone(),
            self.request.user.clone(),
            token_count,
        )
    }
}

fn duration_ms(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}
