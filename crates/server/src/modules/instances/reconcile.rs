//! The reconciler: at start and on a timer it checks each node's health and
//! compares what the database wants with what the node runs, and repairs
//! the drift it may repair. Between passes, each status change a node
//! reports (a guest powering itself off, a QEMU that died) has the one
//! instance it concerns checked at once.
//!
//! - A VM that should run and whose process died is marked, then started
//!   again or left stopped, as the instance policy says.
//! - A guest that powered itself off is shown as stopped.
//! - A VM the database does not know is reported, never killed: it may be
//!   an operator's, or the database may be the one that is wrong.
//! - An instance whose queue has waiting actions but no holder (its job was
//!   lost) gets its queue kicked again.
//!
//! Instances with an action waiting or running are left to that action.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vmcloud_hypervisor::VmStatus;

use super::queue::{self, Runner};
use super::{actions, events, policy, run};
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::instance_action::{self, ActionKind, ActionStatus};
use crate::db::entities::node::{self, NodeStatus};
use crate::ids::InstanceId;
use crate::modules::events::{self as live, Audience, EventType};

/// Waiting actions older than this with nobody holding their queue were
/// lost (an enqueue that failed after its commit).
const LOST_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

#[derive(Clone, Debug, Default)]
pub struct Reconciler {
    /// Unknown VMs already reported, so each is logged once per process.
    reported: Arc<Mutex<HashSet<Uuid>>>,
}

impl Reconciler {
    /// Runs a pass now, then every `interval`, and checks the instance of
    /// each VM event in between, until `stop`.
    pub async fn run(self, runner: Runner, interval: Duration, stop: CancellationToken) {
        let mut events = runner.services.drivers.events();
        let mut next_pass = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_pass) => {
                    if let Err(err) = self.pass(&runner).await {
                        tracing::warn!(error = format!("{err:#}"), "reconciliation pass failed");
                    }
                    next_pass = tokio::time::Instant::now() + interval;
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Err(err) = check_instance(&runner, event.id).await {
                            tracing::warn!(vm = %event.id, error = format!("{err:#}"), "cannot check the VM's instance");
                        }
                    }
                    // Some changes went unseen: a full pass finds them.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        next_pass = tokio::time::Instant::now();
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// One pass over every node.
    pub async fn pass(&self, runner: &Runner) -> anyhow::Result<()> {
        let db = runner.services.db.writer();
        for node in node::Entity::find().all(db).await? {
            match self.node_pass(runner, &node).await {
                Ok(()) => mark_node(runner, &node, true).await?,
                Err(err) => {
                    tracing::warn!(
                        node = node.name,
                        error = format!("{err:#}"),
                        "node check failed"
                    );
                    mark_node(runner, &node, false).await?;
                }
            }
        }
        kick_lost_queues(runner).await
    }

    async fn node_pass(&self, runner: &Runner, node: &node::Model) -> anyhow::Result<()> {
        let driver = runner.services.drivers.for_node(node).await?;
        let actual: HashMap<Uuid, VmStatus> = driver
            .list()
            .await?
            .into_iter()
            .map(|vm| (vm.id, vm.status))
            .collect();
        let db = runner.services.db.writer();
        let wanted = instance::Entity::find()
            .filter(instance::Column::NodeId.eq(node.id))
            .filter(instance::Column::DeletedAt.is_null())
            .all(db)
            .await?;
        let known: HashSet<Uuid> = wanted.iter().map(|row| row.id.into()).collect();
        self.report_unknown(node, actual.keys().filter(|id| !known.contains(id)));
        let busy = busy_instances(runner, wanted.iter().map(|row| row.id)).await?;
        let policy = policy::get(&runner.services.db, &runner.services.cache).await?;
        for row in wanted.into_iter().filter(|row| !busy.contains(&row.id)) {
            let vm = actual
                .get(&row.id.into())
                .copied()
                .unwrap_or(VmStatus::Missing);
            repair(runner, row, vm, policy.restart_crashed).await?;
        }
        Ok(())
    }

    fn report_unknown<'a>(&self, node: &node::Model, unknown: impl Iterator<Item = &'a Uuid>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        for id in unknown {
            if reported.insert(*id) {
                tracing::warn!(
                    node = node.name,
                    vm = %id,
                    "the node runs a VM no instance owns; it is left alone for an operator to look at"
                );
                metrics::counter!("vmcloud_unknown_vms_total", "node" => node.name.clone())
                    .increment(1);
            }
        }
    }
}

/// Brings the instance of VM `id` in line with it, if it is idle. The event
/// only says that something changed: the VM's state is read again, since
/// the event may be stale by now.
async fn check_instance(runner: &Runner, id: Uuid) -> anyhow::Result<()> {
    let Some(row) = instance::Entity::find_by_id(InstanceId(id))
        .filter(instance::Column::DeletedAt.is_null())
        .one(runner.services.db.writer())
        .await?
    else {
        return Ok(());
    };
    if !busy_instances(runner, [row.id]).await?.is_empty() {
        return Ok(());
    }
    let vm = match run::driver_of(runner, &row).await?.status(id).await {
        Err(vmcloud_hypervisor::Error::NotFound(_)) => VmStatus::Missing,
        status => status?,
    };
    let policy = policy::get(&runner.services.db, &runner.services.cache).await?;
    repair(runner, row, vm, policy.restart_crashed).await
}

