//! LLM provider tests: providers pointed at a mock, and answers collected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use mcp_platform::config::{LlmSettings, ProviderKind, ProviderSettings, Secret};
use mcp_platform::domain::{FinishReason, Message, ToolCall, ToolSpec, Usage};
use mcp_platform::llm::{self, LlmError, LlmEvent, LlmProvider, LlmRequest, LlmStream};
use mock_llm::{MockLlm, Script};
use serde_json::{Value, json};

pub const KINDS: [ProviderKind; 2] = [ProviderKind::Openai, ProviderKind::Anthropic];

pub fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub async fn mock(script: Value) -> MockLlm {
    let script = Script::from_json(&script.to_string()).expect("valid script");
    MockLlm::start(local(), Some(script)).await.expect("mock starts")
}

/// The `base_url` a provider of `kind` needs for `mock`.
pub fn base_url(mock: &MockLlm, kind: ProviderKind) -> String {
    match kind {
        ProviderKind::Openai => mock.openai_base_url(),
        ProviderKind::Anthropic => mock.base_url(),
    }
}

pub fn settings(
    kind: ProviderKind,
    base_url: &str,
    api_key: &str,
    request_timeout: f64,
    max_retries: u32,
) -> LlmSettings {
    let provider = ProviderSettings {
        kind,
        base_url: base_url.to_owned(),
        api_key: Secret::new(api_key),
        model: "test-model".to_owned(),
        temperature: 0.5,
        max_tokens: 321,
        top_p: 0.9,
        vision: false,
    };
    LlmSettings {
        active: "test".to_owned(),
        providers: BTreeMap::from([("test".to_owned(), provider)]),
        request_timeout,
        max_retries,
    }
}

pub fn provider_with(
    mock: &MockLlm,
    kind: ProviderKind,
    request_timeout: f64,
    max_retries: u32,
) -> Arc<dyn LlmProvider> {
    llm::from_settings(&settings(kind, &base_url(mock, kind), "test-key", request_timeout, max_retries))
        .expect("provider builds")
}

pub fn provider(mock: &MockLlm, kind: ProviderKind) -> Arc<dyn LlmProvider> {
    provider_with(mock, kind, 10.0, 2)
}

pub fn tool(name: &str) -> ToolSpec {
    let parameters = json!({
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    });
    ToolSpec::new(name, format!("The {name} tool."), parameters.into())
}

pub fn ask(text: &str, tools: Vec<ToolSpec>, streaming: bool) -> LlmRequest {
    LlmRequest {
        model: None,
        messages: vec![Arc::new(Message::system("You are a helpful assistant.")), Arc::new(Message::user(text))],
        tools: tools.into_iter().map(Arc::new).collect(),
        streaming,
    }
}

/// Everything one call yielded, in a form streaming and non-streaming calls can be compared in.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub texts: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Option<Usage>,
    pub finish: Option<FinishReason>,
    pub error: Option<String>,
    pub error_code: Option<u16>,
    /// Events that came after a Finish or an error: must stay empty.
    pub after_end: usize,
}

impl Outcome {
    pub fn text(&self) -> String {
        self.texts.concat()
    }

    /// The same answer, however it was chunked.
    pub fn answer(&self) -> (String, Vec<ToolCall>, Option<Usage>, Option<FinishReason>) {
        (self.text(), self.tool_calls.clone(), self.usage, self.finish)
    }
}

pub async fn collect(mut stream: LlmStream) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some(item) = stream.next().await {
        if outcome.finish.is_some() || outcome.error.is_some() {
            outcome.after_end += 1;
            continue;
        }
        match item {
            Ok(LlmEvent::Text(text)) => outcome.texts.push(text),
            Ok(LlmEvent::ToolCall(call)) => outcome.tool_calls.push(call),
            Ok(LlmEvent::Usage(usage)) => {
                assert!(outcome.usage.is_none(), "usage reported twice");
                outcome.usage = Some(usage);
            }
            Ok(LlmEvent::Finish(reason)) => outcome.finish = Some(reason),
            Err(error) => {
                outcome.error_code = Some(error.code());
                outcome.error = Some(error.to_string());
                if let LlmError::Timeout(_) = error {
                    assert_eq!(error.code(), 504);
                }
            }
        }
    }
    outcome
}

pub async fn chat(provider: &Arc<dyn LlmProvider>, request: LlmRequest) -> Outcome {
    collect(provider.chat(&request)).await
}

pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
    Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}

pub fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall { id: id.to_owned(), name: name.to_owned(), arguments }
}
