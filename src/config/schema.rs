//! A declarative description of a config file's shape, and a walker that checks a parsed file
//! against it and reports every problem, not just the first one serde would stop at.
//!
//! The shapes and the walker that checks them stay in one file, longer than most, because
//! each `Shape` variant's description, check and override parsing must change together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// What a value in a config file must look like.
pub(super) enum Shape {
    /// An object with a fixed set of keys; any other key is an error.
    Section(&'static [Field]),
    /// An object with user-chosen names (providers, servers, environment variables).
    Map {
        names: NameRule,
        values: &'static Shape,
    },
    /// A list whose items all have one shape.
    List(&'static Shape),
    /// A string in which `${VAR}` is replaced by the environment variable VAR.
    Template,
    Scalar(Scalar),
}

/// A single value, checked for its type and range.
pub(super) enum Scalar {
    Integer {
        min: i64,
        max: i64,
    },
    Number {
        min: f64,
        /// Whether `min` itself is allowed.
        min_allowed: bool,
        max: Option<f64>,
    },
    Bool,
    Text {
        non_empty: bool,
    },
    Choice(&'static [&'static str]),
    /// An absolute `http://` or `https://` URL.
    HttpUrl,
    /// A web origin as browsers send it in `Origin`: scheme, host and a port only when it is
    /// not the scheme's default, so that comparing strings compares origins.
    Origin,
    /// A string that is never shown in a message, whatever is wrong with it.
    Secret,
}

/// The largest integer a settings field holds (`u32` fields; `usize` ones are at least as wide).
pub(super) const INTEGER_LIMIT: i64 = u32::MAX as i64;

pub(super) const fn integer_from(min: i64, max: i64) -> Shape {
    Shape::Scalar(Scalar::Integer { min, max })
}

pub(super) const fn integer_at_least(min: i64) -> Shape {
    integer_from(min, INTEGER_LIMIT)
}

pub(super) const POSITIVE_NUMBER: Shape = Shape::Scalar(Scalar::Number { min: 0.0, min_allowed: false, max: None });

pub(super) const NON_NEGATIVE_NUMBER: Shape = Shape::Scalar(Scalar::Number { min: 0.0, min_allowed: true, max: None });

pub(super) const fn number_from(min: f64, max: f64) -> Shape {
    Shape::Scalar(Scalar::Number { min, min_allowed: true, max: Some(max) })
}

pub(super) const BOOL: Shape = Shape::Scalar(Scalar::Bool);
pub(super) const TEXT: Shape = Shape::Scalar(Scalar::Text { non_empty: false });
pub(super) const NON_EMPTY_TEXT: Shape = Shape::Scalar(Scalar::Text { non_empty: true });
pub(super) const HTTP_URL: Shape = Shape::Scalar(Scalar::HttpUrl);
pub(super) const ORIGIN: Shape = Shape::Scalar(Scalar::Origin);
pub(super) const STRINGS: Shape = Shape::List(&TEXT);
pub(super) const SECRET: Shape = Shape::Scalar(Scalar::Secret);

pub(super) const fn choice(choices: &'static [&'static str]) -> Shape {
    Shape::Scalar(Scalar::Choice(choices))
}

/// One key of a [`Shape::Section`].
pub(super) struct Field {
    name: &'static str,
    shape: Shape,
    required: bool,
}

pub(super) const fn required(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, required: true }
}

pub(super) const fn optional(name: &'static str, shape: Shape) -> Field {
    Field { name, shape, required: false }
}

/// Which names a [`Shape::Map`] accepts.
pub(super) enum NameRule {
    Any,
    /// Letters, digits, `_` and `-`: server names become tool-name prefixes.
    ServerName,
    EnvironmentVariable,
    /// An HTTP header name (`Authorization`, `X-Api-Key`).
    HeaderName,
}

