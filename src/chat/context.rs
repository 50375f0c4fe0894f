//! The conversation context sent to the model, within a token budget.
//!
//! History is cut in units that the chat APIs accept on their own: a user message, a final
//! assistant answer, or an assistant message with tool calls together with the results of
//! those calls (a tool result without its call, or a call without its result, is refused by
//! the providers). Units are dropped oldest first; the newest `preserve_recent` messages are
//! kept whatever they cost.
//!
//! The history comes from [`EventStore::recent`](crate::store::EventStore::recent) with
//! [`history_limit`]: every message the budget can keep has a stored `token_count` of its own,
//! so the newest messages holding more than the budget (and `preserve_recent` of them, in
//! whole requests) contain everything kept, and a turn reads what its context costs whatever
//! the conversation's length.

use std::sync::Arc;

use crate::config::ContextSettings;
use crate::domain::{Message, Role, ToolSpec};
use crate::store::{ChatEvent, EventType, RecentLimit};
use crate::tokens::TokenCounter;

/// The context sent to the model.
pub struct Context {
    pub messages: Vec<Arc<Message>>,
    /// The oldest unit of the history given was kept: a history the store cut short may then
    /// leave out units that would still fit (tool calls cut off mid-turn count in the store's
    /// sum but are never sent), so the caller reads further back.
    pub kept_oldest: bool,
}

/// What to ask the store for: enough history to fill the whole budget.
pub fn history_limit(budget: &ContextSettings) -> RecentLimit {
    RecentLimit {
        tokens: budget.max_tokens.saturating_sub(budget.reserve_tokens) as u64,
        messages: budget.preserve_recent,
    }
}

/// The request's own user message, with what it carries in tokens: the `token_count` of the
/// event that claimed the request, so the text is counted once.
pub struct NewTurn {
    pub message: Message,
    pub tokens: usize,
}

/// Builds `system + kept history + new_turn`. `history` is the end of the conversation's stored
/// events before this request, in `seq` order; each event's stored `token_count` is reused,
/// never recounted.
pub fn build(
    system_prompt: &str,
    history: &[Arc<ChatEvent>],
    new_turn: NewTurn,
    tools: &[Arc<ToolSpec>],
    counter: &TokenCounter,
    budget: &ContextSettings,
) -> Context {
    let fixed = counter.framed(Role::System, counter.count_repeated(system_prompt))
        + counter.count_tools(tools)
        + counter.framed(new_turn.message.role, new_turn.tokens);
    let available = budget.max_tokens.saturating_sub(budget.reserve_tokens).saturating_sub(fixed);

    let History { messages: history_messages, units } = history_units(history, counter);
    let mut kept_from = units.len();
    let mut spent = 0;
    let mut recent_messages = 0;
    let mut unit_end = history_messages.len();
    for (index, unit) in units.iter().enumerate().rev() {
        let protected = recent_messages < budget.preserve_recent;
        if !protected && spent + unit.tokens > available {
            break;
        }
        spent += unit.tokens;
        recent_messages += unit_end - unit.start;
        unit_end = unit.start;
        kept_from = index;
    }
    let first_kept = units.get(kept_from).map_or(history_messages.len(), |unit| unit.start);

    let mut messages = Vec::with_capacity(2 + history_messages.len() - first_kept);
    messages.push(Arc::new(Message::system(system_prompt)));
    messages.extend(history_messages[first_kept..].iter().map(|message| Arc::clone(message)));
    messages.push(Arc::new(new_turn.message));
    Context { messages, kept_oldest: kept_from == 0 }
}

/// The history as a model may see it: its messages in order, in units kept or dropped whole.
struct History<'a> {
    messages: Vec<&'a Arc<Message>>,
    units: Vec<Unit>,
}

/// A unit: `messages[start..]` up to the next unit's start.
struct Unit {
    start: usize,
    tokens: usize,
}