/// Instances with an action waiting or running.
async fn busy_instances(
    runner: &Runner,
    ids: impl IntoIterator<Item = InstanceId>,
) -> anyhow::Result<HashSet<InstanceId>> {
    Ok(actions::pending_by_instance(&runner.services.db, ids)
        .await?
        .into_keys()
        .collect())
}

/// Brings one idle instance in line with its VM.
async fn repair(
    runner: &Runner,
    row: instance::Model,
    vm: VmStatus,
    restart_crashed: bool,
) -> anyhow::Result<()> {
    use InstanceStatus as S;
    let (status, reason, recover) = match (row.status, vm) {
        (S::Running, VmStatus::Crashed | VmStatus::Missing) if restart_crashed => (
            S::Error,
            format!("The VM was found {vm}; it is being started again."),
            true,
        ),
        (S::Running, VmStatus::Crashed | VmStatus::Missing) => (
            S::Stopped,
            format!("The VM was found {vm} and was left stopped."),
            false,
        ),
        (S::Running, VmStatus::Stopped) => (
            S::Stopped,
            "The guest powered itself off.".to_owned(),
            false,
        ),
        (S::Stopped, VmStatus::Running) => (
            S::Running,
            "The VM was started outside the platform.".to_owned(),
            false,
        ),
        _ => return Ok(()),
    };
    let from = row.status;
    let txn = runner.services.db.begin_write().await?;
    // Only from the status it was read in: another process's reconciler
    // may have seen the same event and repaired it first.
    let changed = instance::Entity::update_many()
        .col_expr(instance::Column::Status, Expr::value(status))
        .col_expr(instance::Column::StatusReason, Expr::value(&reason))
        .col_expr(
            instance::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        )
        .filter(instance::Column::Id.eq(row.id))
        .filter(instance::Column::Status.eq(from))
        .exec(&txn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(());
    }
    tracing::warn!(instance = %row.id, ?vm, reason, "repairing drift");
    let row = instance::Entity::find_by_id(row.id)
        .one(&txn)
        .await?
        .context("the repaired instance vanished")?;
    if recover {
        actions::insert(
            &txn,
            row.id,
            ActionKind::Recover,
            serde_json::Value::Null,
            None,
        )
        .await?;
    }
    txn.commit().await?;
    events::status_changed(
        &runner.services,
        &row,
        Some(from),
        None,
        "instance.drift_repaired",
    )
    .await?;
    if recover {
        queue::kick(&runner.services.jobs, row.id).await?;
    }
    Ok(())
}

/// Records a node's health: `online` again once it answers, `offline` when
/// it does not. Maintenance and draining are the admins' to change.
async fn mark_node(runner: &Runner, node: &node::Model, answered: bool) -> anyhow::Result<()> {
    let status = match (node.status, answered) {
        (NodeStatus::Offline, true) => NodeStatus::Online,
        (NodeStatus::Online, false) => NodeStatus::Offline,
        (status, _) => status,
    };
    if status != node.status {
        tracing::warn!(node = node.name, from = ?node.status, to = ?status, "node health changed");
    }
    if answered {
        let mut seen = node::ActiveModel {
            id: Set(node.id),
            last_seen_at: Set(Some(crate::db::entities::now())),
            ..Default::default()
        };
        if let Some(accelerator) = runner.services.drivers.accelerator(node.id).await {
            seen.accelerator = Set(Some(accelerator));
        }
        seen.update(runner.services.db.writer()).await?;
    }
    // Only if the status is still the one read: an admin who drained the
    // node during the probe keeps their status.
    let changed = status != node.status
        && node::Entity::update_many()
            .col_expr(node::Column::Status, Expr::value(status))
            .filter(node::Column::Id.eq(node.id))
            .filter(node::Column::Status.eq(node.status))
            .exec(runner.services.db.writer())
            .await?
            .rows_affected
            > 0;
    if changed {
        let event = live::Event::new(
            EventType::NodeStatus,
            node.id,
            serde_json::json!({ "name": node.name, "from": node.status, "to": status }),
        );
        live::publish(&runner.services.cache, vec![Audience::Staff], event).await;
    }
    Ok(())
}

async fn kick_lost_queues(runner: &Runner) -> anyhow::Result<()> {
    let db = runner.services.db.writer();
    let before = crate::db::entities::now() - LOST_AFTER;
    let waiting = instance_action::Entity::find()
        .filter(instance_action::Column::Status.eq(ActionStatus::Pending))
        .filter(instance_action::Column::CreatedAt.lt(before))
        .all(db)
        .await?;
    let instances: HashSet<InstanceId> = waiting.into_iter().map(|a| a.instance_id).collect();
    if instances.is_empty() {
        return Ok(());
    }
    let now = crate::db::entities::now();
    let unheld = instance::Entity::find()
        .filter(instance::Column::Id.is_in(instances))
        .all(db)
        .await?
        .into_iter()
        .filter(|row| row.queue_lease_until.is_none_or(|until| until < now));
    for row in unheld {
        tracing::info!(instance = %row.id, "kicking a queue whose job was lost");
        queue::kick(&runner.services.jobs, row.id).await?;
    }
    Ok(())
}
