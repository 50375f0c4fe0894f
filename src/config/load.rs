//! Reading `config.yaml` and `servers_config.json`: where they are, what they must hold, and
//! how environment variables take part.

use std::path::{Path, PathBuf};

use config::{FileFormat, Source};
use serde_json::Value;

use super::schema::{
    BOOL, Checker, HTTP_URL, KeyPath, NON_EMPTY_TEXT, NON_NEGATIVE_NUMBER, NameRule, ORIGIN, Origins, POSITIVE_NUMBER,
    SECRET, STRINGS, SecretReferences, Shape, TEXT, choice, integer_at_least, integer_from, number_from, optional,
    required,
};
use super::{ServersConfig, Settings, rules};

/// Every problem found in a config file. `Display` prints one problem per line, each naming
/// the file, the key, the bad value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    fn single(problem: String) -> Self {
        ConfigError { problems: vec![problem] }
    }

    /// One finished message per problem, in the order of the file's expected layout.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// For commands that refuse to start: a heading, then every problem on its own line.
    pub fn into_startup_error(self) -> anyhow::Error {
        anyhow::anyhow!("the configuration is invalid:\n{self}")
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

const PROVIDER: Shape = Shape::Section(&[
    required("kind", choice(&["openai", "anthropic"])),
    required("base_url", HTTP_URL),
    required("api_key", SECRET),
    required("model", NON_EMPTY_TEXT),
    required("temperature", number_from(0.0, 2.0)),
    required("max_tokens", integer_at_least(1)),
    required("top_p", number_from(0.0, 1.0)),
    optional("vision", BOOL),
]);

/// The values of `chat.service.tool_approval.policy` and of a server's `approval`.
const APPROVAL_POLICIES: &[&str] = &["never", "always", "annotations"];

/// The layout of `config.yaml` (SPEC §4); it mirrors [`Settings`], which a test keeps honest
/// by loading the shipped file.
const SETTINGS: Shape = Shape::Section(&[
    required(
        "llm",
        Shape::Section(&[
            required("active", NON_EMPTY_TEXT),
            required("providers", Shape::Map { names: NameRule::Any, values: &PROVIDER }),
            required("request_timeout", POSITIVE_NUMBER),
            required("max_retries", integer_at_least(0)),
        ]),
    ),
    required(
        "chat",
        Shape::Section(&[required(
            "service",
            Shape::Section(&[
                required("system_prompt", TEXT),
                required(
                    "streaming",
                    Shape::Section(&[required("enabled", BOOL), optional("min_text_interval", NON_NEGATIVE_NUMBER)]),
                ),
                required(
                    "context",
                    Shape::Section(&[
                        required("max_tokens", integer_at_least(1)),
                        required("reserve_tokens", integer_at_least(0)),
                        required("preserve_recent", integer_at_least(0)),
                    ]),
                ),
                required("max_tool_hops", integer_at_least(0)),
                required("tool_timeout", POSITIVE_NUMBER),
                required("max_tool_result_chars", integer_at_least(1)),
                required(
                    "tool_approval",
                    Shape::Section(&[
                        required("policy", choice(APPROVAL_POLICIES)),
                        required("timeout", POSITIVE_NUMBER),
                    ]),
                ),
            ]),
        )]),
    ),
    required(
        "websocket",
        Shape::Section(&[
            required("host", NON_EMPTY_TEXT),
            required("port", integer_from(1, 65535)),
            required("max_message_bytes", integer_at_least(1024)),
            required("max_in_flight_per_connection", integer_at_least(1)),
            required("send_buffer_bytes", integer_at_least(65536)),
            required("slow_client_timeout", POSITIVE_NUMBER),
            required("header_timeout", POSITIVE_NUMBER),
            required("first_frame_timeout", POSITIVE_NUMBER),
        ]),
    ),
    required(
        "store",
        Shape::Section(&[
            required("backend", choice(&["jsonl", "postgres"])),
            required("path", NON_EMPTY_TEXT),
            required("fsync", BOOL),
            required(
                "postgres",
                Shape::Section(&[required("url", SECRET), required("pool_size", integer_from(1, 1024))]),
            ),
        ]),
    ),
    required(
        "mcp",
        Shape::Section(&[
            required(
                "connection",
                Shape::Section(&[
                    required("max_reconnect_attempts", integer_at_least(0)),
                    required("connection_timeout", POSITIVE_NUMBER),
                    required("initial_reconnect_delay", POSITIVE_NUMBER),
                    required("max_reconnect_delay", POSITIVE_NUMBER),
                ]),
            ),
            required(
                "circuit_breaker",
                Shape::Section(&[
                    required("failure_threshold", integer_at_least(1)),
                    required("cooldown", POSITIVE_NUMBER),
                ]),
            ),
        ]),
    ),
    required(
        "auth",
        Shape::Section(&[
            required("mode", choice(&["none", "api_keys", "jwt"])),
            required("allow_anonymous_remote", BOOL),
            required("allowed_origins", Shape::List(&ORIGIN)),
            required(
                "api_keys",
                Shape::List(&Shape::Section(&[
                    required("user", NON_EMPTY_TEXT),
                    required("role", choice(&["user", "admin"])),
                    required("key_sha256", SECRET),
                ])),
            ),
            required(
                "jwt",
                Shape::Section(&[
                    required("issuer", TEXT),
                    required("audience", TEXT),
                    required("jwks_path", TEXT),
                    required("hs256_secret", SECRET),
                    required("user_claim", NON_EMPTY_TEXT),
                    required("admin_claim", TEXT),
                ]),
            ),
        ]),
    ),
    required(
        "limits",
        Shape::Section(&[
            required("chats_per_minute", integer_at_least(0)),
            required("tokens_per_day", integer_at_least(0)),
            required("connections_per_user", integer_at_least(0)),
            required("connections_per_ip", integer_at_least(0)),
            required("max_connections", integer_at_least(0)),
        ]),
    ),
    required(
        "logging",
        Shape::Section(&[
            required("level", choice(&["trace", "debug", "info", "warn", "error"])),
            required("format", choice(&["json", "pretty"])),
        ]),
    ),
    required("shutdown", Shape::Section(&[required("grace_seconds", NON_NEGATIVE_NUMBER)])),
]);

/// The layout of `servers_config.json` (SPEC §5).
const SERVERS: Shape = Shape::Section(&[required(
    "mcpServers",
    Shape::Map {
        names: NameRule::ServerName,
        values: &Shape::Section(&[
            optional("enabled", BOOL),
            optional("type", choice(&["stdio", "http"])),
            optional("command", NON_EMPTY_TEXT),
            optional("args", STRINGS),
            optional("cwd", NON_EMPTY_TEXT),
            optional("env", Shape::Map { names: NameRule::EnvironmentVariable, values: &Shape::Template }),
            optional("url", HTTP_URL),
            optional("headers", Shape::Map { names: NameRule::HeaderName, values: &Shape::Template }),
            optional("allowed_tools", STRINGS),
            optional("excluded_tools", STRINGS),
            optional("tool_timeout", POSITIVE_NUMBER),
            optional("max_tool_timeout", POSITIVE_NUMBER),
            optional("approval", choice(APPROVAL_POLICIES)),
            optional("approve_tools", STRINGS),
            optional("auto_approve_tools", STRINGS),
            optional("trusted", BOOL),
        ]),
    },
)]);

/// Loads and validates `config.yaml`: from `path`, else `$MCP_CONFIG_PATH`, else
/// `config.yaml` in the working directory.
///
/// - `MCP__SECTION__KEY` environment variables override single keys (`MCP__WEBSOCKET__PORT=9000`,
///   `MCP__LLM__PROVIDERS__GROQ__API_KEY=...`); a key is matched ignoring case, because the
///   `config` crate lowercases variable names while provider names in the file may not be.
///   Their text is read as a number or boolean where the key expects one.
/// - A secret (`api_key`, `key_sha256`, `hs256_secret`) written `"env:NAME"` is read from the
///   environment variable NAME.
///   Only there: secrets then live only in [`super::Secret`] fields, which no message and no
///   `Debug` output shows; other keys come from the environment through `MCP__` overrides.
///   Only the secrets the settings use have to be set: the active provider's (`llm.active`),
///   `auth.api_keys` in mode `api_keys`, `auth.jwt.hs256_secret` in mode `jwt`. Elsewhere an
///   unset variable is not an error and leaves the secret empty: a user with only a Groq key
///   need not set OpenAI's.
/// - Every problem is reported at once: missing and unknown keys, wrong types, values out of
///   range, unset variables, and settings that contradict each other (an authentication
///   mode without its keys, anonymous access on a non-loopback host).
pub fn load_settings(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let path = choose_path(path, "MCP_CONFIG_PATH", "config.yaml");
    let file = path.display().to_string();
    let text = read_file(&path, &file, "MCP_CONFIG_PATH")?;
    let mut tree = parse_yaml(&text)
        .map_err(|error| ConfigError::single(format!("{file}: invalid YAML: {}", without_byte_offset(&error))))?;

    let mut origins = Origins::default();
    apply_overrides(&mut tree, &mut origins)?;
    let secret_references = SecretReferences { unused: rules::unused_secret_scopes(&tree) };

    let mut checker = Checker::new(&file, &origins, Some(secret_references));
    checker.check(&KeyPath::default(), &SETTINGS, &mut tree);
    rules::check_settings(&mut checker, &tree);
    let problems = checker.into_problems();
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    serde_json::from_value(tree).map_err(|error| ConfigError::single(format!("{file}: {error}")))
}

/// Loads and validates `servers_config.json`: from `path`, else `$MCP_SERVERS_CONFIG_PATH`,
/// else `servers_config.json` in the working directory.
///
/// `${VAR}` in `env` and `headers` values is replaced by the environment variable VAR (an
/// unset one is an error). Each server is either local (`command`) or remote (`url`). A relative `cwd` is taken relative to the file's folder and, for an enabled server,
/// must be an existing directory: caught here it is a clear message, while at spawn time it
/// would look like a missing command. Disabled servers are validated but their `cwd` may be
/// absent, so a server can be switched off without deleting its folder reference.
pub fn load_servers_config(path: Option<&Path>) -> Result<ServersConfig, ConfigError> {
    let path = choose_path(path, "MCP_SERVERS_CONFIG_PATH", "servers_config.json");
    let file = path.display().to_string();
    let text = read_file(&path, &file, "MCP_SERVERS_CONFIG_PATH")?;
    let mut tree: Value =
        serde_json::from_str(&text).map_err(|error| ConfigError::single(format!("{file}: invalid JSON: {error}")))?;
    let folder = absolute_folder(&path, &file)?;

    let origins = Origins::default();
    let mut checker = Checker::new(&file, &origins, None);
    checker.check(&KeyPath::default(), &SERVERS, &mut tree);
    check_server_kinds(&mut checker, &tree);
    check_working_directories(&mut checker, &tree, &folder);
    let problems = checker.into_problems();
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let mut config: ServersConfig =
        serde_json::from_value(tree).map_err(|error| ConfigError::single(format!("{file}: {error}")))?;
    for server in config.servers.values_mut() {
        if let Some(cwd) = &mut server.cwd {
            // Collecting the components drops the `.` of `"cwd": "."`.
            *cwd = folder.join(&*cwd).components().collect();
        }
    }
    Ok(config)
}

fn choose_path(given: Option<&Path>, variable: &str, default: &str) -> PathBuf {
    match (given, std::env::var_os(variable)) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
        (None, _) => PathBuf::from(default),
    }
}

