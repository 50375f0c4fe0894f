//! The unscripted behaviour: arithmetic through a fitting tool, otherwise an honest echo.

use serde_json::{Value, json};

/// What the demo model saw, read from either API's request body.
#[derive(Debug, Default)]
pub(crate) struct Conversation {
    pub said: Vec<Said>,
    /// Names of the tools offered.
    pub tools: Vec<String>,
}

#[derive(Debug)]
pub(crate) enum Said {
    User(String),
    /// The model's own earlier tool calls: (id, name, arguments).
    ToolCalls(Vec<(String, String, Value)>),
    ToolResult {
        call_id: String,
        content: String,
    },
}

/// What the demo model answers: text or one tool call.
#[derive(Debug, PartialEq)]
pub(crate) enum DemoAnswer {
    Text(String),
    Call { name: String, arguments: Value },
}

impl Conversation {
    pub fn from_openai(body: &Value) -> Self {
        let mut said = Vec::new();
        for message in array(&body["messages"]) {
            match message["role"].as_str() {
                Some("user") => said.push(Said::User(text_of(&message["content"]))),
                Some("assistant") => {
                    let calls: Vec<_> = array(&message["tool_calls"])
                        .iter()
                        .map(|call| {
                            let arguments = call["function"]["arguments"].as_str().unwrap_or("");
                            (
                                string(&call["id"]),
                                string(&call["function"]["name"]),
                                serde_json::from_str(arguments).unwrap_or(Value::Null),
                            )
                        })
                        .collect();
                    if !calls.is_empty() {
                        said.push(Said::ToolCalls(calls));
                    }
                }
                Some("tool") => said.push(Said::ToolResult {
                    call_id: string(&message["tool_call_id"]),
                    content: text_of(&message["content"]),
                }),
                _ => {}
            }
        }
        let tools = array(&body["tools"]).iter().map(|tool| string(&tool["function"]["name"])).collect();
        Self { said, tools }
    }

    pub fn from_anthropic(body: &Value) -> Self {
        let mut said = Vec::new();
        for message in array(&body["messages"]) {
            let content = &message["content"];
            if let Some(text) = content.as_str() {
                if message["role"] == "user" {
                    said.push(Said::User(text.to_owned()));
                }
                continue;
            }
            let mut calls = Vec::new();
            for block in array(content) {
                match block["type"].as_str() {
                    Some("text") if message["role"] == "user" => said.push(Said::User(string(&block["text"]))),
                    Some("tool_use") => {
                        calls.push((string(&block["id"]), string(&block["name"]), block["input"].clone()))
                    }
                    Some("tool_result") => said.push(Said::ToolResult {
                        call_id: string(&block["tool_use_id"]),
                        content: text_of(&block["content"]),
                    }),
                    _ => {}
                }
            }
            if !calls.is_empty() {
                said.push(Said::ToolCalls(calls));
            }
        }
        let tools = array(&body["tools"]).iter().map(|tool| string(&tool["name"])).collect();
        Self { said, tools }
    }

    /// The demo answer to the conversation so far.
    pub fn demo_answer(&self) -> DemoAnswer {
        match self.said.last() {
            Some(Said::ToolResult { call_id, content }) => DemoAnswer::Text(self.report(call_id, content)),
            Some(Said::User(text)) => match self.arithmetic_call(text) {
                Some(call) => call,
                None => DemoAnswer::Text(echo(text)),
            },
            _ => DemoAnswer::Text(echo("")),
        }
    }

    fn arithmetic_call(&self, text: &str) -> Option<DemoAnswer> {
        let (operation, a, b) = Operation::parse(text)?;
        let tool =
            self.tools.iter().find(|tool| operation.tool_suffixes().iter().any(|suffix| tool.ends_with(suffix)))?;
        Some(DemoAnswer::Call { name: tool.clone(), arguments: json!({"a": a, "b": b}) })
    }

    /// A sentence with a tool's result, in terms of the call that produced it.
    fn report(&self, call_id: &str, content: &str) -> String {
        let content = content.trim();
        let call = self.said.iter().rev().find_map(|said| match said {
            Said::ToolCalls(calls) => calls.iter().find(|(id, _, _)| id == call_id),
            _ => None,
        });
        let Some((_, name, arguments)) = call else {
            return format!("The tool returned: {content}.");
        };
        let operation = Operation::ALL
            .into_iter()
            .find(|operation| operation.tool_suffixes().iter().any(|suffix| name.ends_with(suffix)));
        match (operation, arguments.get("a"), arguments.get("b")) {
            (Some(operation), Some(a), Some(b)) => {
                format!("{a} {} {b} = {content}.", operation.symbol())
            }
            _ => format!("The tool {name} returned: {content}."),
        }
    }
}

fn echo(text: &str) -> String {
    let intro = "I am the offline demo model, a stand-in for a real LLM: I can only do arithmetic \
                 with a calculator tool and echo the rest.";
    if text.trim().is_empty() { intro.to_owned() } else { format!("{intro} You said: {}", text.trim()) }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Add,
    Subtract,
    Multiply,
    Divide,
    Power,
}

