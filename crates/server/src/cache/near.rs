//! A process-local copy of hot, rarely changing values (the settings) in
//! front of Redis, so reading them costs no round trip. A writer evicts the
//! key everywhere by publishing it on [`INVALIDATIONS`]; each process drops
//! its copy when the message arrives. A message missed while Redis
//! reconnects is bounded by [`NEAR_TTL`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

/// The channel carrying keys to evict.
pub const INVALIDATIONS: &str = "cache:invalidate";

/// The longest a local copy is trusted without hearing from the writer.
pub const NEAR_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct NearCache {
    entries: moka::future::Cache<String, Arc<Vec<u8>>>,
    listener: AbortHandle,
}

impl NearCache {
    /// Starts listening on `subscription` before returning, so an eviction
    /// published after any read that fills the cache is never missed.
    pub(super) fn start(mut subscription: super::Subscription) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(NEAR_TTL)
            .build();
        let evicting = entries.clone();
        let listener = tokio::spawn(async move {
            while let Some(key) = subscription.next().await {
                match String::from_utf8(key) {
                    Ok(key) => evicting.invalidate(&key).await,
                    Err(_) => evicting.invalidate_all(),
                }
            }
        })
        .abort_handle();
        Self { entries, listener }
    }

    pub(super) async fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.entries.get(key).await
    }

    pub(super) async fn insert(&self, key: &str, value: Vec<u8>) {
        self.entries.insert(key.to_owned(), Arc::new(value)).await;
    }

    pub(super) async fn evict(&self, key: &str) {
        self.entries.invalidate(key).await;
    }
}

impl Drop for NearCache {
    fn drop(&mut self) {
        self.listener.abort();
    }
}
