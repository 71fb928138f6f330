//! Every state change of an instance is written to the audit log, published
//! as a live `instance.status` event (for the real-time layer, on every
//! replica), and counted in the metrics. Action progress and usage samples
//! are published as `instance.action` and `instance.metrics`.

use sea_orm::ActiveEnum as _;
use sea_orm::EntityTrait as _;

use super::Services;
use super::actions::ActionView;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::{instance_action, instance_metric};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, UserId};
use crate::modules::audit::{self, Event};
use crate::modules::auth::Actor;
use crate::modules::billing;
use crate::modules::events::{self as live, Audience, EventType};
use crate::modules::notifications::{self, Notice};

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
    let context = audit::Context {
        actor,
        ..Default::default()
    };
    let change = serde_json::json!({
        "from": from,
        "to": row.status,
        "reason": row.status_reason,
    });
    audit::record(
        &services.db,
        &context,
        Event::new(action)
            .on("instance", row.id)
            .details(change.clone()),
    )
    .await?;
    metrics::counter!("vmcloud_instance_transitions_total", "to" => row.status.to_value())
        .increment(1);
    let event = live::Event::new(EventType::InstanceStatus, row.id, change);
    live::publish(&services.cache, audience(row), event).await;
    Ok(())
}

/// Tells the owner their instance is ready, with how to reach it. Once per
/// instance: a provisioning retried after it succeeded says nothing more. A
/// failure is logged, not returned: the instance runs whatever happens here.
pub(super) async fn provisioned(services: &Services, id: InstanceId) {
    if let Err(err) = notify_ready(services, id).await {
        tracing::warn!(instance = %id, error = format!("{err:#}"), "cannot tell the owner the instance is ready");
    }
}

async fn notify_ready(services: &Services, id: InstanceId) -> Result<()> {
    let row = instance::Entity::find_by_id(id)
        .one(services.db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Instance"))?;
    let owner = row.user_id;
    let view = super::view_of(services, &Actor::platform(), row).await?;
    let notice = Notice::InstanceReady {
        instance_id: id,
        name: view.name,
        ssh_command: view.ssh.map(|ssh| ssh.command),
    };
    notify(services, owner, notice).await
}

/// Tells the owner provisioning failed and why. Once per instance, however
/// many retries fail; a failure to tell is logged like [`provisioned`]'s.
pub(super) async fn provisioning_failed(services: &Services, row: &instance::Model, reason: &str) {
    let notice = Notice::InstanceFailed {
        instance_id: row.id,
        name: row.name.clone(),
        reason: reason.to_owned(),
    };
    if let Err(err) = notify(services, row.user_id, notice).await {
        tracing::warn!(instance = %row.id, error = format!("{err:#}"), "cannot tell the owner provisioning failed");
    }
}

async fn notify(services: &Services, owner: UserId, notice: Notice) -> Result<()> {
    notifications::notify(&services.db, &services.cache, &services.jobs, owner, notice)
        .await
        .map(drop)
}

/// The owner's connections and those watching the instance.
fn audience(row: &instance::Model) -> Vec<Audience> {
    vec![Audience::User(row.user_id), Audience::Instance(row.id)]
}

/// Publishes where an action stands (its step, then how it ended) as an
/// `instance.action` event about its instance.
pub async fn action_changed(services: &Services, action: &instance_action::Model) -> Result<()> {
    let Some(row) = instance::Entity::find_by_id(action.instance_id)
        .one(services.db.writer())
        .await?
    else {
        return Ok(());
    };
    let view = ActionView::from(action.clone());
    let event = live::Event::new(
        EventType::InstanceAction,
        row.id,
        serde_json::json!({ "action": view }),
    );
    live::publish(&services.cache, audience(&row), event).await;
    Ok(())
}

/// Publishes a usage sample to the connections watching its instance.
pub async fn sampled(services: &Services, sample: &instance_metric::Model) {
    let event = live::Event::new(
        EventType::InstanceMetrics,
        sample.instance_id,
        serde_json::json!({
            "sampled_at": sample.sampled_at,
            "cpu_percent": sample.cpu_percent,
            "memory_used_mib": sample.memory_used_mib,
            "disk_read_bytes": sample.disk_read_bytes,
            "disk_write_bytes": sample.disk_write_bytes,
            "net_rx_bytes": sample.net_rx_bytes,
            "net_tx_bytes": sample.net_tx_bytes,
        }),
    );
    live::publish(
        &services.cache,
        vec![Audience::Instance(sample.instance_id)],
        event,
    )
    .await;
}