impl NameRule {
    fn problem(&self, name: &str) -> Option<&'static str> {
        match self {
            NameRule::Any => None,
            NameRule::ServerName if name.is_empty() || !name.chars().all(is_plain_name_char) => Some(
                "invalid server name; use only letters, digits, \"_\" and \"-\" \
                     (it becomes the prefix of the server's tool names)",
            ),
            NameRule::EnvironmentVariable if name.is_empty() || name.contains(['=', '\0']) => {
                Some("invalid environment variable name; it must be non-empty, without \"=\"")
            }
            NameRule::HeaderName if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                Some("invalid HTTP header name; use letters, digits and \"-\", as in \"Authorization\"")
            }
            _ => None,
        }
    }
}

fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Shape {
    fn holds_secrets(&self) -> bool {
        match self {
            Shape::Section(fields) => fields.iter().any(|field| field.shape.holds_secrets()),
            Shape::Map { values, .. } => values.holds_secrets(),
            Shape::List(items) => items.holds_secrets(),
            Shape::Template => false,
            Shape::Scalar(scalar) => matches!(scalar, Scalar::Secret),
        }
    }

    /// What is allowed, as the end of "expected ...".
    fn describe(&self) -> String {
        match self {
            Shape::Section(fields) => format!("an object with keys {}", field_names(fields)),
            Shape::Map { .. } => "an object".to_owned(),
            Shape::List(Shape::Scalar(Scalar::Text { non_empty: false })) => "a list of strings".to_owned(),
            Shape::List(Shape::Section(fields)) => format!("a list of objects with keys {}", field_names(fields)),
            Shape::List(items) => format!("a list, each item {}", items.describe()),
            Shape::Template => "a string".to_owned(),
            Shape::Scalar(scalar) => scalar.describe(),
        }
    }
}

fn field_names(fields: &[Field]) -> String {
    let names: Vec<_> = fields.iter().map(|field| field.name).collect();
    names.join(", ")
}

impl Scalar {
    fn describe(&self) -> String {
        match self {
            Scalar::Integer { min, max } if *max == INTEGER_LIMIT => {
                format!("an integer of at least {min}")
            }
            Scalar::Integer { min, max } => format!("an integer from {min} to {max}"),
            Scalar::Number { min, min_allowed, max } => match (min_allowed, max) {
                (_, Some(max)) => format!("a number from {min} to {max}"),
                (true, None) => format!("a number of at least {min}"),
                (false, None) => format!("a number greater than {min}"),
            },
            Scalar::Bool => "true or false".to_owned(),
            Scalar::Text { non_empty: false } => "a string".to_owned(),
            Scalar::Text { non_empty: true } => "a non-empty string".to_owned(),
            Scalar::Choice(choices) => format!("one of {}", quoted_list(choices)),
            Scalar::HttpUrl => "an http:// or https:// URL".to_owned(),
            Scalar::Origin => "an origin such as \"https://chat.example.com\" (scheme and host, \
                               a port only if not the default, no path or trailing \"/\")"
                .to_owned(),
            Scalar::Secret => "a string (\"env:NAME\" reads the environment variable NAME)".to_owned(),
        }
    }

    /// Whether `value` has the right type and lies in range.
    fn fits(&self, value: &Value) -> bool {
        match self {
            Scalar::Integer { min, max } => value.as_i64().is_some_and(|n| (*min..=*max).contains(&n)),
            Scalar::Number { min, min_allowed, max } => value
                .as_f64()
                .is_some_and(|n| (n > *min || (*min_allowed && n == *min)) && max.is_none_or(|max| n <= max)),
            Scalar::Bool => value.is_boolean(),
            Scalar::Text { non_empty } => value.as_str().is_some_and(|s| !(*non_empty && s.is_empty())),
            Scalar::Choice(choices) => value.as_str().is_some_and(|s| choices.contains(&s)),
            Scalar::HttpUrl => value.as_str().is_some_and(is_http_url),
            Scalar::Origin => value.as_str().is_some_and(is_origin),
            Scalar::Secret => value.is_string(),
        }
    }

    /// Turns a string from an `MCP__...` override into the type this scalar expects, since
    /// environment variables can only hold strings.
    fn parse_override(&self, text: &str) -> Option<Value> {
        let text = text.trim();
        match self {
            Scalar::Integer { .. } => text.parse::<i64>().ok().map(Value::from),
            Scalar::Number { .. } => text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number),
            Scalar::Bool => ["true", "false"]
                .into_iter()
                .find(|word| text.eq_ignore_ascii_case(word))
                .map(|word| Value::Bool(word == "true")),
            _ => None,
        }
    }
}

