//! The in-process backend: a bounded moka cache with per-entry deadlines and
//! one tokio broadcast channel per pub/sub channel.

use std::collections::HashMap;
use std::fmt;
use std::future::ready;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use moka::Expiry;
use moka::ops::compute::{CompResult, Op};
use tokio::sync::broadcast;

/// How many entries the in-process cache holds before evicting the least
/// useful ones.
pub const MAX_ENTRIES: u64 = 100_000;

/// How many messages an in-process subscriber may fall behind by before it
/// skips the oldest.
pub const SUBSCRIPTION_BUFFER: usize = 1024;

type Channels = Mutex<HashMap<String, broadcast::Sender<Bytes>>>;

#[derive(Clone)]
pub(super) struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
    channels: Arc<Channels>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Entry {
    /// moka evicts expired entries lazily and on its own clock, so every read
    /// checks the deadline itself.
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Tells moka to evict an entry at the deadline stored in it; an update that
/// keeps the deadline (an increment) thus keeps the expiry.
struct DeadlineExpiry;

impl Expiry<String, Entry> for DeadlineExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Entry,
        created_at: Instant,
    ) -> Option<Duration> {
        entry
            .expires_at
            .map(|at| at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry
            .expires_at
            .map(|at| at.saturating_duration_since(updated_at))
    }
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &"memory")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl MemoryCache {
    pub(super) fn new() -> Self {
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(DeadlineExpiry)
                .build(),
            channels: Arc::default(),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries
            .get(key)
            .await
            .filter(|entry| entry.is_live(Instant::now()))
            .map(|entry| entry.value.to_vec())
    }

    pub(super) async fn any_exists(&self, keys: &[&str]) -> bool {
        let now = Instant::now();
        for key in keys {
            if self
                .entries
                .get(*key)
                .await
                .is_some_and(|entry| entry.is_live(now))
            {
                return true;
            }
        }
        false
    }

    // Writes go through `and_compute_with` too: it serialises per key only
    // against other compute calls, and a plain insert could otherwise be lost
    // under a concurrent increment.
    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> anyhow::Result<()> {
        let expires_at = ttl.map(deadline).transpose()?;
        let entry = Entry {
            value: Bytes::copy_from_slice(value),
            expires_at,
        };
        self.entries
            .entry_by_ref(key)
            .and_compute_with(|_| ready(Op::Put(entry)))
            .await;
        Ok(())
    }

    pub(super) async fn delete(&self, key: &str) -> bool {
        let result = self
            .entries
            .entry_by_ref(key)
            .and_compute_with(|_| ready(Op::Remove))
            .await;
        matches!(result, CompResult::Removed(entry) if entry.value().is_live(Instant::now()))
    }

    pub(super) async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64> {
        let mut count = 0;
        self.entries
            .entry_by_ref(key)
            .and_try_compute_with(|current| {
                // Read the clock once the key lock is held, not before waiting
                // for it.
                let now = Instant::now();
                let next = match current.map(moka::Entry::into_value) {
                    Some(entry) if entry.is_live(now) => parse_counter(&entry.value)
                        .and_then(|value| {
                            value
                                .checked_add(by)
                                .ok_or_else(|| anyhow!("incrementing the counter would overflow"))
                        })
                        .and_then(|value| {
                            let expires_at = match entry.expires_at {
                                Some(at) => at,
                                None => deadline_from(now, ttl)?,
                            };
                            Ok((value, expires_at))
                        }),
                    _ => deadline_from(now, ttl).map(|expires_at| (by, expires_at)),
                };
                ready(next.map(|(value, expires_at)| {
                    count = value;
                    Op::Put(Entry {
                        value: Bytes::from(value.to_string()),
                        expires_at: Some(expires_at),
                    })
                }))
            })
            .await?;
        Ok(count)
    }

    pub(super) async fn ttl(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let entry = self.entries.get(key).await?;
        entry
            .expires_at
            .filter(|&at| at > now)
            .map(|at| at.duration_since(now))
    }

    pub(super) fn publish(&self, channel: &str, payload: &[u8]) {
        let sender = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel)
            .cloned();
        if let Some(sender) = sender {
            // Fails only when nobody listens, which is not an error for pub/sub.
            let _ = sender.send(Bytes::copy_from_slice(payload));
        }
    }

    pub(super) fn subscribe(&self, channel: &str) -> MemorySubscription {
        let receiver = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIPTION_BUFFER).0)
            .subscribe();
        MemorySubscription {
            receiver,
            channel: channel.to_owned(),
            channels: Arc::downgrade(&self.channels),
        }
    }

    #[cfg(test)]
    fn channel_count(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn deadline(ttl: Duration) -> anyhow::Result<Instant> {
    deadline_from(Instant::now(), ttl)
}

fn deadline_from(now: Instant, ttl: Duration) -> anyhow::Result<Instant> {
    now.checked_add(ttl)
        .context("the TTL is too large for this platform's clock")
}

/// Counters are stored as decimal text, as Redis does.
fn parse_counter(value: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .context("the value is not an integer counter")
}

pub(super) struct MemorySubscription {
    receiver: broadcast::Receiver<Bytes>,
    channel: String,
    // Weak, so that dropping every cache handle closes the channel and ends
    // the subscription instead of keeping the registry alive.
    channels: Weak<Channels>,
}

impl MemorySubscription {
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.receiver.recv().await {
                Ok(message) => return Some(message.to_vec()),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(
                        channel = %self.channel,
                        skipped,
                        "slow subscriber skipped messages"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for MemorySubscription {
    /// Forgets the channel once its last subscriber leaves, so per-user
    /// channels do not pile up.
    fn drop(&mut self) {
        let Some(channels) = self.channels.upgrade() else {
            return;
        };
        let mut channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
        // New receivers are only made under this lock, so the count is stable;
        // it still includes this subscription's own receiver.
        if channels
            .get(&self.channel)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channels_are_forgotten_when_their_last_subscriber_leaves() {
        let cache = MemoryCache::new();
        let first = cache.subscribe("a");
        let second = cache.subscribe("a");
        let other = cache.subscribe("b");
        assert_eq!(cache.channel_count(), 2);
        drop(first);
        assert_eq!(cache.channel_count(), 2, "`a` still has a subscriber");
        drop(second);
        assert_eq!(cache.channel_count(), 1);
        drop(other);
        assert_eq!(cache.channel_count(), 0);
    }

    #[tokio::test]
    async fn a_subscription_ends_when_every_cache_handle_is_dropped() {
        let cache = MemoryCache::new();
        let mut subscription = cache.subscribe("a");
        drop(cache);
        assert_eq!(subscription.next().await, None);
    }
}