impl Operation {
    const ALL: [Operation; 5] =
        [Operation::Add, Operation::Subtract, Operation::Multiply, Operation::Divide, Operation::Power];

    fn tool_suffixes(self) -> &'static [&'static str] {
        match self {
            Operation::Add => &["sum", "add"],
            Operation::Subtract => &["subtract"],
            Operation::Multiply => &["multiply"],
            Operation::Divide => &["divide"],
            Operation::Power => &["power"],
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Operation::Add => "+",
            Operation::Subtract => "-",
            Operation::Multiply => "*",
            Operation::Divide => "/",
            Operation::Power => "^",
        }
    }

    /// The first two numbers of `text` and the operation named by a word anywhere or a symbol
    /// between them: "what is 2+3", "multiply 6 by 7", "subtract 2 from 7".
    fn parse(text: &str) -> Option<(Operation, Value, Value)> {
        let text = text.to_lowercase();
        let numbers = numbers(&text);
        let [(first, _, end_of_first), (second, start_of_second, _)] =
            [numbers.first()?.clone(), numbers.get(1)?.clone()];
        let between = &text[end_of_first..start_of_second];
        let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).collect();
        let said = |candidates: &[&str]| words.iter().any(|word| candidates.contains(word));
        let between_has = |symbols: &[&str]| symbols.iter().any(|symbol| between.contains(symbol));
        let operation = if said(&["power"]) || between_has(&["^", "**"]) {
            Operation::Power
        } else if said(&["divide", "divided"]) || between_has(&["/", "÷"]) {
            Operation::Divide
        } else if said(&["multiply", "times", "product"]) || between_has(&["*", "×"]) {
            Operation::Multiply
        } else if said(&["subtract", "minus", "difference"]) || between_has(&["-"]) {
            Operation::Subtract
        } else if said(&["add", "plus", "sum"]) || between_has(&["+"]) {
            Operation::Add
        } else {
            return None;
        };
        // "subtract 2 from 7" means 7 - 2.
        if operation == Operation::Subtract && said(&["from"]) && said(&["subtract"]) {
            return Some((operation, second, first));
        }
        Some((operation, first, second))
    }
}

/// Unsigned numbers in `text` with their byte span, as JSON numbers (integers stay integers).
fn numbers(text: &str) -> Vec<(Value, usize, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        if !bytes[position].is_ascii_digit() {
            position += 1;
            continue;
        }
        let start = position;
        while position < bytes.len() && bytes[position].is_ascii_digit() {
            position += 1;
        }
        if position + 1 < bytes.len() && bytes[position] == b'.' && bytes[position + 1].is_ascii_digit() {
            position += 1;
            while position < bytes.len() && bytes[position].is_ascii_digit() {
                position += 1;
            }
        }
        let literal = &text[start..position];
        let value = literal.parse::<i64>().map(Value::from).or_else(|_| literal.parse::<f64>().map(Value::from));
        if let Ok(value) = value {
            found.push((value, start, position));
        }
    }
    found
}

/// `text` in stream chunks of one word each, spaces kept, so the chunks join to `text`.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// A deterministic stand-in for token counts: the words of `value`'s text, which is a string,
/// or the `content` and `text` of messages and content blocks.
pub(crate) fn count_words(value: &Value) -> u64 {
    match value {
        Value::String(text) => text.split_whitespace().count() as u64,
        Value::Array(items) => items.iter().map(count_words).sum(),
        Value::Object(fields) => ["content", "text"].iter().filter_map(|key| fields.get(*key)).map(count_words).sum(),
        _ => 0,
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Message content as plain text: a string, or the text of its content parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|part| part["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_arithmetic_phrasings_of_the_demo() {
        let cases = [
            ("what is 2+3", Operation::Add, json!(2), json!(3)),
            ("What is 2 + 3?", Operation::Add, json!(2), json!(3)),
            ("multiply 6 by 7", Operation::Multiply, json!(6), json!(7)),
            ("7 minus 2", Operation::Subtract, json!(7), json!(2)),
            ("subtract 2 from 7", Operation::Subtract, json!(7), json!(2)),
            ("10 divided by 4", Operation::Divide, json!(10), json!(4)),
            ("2 to the power of 8", Operation::Power, json!(2), json!(8)),
            ("what is 1.5 * 4", Operation::Multiply, json!(1.5), json!(4)),
        ];
        for (text, operation, a, b) in cases {
            assert_eq!(Operation::parse(text), Some((operation, a, b)), "{text}");
        }
        assert_eq!(Operation::parse("hello there"), None);
        assert_eq!(Operation::parse("I have 2 cats and 3 dogs"), None);
    }

    #[test]
    fn word_chunks_join_back_to_the_text() {
        let text = "I am  the demo model.";
        assert_eq!(words(text).concat(), text);
        assert_eq!(words(text)[0], "I ");
    }
}
