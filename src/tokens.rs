//! Token counting over tiktoken-rs, for context budgeting and the `token_count` of each event.
//!
//! OpenAI models are counted with the encoding they really use: `o200k_base` for the gpt-4o,
//! gpt-4.1, o1/o3/o4 and gpt-5 families, `cl100k_base` for the older ones. Other vendors'
//! models (llama, claude, mistral, gemma, qwen, …) use tokenizers tiktoken does not ship, so
//! they are counted with `cl100k_base` as an **estimate**: close enough to budget a context
//! window with a reserve, never an exact figure. [`TokenCounter::is_estimate`] says which
//! case applies, so callers can label the figure accordingly.
//!
//! The BPE tables are tiktoken-rs's; the text is split by [`bpe`], which gives tiktoken-rs's
//! counts at 1.3 to 2.4 times its speed. The tables take a tenth to a quarter of a second to
//! build, so each is built once per process (a lazily initialised static, built at start by
//! [`TokenCounter::warm_up`]) and a [`TokenCounter`] is only a reference to one of them: cheap
//! to create per request and to copy.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use serde::Serialize;

use self::bpe::Bpe;

use crate::domain::{Message, Role, ToolCall, ToolSpec};

mod bpe;

/// Tokens every chat message costs beyond its content (`<|start|>{role}<|message|>…<|end|>`),
/// as OpenAI documents for its chat formats.
const TOKENS_PER_MESSAGE: usize = 3;
/// Texts [`TokenCounter::count_repeated`] remembers per encoding.
const REMEMBERED_TEXTS: usize = 1024;
/// Tokens the reply is primed with (`<|start|>assistant<|message|>`).
const REPLY_PRIMING_TOKENS: usize = 3;

/// The tiktoken encoding a [`TokenCounter`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }
}

/// Counts tokens the way a given model would see them.
#[derive(Clone, Copy)]
pub struct TokenCounter {
    bpe: &'static Bpe,
    encoding: Encoding,
    estimate: bool,
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCounter").field("encoding", &self.encoding).field("estimate", &self.estimate).finish()
    }
}

impl TokenCounter {
    /// The counter for `model` (a provider's model name, optionally with a vendor prefix such
    /// as `openai/gpt-4o`). Unknown and non-OpenAI models get the `cl100k_base` estimate.
    pub fn for_model(model: &str) -> TokenCounter {
        let name = model.rsplit('/').next().unwrap_or(model).trim().to_ascii_lowercase();
        let (encoding, estimate) = if uses_o200k(&name) {
            (Encoding::O200kBase, false)
        } else if is_older_openai_model(&name) {
            (Encoding::Cl100kBase, false)
        } else {
            (Encoding::Cl100kBase, true)
        };
        let bpe = match encoding {
            Encoding::O200kBase => bpe::o200k_base(),
            Encoding::Cl100kBase => bpe::cl100k_base(),
        };
        TokenCounter { bpe, encoding, estimate }
    }

    /// Builds the table `model` is counted with on a background thread, so that the first turn
    /// of a fresh process does not wait for it (it takes 0.1 to 0.25 s). `None` when no thread
    /// could be started: the first turn then builds the table itself.
    pub fn warm_up(model: &str) -> Option<std::thread::JoinHandle<()>> {
        let model = model.to_owned();
        std::thread::Builder::new()
            .name("token-tables".into())
            .spawn(move || {
                TokenCounter::for_model(&model).count("warm");
            })
            .ok()
    }

    /// The encoding this counter uses.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// True when the model's own tokenizer is not available and counts are `cl100k_base`
    /// estimates (every non-OpenAI model).
    pub fn is_estimate(&self) -> bool {
        self.estimate
    }

    /// Tokens of plain text. Special-token markers in the text (`<|endoftext|>`) count as the
    /// ordinary text they are, as they would in a chat message.
    pub fn count(&self, text: &str) -> usize {
        self.bpe.count(text)
    }

    /// Tokens of what one message carries: its content, its tool calls (as the JSON the API
    /// carries), the id of the call a tool message answers. A logged event's `token_count`
    /// is this figure, so the context is budgeted without recounting history.
    pub fn count_content(&self, message: &Message) -> usize {
        let mut tokens = self.count(&message.content);
        if !message.tool_calls.is_empty() {
            tokens += self.count(&tool_calls_json(&message.tool_calls));
        }
        if let Some(call_id) = &message.tool_call_id {
            tokens += self.count(call_id);
        }
        tokens
    }

    /// Tokens one message costs in a chat prompt: what it carries plus the per-message
    /// framing of the chat format.
    pub fn count_message(&self, message: &Message) -> usize {
        self.framed(message.role, self.count_content(message))
    }

