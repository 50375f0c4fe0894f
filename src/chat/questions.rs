//! The human in the loop (SPEC §2.6): a running request's questions to its user (may this tool
//! call run? what does the MCP server need?) and their answers.
//!
//! The turn asks through an [`Asker`], its port to the user: it records the question, sends
//! it as a chunk, and waits for the answer or the timeout. The question stays open in the
//! request's [`Run`] ([`OpenQuestions`]), which any socket can reach by `request_id`, so the
//! answer may come from another socket than the one that saw the question (a reconnect). The
//! answer is recorded before it takes effect: before a call runs or is skipped, before the MCP
//! server gets it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::Run;
use crate::domain::{Decision, Elicitation, ElicitationAction, ElicitationMode, ElicitationReply, ToolCall};
use crate::mcp::{ApprovalFacts, UserInput};
use crate::protocol::{
    ApprovalAnswer, ApprovalChunk, ApprovalRequestChunk, Chunk, ElicitationAnswer, ElicitationChunk,
    ElicitationMode as WireMode, ElicitationResultChunk, ErrorBody, FieldError, RequestMessage,
};
use crate::store::record::{ApprovalAsked, ApprovalDecided, ElicitationAnswered, ElicitationAsked, Question, Record};
use crate::store::{EventStore, NewEvent, StoreError};
use crate::tokens::TokenCounter;

/// Where the turn receives the decision on one tool call.
pub type Waiter = oneshot::Receiver<Answer<ApprovalAnswer>>;

/// A user's answer, as the turn receives it.
pub struct Answer<T> {
    by: String,
    answer: T,
}

enum Pending {
    Approval(oneshot::Sender<Answer<ApprovalAnswer>>),
    Elicitation { validator: Option<Box<jsonschema::Validator>>, reply: oneshot::Sender<Answer<ElicitationAnswer>> },
}

/// The questions of one request that wait for an answer, by id (a tool call's id, or an
/// elicitation's `e-<n>`).
#[derive(Default)]
pub struct OpenQuestions {
    open: Mutex<HashMap<String, Pending>>,
}

impl OpenQuestions {
    fn open(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `approve` from `by`: hands the decision to the waiting turn.
    pub fn approve(&self, by: &str, answer: ApprovalAnswer) -> Result<(), ErrorBody> {
        let mut open = self.open();
        match open.remove(&answer.call_id) {
            Some(Pending::Approval(reply)) => {
                // A turn that stopped waiting (timeout, cancel) took the question off first.
                let _ = reply.send(Answer { by: by.to_owned(), answer });
                Ok(())
            }
            Some(other) => {
                open.insert(answer.call_id.clone(), other);
                Err(not_open("approval", &answer.call_id))
            }
            None => Err(not_open("approval", &answer.call_id)),
        }
    }

    /// `elicit` from `by`: content that does not satisfy the question's schema is refused
    /// with every problem listed, and the question stays open.
    pub fn elicit(&self, by: &str, answer: ElicitationAnswer) -> Result<(), ErrorBody> {
        let mut open = self.open();
        let Some(Pending::Elicitation { validator, .. }) = open.get(&answer.elicitation_id) else {
            return Err(not_open("elicitation", &answer.elicitation_id));
        };
        if answer.action == ElicitationAction::Accept
            && let Some(validator) = validator
        {
            let content = answer.content.clone().unwrap_or_else(|| json!({}));
            let problems: Vec<FieldError> = validator
                .iter_errors(&content)
                .map(|error| FieldError {
                    field: format!("payload.content{}", error.instance_path().to_string().replace('/', ".")),
                    message: error.to_string(),
                    kind: "value_error",
                })
                .collect();
            if !problems.is_empty() {
                return Err(ErrorBody::validation(problems));
            }
        }
        if let Some(Pending::Elicitation { reply, .. }) = open.remove(&answer.elicitation_id) {
            let _ = reply.send(Answer { by: by.to_owned(), answer });
        }
        Ok(())
    }

    /// Takes a question off when its turn stops waiting. False when an answer took it first:
    /// that answer is then in the turn's receiver and counts.
    fn close(&self, id: &str) -> bool {
        self.open().remove(id).is_some()
    }
}

fn not_open(what: &str, id: &str) -> ErrorBody {
    ErrorBody::new(404, format!("no open {what} {id:?} in this request (unknown, or already answered or timed out)"))
}

/// How a tool call that needed approval was decided.
pub enum Verdict {
    Allowed,
    /// What the model reads as the tool's result.
    Refused(String),
}

/// The turn's port to its user: asks, records, waits.
pub struct Asker {
    run: Arc<Run>,
    store: Arc<dyn EventStore>,
    conversation_id: String,
    counter: TokenCounter,
    timeout: Duration,
    cancel: CancellationToken,
    elicitations: AtomicU64,
    /// Whose request it is: the only user whose answers count.
    user: String,
    /// `user/request_id`: the request the questions belong to.
    request_key: String,
}

impl Asker {
    pub fn new(
        run: Arc<Run>,
        user: String,
        store: Arc<dyn EventStore>,
        conversation_id: String,
        counter: TokenCounter,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let request_key = format!("{user}/{}", run.request_id);
        let elicitations = AtomicU64::new(0);
        Self { run, store, conversation_id, counter, timeout, cancel, elicitations, user, request_key }
    }

