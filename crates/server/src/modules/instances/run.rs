//! Runs one action of an instance's queue against its node's driver, step by
//! step, and moves the instance through its states.

use std::sync::Arc;

use anyhow::Context as _;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _};
use vmcloud_hypervisor::{Driver, VmStatus};

use super::queue::Runner;
use super::{events, provision};
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::instance_action::{self, ActionKind};
use crate::db::entities::{image, node, product};
use crate::ids::{ImageId, InstanceId, ProductId, UserId};

/// How many steps an action of this kind reports.
pub(super) fn total_steps(kind: ActionKind) -> i32 {
    match kind {
        ActionKind::Provision | ActionKind::Resize => 5,
        ActionKind::Rebuild => 4,
        ActionKind::SnapshotCreate | ActionKind::SnapshotRestore | ActionKind::SnapshotDelete => 3,
        ActionKind::Delete => 2,
        ActionKind::Start
        | ActionKind::Stop
        | ActionKind::ForceStop
        | ActionKind::Reboot
        | ActionKind::Recover
        | ActionKind::Suspend
        | ActionKind::Unsuspend => 1,
    }
}

/// Reports an action's progress as it goes.
pub(super) struct Progress<'a> {
    runner: &'a Runner,
    action: &'a instance_action::Model,
}

impl Progress<'_> {
    pub(super) async fn step(&self, step: i32, label: &str) -> anyhow::Result<()> {
        tracing::info!(instance = %self.action.instance_id, action = %self.action.id, step, label);
        let mut active = self.action.clone().into_active_model();
        active.step = Set(step);
        active.step_label = Set(Some(label.to_owned()));
        let action = active.update(self.runner.services.db.writer()).await?;
        events::action_changed(&self.runner.services, &action).await?;
        Ok(())
    }

    /// Who asked: `None` for the platform.
    pub(super) fn actor(&self) -> Option<UserId> {
        self.action.requested_by
    }
}

/// Moves the instance to `status`, recording and publishing the change.
pub(super) async fn set_status(
    runner: &Runner,
    id: InstanceId,
    status: InstanceStatus,
    reason: Option<String>,
    actor: Option<UserId>,
) -> anyhow::Result<instance::Model> {
    let row = load(runner, id).await?;
    let from = row.status;
    if from == status && row.status_reason == reason {
        return Ok(row);
    }
    let mut active = row.into_active_model();
    active.status = Set(status);
    active.status_reason = Set(reason);
    if status == InstanceStatus::Deleted {
        active.deleted_at = Set(Some(crate::db::entities::now()));
        active.ssh_port = Set(None);
    }
    let row = active.update(runner.services.db.writer()).await?;
    events::status_changed(
        &runner.services,
        &row,
        Some(from),
        actor,
        "instance.status_changed",
    )
    .await?;
    Ok(row)
}

async fn load(runner: &Runner, id: InstanceId) -> anyhow::Result<instance::Model> {
    instance::Entity::find_by_id(id)
        .one(runner.services.db.writer())
        .await?
        .context("the instance no longer exists")
}

pub(super) async fn driver_of(
    runner: &Runner,
    row: &instance::Model,
) -> anyhow::Result<Arc<dyn Driver>> {
    let node = node_of(runner, row).await?;
    Ok(runner.services.drivers.for_node(&node).await?)
}

async fn node_of(runner: &Runner, row: &instance::Model) -> anyhow::Result<node::Model> {
    let node_id = row.node_id.context("the instance is not on any node")?;
    node::Entity::find_by_id(node_id)
        .one(runner.services.db.writer())
        .await?
        .context("the instance's node was removed")
}

