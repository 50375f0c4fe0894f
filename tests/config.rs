//! Loading `config.yaml` and `servers_config.json` from real files: what a user sees when
//! something is wrong, and that the shipped files load.
//!
//! Longer than most files: each test spells out every message a user would read in full, and
//! they all change the process environment under the one lock below.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use mcp_platform::config::{ApprovalPolicy, AuthMode, ConfigError, Role, load_servers_config, load_settings};
use tempfile::TempDir;

/// Every loader reads the process environment, so tests that change it run one at a time.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

/// Holds the environment lock and undoes this test's variables when dropped.
struct Environment {
    saved: Vec<(String, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl Environment {
    /// Starts from a known state: the shipped provider keys and any `MCP__` overrides unset.
    fn new() -> Self {
        let lock = ENVIRONMENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut environment = Environment { saved: Vec::new(), _lock: lock };
        let inherited: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.to_uppercase().starts_with("MCP_"))
            .collect();
        for name in inherited.iter().map(String::as_str).chain([
            "GROQ_API_KEY",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "DATABASE_URL",
        ]) {
            environment.unset(name);
        }
        environment
    }

    fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.saved.push((name.to_owned(), std::env::var_os(name)));
        // SAFETY: the ENVIRONMENT lock is held, and no other thread of this test binary reads
        // the environment without holding it.
        unsafe { std::env::set_var(name, value) };
        self
    }

    fn unset(&mut self, name: &str) -> &mut Self {
        self.saved.push((name.to_owned(), std::env::var_os(name)));
        // SAFETY: as in `set`.
        unsafe { std::env::remove_var(name) };
        self
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        for (name, value) in self.saved.drain(..).rev() {
            // SAFETY: as in `set`; the lock is released only after this.
            unsafe {
                match value {
                    Some(value) => std::env::set_var(&name, value),
                    None => std::env::remove_var(&name),
                }
            }
        }
    }
}

fn repository_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn shipped_settings() -> String {
    std::fs::read_to_string(repository_file("config.yaml")).expect("read the shipped config.yaml")
}

/// Writes `text` as `name` into `dir` and returns the path.
fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write a config file");
    path
}

/// The shipped `config.yaml` with `edit(from, to)` applied; each `from` must occur exactly once.
fn edited_settings(edits: &[(&str, &str)]) -> String {
    let mut text = shipped_settings();
    for (from, to) in edits {
        assert_eq!(text.matches(from).count(), 1, "{from:?} should occur once");
        text = text.replacen(from, to, 1);
    }
    text
}

fn settings_problems(dir: &TempDir, text: &str) -> Vec<String> {
    let path = write(dir, "config.yaml", text);
    let error = load_settings(Some(&path)).expect_err("the config should be refused");
    problems_with_placeholder(&error, dir)
}

fn servers_problems(dir: &TempDir, text: &str) -> Vec<String> {
    let path = write(dir, "servers_config.json", text);
    let error = load_servers_config(Some(&path)).expect_err("the servers config should be refused");
    problems_with_placeholder(&error, dir)
}

/// The problems with the temporary folder written as `DIR`, so expected messages can be spelled out.
fn problems_with_placeholder(error: &ConfigError, dir: &TempDir) -> Vec<String> {
    assert_eq!(error.to_string(), error.problems().join("\n"));
    let folder = dir.path().display().to_string();
    error.problems().iter().map(|problem| problem.replace(&folder, "DIR")).collect()
}

#[test]
fn shipped_config_yaml_loads_with_only_the_active_providers_key_set() {
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "gsk-test-key");

    let settings = load_settings(Some(&repository_file("config.yaml"))).expect("shipped config");

    let active = settings.active_provider();
    assert_eq!(settings.llm.active, "groq");
    assert_eq!(active.model, "llama-3.3-70b-versatile");
    assert_eq!(active.api_key.expose(), "gsk-test-key");
    assert!(settings.llm.providers["openai"].api_key.is_empty(), "an inactive provider's unset key is left empty");
    assert_eq!(settings.websocket.port, 8000);
    assert_eq!(settings.shutdown.grace_seconds, 5.0);
}

#[test]
fn shipped_servers_config_loads() {
    let _environment = Environment::new();

    let config = load_servers_config(Some(&repository_file("servers_config.json"))).expect("shipped servers config");

    let demo = &config.servers["demo"];
    assert!(demo.enabled);
    assert_eq!(demo.command.as_deref(), Some("target/release/demo-server"));
    assert_eq!(
        demo.cwd.as_deref().map(std::fs::canonicalize).transpose().unwrap(),
        Some(std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap()),
        "cwd \".\" is the folder of servers_config.json"
    );
    assert_eq!(demo.env["DEMO_MODE"], "1");
    assert_eq!(demo.allowed_tools, None);
}

