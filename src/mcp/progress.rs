//! Progress routing: which running call a `notifications/progress` belongs to, in order.
//!
//! Separate from `calls` because two sides meet here: the session's notification handler
//! feeds it and the calls read from it; in `calls` it would make the session depend on calls.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use tokio::sync::mpsc;

use super::ToolProgress;

/// Progress notifications that arrived before their call registered, kept per server.
const EARLY_PROGRESS_LIMIT: usize = 64;

/// A call's progress token within one session: tokens restart with every session.
type RouteKey = (u64, ProgressToken);

struct Route {
    sender: mpsc::UnboundedSender<ToolProgress>,
    last: Option<f64>,
}

impl Route {
    /// Forwards progress in order: rmcp hands each notification to its own task, so a late
    /// one can overtake; MCP progress only grows, so anything not newer is stale.
    fn forward(&mut self, params: ProgressNotificationParam) {
        if self.last.is_some_and(|last| params.progress <= last) {
            return;
        }
        self.last = Some(params.progress);
        let _ =
            self.sender.send(ToolProgress { progress: params.progress, total: params.total, message: params.message });
    }
}

#[derive(Default)]
struct Routes {
    routes: HashMap<RouteKey, Route>,
    early: VecDeque<(u64, ProgressNotificationParam)>,
}

/// The progress routes of one server's calls.
#[derive(Default)]
pub struct ProgressRouter {
    routes: Mutex<Routes>,
}

impl ProgressRouter {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a notification of session `generation` to its call, or keeps it until the call
    /// registers: the server may report progress before the request's send has returned.
    pub fn route(&self, generation: u64, params: ProgressNotificationParam) {
        let mut routes = self.routes();
        match routes.routes.get_mut(&(generation, params.progress_token.clone())) {
            Some(route) => route.forward(params),
            None => {
                if routes.early.len() >= EARLY_PROGRESS_LIMIT {
                    routes.early.pop_front();
                }
                routes.early.push_back((generation, params));
            }
        }
    }

    /// Routes the progress of one call to `sender` until the returned guard is dropped.
    pub fn register(
        &self,
        generation: u64,
        token: ProgressToken,
        sender: mpsc::UnboundedSender<ToolProgress>,
    ) -> Registration<'_> {
        let key = (generation, token);
        let mut routes = self.routes();
        let mut route = Route { sender, last: None };
        for (early_generation, params) in std::mem::take(&mut routes.early) {
            if early_generation == key.0 && params.progress_token == key.1 {
                route.forward(params);
            } else {
                routes.early.push_back((early_generation, params));
            }
        }
        routes.routes.insert(key.clone(), route);
        Registration { router: self, key }
    }
}

/// A call's route; dropping it stops the routing, however the call ended.
pub struct Registration<'a> {
    router: &'a ProgressRouter,
    key: RouteKey,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.router.routes().routes.remove(&self.key);
    }
}
