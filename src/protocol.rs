//! The WebSocket protocol (SPEC §2): client and server messages and their validation.