#[test]
fn default_paths_come_from_the_environment() {
    let dir = TempDir::new().unwrap();
    let settings_path = write(&dir, "elsewhere.yaml", &shipped_settings());
    let servers_path = write(&dir, "servers.json", r#"{"mcpServers": {"echo": {"command": "echo"}}}"#);
    let mut environment = Environment::new();
    environment
        .set("GROQ_API_KEY", "k")
        .set("MCP_CONFIG_PATH", settings_path.to_str().unwrap())
        .set("MCP_SERVERS_CONFIG_PATH", servers_path.to_str().unwrap());

    assert_eq!(load_settings(None).unwrap().websocket.port, 8000);
    let servers = load_servers_config(None).unwrap();
    let echo = &servers.servers["echo"];
    assert!(echo.enabled, "enabled defaults to true");
    assert!(echo.args.is_empty() && echo.env.is_empty() && echo.cwd.is_none());
}

#[test]
fn environment_variables_override_single_keys() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "config.yaml", &shipped_settings());
    let mut environment = Environment::new();
    environment
        .set("MCP__WEBSOCKET__PORT", "9000")
        .set("MCP__LLM__ACTIVE", "mock")
        .set("MCP__CHAT__SERVICE__MAX_TOOL_HOPS", "2")
        .set("MCP__CHAT__SERVICE__STREAMING__ENABLED", "false")
        .set("MCP__LLM__REQUEST_TIMEOUT", "12.5")
        .set("MCP__LLM__PROVIDERS__GROQ__API_KEY", "gsk-from-override")
        .set("MCP__LLM__PROVIDERS__MOCK__MODEL", "1.5");

    let settings = load_settings(Some(&path)).expect("overridden config");

    assert_eq!(settings.websocket.port, 9000);
    assert_eq!(settings.active_provider().base_url, "http://127.0.0.1:8089/v1");
    assert_eq!(settings.chat.service.max_tool_hops, 2);
    assert!(!settings.chat.service.streaming.enabled);
    assert_eq!(settings.llm.request_timeout, 12.5);
    assert_eq!(settings.llm.providers["groq"].api_key.expose(), "gsk-from-override");
    assert_eq!(settings.active_provider().model, "1.5", "a string key keeps the variable's text as it is");
}

#[test]
fn overrides_find_keys_whatever_their_case_in_the_file() {
    let dir = TempDir::new().unwrap();
    let text = edited_settings(&[("active: \"groq\"", "active: \"Groq\""), ("    groq:\n", "    Groq:\n")]);
    let path = write(&dir, "config.yaml", &text);
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("MCP__LLM__PROVIDERS__GROQ__MODEL", "llama-3.1-8b-instant");

    let settings = load_settings(Some(&path)).expect("overridden config");

    assert_eq!(settings.active_provider().model, "llama-3.1-8b-instant");
    assert!(!settings.llm.providers.contains_key("groq"));
}

#[test]
fn bad_overrides_name_the_variable() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment
        .set("GROQ_API_KEY", "k")
        .set("MCP__WEBSOCKET__PORT", "abc")
        .set("MCP__WEBSOCKET__PROT", "9000")
        .set("MCP__STORE__FSYNC", "yes")
        .set("MCP__LLM__PROVIDERS__GROQ__API_KEY", "env:CONFIG_TEST_UNSET_KEY")
        .unset("CONFIG_TEST_UNSET_KEY");

    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        [
            "DIR/config.yaml: llm.providers.groq.api_key (set by MCP__LLM__PROVIDERS__GROQ__API_KEY): \
             environment variable CONFIG_TEST_UNSET_KEY is not set; set it, or change the value \
             \"env:CONFIG_TEST_UNSET_KEY\"",
            "DIR/config.yaml: websocket.port (set by MCP__WEBSOCKET__PORT): \
             expected an integer from 1 to 65535, found \"abc\"",
            "DIR/config.yaml: websocket.prot (set by MCP__WEBSOCKET__PROT): \
             unknown key; did you mean \"port\"?",
            "DIR/config.yaml: store.fsync (set by MCP__STORE__FSYNC): \
             expected true or false, found \"yes\"",
        ]
    );
}

#[test]
fn an_override_that_adds_a_provider_lists_what_the_provider_still_needs() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("MCP__LLM__PROVIDERS__AZURE__MODEL", "gpt-4o");

    let problems = settings_problems(&dir, &shipped_settings());

    let origin = "DIR/config.yaml: llm.providers.azure.";
    let via = " (set by MCP__LLM__PROVIDERS__AZURE__MODEL): missing key, expected";
    assert_eq!(
        problems,
        [
            format!("{origin}kind{via} one of \"openai\", \"anthropic\""),
            format!("{origin}base_url{via} an http:// or https:// URL"),
            format!("{origin}api_key{via} a string (\"env:NAME\" reads the environment variable NAME)"),
            format!("{origin}temperature{via} a number from 0 to 2"),
            format!("{origin}max_tokens{via} an integer of at least 1"),
            format!("{origin}top_p{via} a number from 0 to 1"),
        ]
    );
}

#[test]
fn missing_keys_and_sections_are_named_with_what_belongs_there() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let text = edited_settings(&[("  port: 8000\n", ""), ("shutdown:\n  grace_seconds: 5\n", "")]);

    assert_eq!(
        settings_problems(&dir, &text),
        [
            "DIR/config.yaml: websocket.port: missing key, expected an integer from 1 to 65535",
            "DIR/config.yaml: shutdown: missing key, expected an object with keys grace_seconds",
        ]
    );
}

#[test]
fn min_text_interval_must_be_a_number_and_may_be_left_out() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let text = edited_settings(&[("min_text_interval: 0.0", "min_text_interval: \"fast\"")]);
    let problems = settings_problems(&dir, &text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("DIR/config.yaml: chat.service.streaming.min_text_interval: expected a number"),
        "{problems:?}"
    );

    let text = edited_settings(&[("      min_text_interval: 0.0", "      #")]);
    let path = write(&dir, "config.yaml", &text);
    let settings = load_settings(Some(&path)).expect("loads without the key");
    assert_eq!(settings.chat.service.streaming.min_text_interval, 0.0, "every delta as it comes");
}

#[test]
fn unknown_keys_are_refused_with_a_suggestion_when_one_is_close() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let text = edited_settings(&[
        ("  max_tool_hops: 8", "  max_tool_hop: 8"),
        ("  fsync: true", "  fsync: true\n  compress: true"),
    ]);

    assert_eq!(
        settings_problems(&dir, &text),
        [
            "DIR/config.yaml: chat.service.max_tool_hops: missing key, expected an integer of at least 0",
            "DIR/config.yaml: chat.service.max_tool_hop: unknown key; did you mean \"max_tool_hops\"?",
            "DIR/config.yaml: store.compress: unknown key; allowed keys are backend, path, fsync, postgres",
        ]
    );
}

