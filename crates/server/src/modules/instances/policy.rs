//! The platform's instance policy, set by admins: quota, placement and what
//! happens to a VM that died.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::Result;
use crate::modules::nodes::placement::Strategy;
use crate::modules::settings;

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct InstancePolicy {
    /// Instances one customer account may hold at once.
    #[garde(range(min = 0, max = 10_000))]
    pub max_instances_per_user: u32,
    /// How new instances spread over the nodes of a region.
    #[garde(skip)]
    pub placement_strategy: Strategy,
    /// Start again a VM that died without being asked to stop; otherwise it
    /// is left stopped, marked with the reason.
    #[garde(skip)]
    pub restart_crashed: bool,
}

impl Default for InstancePolicy {
    fn default() -> Self {
        Self {
            max_instances_per_user: 10,
            placement_strategy: Strategy::Spread,
            restart_crashed: true,
        }
    }
}

impl settings::Setting for InstancePolicy {
    const KEY: &'static str = "instances";
    const DESCRIPTION: &'static str = "The instance quota per customer, how instances spread over nodes, and whether crashed VMs restart.";
}

pub async fn get(db: &Database, cache: &Cache) -> Result<InstancePolicy> {
    settings::load(db, cache).await
}
