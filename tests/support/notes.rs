//! The demo MCP server as tool-approval tests start it: trusted (so its annotations count
//! under the `annotations` policy) and keeping its notes in a file, so that the file shows
//! whether `delete_note` reached the server.

use std::path::PathBuf;

use mcp_platform::config::{ApprovalPolicy, ServerConfig, Settings};
use serde_json::Value;
use tempfile::TempDir;

use super::app::{Options, demo_server};

/// The notes the demo server starts with.
pub const NOTES: &str = "buy milk\ncall Ada\n";

pub struct NotesDemo {
    pub server: ServerConfig,
    pub file: PathBuf,
    _dir: TempDir,
}

impl NotesDemo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, NOTES).expect("write notes");
        let mut server = demo_server(&[("DEMO_NOTES_FILE", file.to_str().expect("utf-8 path"))]);
        server.trusted = true;
        Self { server, file, _dir: dir }
    }

    /// The notes file as the server left it.
    pub fn notes(&self) -> String {
        std::fs::read_to_string(&self.file).expect("notes file")
    }

    /// An app with this server as its only MCP server, the mock model playing `script`.
    pub fn options(&self, script: Value, configure: impl FnOnce(&mut Settings) + Send + 'static) -> Options {
        Options {
            script: Some(script),
            configure: Box::new(configure),
            servers: vec![("demo", self.server.clone())],
            store_path: None,
        }
    }
}

/// Ask for tools unless they are marked read-only by a trusted server.
pub fn annotations_policy(settings: &mut Settings) {
    settings.chat.service.tool_approval.policy = ApprovalPolicy::Annotations;
}