#[test]
fn wrong_types_show_the_value_found() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let text = edited_settings(&[
        ("port: 8000", "port: \"abc\""),
        ("  enabled: true", "  enabled: \"yes\""),
        ("websocket:\n", "websocket:\n  host: [a, b]\n"),
        ("  host: \"localhost\"\n", ""),
        ("  path: \"events.jsonl\"", "  path:"),
        ("mcp:\n  connection:\n", "mcp:\n  connection: 5\n  old_connection:\n"),
    ]);

    assert_eq!(
        settings_problems(&dir, &text),
        [
            "DIR/config.yaml: chat.service.streaming.enabled: expected true or false, found \"yes\"",
            "DIR/config.yaml: websocket.host: expected a non-empty string, found a list",
            "DIR/config.yaml: websocket.port: expected an integer from 1 to 65535, found \"abc\"",
            "DIR/config.yaml: store.path: expected a non-empty string, found an empty value",
            "DIR/config.yaml: mcp.connection: expected an object with keys max_reconnect_attempts, \
             connection_timeout, initial_reconnect_delay, max_reconnect_delay, found 5",
            "DIR/config.yaml: mcp.old_connection: unknown key; did you mean \"connection\"?",
        ]
    );
}

#[test]
fn every_value_out_of_range_is_reported_at_once() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let text = edited_settings(&[
        ("active: \"groq\"", "active: \"grok\""),
        (
            "kind: \"anthropic\"\n      base_url: \"https://api.anthropic.com\"",
            "kind: \"claude\"\n      base_url: \"api.anthropic.com\"",
        ),
        ("base_url: \"http://localhost:11434/v1\"", "base_url: \"ftp://localhost/v1\""),
        (
            "model: \"llama3.2\"\n      temperature: 0.7\n      max_tokens: 4000\n      top_p: 0.9",
            "model: \"\"\n      temperature: 2.5\n      max_tokens: 0\n      top_p: 1.5",
        ),
        ("request_timeout: 60.0", "request_timeout: 0"),
        ("max_retries: 3", "max_retries: -1"),
        ("min_text_interval: 0.0", "min_text_interval: -0.5"),
        ("max_tool_hops: 8", "max_tool_hops: 5000000000"),
        ("reserve_tokens: 500", "reserve_tokens: 4000"),
        ("port: 8000", "port: 70000"),
        ("max_message_bytes: 65536", "max_message_bytes: 100"),
        ("max_in_flight_per_connection: 8", "max_in_flight_per_connection: 0"),
        ("initial_reconnect_delay: 1.0", "initial_reconnect_delay: 60"),
        ("failure_threshold: 5", "failure_threshold: 0"),
        ("level: \"info\"", "level: \"verbose\""),
        ("format: \"json\"", "format: \"xml\""),
        ("grace_seconds: 5", "grace_seconds: -1"),
    ]);

    assert_eq!(
        settings_problems(&dir, &text),
        [
            "DIR/config.yaml: llm.providers.anthropic.kind: expected one of \"openai\", \"anthropic\", found \"claude\"",
            "DIR/config.yaml: llm.providers.anthropic.base_url: expected an http:// or https:// URL, found \"api.anthropic.com\"",
            "DIR/config.yaml: llm.providers.ollama.base_url: expected an http:// or https:// URL, found \"ftp://localhost/v1\"",
            "DIR/config.yaml: llm.providers.ollama.model: expected a non-empty string, found \"\"",
            "DIR/config.yaml: llm.providers.ollama.temperature: expected a number from 0 to 2, found 2.5",
            "DIR/config.yaml: llm.providers.ollama.max_tokens: expected an integer of at least 1, found 0",
            "DIR/config.yaml: llm.providers.ollama.top_p: expected a number from 0 to 1, found 1.5",
            "DIR/config.yaml: llm.request_timeout: expected a number greater than 0, found 0",
            "DIR/config.yaml: llm.max_retries: expected an integer of at least 0, found -1",
            "DIR/config.yaml: chat.service.streaming.min_text_interval: expected a number of at least 0, found -0.5",
            "DIR/config.yaml: chat.service.max_tool_hops: expected an integer from 0 to 4294967295, found 5000000000",
            "DIR/config.yaml: websocket.port: expected an integer from 1 to 65535, found 70000",
            "DIR/config.yaml: websocket.max_message_bytes: expected an integer of at least 1024, found 100",
            "DIR/config.yaml: websocket.max_in_flight_per_connection: expected an integer of at least 1, found 0",
            "DIR/config.yaml: mcp.circuit_breaker.failure_threshold: expected an integer of at least 1, found 0",
            "DIR/config.yaml: logging.level: expected one of \"trace\", \"debug\", \"info\", \"warn\", \"error\", found \"verbose\"",
            "DIR/config.yaml: logging.format: expected one of \"json\", \"pretty\", found \"xml\"",
            "DIR/config.yaml: shutdown.grace_seconds: expected a number of at least 0, found -1",
            "DIR/config.yaml: chat.service.context.reserve_tokens: expected less than chat.service.context.max_tokens (4000), found 4000",
            "DIR/config.yaml: mcp.connection.initial_reconnect_delay: expected at most mcp.connection.max_reconnect_delay (30.0), found 60",
            "DIR/config.yaml: llm.active: expected the name of a provider under llm.providers \
             (\"anthropic\", \"groq\", \"mock\", \"ollama\", \"openai\"), found \"grok\"; did you mean \"groq\"?",
        ]
    );
}

#[test]
fn a_missing_variable_of_the_active_provider_is_named_with_its_key() {
    let dir = TempDir::new().unwrap();
    let _environment = Environment::new();

    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        ["DIR/config.yaml: llm.providers.groq.api_key: environment variable GROQ_API_KEY \
          is not set; set it, or change the value \"env:GROQ_API_KEY\""]
    );
}

