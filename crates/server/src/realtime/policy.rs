//! The real-time policy, set by admins: how many Socket.IO connections one
//! account may hold.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::Result;
use crate::ids::UserId;
use crate::modules::settings;

const KEY: &str = "realtime.policy";

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct RealtimePolicy {
    /// Connections one account may hold at once on each `serve` replica;
    /// one more is refused with a `connect_error`.
    #[garde(range(min = 1, max = 100_000))]
    pub max_connections_per_user: u32,
}

impl Default for RealtimePolicy {
    fn default() -> Self {
        Self {
            max_connections_per_user: 20,
        }
    }
}

pub async fn get(db: &Database, cache: &Cache) -> Result<RealtimePolicy> {
    settings::get(db, cache, KEY, RealtimePolicy::default()).await
}

pub async fn set(db: &Database, cache: &Cache, policy: &RealtimePolicy, by: UserId) -> Result<()> {
    settings::set(db, cache, KEY, policy, by).await
}
