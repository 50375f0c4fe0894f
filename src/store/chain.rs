//! The line format and hash chain of SPEC §6, shared by both stores and by `replay --verify`.
//!
//! A line is the compact JSON of a [`ChatEvent`] (key order = field order, `prev` and `hash`
//! last). Its `hash` is the SHA-256 of the line's bytes up to, not including, `,"hash":`,
//! followed by `}` — which is exactly the serialisation of the event without its `hash`, so
//! anyone can check a line with `sed` and `sha256sum` and no canonical JSON is involved.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{ChatEvent, EventType, NewEvent, StoreError};

/// `prev` of the first line of a file.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The `v` every line carries; bumped only if the line format changes.
pub const FORMAT_VERSION: u32 = 1;

/// What the line carries right before its hash value.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// How a line serialised with an empty `hash` ends.
const EMPTY_HASH_SUFFIX: &[u8] = b",\"hash\":\"\"}";

/// The current time as the store writes it: UTC, microseconds, `Z`
/// (`2026-11-22T01:17:05.947893Z`). Written by chrono's RFC 3339 writer rather than a format
/// string, which is parsed again at every call (two events a turn).
pub fn timestamp_now() -> String {
    timestamp_of(chrono::Utc::now())
}

fn timestamp_of(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The UTC day (`YYYY-MM-DD`) of a timestamp as the store writes it.
pub fn utc_day(timestamp: &str) -> &str {
    timestamp.get(..DAY_CHARS).unwrap_or(timestamp)
}

/// `YYYY-MM-DD` at the start of a timestamp.
const DAY_CHARS: usize = 10;

/// Appends the event's line (with its `\n`) to `out` and sets `event.hash`.
pub fn seal_into(event: &mut ChatEvent, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    event.hash.clear();
    let start = out.len();
    serde_json::to_writer(&mut *out, &event)?;
    debug_assert!(out.ends_with(EMPTY_HASH_SUFFIX));
    out.truncate(out.len() - EMPTY_HASH_SUFFIX.len());
    let mut hasher = Sha256::new();
    hasher.update(&out[start..]);
    hasher.update(b"}");
    event.hash = hex::encode(hasher.finalize());
    out.extend_from_slice(HASH_KEY);
    out.extend_from_slice(event.hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Ok(())
}

/// The hash a line (without its `\n`) must carry, recomputed from its bytes; `None` when the
/// line has no `,"hash":"` key at all.
pub fn recompute_hash(line: &[u8]) -> Option<String> {
    // The last occurrence is the real key: `hash` is the last key, and inside string values
    // quotes are escaped, so an earlier match can only come from a key nested in `extra`.
    let at = memchr::memmem::rfind(line, HASH_KEY)?;
    let mut hasher = Sha256::new();
    hasher.update(&line[..at]);
    hasher.update(b"}");
    Some(hex::encode(hasher.finalize()))
}

/// Who holds a `request_id`: the conversation and event of its `user_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub conversation_id: String,
    pub event_id: String,
}

/// What a store already holds, as far as assigning `seq` and checking claims needs.
pub trait Ledger {
    /// The highest `seq` of the conversation, 0 when unknown.
    fn last_seq(&self, conversation_id: &str) -> u64;
    /// The holder of `user`'s `request_id`, if any.
    fn claim(&self, user: &str, request_id: &str) -> Option<Claim>;
    /// The user who created the conversation, if it exists.
    fn owner(&self, conversation_id: &str) -> Option<String>;
}

/// What a store's writer is asked to stage. The ends of orphaned requests are worked out by
/// the writer itself, under the same lock as their write, so that two processes sweeping at
/// once cannot both finish one request.
#[derive(Debug)]
pub enum Work {
    Append(Vec<NewEvent>),
    FinishOrphans,
}

/// A claim's key: request ids are unique per user.
type ClaimKey = (String, String);

/// Batches accepted for one write but not yet in the store's index: group commit stages
/// several batches before the single write, and each must see the ones staged before it.
#[derive(Debug)]
pub struct Staging {
    pub prev: String,
    pub lines: Vec<u8>,
    seqs: HashMap<String, u64>,
    claims: HashMap<ClaimKey, Claim>,
    owners: HashMap<String, String>,
}

impl Staging {
    pub fn new(prev: String) -> Self {
        Staging { prev, lines: Vec::new(), seqs: HashMap::new(), claims: HashMap::new(), owners: HashMap::new() }
    }

    /// Stamps and seals `batch` after what is staged, or refuses it whole and leaves the
    /// staging untouched.
    pub fn stage(&mut self, ledger: &impl Ledger, batch: Vec<NewEvent>) -> Result<Vec<ChatEvent>, StoreError> {
        let mut seqs: HashMap<String, u64> = HashMap::new();
        let mut claims: HashMap<ClaimKey, Claim> = HashMap::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut prev = self.prev.clone();
        let lines_before = self.lines.len();
        let mut stored = Vec::with_capacity(batch.len());
        for new in batch {
            let seq = 1 + seqs
                .get(&new.conversation_id)
                .or_else(|| self.seqs.get(&new.conversation_id))
                .copied()
                .unwrap_or_else(|| ledger.last_seq(&new.conversation_id));
            let id = uuid::Uuid::now_v7().to_string();
            let owner = owners
                .get(&new.conversation_id)
                .or_else(|| self.owners.get(&new.conversation_id))
                .cloned()
                .or_else(|| ledger.owner(&new.conversation_id));
            if new.kind == EventType::UserMessage && owner.as_ref().is_some_and(|owner| *owner != new.user) {
                self.lines.truncate(lines_before);
                return Err(StoreError::ConversationOwned { conversation_id: new.conversation_id });
            }
            if owner.is_none() {
                owners.insert(new.conversation_id.clone(), new.user.clone());
            }
            if let (EventType::UserMessage, Some(request_id)) = (new.kind, &new.request_id) {
                let key = (new.user.clone(), request_id.clone());
                let holder = claims
                    .get(&key)
                    .or_else(|| self.claims.get(&key))
                    .cloned()
                    .or_else(|| ledger.claim(&new.user, request_id));
                if let Some(holder) = holder {
                    self.lines.truncate(lines_before);
                    return Err(StoreError::DuplicateRequest {
                        request_id: request_id.clone(),
                        conversation_id: holder.conversation_id,
                        event_id: holder.event_id,
                    });
                }
                claims.insert(key, Claim { conversation_id: new.conversation_id.clone(), event_id: id.clone() });
            }
            seqs.insert(new.conversation_id.clone(), seq);
            let mut event = ChatEvent {
                v: FORMAT_VERSION,
                id,
                conversation_id: new.conversation_id,
                seq,
                request_id: new.request_id,
                user: Some(new.user),
                timestamp: timestamp_now(),
                kind: new.kind,
                role: new.role,
                content: new.content,
                tool_calls: new.tool_calls,
                tool_call_id: new.tool_call_id,
                model: new.model,
                usage: new.usage,
                token_count: new.token_count,
                extra: new.extra,
                prev,
                hash: String::new(),
                model_message: Default::default(),
            };
            if let Err(error) = seal_into(&mut event, &mut self.lines) {
                self.lines.truncate(lines_before);
                return Err(StoreError::Io {
                    path: "event".into(),
                    source: std::io::Error::other(format!("cannot serialise the event: {error}")),
                });
            }
            prev = event.hash.clone();
            stored.push(event);
        }
        self.prev = prev;
        self.seqs.extend(seqs);
        self.claims.extend(claims);
        self.owners.extend(owners);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    #[test]
    fn timestamps_are_utc_with_six_digits_of_the_second_and_z() {
        use chrono::TimeZone;
        let on_the_second = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(timestamp_of(on_the_second), "2026-01-02T03:04:05.000000Z");
        let sub_micro = on_the_second + chrono::Duration::nanoseconds(7_999);
        assert_eq!(timestamp_of(sub_micro), "2026-01-02T03:04:05.000007Z", "truncated, not rounded");
        let now = chrono::Utc::now();
        assert_eq!(timestamp_of(now), now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        assert_eq!(utc_day(&timestamp_of(now)), now.format("%Y-%m-%d").to_string());
    }

    struct Empty;
    impl Ledger for Empty {
        fn last_seq(&self, _: &str) -> u64 {
            0
        }
        fn claim(&self, _: &str, _: &str) -> Option<Claim> {
            None
        }
        fn owner(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn user(conversation: &str, request: &str) -> NewEvent {
        by("alice", conversation, request)
    }

    fn by(user: &str, conversation: &str, request: &str) -> NewEvent {
        NewEvent {
            conversation_id: conversation.into(),
            request_id: Some(request.into()),
            user: user.into(),
            kind: EventType::UserMessage,
            role: Some(crate::domain::Role::User),
            content: Some("hi".into()),
            tool_calls: None,
            tool_call_id: None,
            model: None,
            usage: None,
            token_count: 1,
            extra: Map::new(),
        }
    }

    #[test]
    fn sealed_line_matches_its_recomputed_hash_and_key_order() {
        let mut staging = Staging::new(GENESIS_PREV.into());
        let mut event = user("c", "r");
        event.extra.insert("hash".into(), json!("decoy"));
        let stored = staging.stage(&Empty, vec![event]).unwrap();
        let line = staging.lines.strip_suffix(b"\n").unwrap();
        assert_eq!(recompute_hash(line).unwrap(), stored[0].hash);
        let text = std::str::from_utf8(line).unwrap();
        assert!(text.starts_with("{\"v\":1,\"id\":\""), "{text}");
        assert!(text.contains(r#","request_id":"r","user":"alice","timestamp":""#), "{text}");
        assert!(text.ends_with(&format!(",\"prev\":\"{GENESIS_PREV}\",\"hash\":\"{}\"}}", stored[0].hash)), "{text}");
        let parsed: ChatEvent = serde_json::from_slice(line).unwrap();
        assert_eq!(parsed, stored[0]);
    }

    #[test]
    fn refused_batch_leaves_staging_untouched() {
        let mut staging = Staging::new(GENESIS_PREV.into());
        let first = staging.stage(&Empty, vec![user("c", "r1")]).unwrap();
        let lines = staging.lines.clone();
        let error = staging.stage(&Empty, vec![user("c", "r2"), user("d", "r1")]).unwrap_err();
        match error {
            StoreError::DuplicateRequest { request_id, conversation_id, event_id } => {
                assert_eq!(request_id, "r1");
                assert_eq!(conversation_id, "c");
                assert_eq!(event_id, first[0].id);
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(staging.lines, lines);
        assert_eq!(staging.prev, first[0].hash);
        let next = staging.stage(&Empty, vec![user("c", "r2")]).unwrap();
        assert_eq!(next[0].seq, 2);
        assert_eq!(next[0].prev, first[0].hash);
    }

    #[test]
    fn request_ids_are_per_user_and_conversations_belong_to_their_creator() {
        let mut staging = Staging::new(GENESIS_PREV.into());
        staging.stage(&Empty, vec![by("alice", "c", "r1")]).unwrap();
        staging.stage(&Empty, vec![by("bob", "d", "r1")]).expect("bob's r1 is his own request");
        let error = staging.stage(&Empty, vec![by("bob", "c", "r2")]).unwrap_err();
        assert!(
            matches!(&error, StoreError::ConversationOwned { conversation_id } if conversation_id == "c"),
            "{error}"
        );
        staging.stage(&Empty, vec![by("alice", "c", "r2")]).expect("alice continues her conversation");
    }

    #[test]
    fn a_line_written_before_events_had_a_user_is_anonymous_and_keeps_its_bytes() {
        let line = r#"{"v":1,"id":"x","conversation_id":"c","seq":1,"request_id":"r","timestamp":"2026-01-01T00:00:00.000000Z","type":"user_message","role":"user","content":"hi","tool_calls":null,"tool_call_id":null,"model":null,"usage":null,"token_count":1,"extra":{},"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":""}"#;
        let mut event: ChatEvent = serde_json::from_str(line).unwrap();
        assert_eq!(event.user(), "anonymous");
        let mut sealed = Vec::new();
        seal_into(&mut event, &mut sealed).unwrap();
        let sealed = std::str::from_utf8(&sealed).unwrap().trim_end();
        assert_eq!(sealed.strip_suffix(&format!("\"{}\"}}", event.hash)).unwrap(), line.strip_suffix("\"\"}").unwrap());
        assert_eq!(recompute_hash(sealed.as_bytes()).unwrap(), event.hash);
    }
}