#[test]
fn the_postgres_backend_needs_its_url_and_jsonl_does_not() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "config.yaml", &shipped_settings());
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let jsonl = load_settings(Some(&path)).expect("DATABASE_URL is needed only by the postgres backend");
    assert!(jsonl.store.postgres.url.is_empty());

    environment.set("MCP__STORE__BACKEND", "postgres");
    let error = load_settings(Some(&path)).expect_err("DATABASE_URL is unset");
    assert_eq!(
        problems_with_placeholder(&error, &dir),
        ["DIR/config.yaml: store.postgres.url: environment variable DATABASE_URL \
          is not set; set it, or change the value \"env:DATABASE_URL\""]
    );
    environment.set("DATABASE_URL", "mysql://secret@db/events");
    let error = load_settings(Some(&path)).expect_err("not a PostgreSQL URL");
    let problems = problems_with_placeholder(&error, &dir);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("DIR/config.yaml: store.postgres.url: store.backend \"postgres\" needs a URL"));
    assert!(!problems[0].contains("secret"), "the URL is a secret: {problems:?}");
    environment.set("DATABASE_URL", "postgres://mcp:pa55word@db:5432/events");
    let settings = load_settings(Some(&path)).expect("a PostgreSQL URL");
    assert_eq!(settings.store.postgres.url.expose(), "postgres://mcp:pa55word@db:5432/events");
    assert!(!format!("{settings:?}").contains("pa55word"), "Debug hides the URL");
}

#[test]
fn switching_providers_needs_only_the_new_providers_key() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "config.yaml", &shipped_settings());
    let mut environment = Environment::new();
    environment.set("MCP__LLM__ACTIVE", "anthropic");

    let error = load_settings(Some(&path)).expect_err("ANTHROPIC_API_KEY is unset");
    assert_eq!(
        problems_with_placeholder(&error, &dir),
        ["DIR/config.yaml: llm.providers.anthropic.api_key: environment variable ANTHROPIC_API_KEY \
          is not set; set it, or change the value \"env:ANTHROPIC_API_KEY\""]
    );

    environment.set("ANTHROPIC_API_KEY", "sk-ant-test");
    let settings = load_settings(Some(&path)).expect("the active provider's key is set");
    assert_eq!(settings.active_provider().api_key.expose(), "sk-ant-test");
    assert!(settings.llm.providers["groq"].api_key.is_empty());
}

#[test]
fn a_variable_set_but_empty_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "");

    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        ["DIR/config.yaml: llm.providers.groq.api_key: environment variable GROQ_API_KEY is set but empty"]
    );
}

#[test]
fn invalid_yaml_gives_the_line_and_column() {
    let dir = TempDir::new().unwrap();
    let _environment = Environment::new();
    let text = "websocket:\n  host: \"localhost\"\n  port: [8000\n  max_message_bytes: 65536\n";

    assert_eq!(
        settings_problems(&dir, text),
        ["DIR/config.yaml: invalid YAML: illegal placement of ':' indicator at line 4 column 20"]
    );
}

#[test]
fn a_missing_file_says_how_to_point_at_one() {
    let dir = TempDir::new().unwrap();
    let _environment = Environment::new();

    let error = load_settings(Some(&dir.path().join("config.yaml"))).unwrap_err();
    assert_eq!(
        problems_with_placeholder(&error, &dir),
        ["DIR/config.yaml: cannot read the file: No such file or directory (os error 2); \
          pass its path or set MCP_CONFIG_PATH"]
    );
    let error = load_servers_config(Some(&dir.path().join("servers_config.json"))).unwrap_err();
    assert_eq!(
        problems_with_placeholder(&error, &dir),
        ["DIR/servers_config.json: cannot read the file: No such file or directory (os error 2); \
          pass its path or set MCP_SERVERS_CONFIG_PATH"]
    );
}

#[test]
fn secrets_never_show_in_messages_or_debug_output() {
    let secret = "gsk-very-secret-value-4711";
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", secret);

    // A key typed into the file by mistake, beside other problems.
    let text =
        edited_settings(&[("api_key: \"env:OPENAI_API_KEY\"", "api_key: 4711000111"), ("port: 8000", "port: 0")]);
    let problems = settings_problems(&dir, &text);
    assert_eq!(
        problems,
        [
            "DIR/config.yaml: llm.providers.openai.api_key: expected a string (\"env:NAME\" reads \
             the environment variable NAME), found a number",
            "DIR/config.yaml: websocket.port: expected an integer from 1 to 65535, found 0",
        ]
    );
    let path = write(&dir, "config.yaml", &text);
    let error = load_settings(Some(&path)).unwrap_err();
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(secret) && !shown.contains("4711000111"), "{shown}");
    }

    let path = write(&dir, "config.yaml", &shipped_settings());
    environment.set("MCP__LLM__PROVIDERS__OPENAI__API_KEY", "sk-override-secret");
    let settings = load_settings(Some(&path)).expect("valid config");
    assert_eq!(settings.active_provider().api_key.expose(), secret);
    let debug = format!("{settings:?} {settings:#?}");
    assert!(!debug.contains(secret) && !debug.contains("sk-override-secret"), "{debug}");

    environment.set("DEMO_TOKEN", secret);
    let servers = write(
        &dir,
        "servers_config.json",
        r#"{"mcpServers": {"demo": {"command": "demo", "env": {"TOKEN": "Bearer ${DEMO_TOKEN}"}}}}"#,
    );
    let servers = load_servers_config(Some(&servers)).expect("valid servers config");
    assert_eq!(servers.servers["demo"].env["TOKEN"], format!("Bearer {secret}"));
    let debug = format!("{servers:?}");
    assert!(debug.contains("TOKEN") && !debug.contains(secret), "{debug}");
}