    fn event(&self, question: Question) -> NewEvent {
        let record = Record::Question(question);
        let token_count = self.counter.count_content(&record.message()) as u64;
        record.into_event(self.conversation_id.clone(), self.run.request_id.clone(), self.user.clone(), token_count)
    }

    /// Records the questions (durably), opens them, then sends them.
    async fn ask(&self, questions: Vec<Question>) -> Result<(), StoreError> {
        self.store.append(questions.iter().cloned().map(|question| self.event(question)).collect()).await?;
        for question in questions {
            self.run.push(RequestMessage::Chunk(chunk(question)));
        }
        Ok(())
    }

    /// Records an answer, then tells the client.
    async fn settle(&self, question: Question) -> Result<(), StoreError> {
        self.store.append(vec![self.event(question.clone())]).await?;
        self.run.push(RequestMessage::Chunk(chunk(question)));
        Ok(())
    }

    /// Asks about every call of one hop that needs approval at once; returns a waiter per call.
    pub async fn ask_approvals(&self, calls: Vec<(&ToolCall, ApprovalFacts)>) -> Result<Vec<Waiter>, StoreError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let timeout_seconds = self.timeout.as_secs_f64();
        let questions = calls
            .iter()
            .map(|(call, facts)| {
                Question::ApprovalRequest(ApprovalAsked {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    server: facts.server.clone(),
                    arguments: call.arguments.clone(),
                    annotations: facts.annotations.clone(),
                    timeout_seconds,
                })
            })
            .collect();
        // Opened before they are sent, so an immediate answer finds them.
        let waiters = calls
            .iter()
            .map(|(call, _)| {
                let (reply, waiter) = oneshot::channel();
                self.run.questions.open().insert(call.id.clone(), Pending::Approval(reply));
                waiter
            })
            .collect();
        if let Err(error) = self.ask(questions).await {
            calls.iter().for_each(|(call, _)| {
                self.run.questions.close(&call.id);
            });
            return Err(error);
        }
        Ok(waiters)
    }