fn read_file(path: &Path, file: &str, variable: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| {
        ConfigError::single(format!("{file}: cannot read the file: {error}; pass its path or set {variable}"))
    })
}

fn parse_yaml(text: &str) -> Result<Value, config::ConfigError> {
    config::Config::builder().add_source(config::File::from_str(text, FileFormat::Yaml)).build()?.try_deserialize()
}

/// The YAML parser's message without its "at byte N" part: the line and column that follow
/// are what a user looks for.
fn without_byte_offset(error: &config::ConfigError) -> String {
    let message = error.to_string();
    let Some(start) = message.find(" at byte ") else {
        return message;
    };
    match message[start..].find(" line ") {
        Some(length) => format!("{} at{}", &message[..start], &message[start + length..]),
        None => message,
    }
}

/// Writes each `MCP__SECTION__KEY` variable into the tree, matching keys without regard to
/// case, and notes which variable set which key so messages can name it.
fn apply_overrides(tree: &mut Value, origins: &mut Origins) -> Result<(), ConfigError> {
    let variables = config::Environment::with_prefix("MCP")
        .prefix_separator("__")
        .separator("__")
        .collect()
        .map_err(|error| ConfigError::single(format!("MCP__ override: {error}")))?;
    let mut overrides: Vec<_> = variables.into_iter().collect();
    overrides.sort_by(|a, b| a.0.cmp(&b.0));

    for (dotted_key, value) in overrides {
        let variable = format!("MCP__{}", dotted_key.replace('.', "__").to_uppercase());
        let Ok(text) = value.into_string() else {
            continue;
        };
        let mut path = KeyPath::default();
        let mut node = &mut *tree;
        for key in dotted_key.split('.') {
            if !node.is_object() {
                // The variable reaches inside a key that holds a value: it replaces the value.
                if !path.is_empty() {
                    origins.overrides.insert(path.clone(), variable.clone());
                }
                *node = Value::Object(serde_json::Map::new());
            }
            let Value::Object(entries) = node else { unreachable!("made an object just above") };
            let existing = entries.keys().find(|name| name.eq_ignore_ascii_case(key)).cloned();
            let name = existing.unwrap_or_else(|| {
                origins.overrides.insert(path.key(key), variable.clone());
                key.to_owned()
            });
            path = path.key(&name);
            node = entries.entry(name).or_insert(Value::Null);
        }
        origins.overrides.insert(path, variable);
        *node = Value::String(text);
    }
    Ok(())
}

