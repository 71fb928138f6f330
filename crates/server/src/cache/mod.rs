//! Cache and pub/sub: Redis when configured, in-process otherwise.
//!
//! One [`Cache`] handle serves short-lived values (with per-entry TTL), atomic
//! fixed-window counters (rate limits, lockouts) and fire-and-forget pub/sub.
//! Both backends behave the same as far as callers can observe: values are
//! bytes, counters are stored as decimal text (so `get` on a counter reads the
//! same on both), TTLs have millisecond granularity, and `set` without a TTL
//! clears any previous expiry.
//!
//! Pub/sub is at-most-once on both backends: a subscriber only receives what is
//! published after `subscribe` returns, a slow in-process subscriber skips what
//! it fell too far behind on, and a Redis subscriber misses what is published
//! while it reconnects.

mod memory;
mod near;
mod redis_backend;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::Stream;
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use memory::{MAX_ENTRIES, SUBSCRIPTION_BUFFER};
pub use near::{INVALIDATIONS, NEAR_TTL};

/// The longest TTL accepted. Anything meant to live longer should not expire
/// at all (`ttl: None`); a larger value is almost certainly a unit mistake.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A handle on the cache. Cheap to clone; clones share the same storage and
/// connections.
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    /// With Redis, this process' copy of the values read through
    /// [`Cache::get_near`]; in-process the backend is already local.
    near: Option<Arc<near::NearCache>>,
}

#[derive(Clone)]
enum Backend {
    Memory(memory::MemoryCache),
    Redis(redis_backend::RedisCache),
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Memory(memory) => memory.fmt(f),
            Backend::Redis(redis) => redis.fmt(f),
        }
    }
}

impl Cache {
    /// Connects to Redis when a URL is given (and checks it answers a PING),
    /// otherwise creates an in-process cache. Every Redis key and channel is
    /// prefixed with `prefix` (e.g. `vmcloud:`) so several deployments can share
    /// one server; the in-process cache is private to this process and ignores
    /// it. Error messages name the server's address, never its credentials.
    pub async fn connect(redis_url: Option<&SecretString>, prefix: &str) -> anyhow::Result<Self> {
        let Some(url) = redis_url else {
            return Ok(Self::in_memory());
        };
        let redis = redis_backend::RedisCache::connect(url, prefix).await?;
        let invalidations = Subscription {
            inner: SubscriptionInner::Redis(redis.subscribe(INVALIDATIONS).await?),
        };
        Ok(Self {
            backend: Backend::Redis(redis),
            near: Some(Arc::new(near::NearCache::start(invalidations))),
        })
    }

    /// A fresh in-process cache holding at most [`MAX_ENTRIES`] entries.
    pub fn in_memory() -> Self {
        Self {
            backend: Backend::Memory(memory::MemoryCache::new()),
            near: None,
        }
    }

    /// `"redis"` or `"memory"`, for logs and the readiness report.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    /// Whether what is stored outlives this process (Redis), or is lost
    /// when it exits (in-process).
    pub fn survives_restart(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// Checks the backend answers (always true in-process).
    pub async fn ping(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(redis) => redis.ping().await,
        }
    }