    /// Waits for the decision on `call` until the timeout (which denies), records it, and
    /// says whether the call may run. `None` when the request was cancelled meanwhile.
    pub async fn decision(
        &self,
        call: &ToolCall,
        waiter: Waiter,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Verdict>, StoreError> {
        let Some(answer) = self.wait(&call.id, waiter, deadline).await else {
            return Ok(None);
        };
        let decided = match answer {
            Some(Answer { by, answer }) => ApprovalDecided {
                call_id: call.id.clone(),
                decision: answer.decision,
                by: Some(by),
                reason: answer.reason,
            },
            None => ApprovalDecided {
                call_id: call.id.clone(),
                decision: Decision::Deny,
                by: None,
                reason: Some(TIMED_OUT.to_owned()),
            },
        };
        let verdict = match (&decided.decision, &decided.by, &decided.reason) {
            (Decision::Allow, _, _) => Verdict::Allowed,
            (Decision::Deny, None, _) => Verdict::Refused(TIMED_OUT.to_owned()),
            (Decision::Deny, Some(_), None) => Verdict::Refused(DENIED.to_owned()),
            (Decision::Deny, Some(_), Some(reason)) => Verdict::Refused(format!("{DENIED}: {reason}")),
        };
        self.settle(Question::Approval(decided)).await?;
        Ok(Some(verdict))
    }

    /// The answer to question `id`: `Some(None)` after the timeout, `None` when cancelled.
    async fn wait<T>(
        &self,
        id: &str,
        mut waiter: oneshot::Receiver<Answer<T>>,
        deadline: tokio::time::Instant,
    ) -> Option<Option<Answer<T>>> {
        tokio::select! {
            answer = &mut waiter => Some(answer.ok()),
            _ = tokio::time::sleep_until(deadline) => {
                if self.run.questions.close(id) { Some(None) } else { Some(waiter.await.ok()) }
            }
            _ = self.cancel.cancelled() => {
                self.run.questions.close(id);
                None
            }
        }
    }

    async fn elicit_recorded(&self, question: Elicitation) -> Result<ElicitationReply, StoreError> {
        let id = format!("e-{}", self.elicitations.fetch_add(1, Ordering::SeqCst) + 1);
        let (mode, requested_schema, url) = match question.mode {
            ElicitationMode::Form { requested_schema } => ("form", Some(requested_schema), None),
            ElicitationMode::Url { url } => ("url", None, Some(url)),
        };
        let validator =
            requested_schema.as_ref().and_then(|schema| jsonschema::validator_for(schema).ok()).map(Box::new);
        let (reply, waiter) = oneshot::channel();
        self.run.questions.open().insert(id.clone(), Pending::Elicitation { validator, reply });
        let log_content = question.log_content;
        let asked = Question::Elicitation(ElicitationAsked {
            elicitation_id: id.clone(),
            server: question.server,
            mode: mode.to_owned(),
            message: question.message,
            requested_schema,
            url,
            timeout_seconds: self.timeout.as_secs_f64(),
            log_content,
        });
        if let Err(error) = self.ask(vec![asked]).await {
            self.run.questions.close(&id);
            return Err(error);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (answered, reply) = match self.wait(&id, waiter, deadline).await.flatten() {
            Some(Answer { by, answer }) => (
                ElicitationAnswered {
                    elicitation_id: id,
                    action: answer.action,
                    by: Some(by),
                    reason: None,
                    content: answer.content.clone().filter(|_| log_content),
                },
                // What goes back keeps the content even when the log may not.
                ElicitationReply { action: answer.action, content: answer.content },
            ),
            None => (
                ElicitationAnswered {
                    elicitation_id: id,
                    action: ElicitationAction::Cancel,
                    by: None,
                    reason: Some(format!("no answer within {:.0} s", self.timeout.as_secs_f64())),
                    content: None,
                },
                ElicitationReply { action: ElicitationAction::Cancel, content: None },
            ),
        };
        self.settle(Question::ElicitationResult(answered)).await?;
        Ok(reply)
    }
}

const DENIED: &str = "denied by the user";
const TIMED_OUT: &str = "approval timed out";

#[async_trait]
impl UserInput for Asker {
    fn request_key(&self) -> &str {
        &self.request_key
    }

    async fn elicit(&self, question: Elicitation) -> ElicitationReply {
        match self.elicit_recorded(question).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(%error, "could not record an elicitation; it is cancelled");
                ElicitationReply { action: ElicitationAction::Cancel, content: None }
            }
        }
    }
}

/// The chunk that tells the client about a question or its answer, live or replayed.
pub fn chunk(question: Question) -> Chunk {
    match question {
        Question::ApprovalRequest(asked) => Chunk::ApprovalRequest(ApprovalRequestChunk {
            id: asked.call_id,
            name: asked.name,
            server: asked.server,
            arguments: asked.arguments,
            annotations: asked.annotations,
            timeout_seconds: asked.timeout_seconds,
        }),
        Question::Approval(decided) => Chunk::Approval(ApprovalChunk {
            id: decided.call_id,
            decision: decided.decision,
            by: decided.by,
            reason: decided.reason,
        }),
        Question::Elicitation(asked) => {
            let host = asked.url.as_deref().and_then(|url| url::Url::parse(url).ok()?.host_str().map(str::to_owned));
            Chunk::Elicitation(ElicitationChunk {
                id: asked.elicitation_id,
                server: asked.server,
                mode: if asked.mode == "url" { WireMode::Url } else { WireMode::Form },
                message: asked.message,
                requested_schema: asked.requested_schema,
                url: asked.url,
                host,
                timeout_seconds: asked.timeout_seconds,
            })
        }
        Question::ElicitationResult(answered) => Chunk::ElicitationResult(ElicitationResultChunk {
            id: answered.elicitation_id,
            action: answered.action,
            by: answered.by,
            reason: answered.reason,
        }),
    }
}
