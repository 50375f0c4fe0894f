//! The turn with a scripted model, a fake tool and the in-memory store: the whole tool loop,
//! dedup and replay, without a socket, a process or a file.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ChatDeps, ChatService, Subscription};
use crate::config::{ApprovalPolicy, ChatServiceSettings, ContextSettings, StreamingSettings, ToolApprovalSettings};
use crate::domain::{FinishReason, Message, Role, ToolCall, ToolSpec, Usage};
use crate::llm::{LlmEvent, LlmProvider, LlmRequest, LlmStream};
use crate::mcp::{ApprovalFacts, McpServerIssue, ToolError, ToolOutcome, ToolProgress, ToolProvider, UserInput};
use crate::protocol::ChatPayload;
use crate::store::memory::MemoryStore;
use crate::store::record::{Record, UserTurn};
use crate::store::{EventStore, EventType, NewEvent};

/// Answers each model call with the next scripted reply and remembers what it was asked.
struct ScriptedModel {
    replies: Mutex<VecDeque<Vec<LlmEvent>>>,
    requests: Mutex<Vec<LlmRequest>>,
}

impl LlmProvider for ScriptedModel {
    fn default_model(&self) -> &str {
        "gpt-4"
    }

    fn chat(&self, request: &LlmRequest) -> LlmStream {
        self.requests.lock().unwrap().push(request.clone());
        let reply = self.replies.lock().unwrap().pop_front().expect("a scripted reply for every model call");
        Box::pin(futures::stream::iter(reply.into_iter().map(Ok)))
    }
}

/// One tool, `demo__sum`, that adds `a` and `b` and reports one progress step.
struct SumTool;

#[async_trait]
impl ToolProvider for SumTool {
    fn tools(&self) -> Vec<Arc<ToolSpec>> {
        vec![Arc::new(ToolSpec::new("demo__sum", "Add", json!({"type": "object"}).into()))]
    }

    fn unavailable(&self) -> Vec<McpServerIssue> {
        Vec::new()
    }

    fn needs_approval(&self, _call: &ToolCall, _policy: ApprovalPolicy) -> Option<ApprovalFacts> {
        None
    }

    async fn call_tool(
        &self,
        call: &ToolCall,
        progress: mpsc::UnboundedSender<ToolProgress>,
        _cancel: CancellationToken,
        _user: Arc<dyn UserInput>,
    ) -> ToolOutcome {
        let _ = progress.send(ToolProgress { progress: 1.0, total: Some(1.0), message: None });
        let sum = call.arguments["a"].as_i64().unwrap_or(0) + call.arguments["b"].as_i64().unwrap_or(0);
        ToolOutcome {
            ok: true,
            content: sum.to_string(),
            attachments: Default::default(),
            notices: Vec::new(),
            duration: Duration::from_micros(700),
        }
    }

    async fn get_prompt(&self, name: &str, _: Map<String, Value>) -> Result<Vec<Message>, ToolError> {
        Err(ToolError(format!("no prompt {name}")))
    }

    async fn read_resource(&self, uri: &str) -> Result<String, ToolError> {
        Err(ToolError(format!("no resource {uri}")))
    }
}

fn service(replies: Vec<Vec<LlmEvent>>) -> (Arc<ChatService>, Arc<ScriptedModel>, Arc<MemoryStore>) {
    let model = Arc::new(ScriptedModel { replies: Mutex::new(replies.into()), requests: Mutex::new(Vec::new()) });
    let store = Arc::new(MemoryStore::new());
    let settings = ChatServiceSettings {
        system_prompt: "You add numbers.".into(),
        streaming: StreamingSettings { enabled: true, min_text_interval: 0.0 },
        context: ContextSettings { max_tokens: 4000, reserve_tokens: 500, preserve_recent: 4 },
        max_tool_hops: 3,
        tool_timeout: 5.0,
        max_tool_result_chars: 1000,
        tool_approval: ToolApprovalSettings { policy: ApprovalPolicy::Never, timeout: 5.0 },
    };
    let deps = ChatDeps { llm: model.clone(), tools: Arc::new(SumTool), store: store.clone() };
    (ChatService::new(settings, deps), model, store)
}

fn sum_then_answer() -> Vec<Vec<LlmEvent>> {
    let call = ToolCall { id: "call_1".into(), name: "demo__sum".into(), arguments: json!({"a": 2, "b": 3}) };
    let usage = |total| Usage { prompt_tokens: total - 2, completion_tokens: 2, total_tokens: total };
    vec![
        vec![LlmEvent::ToolCall(call), LlmEvent::Usage(usage(20)), LlmEvent::Finish(FinishReason::ToolCalls)],
        vec![LlmEvent::Text("2+3 is 5.".into()), LlmEvent::Usage(usage(30)), LlmEvent::Finish(FinishReason::Stop)],
    ]
}

fn payload(text: &str) -> ChatPayload {
    ChatPayload {
        text: Some(text.into()),
        conversation_id: Some("c-1".into()),
        model: None,
        streaming: None,
        prompt: None,
        resources: Vec::new(),
    }
}