/// The folder a relative `cwd` is taken from: the one holding `servers_config.json`.
fn absolute_folder(path: &Path, file: &str) -> Result<PathBuf, ConfigError> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(folder)
        .map_err(|error| ConfigError::single(format!("{file}: cannot tell which folder holds it: {error}")))
}

fn check_working_directories(checker: &mut Checker, tree: &Value, folder: &Path) {
    let servers_path = KeyPath::default().key("mcpServers");
    let Some(servers) = servers_path.lookup(tree).and_then(Value::as_object) else {
        return;
    };
    for (name, server) in servers {
        let cwd_path = servers_path.key(name).key("cwd");
        let enabled = server.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        let Some(cwd) = server.get("cwd").and_then(Value::as_str) else {
            continue;
        };
        if !enabled || checker.was_reported(&cwd_path) {
            continue;
        }
        let directory = folder.join(cwd);
        if !directory.is_dir() {
            let problem = if directory.exists() { "is not a directory" } else { "does not exist" };
            checker.report(
                &cwd_path,
                format!(
                    "expected an existing directory, found \"{cwd}\" ({} {problem}; \
                     a relative cwd starts at the folder of this file)",
                    directory.display()
                ),
            );
        }
    }
}

/// The keys that belong to one kind of server only.
const LOCAL_ONLY: [&str; 4] = ["command", "args", "cwd", "env"];
const REMOTE_ONLY: [&str; 2] = ["url", "headers"];