#[test]
fn env_references_are_read_only_in_secret_keys() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("CONFIG_TEST_BASE_URL", "https://example.com/v1");
    let text =
        edited_settings(&[("base_url: \"https://api.groq.com/openai/v1\"", "base_url: \"env:CONFIG_TEST_BASE_URL\"")]);

    assert_eq!(
        settings_problems(&dir, &text),
        ["DIR/config.yaml: llm.providers.groq.base_url: expected an http:// or https:// URL, \
             found \"env:CONFIG_TEST_BASE_URL\" (\"env:\" is read only in secret keys such as \
             api_key; to take this key from the environment, set MCP__LLM__PROVIDERS__GROQ__BASE_URL)"]
    );
}

#[test]
fn every_bad_server_entry_is_reported_at_once() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let mut environment = Environment::new();
    environment.set("SERVERS_TEST_TOKEN", "t").unset("SERVERS_TEST_MISSING");
    let text = r#"{"mcpServers": {
        "good": {"command": "good-server", "cwd": "tools", "env": {"TOKEN": "${SERVERS_TEST_TOKEN}"}},
        "empty": {"command": ""},
        "demo": {"command": "demo", "args": ["--mode", 3], "env": {"MODE": 1, "KEY": "${SERVERS_TEST_MISSING}", "OPEN": "x${HOME"}},
        "typo": {"command": "x", "alowed_tools": ["sum"], "timeout": 5},
        "bad name": {"command": "x"},
        "lost": {"command": "x", "cwd": "nowhere"},
        "off": {"command": "x", "cwd": "nowhere", "enabled": false},
        "odd": {"command": ["x"], "enabled": "yes", "tool_timeout": 0, "excluded_tools": "sum"},
        "noop": {"args": []}
    }}"#;

    let problems = servers_problems(&dir, text);

    let file = "DIR/servers_config.json: mcpServers";
    assert_eq!(
        problems,
        [
            format!(
                "{file}.\"bad name\": invalid server name; use only letters, digits, \"_\" and \"-\" \
                 (it becomes the prefix of the server's tool names)"
            ),
            format!("{file}.demo.args[1]: expected a string, found 3"),
            format!(
                "{file}.demo.env.KEY: environment variable SERVERS_TEST_MISSING is not set \
                 (used as ${{SERVERS_TEST_MISSING}}); set it or remove the reference"
            ),
            format!("{file}.demo.env.MODE: expected a string, found 1"),
            format!(
                "{file}.demo.env.OPEN: \"${{\" without a closing \"}}\"; write ${{NAME}} to insert \
                 the environment variable NAME, found \"x${{HOME\""
            ),
            format!("{file}.empty.command: expected a non-empty string, found \"\""),
            format!("{file}.odd.enabled: expected true or false, found \"yes\""),
            format!("{file}.odd.command: expected a non-empty string, found a list"),
            format!("{file}.odd.excluded_tools: expected a list of strings, found \"sum\""),
            format!("{file}.odd.tool_timeout: expected a number greater than 0, found 0"),
            format!("{file}.typo.alowed_tools: unknown key; did you mean \"allowed_tools\"?"),
            format!("{file}.typo.timeout: unknown key; did you mean \"tool_timeout\"?"),
            format!(
                "{file}.noop: expected command (a local server started as a child process) or url (a remote \
                 MCP server over streamable HTTP), found neither"
            ),
            format!(
                "{file}.lost.cwd: expected an existing directory, found \"nowhere\" \
                 (DIR/nowhere does not exist; a relative cwd starts at the folder of this file)"
            ),
        ]
    );
}

#[test]
fn remote_server_entries_are_validated_without_showing_header_values() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment
        .set("REMOTE_TEST_TOKEN", "secret-token")
        .set("REMOTE_TEST_BROKEN", "line\nbreak")
        .unset("REMOTE_TEST_MISSING");
    let text = r#"{"mcpServers": {
        "remote": {"type": "http", "url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer ${REMOTE_TEST_TOKEN}"}, "max_tool_timeout": 600},
        "both": {"command": "x", "url": "http://127.0.0.1:1/mcp"},
        "ftp": {"url": "ftp://example.com/mcp"},
        "liar": {"type": "stdio", "url": "http://127.0.0.1:1/mcp", "args": ["-v"]},
        "local": {"type": "http", "command": "x", "headers": {"X-Key": "k"}},
        "heads": {"url": "http://127.0.0.1:1/mcp", "headers": {"bad header": "x", "X-Missing": "${REMOTE_TEST_MISSING}",
                  "X-Broken": "${REMOTE_TEST_BROKEN}"}},
        "short": {"url": "http://127.0.0.1:1/mcp", "tool_timeout": 10, "max_tool_timeout": 5},
        "sse": {"type": "sse", "url": "http://127.0.0.1:1/sse"}
    }}"#;

    let problems = servers_problems(&dir, text);

    let file = "DIR/servers_config.json: mcpServers";
    assert_eq!(
        problems,
        [
            format!("{file}.ftp.url: expected an http:// or https:// URL, found \"ftp://example.com/mcp\""),
            format!(
                "{file}.heads.headers.X-Missing: environment variable REMOTE_TEST_MISSING is not set \
                 (used as ${{REMOTE_TEST_MISSING}}); set it or remove the reference"
            ),
            format!(
                "{file}.heads.headers.\"bad header\": invalid HTTP header name; use letters, digits and \"-\", \
                 as in \"Authorization\""
            ),
            format!("{file}.sse.type: expected one of \"stdio\", \"http\", found \"sse\""),
            format!(
                "{file}.both.url: expected either command (a local server) or url (a remote one), found both; remove one"
            ),
            format!(
                "{file}.heads.headers.X-Broken: expected a header value (visible ASCII, no line breaks), found a value \
                 that is not one (not shown: it may hold a token)"
            ),
            format!("{file}.liar.type: \"stdio\" needs a command, found url"),
            format!("{file}.liar.args: only for a local server (command); remove args"),
            format!("{file}.local.type: \"http\" needs a url, found command"),
            format!("{file}.local.headers: only for a remote server (url); remove headers"),
            format!("{file}.short.max_tool_timeout: expected at least tool_timeout (10), found 5"),
        ]
    );
    assert!(problems.iter().all(|problem| !problem.contains("secret-token") && !problem.contains("line\nbreak")));

    let valid = r#"{"mcpServers": {"remote": {"type": "http", "url": "https://mcp.example.com/mcp",
        "headers": {"Authorization": "Bearer ${REMOTE_TEST_TOKEN}"}, "max_tool_timeout": 600}}}"#;
    let path = write(&dir, "remote.json", valid);
    let config = load_servers_config(Some(&path)).expect("a valid remote entry");
    let remote = &config.servers["remote"];
    assert_eq!(remote.url.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(remote.headers["Authorization"], "Bearer secret-token");
    assert_eq!(remote.command, None);
    assert_eq!(remote.max_tool_timeout, Some(600.0));
    let shown = format!("{remote:?}");
    assert!(shown.contains("Authorization") && !shown.contains("secret-token"), "{shown}");
}

