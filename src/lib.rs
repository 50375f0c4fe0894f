//! mcp-platform: a WebSocket chat server that drives an LLM tool-calling loop against MCP
//! servers and logs every event to a hash-chained, append-only file.
//!
//! See `ARCHITECTURE.md` for how the modules fit together.

pub mod app;
pub mod auth;
pub mod chat;
pub mod check;
pub mod client;
pub mod config;
pub mod domain;
pub mod export;
pub mod llm;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod migrate;
pub mod protocol;
pub mod ready;
pub mod replay;
pub mod server;
pub mod store;
pub mod text;
pub mod tokens;