pub(super) fn quoted_list(items: &[impl AsRef<str>]) -> String {
    let quoted: Vec<_> = items.iter().map(|item| format!("\"{}\"", item.as_ref())).collect();
    quoted.join(", ")
}

/// The closest of `candidates` to a misspelled `word`, if any is close enough to suggest.
pub(super) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // A name contained in the other (`timeout` in `tool_timeout`) counts as close too.
    let contains = |candidate: &str| {
        let (shorter, longer) = if word.len() < candidate.len() { (word, candidate) } else { (candidate, word) };
        shorter.len() >= 4 && longer.contains(shorter)
    };
    candidates
        .into_iter()
        .map(|candidate| {
            let similarity = strsim::jaro_winkler(word, candidate);
            (if contains(candidate) { similarity.max(0.8) } else { similarity }, candidate)
        })
        .filter(|(similarity, _)| *similarity >= 0.8)
        // Equally similar: the one nearest in length (`tool_timeout` over `max_tool_timeout`).
        .max_by(|a, b| {
            let length_gap = |candidate: &str| candidate.len().abs_diff(word.len());
            a.0.total_cmp(&b.0).then_with(|| length_gap(b.1).cmp(&length_gap(a.1)))
        })
        .map(|(_, candidate)| candidate)
}

/// Where a value sits in a file: `mcpServers.demo.args[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub(super) fn key(&self, name: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(name.to_owned()));
        path
    }

    pub(super) fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub(super) fn parse_dotted(dotted: &str) -> KeyPath {
        KeyPath(dotted.split('.').map(|key| Segment::Key(key.to_owned())).collect())
    }

    fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The `MCP__SECTION__KEY` variable that overrides this key.
    fn override_variable(&self) -> String {
        let keys: Vec<String> = self
            .0
            .iter()
            .filter_map(|segment| match segment {
                Segment::Key(key) => Some(key.to_uppercase()),
                Segment::Index(_) => None,
            })
            .collect();
        format!("MCP__{}", keys.join("__"))
    }

    /// This path and every enclosing one, innermost first.
    fn self_and_ancestors(&self) -> impl Iterator<Item = KeyPath> + '_ {
        (0..=self.0.len()).rev().map(|len| KeyPath(self.0[..len].to_vec()))
    }

    fn is_in_list(&self) -> bool {
        self.0.iter().any(|segment| matches!(segment, Segment::Index(_)))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn lookup<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for segment in &self.0 {
            value = match segment {
                Segment::Key(key) => value.get(key)?,
                Segment::Index(index) => value.get(index)?,
            };
        }
        Some(value)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    if !key.is_empty() && key.chars().all(is_plain_name_char) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// How a value should be shown after "found".
fn found(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::String(_) | Value::Number(_) | Value::Bool(_) => value.to_string(),
    }
}

/// Like [`found`], but without the value itself: for secrets.
fn found_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "an empty value",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "true or false",
    }
}

/// Where values came from other than the file itself, so messages can say so.
#[derive(Default)]
pub(super) struct Origins {
    /// Keys set or created by `MCP__...` variables, with the variable's name.
    pub overrides: BTreeMap<KeyPath, String>,
}

/// How [`Shape::Scalar`] secrets written as `"env:NAME"` are read (`config.yaml` only).
pub(super) struct SecretReferences {
    /// Subtrees whose secrets the settings leave unused (an inactive provider, the keys of an
    /// authentication mode not chosen): there an unset variable is not an error and leaves the
    /// secret empty.
    pub unused: Vec<KeyPath>,
}