pub(super) async fn execute(
    runner: &Runner,
    action: &instance_action::Model,
) -> anyhow::Result<()> {
    let progress = Progress { runner, action };
    let row = load(runner, action.instance_id).await?;
    if row.deleted_at.is_some() {
        anyhow::bail!("the instance was deleted");
    }
    let actor = progress.actor();
    let id: uuid::Uuid = row.id.into();
    let result = match action.kind {
        ActionKind::Provision => {
            set_status(runner, row.id, InstanceStatus::Provisioning, None, actor).await?;
            return provision::provision(runner, &progress, row).await;
        }
        ActionKind::Start | ActionKind::Recover => {
            let driver = driver_of(runner, &row).await?;
            set_status(runner, row.id, InstanceStatus::Starting, None, actor).await?;
            progress.step(1, "Starting the VM").await?;
            driver.start(id).await.map_err(Into::into)
        }
        ActionKind::Stop => {
            let driver = driver_of(runner, &row).await?;
            set_status(runner, row.id, InstanceStatus::Stopping, None, actor).await?;
            progress.step(1, "Asking the guest to power off").await?;
            driver
                .stop(id, runner.settings.stop_timeout)
                .await
                .map(drop)
                .map_err(Into::into)
        }
        ActionKind::ForceStop => {
            let driver = driver_of(runner, &row).await?;
            progress.step(1, "Cutting the power").await?;
            driver.force_stop(id).await.map_err(Into::into)
        }
        ActionKind::Reboot => {
            let driver = driver_of(runner, &row).await?;
            set_status(runner, row.id, InstanceStatus::Rebooting, None, actor).await?;
            progress.step(1, "Resetting the VM").await?;
            driver.reboot(id).await.map_err(Into::into)
        }
        ActionKind::Resize => resize(runner, &progress, &row).await,
        ActionKind::Rebuild => rebuild(runner, &progress, &row).await,
        ActionKind::SnapshotCreate | ActionKind::SnapshotRestore | ActionKind::SnapshotDelete => {
            snapshot(runner, &progress, &row).await
        }
        ActionKind::Delete => return delete(runner, &progress, &row).await,
        ActionKind::Suspend => return suspend(runner, &progress, &row).await,
        ActionKind::Unsuspend => {
            if row.status != InstanceStatus::Suspended {
                // Lifted already, or never applied: nothing to start.
                return Ok(());
            }
            let driver = driver_of(runner, &row).await?;
            set_status(runner, row.id, InstanceStatus::Starting, None, actor).await?;
            progress.step(1, "Starting the VM").await?;
            driver.start(id).await.map_err(Into::into)
        }
    };
    settle(runner, &row, actor).await?;
    result
}

/// After an action, succeeded or not, the instance shows what its VM is
/// actually doing.
async fn settle(
    runner: &Runner,
    row: &instance::Model,
    actor: Option<UserId>,
) -> anyhow::Result<()> {
    let driver = driver_of(runner, row).await?;
    let (status, reason) = match driver.status(row.id.into()).await {
        Ok(VmStatus::Running | VmStatus::Paused) => (InstanceStatus::Running, None),
        Ok(VmStatus::Stopped) => (InstanceStatus::Stopped, None),
        Ok(other) => (InstanceStatus::Error, Some(format!("The VM is {other}."))),
        Err(err) => (
            InstanceStatus::Error,
            Some(format!("The node did not say what the VM is doing: {err}")),
        ),
    };
    set_status(runner, row.id, status, reason, actor).await?;
    Ok(())
}

/// Stops the VM for an offline operation if it runs, and says whether to
/// start it again afterwards.
async fn stop_for(
    runner: &Runner,
    driver: &dyn Driver,
    row: &instance::Model,
) -> anyhow::Result<bool> {
    let was_running = driver.status(row.id.into()).await? == VmStatus::Running;
    if was_running {
        set_status(runner, row.id, InstanceStatus::Stopping, None, None).await?;
        driver
            .stop(row.id.into(), runner.settings.stop_timeout)
            .await?;
    }
    Ok(was_running)
}

async fn resize(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    let plan_id: ProductId = serde_json::from_value(progress.action.params["plan_id"].clone())?;
    let plan = product::Entity::find_by_id(plan_id)
        .one(runner.services.db.writer())
        .await?
        .context("the plan was deleted")?;
    let driver = driver_of(runner, row).await?;
    progress.step(1, "Checking room on the node").await?;
    super::reserve_growth(runner, row, &plan).await?;
    progress.step(2, "Stopping the VM").await?;
    let was_running = stop_for(runner, driver.as_ref(), row).await?;
    progress.step(3, "Changing CPUs and memory").await?;
    driver
        .resize(
            row.id.into(),
            u32::try_from(plan.vcpus)?,
            u64::try_from(plan.memory_mib)?,
        )
        .await?;
    progress.step(4, "Growing the disk").await?;
    driver
        .grow_disk(row.id.into(), u64::try_from(plan.disk_gib)?)
        .await?;
    progress.step(5, "Starting the VM").await?;
    if was_running {
        driver.start(row.id.into()).await?;
    }
    Ok(())
}