/// Every message of a subscription, parsed, until its run ends.
async fn messages(subscription: Subscription) -> Vec<Value> {
    let mut cursor = subscription.from;
    let mut out = Vec::new();
    while let Some((batch, next)) = subscription.run.next(cursor).await {
        cursor = next;
        out.extend(batch.iter().map(|message| serde_json::from_str::<Value>(message).expect("JSON")));
    }
    out
}

/// `status`, or the chunk type for chunks, of each message, with its `seq`.
fn outline(messages: &[Value]) -> Vec<(String, u64)> {
    messages
        .iter()
        .map(|message| {
            let kind = message["chunk"]["type"].as_str().or(message["status"].as_str()).unwrap_or_default();
            (kind.to_owned(), message["seq"].as_u64().expect("numbered"))
        })
        .collect()
}

fn owned(outline: &[(&str, u64)]) -> Vec<(String, u64)> {
    outline.iter().map(|(kind, seq)| (kind.to_string(), *seq)).collect()
}

#[tokio::test]
async fn a_turn_runs_the_tool_loop_logs_every_step_and_replays_from_the_log() {
    let (service, model, store) = service(sum_then_answer());
    let live =
        messages(service.submit("anonymous", "r-1".into(), payload("what is 2+3"), "default").await.expect("accepted"))
            .await;
    assert_eq!(
        outline(&live),
        owned(&[
            ("processing", 0),
            ("tool_call", 1),
            ("progress", 2),
            ("tool_result", 3),
            ("text", 4),
            ("complete", 5)
        ])
    );
    assert_eq!(live[0]["conversation_id"], "c-1");
    assert_eq!(
        live[3]["chunk"]["data"],
        json!({"id": "call_1", "name": "demo__sum", "ok": true, "content": "5", "duration_ms": 0.7})
    );
    let metadata = &live[5]["metadata"];
    assert_eq!((metadata["tokens"].as_u64(), metadata["tool_hops"].as_u64()), (Some(50), Some(1)));
    assert_eq!((metadata["finish_reason"].as_str(), metadata["cached"].as_bool()), (Some("stop"), Some(false)));

    let requests = model.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let fed_back = requests[1].messages.last().expect("the tool result went back");
    assert_eq!((fed_back.role, fed_back.content.as_str()), (Role::Tool, "5"));

    let events = store.request("anonymous", "r-1").await.expect("stored");
    let records: Vec<Record> = events.iter().map(|event| Record::from_event(event).expect("a record")).collect();
    assert!(matches!(&records[0], Record::UserTurn(UserTurn { text, fingerprint: stored, .. })
        if text == "what is 2+3" && *stored == payload("what is 2+3").fingerprint()));
    assert!(matches!(&records[1], Record::ToolCalls { calls, .. } if calls[0].name == "demo__sum"));
    assert!(matches!(&records[2], Record::ToolResult(result) if result.content == "5" && result.ok));
    assert!(matches!(&records[3], Record::Answer { text, figures } if text == "2+3 is 5." && figures.tokens == 50));
    assert_eq!(records.len(), 4);
    assert_eq!(events.iter().map(|event| event.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);

    let replay = owned(&[("processing", 0), ("tool_call", 1), ("tool_result", 2), ("text", 3), ("complete", 4)]);
    let again =
        messages(service.submit("anonymous", "r-1".into(), payload("what is 2+3"), "default").await.expect("replayed"))
            .await;
    assert_eq!(outline(&again), replay);
    assert_eq!((again[0]["replayed"].as_bool(), again[4]["metadata"]["cached"].as_bool()), (Some(true), Some(true)));
    assert_eq!(again[4]["metadata"]["tokens"], metadata["tokens"]);
    let resumed = messages(service.resume("anonymous", "r-1", Some(2)).await.expect("resumed")).await;
    assert_eq!(outline(&resumed), replay, "a finished request is replayed whole");
    assert_eq!(model.requests.lock().unwrap().len(), 2, "nothing ran twice");

    let conflict =
        service.submit("anonymous", "r-1".into(), payload("something else"), "default").await.err().expect("409");
    assert_eq!(conflict.code, 409, "{}", conflict.message);
}

#[tokio::test]
async fn a_stored_request_whose_final_record_is_corrupt_is_a_500_with_a_correlation_id() {
    let (service, model, store) = service(Vec::new());
    let user_turn = || {
        let turn = UserTurn {
            text: "what is 2+3".into(),
            fingerprint: payload("what is 2+3").fingerprint(),
            prompt: None,
            resources: Vec::new(),
        };
        Record::UserTurn(turn).into_event("c-1".into(), "r-1".into(), "anonymous".into(), 3)
    };
    let answer = NewEvent {
        kind: EventType::AssistantMessage,
        role: Some(Role::Assistant),
        extra: json!({"status": "complete", "metadata": {"tokens": "many"}}).as_object().expect("object").clone(),
        ..user_turn()
    };
    store.append(vec![user_turn(), answer]).await.expect("append");

    let replayed =
        service.submit("anonymous", "r-1".into(), payload("what is 2+3"), "default").await.err().expect("refused");
    let resumed = service.resume("anonymous", "r-1", None).await.err().expect("refused");
    for error in [replayed, resumed] {
        assert_eq!(error.code, 500);
        assert!(error.message.contains("correlation id"), "{}", error.message);
    }
    assert!(model.requests.lock().unwrap().is_empty(), "a stored request is never run again");
}