    /// What a message costs in a prompt when what it carries is already counted (a logged
    /// event's `token_count`).
    pub fn framed(&self, role: Role, content_tokens: usize) -> usize {
        TOKENS_PER_MESSAGE + self.role_tokens(role) + content_tokens
    }

    /// Tokens of a role's name, counted once per encoding: the context budgets every message of
    /// the history with it, each turn.
    fn role_tokens(&self, role: Role) -> usize {
        static O200K: OnceLock<[usize; 4]> = OnceLock::new();
        static CL100K: OnceLock<[usize; 4]> = OnceLock::new();
        let table = match self.encoding {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        };
        let counts = table.get_or_init(|| ROLES.map(|role| self.count(role_name(role))));
        counts[role as usize]
    }

    /// Tokens a whole prompt of `messages` costs, including the priming of the reply.
    pub fn count_messages<'a>(&self, messages: impl IntoIterator<Item = &'a Message>) -> usize {
        messages.into_iter().map(|message| self.count_message(message)).sum::<usize>() + REPLY_PRIMING_TOKENS
    }

    /// Tokens the tool definitions cost when offered to the model, counted over the JSON the
    /// chat API carries for them (name, description, parameter schema). Providers render
    /// tools in their own internal format, so this is an approximation for every model.
    /// Each tool's count is kept with the tool, which every later turn shares.
    pub fn count_tools(&self, tools: &[Arc<ToolSpec>]) -> usize {
        tools
            .iter()
            .map(|tool| {
                let count = || self.count(&tool_json(tool));
                match tool.tokens.get_or_make(self.encoding.name(), count) {
                    Some(tokens) => *tokens,
                    None => self.count_repeated(&tool_json(tool)),
                }
            })
            .sum()
    }

    /// [`TokenCounter::count`] of a text that comes back unchanged turn after turn (the system
    /// prompt, a tool's definition): counted once per encoding and remembered, since a hash
    /// lookup costs a small part of a count. Forgets everything past [`REMEMBERED_TEXTS`], so
    /// changing tool sets cannot grow it without bound.
    pub fn count_repeated(&self, text: &str) -> usize {
        static O200K: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Mutex::default);
        static CL100K: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Mutex::default);
        let memo = match self.encoding {
            Encoding::O200kBase => &O200K,
            Encoding::Cl100kBase => &CL100K,
        };
        let remembered = memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(text).copied();
        remembered.unwrap_or_else(|| {
            let tokens = self.count(text);
            let mut memo = memo.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if memo.len() >= REMEMBERED_TEXTS {
                memo.clear();
            }
            memo.insert(text.to_owned(), tokens);
            tokens
        })
    }
}

fn uses_o200k(name: &str) -> bool {
    const FAMILIES: [&str; 7] = ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"];
    FAMILIES.iter().any(|family| {
        name.strip_prefix(family).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
    })
}

fn is_older_openai_model(name: &str) -> bool {
    ["gpt-4", "gpt-3.5", "text-embedding-", "chatgpt-"].iter().any(|prefix| name.starts_with(prefix))
}

/// Every role, in the order of its discriminant.
const ROLES: [Role; 4] = [Role::System, Role::User, Role::Assistant, Role::Tool];

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn tool_calls_json(calls: &[ToolCall]) -> String {
    // Serialising plain data into a String cannot fail; an empty string only under-counts.
    serde_json::to_string(calls).unwrap_or_default()
}

