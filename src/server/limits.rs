//! The per-user and per-address limits of SPEC §8: chats per minute (a token bucket per user),
//! tokens per UTC day (counted from the store, so every process sharing it enforces one
//! budget), and open sockets per user and per IP address. 0 means no limit. They are checked
//! when a chat or a socket starts and never cut one that is running.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::json;

use crate::config::LimitsSettings;
use crate::protocol::ErrorBody;
use crate::store::EventStore;
use crate::store::chain::{timestamp_now, utc_day};

pub struct Limits {
    settings: LimitsSettings,
    chats: Option<DefaultKeyedRateLimiter<String>>,
    open: Mutex<OpenSockets>,
}

#[derive(Default)]
struct OpenSockets {
    by_user: HashMap<String, u32>,
    by_ip: HashMap<IpAddr, u32>,
}

/// A socket counted against its user's and its address's limits until it is dropped.
pub struct SocketSlot {
    limits: Arc<Limits>,
    user: String,
    ip: IpAddr,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.limits.lock_open();
        release(&mut open.by_user, &self.user);
        release(&mut open.by_ip, &self.ip);
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, u32>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// What `/api/me` shows of a user's limits.
#[derive(Debug, Serialize)]
pub struct Allowance {
    pub chats_per_minute: u32,
    pub tokens_per_day: u64,
    pub tokens_spent_today: u64,
    /// `None` without a daily budget.
    pub tokens_left_today: Option<u64>,
    pub connections_per_user: u32,
    pub connections_open: u32,
}

impl Limits {
    pub fn new(settings: LimitsSettings) -> Arc<Self> {
        let chats = NonZeroU32::new(settings.chats_per_minute).map(|rate| RateLimiter::keyed(Quota::per_minute(rate)));
        Arc::new(Limits { settings, chats, open: Mutex::new(OpenSockets::default()) })
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, OpenSockets> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new socket of `user` from `ip`, or says which limit it is over.
    pub fn open_socket(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<SocketSlot, String> {
        let mut open = self.lock_open();
        let (per_user, per_ip) = (self.settings.connections_per_user, self.settings.connections_per_ip);
        if per_user > 0 && open.by_user.get(user).copied().unwrap_or(0) >= per_user {
            return Err(format!(
                "user {user:?} already has {per_user} sockets open (limits.connections_per_user); close one and retry"
            ));
        }
        if per_ip > 0 && open.by_ip.get(&ip).copied().unwrap_or(0) >= per_ip {
            return Err(format!(
                "{per_ip} sockets are already open from this address (limits.connections_per_ip); close one and retry"
            ));
        }
        *open.by_user.entry(user.to_owned()).or_default() += 1;
        *open.by_ip.entry(ip).or_default() += 1;
        Ok(SocketSlot { limits: self.clone(), user: user.to_owned(), ip })
    }

    /// Whether `user` may start another chat now: within the chat rate and the day's tokens.
    pub async fn admit_chat(&self, user: &str, store: &dyn EventStore) -> Result<(), ErrorBody> {
        if let Some(chats) = &self.chats
            && let Err(not_until) = chats.check_key(&user.to_owned())
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(too_many(
                format!(
                    "more than {} chats in a minute (limits.chats_per_minute); wait before sending the next",
                    self.settings.chats_per_minute
                ),
                wait.as_secs_f64().ceil().max(1.0) as u64,
            ));
        }
        let budget = self.settings.tokens_per_day;
        if budget > 0 {
            let spent = spent_today(user, store).await?;
            if spent >= budget {
                return Err(too_many(
                    format!(
                        "the day's budget of {budget} model tokens is spent ({spent} used, limits.tokens_per_day); \
                         it renews at midnight UTC"
                    ),
                    seconds_to_next_utc_day(),
                ));
            }
        }
        Ok(())
    }

    pub async fn allowance(&self, user: &str, store: &dyn EventStore) -> Result<Allowance, ErrorBody> {
        let spent = spent_today(user, store).await?;
        let budget = self.settings.tokens_per_day;
        Ok(Allowance {
            chats_per_minute: self.settings.chats_per_minute,
            tokens_per_day: budget,
            tokens_spent_today: spent,
            tokens_left_today: (budget > 0).then(|| budget.saturating_sub(spent)),
            connections_per_user: self.settings.connections_per_user,
            connections_open: self.lock_open().by_user.get(user).copied().unwrap_or(0),
        })
    }
}

async fn spent_today(user: &str, store: &dyn EventStore) -> Result<u64, ErrorBody> {
    let now = timestamp_now();
    store.tokens_spent(user, utc_day(&now)).await.map_err(|error| crate::chat::internal_error(&error))
}

fn too_many(message: String, retry_after_seconds: u64) -> ErrorBody {
    ErrorBody { data: Some(json!({ "retry_after_seconds": retry_after_seconds })), ..ErrorBody::new(429, message) }
}

fn seconds_to_next_utc_day() -> u64 {
    let now = chrono::Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    (tomorrow - now).num_seconds().max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: u32, per_ip: u32) -> Arc<Limits> {
        Limits::new(LimitsSettings {
            chats_per_minute: 2,
            tokens_per_day: 0,
            connections_per_user: per_user,
            connections_per_ip: per_ip,
            max_connections: 0,
        })
    }

    #[test]
    fn sockets_over_a_limit_are_refused_until_one_closes() {
        let limits = limits(2, 3);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = limits.open_socket("alice", ip).unwrap();
        let _second = limits.open_socket("alice", ip).unwrap();
        assert!(limits.open_socket("alice", ip).err().unwrap().contains("connections_per_user"));
        let _bob = limits.open_socket("bob", ip).unwrap();
        assert!(limits.open_socket("carol", ip).err().unwrap().contains("connections_per_ip"));
        drop(first);
        limits.open_socket("alice", ip).expect("a closed socket frees its place");
    }

    #[tokio::test]
    async fn chats_over_the_rate_get_429_with_when_to_retry() {
        let limits = limits(0, 0);
        let store = crate::store::memory::MemoryStore::new();
        limits.admit_chat("alice", &store).await.unwrap();
        limits.admit_chat("alice", &store).await.unwrap();
        let refused = limits.admit_chat("alice", &store).await.unwrap_err();
        assert_eq!(refused.code, 429);
        assert!(refused.data.unwrap()["retry_after_seconds"].as_u64().unwrap() >= 1);
        limits.admit_chat("bob", &store).await.expect("each user has their own bucket");
    }
}