#[test]
fn invalid_json_gives_the_line_and_column() {
    let dir = TempDir::new().unwrap();
    let _environment = Environment::new();

    assert_eq!(
        servers_problems(&dir, "{\"mcpServers\": {\n  \"demo\": {\"command\": \"x\",}\n}}"),
        ["DIR/servers_config.json: invalid JSON: trailing comma at line 2 column 27"]
    );
    assert_eq!(
        servers_problems(&dir, "[]"),
        ["DIR/servers_config.json: expected an object with keys mcpServers, found a list"]
    );
    assert_eq!(
        servers_problems(&dir, "{\"servers\": {}}"),
        [
            "DIR/servers_config.json: mcpServers: missing key, expected an object",
            "DIR/servers_config.json: servers: unknown key; did you mean \"mcpServers\"?",
        ]
    );
}

#[test]
fn shipped_auth_is_off_on_loopback_with_the_spec_limits() {
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");

    let settings = load_settings(Some(&repository_file("config.yaml"))).expect("shipped config");

    let auth = &settings.auth;
    assert_eq!(auth.mode, AuthMode::None);
    assert!(!auth.allow_anonymous_remote);
    assert!(auth.allowed_origins.is_empty() && auth.api_keys.is_empty());
    assert_eq!((auth.jwt.issuer.as_str(), auth.jwt.audience.as_str()), ("", ""));
    assert!(auth.jwt.jwks_path.as_os_str().is_empty() && auth.jwt.hs256_secret.is_empty());
    assert_eq!((auth.jwt.user_claim.as_str(), auth.jwt.admin_claim.as_str()), ("sub", "roles"));
    let limits = &settings.limits;
    assert_eq!(
        (limits.chats_per_minute, limits.tokens_per_day, limits.connections_per_user),
        (30, 0, 16),
        "chats_per_minute, tokens_per_day, connections_per_user"
    );
    assert_eq!((limits.connections_per_ip, limits.max_connections), (64, 10000));
}

/// 64 hexadecimal digits, as `mcp-platform key` prints them; not the hash of anything in use.
const ALICE_SHA256: &str = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea";

#[test]
fn api_keys_are_read_with_their_hashes_from_the_environment() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment
        .set("GROQ_API_KEY", "k")
        .set("MCP__AUTH__MODE", "api_keys")
        .set("MCP__LIMITS__CHATS_PER_MINUTE", "5")
        .set("CONFIG_TEST_ALICE_SHA256", ALICE_SHA256);
    let text = edited_settings(&[
        (
            "  api_keys: []",
            "  api_keys:\n\
             \x20   - {user: \"alice\", role: \"user\", key_sha256: \"env:CONFIG_TEST_ALICE_SHA256\"}\n\
             \x20   - {user: \"root\", role: \"admin\", key_sha256: \"3F79BB7B435B05321651DAEFD374CDC681DC06FAA65E374E38337B88CA046DEB\"}",
        ),
        ("allowed_origins: []", "allowed_origins: [\"https://chat.example.com\", \"http://localhost:3000\"]"),
    ]);
    let path = write(&dir, "config.yaml", &text);

    let settings = load_settings(Some(&path)).expect("valid api_keys config");

    assert_eq!(settings.auth.mode, AuthMode::ApiKeys);
    let keys = &settings.auth.api_keys;
    assert_eq!((keys[0].user.as_str(), keys[0].role, keys[0].key_sha256.expose()), ("alice", Role::User, ALICE_SHA256));
    assert_eq!((keys[1].user.as_str(), keys[1].role), ("root", Role::Admin));
    assert_eq!(settings.auth.allowed_origins, ["https://chat.example.com", "http://localhost:3000"]);
    assert_eq!(settings.limits.chats_per_minute, 5);
    let debug = format!("{settings:?}");
    assert!(!debug.to_lowercase().contains(&ALICE_SHA256[..16]), "{debug}");
}

