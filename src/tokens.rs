//! Token counting over tiktoken-rs.
