//! A near cache of account views (what `GET /users/me` returns), held in
//! each process so the hottest authenticated read costs neither a database
//! query nor a cache round trip. A write drops the entry here and tells every
//! other replica to drop theirs over the cache's pub/sub; that delivery is
//! at-most-once, so entries also expire after [`VIEW_TTL`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::db::Database;
use crate::error::Result;
use crate::ids::UserId;
use crate::modules::users::{UserView, find};

/// How long a view may be served without a write having been seen.
pub const VIEW_TTL: Duration = Duration::from_secs(30);
const CHANNEL: &str = "user-views:forget";
const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone, Debug)]
pub struct UserViews {
    local: moka::future::Cache<UserId, Arc<UserView>>,
    shared: Cache,
}

impl UserViews {
    pub fn new(shared: Cache) -> Self {
        Self {
            local: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(VIEW_TTL)
                .build(),
            shared,
        }
    }

    /// The account's view, from this process's cache or the database.
    pub async fn get(&self, db: &Database, id: UserId) -> Result<UserView> {
        if let Some(view) = self.local.get(&id).await {
            return Ok((*view).clone());
        }
        let view = UserView::from(find(db, id).await?);
        self.local.insert(id, Arc::new(view.clone())).await;
        Ok(view)
    }

    /// Drops the view here and in every other process.
    pub async fn forget(&self, id: UserId) -> Result<()> {
        self.local.invalidate(&id).await;
        self.shared
            .publish(CHANNEL, id.to_string().as_bytes())
            .await?;
        Ok(())
    }

    /// Applies other processes' invalidations until `shutdown`.
    pub async fn listen(self, shutdown: CancellationToken) -> Result<()> {
        let mut subscription = self.shared.subscribe(CHANNEL).await?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = subscription.next() => {
                    let Some(message) = message else { return Ok(()) };
                    if let Some(id) = std::str::from_utf8(&message).ok().and_then(|s| s.parse::<UserId>().ok()) {
                        self.local.invalidate(&id).await;
                    }
                }
            }
        }
    }
}