    /// The value stored under `key`, if any and not expired.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.get(key).await),
            Backend::Redis(redis) => redis.get(key).await,
        }
    }

    /// Stores `value` under `key`, replacing any previous value and expiry.
    /// With `ttl: None` the entry does not expire (in-process it may still be
    /// evicted when the cache is full).
    pub async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> anyhow::Result<()> {
        let ttl = ttl.map(normalize_ttl).transpose()?;
        match &self.backend {
            Backend::Memory(memory) => memory.set(key, value, ttl).await,
            Backend::Redis(redis) => redis.set(key, value, ttl).await,
        }
    }

    /// Like [`Cache::get`], answered from this process' copy when it has one
    /// (kept at most [`NEAR_TTL`]). For values changed only through
    /// [`Cache::invalidate_everywhere`].
    pub async fn get_near(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(near) = &self.near else {
            return self.get(key).await;
        };
        if let Some(value) = near.get(key).await {
            return Ok(Some(value.as_ref().clone()));
        }
        let value = self.get(key).await?;
        if let Some(value) = &value {
            near.insert(key, value.clone()).await;
        }
        Ok(value)
    }

    /// Removes `key` from the backend and from the copy every process keeps
    /// through [`Cache::get_near`], by publishing it on [`INVALIDATIONS`].
    pub async fn invalidate_everywhere(&self, key: &str) -> anyhow::Result<()> {
        self.delete(key).await?;
        if let Some(near) = &self.near {
            near.evict(key).await;
            self.publish(INVALIDATIONS, key.as_bytes()).await?;
        }
        Ok(())
    }

    /// Removes `key`; returns whether a live entry was there.
    pub async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.delete(key).await),
            Backend::Redis(redis) => redis.delete(key).await,
        }
    }

    /// Whether any of `keys` holds a live value, in one round trip: how a
    /// request checks every revocation that could apply to its token.
    pub async fn any_exists(&self, keys: &[&str]) -> anyhow::Result<bool> {
        if keys.is_empty() {
            return Ok(false);
        }
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.any_exists(keys).await),
            Backend::Redis(redis) => redis.any_exists(keys).await,
        }
    }

    /// The value under `key` decoded from JSON. A value that does not decode as
    /// `T` is an error, not a miss, so a schema change is noticed.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "the cached value under {key:?} does not decode as {}",
                std::any::type_name::<T>()
            )
        })
    }

    /// Stores `value` as JSON under `key`, like [`Cache::set`].
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(value).context("cannot encode the value as JSON")?;
        self.set(key, &bytes, ttl).await
    }

    /// Atomically adds `by` to the counter under `key` and returns the new
    /// value. A missing key starts at 0 and gets `ttl`; later increments keep
    /// the original expiry, so the counter covers a fixed window and starts
    /// over once it expires. An existing key without expiry gets `ttl` too. A
    /// value that is not a decimal i64, or an overflow, is an error.
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64> {
        let ttl = normalize_ttl(ttl)?;
        match &self.backend {
            Backend::Memory(memory) => memory.incr(key, by, ttl).await,
            Backend::Redis(redis) => redis.incr(key, by, ttl).await,
        }
    }

    /// The time `key` has left to live: `None` when it is missing or does not
    /// expire.
    pub async fn ttl(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        match &self.backend {
            Backend::Memory(memory) => Ok(memory.ttl(key).await),
            Backend::Redis(redis) => redis.ttl(key).await,
        }
    }

    /// Sends `payload` to every current subscriber of `channel`. Publishing to a
    /// channel nobody listens to succeeds and drops the message.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Memory(memory) => {
                memory.publish(channel, payload);
                Ok(())
            }
            Backend::Redis(redis) => redis.publish(channel, payload).await,
        }
    }

    /// Starts listening on `channel`. Messages published once this returns are
    /// delivered; dropping the [`Subscription`] stops listening.
    pub async fn subscribe(&self, channel: &str) -> anyhow::Result<Subscription> {
        let inner = match &self.backend {
            Backend::Memory(memory) => SubscriptionInner::Memory(memory.subscribe(channel)),
            Backend::Redis(redis) => SubscriptionInner::Redis(redis.subscribe(channel).await?),
        };
        Ok(Subscription { inner })
    }
}

/// Rounds a TTL up to whole milliseconds (Redis' granularity, applied to both
/// backends so they agree) and rejects zero and absurd values.
fn normalize_ttl(ttl: Duration) -> anyhow::Result<Duration> {
    if ttl.is_zero() {
        bail!("a cache TTL must be positive");
    }
    if ttl > MAX_TTL {
        bail!(
            "a cache TTL must not exceed {} days",
            MAX_TTL.as_secs() / 86_400
        );
    }
    let millis = u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .context("a cache TTL must fit in u64 milliseconds")?;
    Ok(Duration::from_millis(millis))
}

/// Messages arriving on one channel, in publication order.
pub struct Subscription {
    inner: SubscriptionInner,
}

enum SubscriptionInner {
    Memory(memory::MemorySubscription),
    Redis(redis_backend::RedisSubscription),
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (backend, channel) = match &self.inner {
            SubscriptionInner::Memory(sub) => ("memory", sub.channel()),
            SubscriptionInner::Redis(sub) => ("redis", sub.channel()),
        };
        f.debug_struct("Subscription")
            .field("backend", &backend)
            .field("channel", &channel)
            .finish()
    }
}

impl Subscription {
    /// Waits for the next message. In-process, a subscriber that fell more than
    /// [`SUBSCRIPTION_BUFFER`] messages behind skips the oldest ones, and `None`
    /// means every [`Cache`] handle was dropped. On Redis a lost connection is
    /// re-established (with backoff) and `None` is never returned.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        match &mut self.inner {
            SubscriptionInner::Memory(sub) => sub.next().await,
            SubscriptionInner::Redis(sub) => Some(sub.next().await),
        }
    }

    /// The messages as a [`Stream`], for combinators and `select!`.
    pub fn into_stream(self) -> impl Stream<Item = Vec<u8>> + Send {
        futures::stream::unfold(self, |mut subscription| async move {
            let message = subscription.next().await?;
            Some((message, subscription))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_milliseconds_and_reject_nonsense() {
        assert_eq!(
            normalize_ttl(Duration::from_micros(1)).expect("valid"),
            Duration::from_millis(1)
        );
        assert_eq!(
            normalize_ttl(Duration::from_micros(1_500)).expect("valid"),
            Duration::from_millis(2)
        );
        assert_eq!(
            normalize_ttl(Duration::from_secs(3)).expect("valid"),
            Duration::from_secs(3)
        );
        assert!(normalize_ttl(Duration::ZERO).is_err());
        assert!(normalize_ttl(MAX_TTL + Duration::from_secs(1)).is_err());
    }
}
