//! The checks of `replay --verify` (SPEC §6), one line at a time, so that a file and a
//! database are verified by the same code: every line's hash, the `prev` link to the line
//! before, and each conversation's `seq` (1, 2, 3, … without gap or repeat).

use std::collections::HashMap;

use super::ChatEvent;
use super::chain::{GENESIS_PREV, recompute_hash};

/// The state of a verification in progress.
#[derive(Debug)]
pub struct ChainCheck {
    lines: u64,
    prev_hash: String,
    last_seqs: HashMap<String, u64>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        ChainCheck { lines: 0, prev_hash: GENESIS_PREV.to_string(), last_seqs: HashMap::new() }
    }
}

impl ChainCheck {
    /// Lines checked and found good.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn conversations(&self) -> usize {
        self.last_seqs.len()
    }

    /// Checks the next line (without its `\n`) and returns its event, or why it is bad.
    pub fn check(&mut self, bytes: &[u8]) -> Result<ChatEvent, String> {
        let number = self.lines + 1;
        let event: ChatEvent =
            serde_json::from_slice(bytes).map_err(|error| format!("not a valid event line: {error}"))?;
        let recomputed = recompute_hash(bytes).ok_or_else(|| "the line has no \"hash\" key".to_string())?;
        if recomputed != event.hash {
            return Err(format!(
                "the hash does not match the line's bytes (the line was edited): \
                 it says {}, its bytes hash to {recomputed}",
                event.hash
            ));
        }
        if event.prev != self.prev_hash {
            return Err(if number == 1 {
                format!(
                    "prev is {} but the first line's prev must be 64 zeros \
                     (lines before it were removed)",
                    event.prev
                )
            } else {
                format!(
                    "prev does not match the hash of line {} (a line was removed, inserted \
                     or moved here): it says {}, line {} has hash {}",
                    number - 1,
                    event.prev,
                    number - 1,
                    self.prev_hash
                )
            });
        }
        let last_seq = self.last_seqs.entry(event.conversation_id.clone()).or_insert(0);
        if event.seq != *last_seq + 1 {
            return Err(format!(
                "seq {} in conversation {:?}, expected {} (its previous event has seq {})",
                event.seq,
                event.conversation_id,
                *last_seq + 1,
                last_seq
            ));
        }
        *last_seq = event.seq;
        self.prev_hash.clone_from(&event.hash);
        self.lines = number;
        Ok(event)
    }
}
