//! The one place a repeated `request_id` is recognised (SPEC §2.4): a request runs once
//! store-wide, a duplicate follows or replays it, and the same `request_id` with another
//! payload is refused.
//!
//! `chat`, `resume` and a turn whose claim another process beat all ask here and act on one
//! [`Standing`]; every refusal (409, or 500 for a log it cannot read) is the error it returns.

use std::sync::Arc;

use super::cached::{self, StoredRequest};
use super::{ChatService, Run, internal_error, store_error};
use crate::protocol::{ErrorBody, RequestMessage};

/// Where a request stands, in this process and in the store.
pub enum Standing {
    /// Neither running here nor in the store: it may run.
    New,
    /// Running in this process: follow its run.
    RunningHere(Arc<Run>),
    /// Running in another process whose messages the store shares: follow them from there.
    RunningElsewhere,
    /// Finished, in any process sharing the store: its compact replay, unnumbered.
    Finished(Vec<RequestMessage>),
}

impl ChatService {
    /// Looks `user`'s `request_id` up among this process's runs, then in the store.
    /// `fingerprint` is that of the payload a `chat` sends; `None` (a `resume`) accepts any
    /// payload.
    pub(super) async fn standing(
        &self,
        user: &str,
        request_id: &str,
        fingerprint: Option<&str>,
    ) -> Result<Standing, ErrorBody> {
        if let Some(active) = self.lock_runs().get(&super::request_key(user, request_id)) {
            same_payload(request_id, &active.fingerprint, fingerprint)?;
            return Ok(Standing::RunningHere(active.run.clone()));
        }
        self.stored_standing(user, request_id, fingerprint).await
    }

    /// Looks `request_id` up in the store only: for the turn whose own claim was refused,
    /// which is itself among this process's runs.
    pub(super) async fn stored_standing(
        &self,
        user: &str,
        request_id: &str,
        fingerprint: Option<&str>,
    ) -> Result<Standing, ErrorBody> {
        let events = self.deps.store.request(user, request_id).await.map_err(|error| store_error(&error))?;
        match cached::stored_request(&events).map_err(|error| internal_error(&error))? {
            StoredRequest::Unknown => Ok(Standing::New),
            StoredRequest::Running { fingerprint: stored } => {
                same_payload(request_id, &stored, fingerprint)?;
                if self.deps.store.shares_frames() {
                    Ok(Standing::RunningElsewhere)
                } else {
                    Err(running_elsewhere(request_id))
                }
            }
            StoredRequest::Finished { fingerprint: stored, replay } => {
                same_payload(request_id, &stored, fingerprint)?;
                Ok(Standing::Finished(replay))
            }
        }
    }
}

fn same_payload(request_id: &str, known: &str, sent: Option<&str>) -> Result<(), ErrorBody> {
    match sent {
        Some(sent) if sent != known => Err(ErrorBody::new(
            409,
            format!("request_id {request_id:?} was already used with a different payload; choose a new request_id"),
        )),
        _ => Ok(()),
    }
}

fn running_elsewhere(request_id: &str) -> ErrorBody {
    ErrorBody::new(
        409,
        format!(
            "request_id {request_id:?} is still being answered by another server process sharing the store; \
             send it again once it has finished to receive the stored result"
        ),
    )
}