fn tool_json(tool: &ToolSpec) -> String {
    #[derive(Serialize)]
    struct Function<'a> {
        name: &'a str,
        description: &'a str,
        parameters: &'a serde_json::Value,
    }
    serde_json::to_string(&Function { name: &tool.name, description: &tool.description, parameters: &tool.parameters })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn models_map_to_their_encoding() {
        for model in ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "o1", "o3-mini", "o4-mini", "gpt-5", "openai/gpt-4o"] {
            let counter = TokenCounter::for_model(model);
            assert_eq!(counter.encoding(), Encoding::O200kBase, "{model}");
            assert!(!counter.is_estimate(), "{model}");
        }
        for model in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo"] {
            let counter = TokenCounter::for_model(model);
            assert_eq!(counter.encoding(), Encoding::Cl100kBase, "{model}");
            assert!(!counter.is_estimate(), "{model}");
        }
        for model in ["llama-3.3-70b-versatile", "claude-sonnet-4", "mistral-large", "o1x-lookalike"] {
            let counter = TokenCounter::for_model(model);
            assert_eq!(counter.encoding(), Encoding::Cl100kBase, "{model}");
            assert!(counter.is_estimate(), "{model}");
        }
    }

    #[test]
    fn known_token_counts() {
        let o200k = TokenCounter::for_model("gpt-4o");
        let cl100k = TokenCounter::for_model("gpt-4");
        assert_eq!(o200k.count("hello world"), 2);
        assert_eq!(cl100k.count("hello world"), 2);
        assert_eq!(o200k.count(""), 0);
        assert_eq!(cl100k.count("tiktoken is great!"), 6);
        // o200k's larger vocabulary covers non-English text better: each counter really uses
        // its own table.
        let chinese = "我们今天去公园散步，天气非常好。";
        assert!(o200k.count(chinese) < cl100k.count(chinese));
        assert_eq!(cl100k.count("<|endoftext|>"), 7);
    }

    #[test]
    fn remembered_counts_are_the_counts_of_their_own_encoding() {
        // Counted differently by the two encodings, so a count remembered for one and
        // answered for the other would show.
        let text = "Привет, мир! こんにちは 世界 ॐ नमः शिवाय";
        let (o200k, cl100k) = (TokenCounter::for_model("gpt-4o"), TokenCounter::for_model("gpt-4"));
        assert_ne!(o200k.count(text), cl100k.count(text));
        for _ in 0..2 {
            assert_eq!(o200k.count_repeated(text), o200k.count(text));
            assert_eq!(cl100k.count_repeated(text), cl100k.count(text));
        }
        for n in 0..REMEMBERED_TEXTS + 1 {
            let text = format!("text number {n}");
            assert_eq!(o200k.count_repeated(&text), o200k.count(&text), "{text}");
        }
        assert_eq!(o200k.count_repeated(text), o200k.count(text), "after the memo was cleared");
    }

    #[test]
    fn message_counts_include_framing_tool_calls_and_priming() {
        let counter = TokenCounter::for_model("gpt-4");
        let user = Message::user("hello world");
        // 3 framing + "user" (1) + "hello world" (2)
        assert_eq!(counter.count_message(&user), 6);
        assert_eq!(counter.count_messages(std::slice::from_ref(&user)), 9);

        let call = ToolCall { id: "call_1".into(), name: "demo__sum".into(), arguments: json!({"a": 2, "b": 3}) };
        let assistant = Message::assistant("", vec![call.clone()]);
        let call_json = serde_json::to_string(&[call]).unwrap();
        assert_eq!(counter.count_message(&assistant), 3 + counter.count("assistant") + counter.count(&call_json));
        let tool = Message::tool("call_1", "5");
        assert_eq!(
            counter.count_message(&tool),
            3 + counter.count("tool") + counter.count("5") + counter.count("call_1")
        );
        assert_eq!(counter.count_content(&tool), counter.count("5") + counter.count("call_1"));
        assert_eq!(counter.framed(Role::Tool, counter.count_content(&tool)), counter.count_message(&tool));
        for counter in [counter, TokenCounter::for_model("gpt-4o")] {
            for role in ROLES {
                assert_eq!(counter.framed(role, 0), 3 + counter.count(role_name(role)), "{role:?}");
            }
        }
    }

    #[test]
    fn tools_are_counted_over_their_schema() {
        let counter = TokenCounter::for_model("gpt-4o");
        let small = ToolSpec::new("demo__sum", "Add two numbers", json!({"type": "object"}).into());
        let large = ToolSpec {
            parameters: json!({"type": "object", "properties": {
                "a": {"type": "number", "description": "first addend"},
                "b": {"type": "number", "description": "second addend"}}})
            .into(),
            ..small.clone()
        };
        let (small, large) = (Arc::new(small), Arc::new(large));
        let small_count = counter.count_tools(std::slice::from_ref(&small));
        assert!(small_count > counter.count("demo__sum Add two numbers"));
        assert!(counter.count_tools(std::slice::from_ref(&large)) > small_count);
        assert_eq!(counter.count_tools(&[small.clone(), small.clone()]), 2 * small_count);
        assert_eq!(counter.count_tools(&[]), 0);
        // Kept per encoding: a counter of another encoding counts the same tool afresh.
        let other = TokenCounter::for_model("gpt-4");
        let fresh = Arc::new(ToolSpec::new("demo__sum", "Add two numbers", json!({"type": "object"}).into()));
        assert_eq!(other.count_tools(std::slice::from_ref(&small)), other.count_tools(&[fresh]));
        assert_eq!(counter.count_tools(std::slice::from_ref(&small)), small_count, "still this encoding's count");
    }
}