async fn rebuild(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    let image_id: ImageId = serde_json::from_value(progress.action.params["image_id"].clone())?;
    let image = image::Entity::find_by_id(image_id)
        .one(runner.services.db.writer())
        .await?
        .context("the image was deleted")?;
    let node = node_of(runner, row).await?;
    let driver = runner.services.drivers.for_node(&node).await?;
    let attachment = provision::attach(runner, row, &node).await?;
    progress.step(1, "Removing the old disk").await?;
    driver.destroy(row.id.into()).await?;
    let mut active = row.clone().into_active_model();
    active.image_id = Set(image.id);
    let row = active.update(runner.services.db.writer()).await?;
    progress.step(2, "Creating the new disk and seed").await?;
    // A new instance-id makes cloud-init run its first-boot steps again.
    let spec = provision::spec_for(&row, &image, &attachment, progress.action.id.to_string())?;
    driver.define(&spec).await?;
    progress.step(3, "Starting the VM").await?;
    driver.start(spec.id).await?;
    progress.step(4, "Waiting for the guest to boot").await?;
    provision::wait_for_guest(runner, driver.as_ref(), &row, &attachment).await
}

async fn snapshot(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    let name = progress.action.params["name"]
        .as_str()
        .context("the action has no snapshot name")?
        .to_owned();
    let driver = driver_of(runner, row).await?;
    progress.step(1, "Stopping the VM").await?;
    let was_running = stop_for(runner, driver.as_ref(), row).await?;
    let id = row.id.into();
    let done = match progress.action.kind {
        ActionKind::SnapshotCreate => {
            progress.step(2, "Taking the snapshot").await?;
            driver.snapshot_create(id, &name).await.map(drop)
        }
        ActionKind::SnapshotRestore => {
            progress.step(2, "Restoring the snapshot").await?;
            driver.snapshot_revert(id, &name).await
        }
        _ => {
            progress.step(2, "Deleting the snapshot").await?;
            driver.snapshot_delete(id, &name).await
        }
    };
    progress.step(3, "Starting the VM").await?;
    if was_running {
        driver.start(id).await?;
    }
    Ok(done?)
}

/// Stops the VM (the guest is asked, then cut off after the stop timeout)
/// and leaves the instance `suspended`, which its owner cannot start. The
/// reason, from the action's parameters, is shown to the owner.
async fn suspend(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    let reason = progress.action.params["reason"]
        .as_str()
        .unwrap_or("Suspended by the platform.")
        .to_owned();
    let driver = driver_of(runner, row).await?;
    progress.step(1, "Stopping the VM").await?;
    let id = row.id.into();
    let running = match driver.status(id).await {
        Ok(status) => matches!(status, VmStatus::Running | VmStatus::Paused),
        // No VM (a failed provisioning): nothing runs to stop.
        Err(vmcloud_hypervisor::Error::NotFound(_)) => false,
        Err(err) => return Err(err.into()),
    };
    if running {
        set_status(
            runner,
            row.id,
            InstanceStatus::Stopping,
            None,
            progress.actor(),
        )
        .await?;
        driver.stop(id, runner.settings.stop_timeout).await?;
    }
    set_status(
        runner,
        row.id,
        InstanceStatus::Suspended,
        Some(reason),
        progress.actor(),
    )
    .await?;
    Ok(())
}

async fn delete(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    set_status(
        runner,
        row.id,
        InstanceStatus::Deleting,
        None,
        progress.actor(),
    )
    .await?;
    progress.step(1, "Destroying the VM and its disks").await?;
    provision::undo(runner, row).await?;
    progress.step(2, "Releasing the port or address").await?;
    set_status(
        runner,
        row.id,
        InstanceStatus::Deleted,
        None,
        progress.actor(),
    )
    .await?;
    Ok(())
}