/// Each server is local (`command`, started as a child process) or remote (`url`), never
/// both, and agrees with its `type`; a header value must be sendable, which is checked here
/// without showing it (it usually holds a token).
fn check_server_kinds(checker: &mut Checker, tree: &Value) {
    let servers_path = KeyPath::default().key("mcpServers");
    let Some(servers) = servers_path.lookup(tree).and_then(Value::as_object) else {
        return;
    };
    for (name, server) in servers {
        let server_path = servers_path.key(name);
        let Some(entry) = server.as_object() else {
            continue;
        };
        let has = |key: &str| entry.contains_key(key);
        let declared = entry.get("type").and_then(Value::as_str);
        match (has("command"), has("url")) {
            (true, true) => checker.report(
                &server_path.key("url"),
                "expected either command (a local server) or url (a remote one), found both; remove one".to_owned(),
            ),
            (false, false) => checker.report(
                &server_path,
                "expected command (a local server started as a child process) or url (a remote MCP server \
                 over streamable HTTP), found neither"
                    .to_owned(),
            ),
            (true, false) => {
                if declared == Some("http") {
                    checker.report(&server_path.key("type"), "\"http\" needs a url, found command".to_owned());
                }
                for key in REMOTE_ONLY.into_iter().filter(|key| has(key)) {
                    checker.report(&server_path.key(key), format!("only for a remote server (url); remove {key}"));
                }
            }
            (false, true) => {
                if declared == Some("stdio") {
                    checker.report(&server_path.key("type"), "\"stdio\" needs a command, found url".to_owned());
                }
                for key in LOCAL_ONLY.into_iter().filter(|key| has(key)) {
                    checker.report(&server_path.key(key), format!("only for a local server (command); remove {key}"));
                }
            }
        }
        let headers_path = server_path.key("headers");
        if !checker.was_reported(&headers_path)
            && let Some(headers) = entry.get("headers").and_then(Value::as_object)
        {
            for (header, value) in headers {
                let sendable = value.as_str().is_some_and(|text| reqwest::header::HeaderValue::from_str(text).is_ok());
                if !sendable && !checker.was_reported(&headers_path.key(header)) {
                    checker.report(
                        &headers_path.key(header),
                        "expected a header value (visible ASCII, no line breaks), found a value that is not one \
                         (not shown: it may hold a token)"
                            .to_owned(),
                    );
                }
            }
        }
        let (tool_timeout, max_tool_timeout) = (server_path.key("tool_timeout"), server_path.key("max_tool_timeout"));
        if let (Some(low), Some(high)) =
            (tool_timeout.lookup(tree).and_then(Value::as_f64), max_tool_timeout.lookup(tree).and_then(Value::as_f64))
            && low > high
            && !checker.was_reported(&max_tool_timeout)
        {
            checker.report(&max_tool_timeout, format!("expected at least tool_timeout ({low}), found {high}"));
        }
    }
}
