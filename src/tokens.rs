//! Token counting over tiktoken-rs. (Placeholder until the store branch lands its counter.)

use crate::domain::{Message, ToolSpec};

#[derive(Debug, Clone, Copy)]
pub struct TokenCounter;

impl TokenCounter {
    pub fn for_model(_model: &str) -> Self {
        TokenCounter
    }
    pub fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    pub fn count_message(&self, message: &Message) -> usize {
        4 + self.count(&message.content)
    }
    pub fn count_messages(&self, messages: &[Message]) -> usize {
        3 + messages.iter().map(|message| self.count_message(message)).sum::<usize>()
    }
    pub fn count_tools(&self, tools: &[ToolSpec]) -> usize {
        tools.iter().map(|tool| self.count(&tool.parameters.to_string())).sum()
    }
}