#[test]
fn every_bad_api_key_entry_is_reported_without_showing_a_hash() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    let not_hex = format!("{}g", &ALICE_SHA256[..63]);
    environment
        .set("GROQ_API_KEY", "k")
        .set("MCP__AUTH__MODE", "api_keys")
        .set("CONFIG_TEST_ALICE_SHA256", ALICE_SHA256);
    let entries = format!(
        "  api_keys:\n\
         \x20   - {{user: \"alice\", role: \"user\", key_sha256: \"env:CONFIG_TEST_ALICE_SHA256\"}}\n\
         \x20   - {{user: \"root\", role: \"owner\", key_sha256: \"not-a-hash\"}}\n\
         \x20   - {{user: \"\", role: \"admin\", key_sha256: \"{not_hex}\"}}\n\
         \x20   - {{user: \"bob\", role: \"user\", key_sha256: \"{}\"}}\n\
         \x20   - {{user: \"carol\", role: \"user\", key: \"x\"}}\n\
         \x20   - \"alice:{ALICE_SHA256}\"",
        ALICE_SHA256.to_uppercase()
    );
    let text = edited_settings(&[("  api_keys: []", &entries)]);

    let problems = settings_problems(&dir, &text);

    let keys = "DIR/config.yaml: auth.api_keys";
    let hex = "expected the key's SHA-256 as 64 hexadecimal digits (as `mcp-platform key` prints it), found";
    assert_eq!(
        problems,
        [
            format!("{keys}[1].role: expected one of \"user\", \"admin\", found \"owner\""),
            format!("{keys}[2].user: expected a non-empty string, found \"\""),
            format!(
                "{keys}[4].key_sha256: missing key, expected a string (\"env:NAME\" reads the environment variable NAME)"
            ),
            format!("{keys}[4].key: unknown key; did you mean \"key_sha256\"?"),
            format!("{keys}[5]: expected an object with keys user, role, key_sha256, found a string"),
            format!("{keys}[1].key_sha256: {hex} 10 characters"),
            format!("{keys}[2].key_sha256: {hex} 64 characters, not all hexadecimal digits"),
            format!(
                "{keys}[3].key_sha256: the same key as auth.api_keys[0]; each key must be distinct so that it names one user"
            ),
        ]
    );
    for problem in &problems {
        assert!(!problem.to_lowercase().contains(&ALICE_SHA256[..16]), "{problem}");
    }
}

#[test]
fn api_keys_mode_needs_at_least_one_key() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("MCP__AUTH__MODE", "api_keys");

    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        ["DIR/config.yaml: auth.api_keys: auth.mode \"api_keys\" needs at least one key; add entries \
          {user: \"alice\", role: \"user\", key_sha256: \"env:ALICE_KEY_SHA256\"} \
          (`mcp-platform key` makes a key and its hash)"]
    );
}

#[test]
fn only_the_secrets_of_the_chosen_auth_mode_must_be_set() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").unset("CONFIG_TEST_UNSET_HASH").unset("CONFIG_TEST_UNSET_HS256");
    let text = edited_settings(&[
        (
            "  api_keys: []",
            "  api_keys:\n    - {user: \"alice\", role: \"user\", key_sha256: \"env:CONFIG_TEST_UNSET_HASH\"}",
        ),
        ("hs256_secret: \"\"", "hs256_secret: \"env:CONFIG_TEST_UNSET_HS256\""),
    ]);
    let path = write(&dir, "config.yaml", &text);

    let settings = load_settings(Some(&path)).expect("mode none uses neither secret");
    assert!(settings.auth.api_keys[0].key_sha256.is_empty());
    assert!(settings.auth.jwt.hs256_secret.is_empty());

    environment.set("MCP__AUTH__MODE", "api_keys");
    assert_eq!(
        problems_with_placeholder(&load_settings(Some(&path)).unwrap_err(), &dir),
        ["DIR/config.yaml: auth.api_keys[0].key_sha256: environment variable CONFIG_TEST_UNSET_HASH is not set; \
          set it, or change the value \"env:CONFIG_TEST_UNSET_HASH\""]
    );

    environment.set("MCP__AUTH__MODE", "jwt");
    assert_eq!(
        problems_with_placeholder(&load_settings(Some(&path)).unwrap_err(), &dir),
        ["DIR/config.yaml: auth.jwt.hs256_secret: environment variable CONFIG_TEST_UNSET_HS256 is not set; \
          set it, or change the value \"env:CONFIG_TEST_UNSET_HS256\""]
    );

    let secret = "an-hs256-secret-4711-of-at-least-32-bytes";
    environment.set("CONFIG_TEST_UNSET_HS256", secret);
    let settings = load_settings(Some(&path)).expect("mode jwt with its secret set");
    assert_eq!(settings.auth.mode, AuthMode::Jwt);
    assert_eq!(settings.auth.jwt.hs256_secret.expose(), secret);
    assert!(!format!("{settings:?}").contains(secret));
}

#[test]
fn jwt_mode_needs_exactly_one_key_and_a_long_enough_secret() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("MCP__AUTH__MODE", "jwt");

    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        ["DIR/config.yaml: auth.jwt: auth.mode \"jwt\" needs a key to check token signatures: set jwks_path \
          (a JWKS file of RS256, ES256 or EdDSA public keys) or hs256_secret (\"env:NAME\")"]
    );

    let short = "short-secret-4711";
    environment.set("MCP__AUTH__JWT__HS256_SECRET", short);
    let problems = settings_problems(&dir, &shipped_settings());
    assert_eq!(
        problems,
        ["DIR/config.yaml: auth.jwt.hs256_secret (set by MCP__AUTH__JWT__HS256_SECRET): expected a secret of \
          at least 32 bytes (HS256 needs a key as long as its hash), found 17 bytes"]
    );
    assert!(!problems[0].contains(short));

    environment.set("MCP__AUTH__JWT__JWKS_PATH", "jwks.json");
    assert_eq!(
        settings_problems(&dir, &shipped_settings()),
        ["DIR/config.yaml: auth.jwt: set one of jwks_path and hs256_secret, not both: the key, not the token, \
          decides which algorithm is accepted"]
    );

    environment.unset("MCP__AUTH__JWT__HS256_SECRET").set("MCP__AUTH__JWT__ISSUER", "https://id.example.com");
    let settings = load_settings(Some(&write(&dir, "config.yaml", &shipped_settings()))).expect("a JWKS file");
    assert_eq!(settings.auth.jwt.jwks_path, Path::new("jwks.json"));
    assert_eq!(settings.auth.jwt.issuer, "https://id.example.com");
}

