//! The real-time policy, set by admins: how many Socket.IO connections one
//! account may hold.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::Result;
use crate::modules::settings;

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

impl settings::Setting for RealtimePolicy {
    const KEY: &'static str = "realtime";
    const DESCRIPTION: &'static str =
        "How many Socket.IO connections one account may hold on each replica.";
}

pub async fn get(db: &Database, cache: &Cache) -> Result<RealtimePolicy> {
    settings::load(db, cache).await
}