/// Checks a parsed file against a [`Shape`], collecting every problem as a finished message.
pub(super) struct Checker<'a> {
    file: &'a str,
    origins: &'a Origins,
    /// `None`: `"env:NAME"` is an ordinary string.
    secret_references: Option<SecretReferences>,
    problems: Vec<String>,
    /// Paths already reported, so cross-field rules do not pile on.
    reported: BTreeSet<KeyPath>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(file: &'a str, origins: &'a Origins, secret_references: Option<SecretReferences>) -> Self {
        Checker { file, origins, secret_references, problems: Vec::new(), reported: BTreeSet::new() }
    }

    pub(super) fn into_problems(self) -> Vec<String> {
        self.problems
    }

    pub(super) fn was_reported(&self, path: &KeyPath) -> bool {
        self.reported.contains(path)
    }

    /// Records `message` about the value at `path`, naming the file, the key and, when an
    /// `MCP__...` variable put it there, the variable.
    pub(super) fn report(&mut self, path: &KeyPath, message: impl fmt::Display) {
        let origin = path.self_and_ancestors().find_map(|candidate| self.origins.overrides.get(&candidate));
        let location = match (path.is_empty(), origin) {
            (true, _) => String::new(),
            (false, None) => format!(" {path}:"),
            (false, Some(variable)) => format!(" {path} (set by {variable}):"),
        };
        self.problems.push(format!("{}:{location} {message}", self.file));
        self.reported.insert(path.clone());
    }

    fn mismatch(&mut self, path: &KeyPath, shape: &Shape, value: &Value) {
        // A value where an object or list holding secrets belongs may be a misplaced secret.
        let shown = if shape.holds_secrets() { found_kind(value).to_owned() } else { found(value) };
        let expected = match shape {
            // "at least 1, found 5000000000" would read as a contradiction.
            Shape::Scalar(Scalar::Integer { min, max }) if value.as_f64().is_some_and(|n| n > *max as f64) => {
                format!("an integer from {min} to {max}")
            }
            _ => shape.describe(),
        };
        self.report(path, format!("expected {expected}, found {shown}"));
    }

    /// Checks `value` (and everything inside it) against `shape`. Values from `MCP__...`
    /// overrides are converted to numbers and booleans here, where the expected type is known.
    pub(super) fn check(&mut self, path: &KeyPath, shape: &Shape, value: &mut Value) {
        match shape {
            Shape::Section(fields) => self.check_section(path, shape, fields, value),
            Shape::Map { names, values } => {
                let Value::Object(entries) = value else {
                    return self.mismatch(path, shape, value);
                };
                for (name, entry) in entries.iter_mut() {
                    let entry_path = path.key(name);
                    match names.problem(name) {
                        Some(problem) => self.report(&entry_path, problem),
                        None => self.check(&entry_path, values, entry),
                    }
                }
            }
            Shape::List(item_shape) => {
                let Value::Array(items) = value else {
                    return self.mismatch(path, shape, value);
                };
                for (index, item) in items.iter_mut().enumerate() {
                    self.check(&path.index(index), item_shape, item);
                }
            }
            Shape::Template => match value {
                Value::String(text) => match substitute_variables(text) {
                    Ok(substituted) => *text = substituted,
                    Err(problem) => self.report(path, problem),
                },
                _ => self.mismatch(path, shape, value),
            },
            Shape::Scalar(scalar) => {
                if self.secret_references.is_some()
                    && let Value::String(text) = value
                    && let Some(variable) = text.strip_prefix("env:")
                {
                    let variable = variable.to_owned();
                    return match scalar {
                        Scalar::Secret => self.read_secret(path, &variable, text),
                        _ => {
                            // An override replaces a whole key, so it cannot set one item of a list.
                            let hint = if path.is_in_list() {
                                String::new()
                            } else {
                                format!("; to take this key from the environment, set {}", path.override_variable())
                            };
                            self.report(
                                path,
                                format!(
                                    "expected {}, found \"env:{variable}\" (\"env:\" is read only in \
                                     secret keys such as api_key{hint})",
                                    shape.describe(),
                                ),
                            )
                        }
                    };
                }
                if self.origins.overrides.contains_key(path)
                    && let Value::String(text) = value
                    && let Some(parsed) = scalar.parse_override(text)
                {
                    *value = parsed;
                }
                if !scalar.fits(value) {
                    self.mismatch(path, shape, value);
                }
            }
        }
    }

    /// Replaces a secret's `"env:NAME"` with the variable NAME.
    fn read_secret(&mut self, path: &KeyPath, variable: &str, secret: &mut String) {
        let optional = self
            .secret_references
            .as_ref()
            .is_some_and(|references| references.unused.iter().any(|scope| path.starts_with(scope)));
        let problem = match std::env::var(variable) {
            Ok(value) if !value.is_empty() || optional => {
                *secret = value;
                return;
            }
            Err(_) if optional => {
                secret.clear();
                return;
            }
            Ok(_) => format!("environment variable {variable} is set but empty"),
            Err(std::env::VarError::NotPresent) if variable.is_empty() => {
                "\"env:\" needs a variable name, as in \"env:NAME\"".to_owned()
            }
            Err(std::env::VarError::NotPresent) => format!(
                "environment variable {variable} is not set; \
                 set it, or change the value \"env:{variable}\""
            ),
            Err(std::env::VarError::NotUnicode(_)) => {
                format!("environment variable {variable} is not valid UTF-8")
            }
        };
        self.report(path, problem);
    }

    fn check_section(&mut self, path: &KeyPath, shape: &Shape, fields: &[Field], value: &mut Value) {
        let Value::Object(entries) = value else {
            return self.mismatch(path, shape, value);
        };
        for field in fields {
            let field_path = path.key(field.name);
            match entries.get_mut(field.name) {
                Some(entry) => self.check(&field_path, &field.shape, entry),
                None if field.required => {
                    self.report(&field_path, format!("missing key, expected {}", field.shape.describe()))
                }
                None => {}
            }
        }
        let known = || fields.iter().map(|field| field.name);
        for name in entries.keys() {
            if known().any(|known| known == name) {
                continue;
            }
            let message = match closest(name, known()) {
                Some(suggestion) => format!("unknown key; did you mean \"{suggestion}\"?"),
                None => format!("unknown key; allowed keys are {}", known().collect::<Vec<_>>().join(", ")),
            };
            self.report(&path.key(name), message);
        }
    }
}

fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()))
}

fn is_origin(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.origin().ascii_serialization() == text)
}

/// Replaces every `${VAR}` in `text` with the environment variable VAR.
fn substitute_variables(text: &str) -> Result<String, String> {
    let mut result = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        result.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "\"${{\" without a closing \"}}\"; write ${{NAME}} to insert the environment variable NAME, found {text:?}"
            ));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) => result.push_str(&value),
            Err(std::env::VarError::NotPresent) => {
                return Err(format!(
                    "environment variable {name} is not set (used as ${{{name}}}); set it or remove the reference"
                ));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable {name} is not valid UTF-8"));
            }
        }
        rest = &after[end + 1..];
    }
    result.push_str(rest);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_names_that_are_not_plain() {
        let path = KeyPath::default().key("mcpServers").key("bad name").key("args").index(2);
        assert_eq!(path.to_string(), "mcpServers.\"bad name\".args[2]");
        assert_eq!(KeyPath::default().key("").to_string(), "\"\"");
    }

    #[test]
    fn suggestions_come_only_for_close_names() {
        let keys = ["host", "port", "max_message_bytes", "max_in_flight_per_connection"];
        assert_eq!(closest("prot", keys), Some("port"));
        assert_eq!(closest("max_message_size", keys), Some("max_message_bytes"));
        assert_eq!(closest("tls", keys), None);
        assert_eq!(closest("timeout", ["tool_timeout", "args"]), Some("tool_timeout"));
    }

    #[test]
    fn only_absolute_http_urls_pass() {
        assert!(is_http_url("https://api.groq.com/openai/v1"));
        assert!(is_http_url("http://127.0.0.1:8089/v1"));
        assert!(!is_http_url("api.groq.com"));
        assert!(!is_http_url("ftp://host/"));
        assert!(!is_http_url("http://"));
    }

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        assert!(is_origin("https://chat.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("https://chat.example.com/"));
        assert!(!is_origin("https://chat.example.com:443"));
        assert!(!is_origin("https://Chat.example.com"));
        assert!(!is_origin("https://chat.example.com/app"));
        assert!(!is_origin("chat.example.com"));
        assert!(!is_origin("null"));
    }
}