#[test]
fn anonymous_access_on_a_non_loopback_host_must_be_asked_for() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "config.yaml", &shipped_settings());
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");

    for loopback in ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
        environment.set("MCP__WEBSOCKET__HOST", loopback);
        assert!(load_settings(Some(&path)).is_ok(), "{loopback}");
    }

    environment.set("MCP__WEBSOCKET__HOST", "0.0.0.0");
    assert_eq!(
        problems_with_placeholder(&load_settings(Some(&path)).unwrap_err(), &dir),
        ["DIR/config.yaml: auth.mode: \"none\" lets anyone who reaches websocket.host \"0.0.0.0\" chat on your \
          LLM budget and use the admin endpoints; turn authentication on (auth.mode \"api_keys\" or \"jwt\"), \
          bind to a loopback host such as \"127.0.0.1\", or, if a proxy in front authenticates every caller, \
          set auth.allow_anonymous_remote: true"]
    );

    environment.set("MCP__AUTH__ALLOW_ANONYMOUS_REMOTE", "true");
    let settings = load_settings(Some(&path)).expect("anonymous remote access asked for");
    assert!(settings.auth.allow_anonymous_remote);
    assert_eq!(settings.websocket.host, "0.0.0.0");

    environment
        .unset("MCP__AUTH__ALLOW_ANONYMOUS_REMOTE")
        .set("MCP__AUTH__MODE", "jwt")
        .set("MCP__AUTH__JWT__JWKS_PATH", "jwks.json");
    assert!(load_settings(Some(&path)).is_ok(), "authentication on: any host");
}

#[test]
fn auth_and_limits_values_are_checked() {
    let dir = TempDir::new().unwrap();
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k").set("MCP__AUTH__MODE", "oauth");
    let text = edited_settings(&[
        (
            "allowed_origins: []",
            "allowed_origins: [\"https://chat.example.com\", \"https://chat.example.com/\", 5, \"env:ORIGIN\"]",
        ),
        ("allow_anonymous_remote: false", "allow_anonymous_remote: \"no\""),
        ("  api_keys: []", "  api_keys: \"alice-key-4711\""),
        ("user_claim: \"sub\"", "user_claim: \"\""),
        ("chats_per_minute: 30", "chats_per_minute: -1"),
        ("max_connections: 10000", "max_connections: 1.5"),
    ]);

    let origin = "an origin such as \"https://chat.example.com\" (scheme and host, a port only if not the \
                  default, no path or trailing \"/\")";
    assert_eq!(
        settings_problems(&dir, &text),
        [
            "DIR/config.yaml: auth.mode (set by MCP__AUTH__MODE): expected one of \"none\", \"api_keys\", \"jwt\", \
             found \"oauth\""
                .to_owned(),
            "DIR/config.yaml: auth.allow_anonymous_remote: expected true or false, found \"no\"".to_owned(),
            format!("DIR/config.yaml: auth.allowed_origins[1]: expected {origin}, found \"https://chat.example.com/\""),
            format!("DIR/config.yaml: auth.allowed_origins[2]: expected {origin}, found 5"),
            format!(
                "DIR/config.yaml: auth.allowed_origins[3]: expected {origin}, found \"env:ORIGIN\" (\"env:\" is read \
                 only in secret keys such as api_key)"
            ),
            "DIR/config.yaml: auth.api_keys: expected a list of objects with keys user, role, key_sha256, found a \
             string"
                .to_owned(),
            "DIR/config.yaml: auth.jwt.user_claim: expected a non-empty string, found \"\"".to_owned(),
            "DIR/config.yaml: limits.chats_per_minute: expected an integer of at least 0, found -1".to_owned(),
            "DIR/config.yaml: limits.max_connections: expected an integer of at least 0, found 1.5".to_owned(),
        ]
    );
}

#[test]
fn approval_settings_load_and_a_bad_policy_names_the_choices() {
    let mut environment = Environment::new();
    environment.set("GROQ_API_KEY", "k");
    let settings = load_settings(Some(&repository_file("config.yaml"))).expect("shipped config");
    assert_eq!(settings.chat.service.tool_approval.policy, ApprovalPolicy::Never);
    assert_eq!(settings.chat.service.tool_approval.timeout, 300.0);

    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "servers_config.json",
        r#"{"mcpServers": {"notes": {"command": "notes", "approval": "annotations", "trusted": true,
             "approve_tools": ["delete"], "auto_approve_tools": ["list"]}}}"#,
    );
    let servers = load_servers_config(Some(&path)).expect("valid");
    let notes = &servers.servers["notes"];
    assert_eq!(notes.approval, Some(ApprovalPolicy::Annotations));
    assert!(notes.trusted);
    assert_eq!(
        (notes.approve_tools.as_slice(), notes.auto_approve_tools.as_slice()),
        (&["delete".to_owned()][..], &["list".to_owned()][..])
    );
    let echo =
        &load_servers_config(Some(&write(&dir, "plain.json", r#"{"mcpServers": {"echo": {"command": "echo"}}}"#)))
            .expect("valid")
            .servers["echo"];
    assert_eq!((echo.approval, echo.trusted), (None, false), "no override, untrusted by default");

    let problems =
        servers_problems(&dir, r#"{"mcpServers": {"notes": {"command": "notes", "approval": "sometimes"}}}"#);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("mcpServers.notes.approval") && problems[0].contains("\"annotations\""),
        "{problems:?}"
    );
    let problems = settings_problems(&dir, &edited_settings(&[("      policy: \"never\"", "      policy: \"ask\"")]));
    assert!(problems.iter().any(|problem| problem.contains("chat.service.tool_approval.policy")), "{problems:?}");
}