/// Groups stored events into units, leaving out what the model must not see: bookkeeping
/// events, and tool calls whose results never arrived (a turn cut off mid-hop). The messages
/// are the events' own ([`ChatEvent::message`]), borrowed: one list for all units, and only
/// the kept ones are shared into the context.
fn history_units<'a>(history: &'a [Arc<ChatEvent>], counter: &TokenCounter) -> History<'a> {
    let mut messages = Vec::with_capacity(history.len());
    let mut units: Vec<Unit> = Vec::new();
    // The ids of the calls whose results are still to come: a message makes a few calls, so a
    // list searched in place costs less than hashing every id.
    let mut open_calls: Vec<&str> = Vec::new();
    let mut open_unit: Option<Unit> = None;
    for event in history {
        let Some(message) = event.message() else { continue };
        let tokens = counter.framed(message.role, event.token_count as usize);
        if event.kind == EventType::ToolResult {
            let call_id = message.tool_call_id.as_deref().unwrap_or_default();
            let answered = open_calls.iter().position(|open| *open == call_id).map(|at| open_calls.swap_remove(at));
            if let Some(unit) = open_unit.as_mut().filter(|_| answered.is_some()) {
                messages.push(message);
                unit.tokens += tokens;
                if open_calls.is_empty() {
                    units.extend(open_unit.take());
                }
            }
            continue;
        }
        if let Some(unanswered) = open_unit.take() {
            messages.truncate(unanswered.start);
        }
        open_calls.clear();
        open_calls.extend(message.tool_calls.iter().map(|call| call.id.as_str()));
        let unit = Unit { start: messages.len(), tokens };
        messages.push(message);
        if open_calls.is_empty() {
            units.push(unit);
        } else {
            open_unit = Some(unit);
        }
    }
    if let Some(unanswered) = open_unit {
        messages.truncate(unanswered.start);
    }
    History { messages, units }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::domain::ToolCall;

    fn event(kind: EventType, role: Role, content: &str, tokens: u64) -> ChatEvent {
        ChatEvent {
            v: 1,
            id: String::new(),
            conversation_id: "c".into(),
            seq: 0,
            request_id: None,
            user: None,
            timestamp: String::new(),
            kind,
            role: Some(role),
            content: Some(content.into()),
            tool_calls: None,
            tool_call_id: None,
            model: None,
            usage: None,
            token_count: tokens,
            extra: Map::new(),
            prev: String::new(),
            hash: String::new(),
            model_message: Default::default(),
        }
    }

    fn new_turn(text: &str, counter: &TokenCounter) -> NewTurn {
        let message = Message::user(text);
        NewTurn { tokens: counter.count_content(&message), message }
    }

    fn user(content: &str, tokens: u64) -> ChatEvent {
        event(EventType::UserMessage, Role::User, content, tokens)
    }

    fn answer(content: &str, tokens: u64) -> ChatEvent {
        event(EventType::AssistantMessage, Role::Assistant, content, tokens)
    }

    fn call(id: &str) -> ChatEvent {
        let mut event = answer("", 10);
        event.tool_calls = Some(vec![ToolCall { id: id.into(), name: "demo__sum".into(), arguments: json!({}) }]);
        event
    }

    fn result(id: &str) -> ChatEvent {
        let mut event = event(EventType::ToolResult, Role::Tool, "5", 10);
        event.tool_call_id = Some(id.into());
        event
    }

    fn budget(max_tokens: usize, preserve_recent: usize) -> ContextSettings {
        ContextSettings { max_tokens, reserve_tokens: 0, preserve_recent }
    }

    fn contents(messages: &[Arc<Message>]) -> Vec<&str> {
        messages.iter().map(|message| message.content.as_str()).collect()
    }

    #[test]
    fn everything_fits_and_the_new_message_appears_once() {
        let counter = TokenCounter::for_model("gpt-4o");
        let history = [user("one", 5), answer("two", 5)].map(Arc::new);
        let built = build("sys", &history, new_turn("three", &counter), &[], &counter, &budget(4000, 2)).messages;
        assert_eq!(contents(&built), ["sys", "one", "two", "three"]);
    }

    #[test]
    fn oldest_units_go_first_and_recent_ones_stay_even_over_budget() {
        let counter = TokenCounter::for_model("gpt-4o");
        let history =
            [user("old", 500), answer("older answer", 500), user("recent", 500), answer("last", 500)].map(Arc::new);
        let built = build("sys", &history, new_turn("new", &counter), &[], &counter, &budget(800, 1)).messages;
        assert_eq!(contents(&built), ["sys", "last", "new"], "only what fits, newest first");
        let built = build("sys", &history, new_turn("new", &counter), &[], &counter, &budget(10, 2)).messages;
        assert_eq!(contents(&built), ["sys", "recent", "last", "new"], "preserve_recent wins over the budget");
    }

    #[test]
    fn tool_calls_and_results_stay_together() {
        let counter = TokenCounter::for_model("gpt-4o");
        let history = [user("q", 5), call("a"), result("a"), answer("done", 5), call("lost")].map(Arc::new);
        let built = build("sys", &history, new_turn("new", &counter), &[], &counter, &budget(4000, 1)).messages;
        let roles: Vec<Role> = built.iter().map(|message| message.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::Tool, Role::Assistant, Role::User],
            "the call without a result is left out"
        );
        let fixed = counter.count_message(&Message::system("sys")) + counter.count_message(&Message::user("new"));
        let answer_and_most_of_the_group = fixed + 9 + 27;
        let tight =
            build("sys", &history, new_turn("new", &counter), &[], &counter, &budget(answer_and_most_of_the_group, 0))
                .messages;
        assert_eq!(contents(&tight), ["sys", "done", "new"], "the call and its result leave together");
    }

    #[test]
    fn a_hop_cut_off_between_its_results_is_left_out_with_the_results_it_got() {
        let counter = TokenCounter::for_model("gpt-4o");
        let mut two_calls = call("a");
        two_calls.tool_calls.as_mut().unwrap().push(ToolCall {
            id: "b".into(),
            name: "demo__sum".into(),
            arguments: json!({}),
        });
        let history = [user("q", 5), two_calls, result("a"), user("again", 5), answer("done", 5)].map(Arc::new);
        let built = build("sys", &history, new_turn("new", &counter), &[], &counter, &budget(4000, 1)).messages;
        assert_eq!(contents(&built), ["sys", "q", "again", "done", "new"]);
    }
}
