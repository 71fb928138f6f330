//! Every state change of an instance is written to the audit log, published
//! on the cache's pub/sub (for the real-time layer and other replicas), and
//! counted in the metrics.

use sea_orm::ActiveEnum as _;
use serde::{Deserialize, Serialize};

use super::Services;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::error::Result;
use crate::ids::{InstanceId, UserId};
use crate::modules::audit::{self, Event};
use crate::modules::billing;

/// The pub/sub channel instance events are published on.
pub const CHANNEL: &str = "events:instances";

/// What subscribers of [`CHANNEL`] receive, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    pub instance_id: InstanceId,
    /// The owner, whose room the event goes to.
    pub user_id: UserId,
    /// `None` when the instance was just created.
    pub from: Option<InstanceStatus>,
    pub status: InstanceStatus,
    pub reason: Option<String>,
}

/// Records that `row` is now in its status (having been in `from`), and
/// moves its subscription along.
/// `actor` is `None` when the platform itself changed it.
pub async fn status_changed(
    services: &Services,
    row: &instance::Model,
    from: Option<InstanceStatus>,
    actor: Option<UserId>,
    action: &'static str,
) -> Result<()> {
    // Billing follows the instance: a stop, a start or the deletion ends
    // the usage segment that was running.
    billing::subscriptions::track(&services.db, row, services.clock.now()).await?;
    let event = InstanceEvent {
        instance_id: row.id,
        user_id: row.user_id,
        from,
        status: row.status,
        reason: row.status_reason.clone(),
    };
    let context = audit::Context {
        actor,
        ..Default::default()
    };
    audit::record(
        &services.db,
        &context,
        Event::new(action)
            .on("instance", row.id)
            .details(serde_json::json!({
                "from": from,
                "to": row.status,
                "reason": row.status_reason,
            })),
    )
    .await?;
    metrics::counter!("vmcloud_instance_transitions_total", "to" => row.status.to_value())
        .increment(1);
    let payload = serde_json::to_vec(&event).map_err(anyhow::Error::from)?;
    // The change is committed and audited; a subscriber that misses the
    // event still sees the new state on its next read.
    if let Err(err) = services.cache.publish(CHANNEL, &payload).await {
        tracing::warn!(instance = %row.id, error = format!("{err:#}"), "cannot publish an instance event");
    }
    Ok(())
}
