//! One queue per instance: its actions run one at a time, oldest first, so
//! two commands for a VM never race, whichever worker or replica runs them.
//!
//! Each queued action kicks a `run_instance_queue` job. The job takes the
//! instance's lease (a conditional UPDATE on the instance row, so only one
//! holder at a time across processes), runs every waiting action, lets go,
//! and looks once more: an action queued while it was letting go is run
//! either by this job or by the job its own kick made. A holder that
//! vanished (a killed worker) loses the lease when it expires; its job is
//! then retried by the job queue and carries on from the action it left.

use std::time::Duration;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QueryOrder as _,
};
use tokio_util::sync::CancellationToken;

use super::Services;
use crate::db::entities::instance;
use crate::db::entities::instance_action::{self, ActionStatus};
use crate::error::Result;
use crate::ids::{InstanceId, JobId};
use crate::jobs::{JobContext, JobQueue, NewJob};

pub const JOB: &str = "run_instance_queue";

/// How long a holder keeps the lease without renewing it.
const LEASE: Duration = Duration::from_secs(60);
const RENEW_EVERY: Duration = Duration::from_secs(15);

/// Asks a worker to run the instance's waiting actions.
pub async fn kick(jobs: &JobQueue, instance: InstanceId) -> Result<()> {
    jobs.enqueue(NewJob::new(
        JOB,
        serde_json::json!({ "instance_id": instance }),
    ))
    .await?;
    Ok(())
}

/// Everything the queue's actions need.
#[derive(Clone, Debug)]
pub struct Runner {
    pub services: Services,
    pub settings: RunSettings,
}

#[derive(Clone, Debug)]
pub struct RunSettings {
    pub ssh_bind: std::net::IpAddr,
    pub ssh_ports: std::ops::RangeInclusive<u16>,
    pub boot_timeout: Duration,
    pub stop_timeout: Duration,
}

/// The `run_instance_queue` job.
pub async fn run_job(
    runner: &Runner,
    ctx: JobContext,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
    let instance: InstanceId = serde_json::from_value(payload["instance_id"].clone())?;
    loop {
        if !acquire(runner, instance, ctx.id).await? {
            // The holder runs our action, or lets go and the retry does.
            if holder_is_alive(runner, instance).await? {
                return Ok(());
            }
            anyhow::bail!("the instance's queue is held by a worker that stopped; retrying");
        }
        let renewing = CancellationToken::new();
        let renewal = tokio::spawn(renew(runner.clone(), instance, ctx.id, renewing.clone()));
        let outcome = drain(runner, instance).await;
        renewing.cancel();
        let _ = renewal.await;
        release(runner, instance, ctx.id).await?;
        outcome?;
        if next_action(runner, instance).await?.is_none() {
            return Ok(());
        }
    }
}

async fn acquire(runner: &Runner, instance: InstanceId, holder: JobId) -> anyhow::Result<bool> {
    let now = crate::db::entities::now();
    let until = now + chrono::TimeDelta::from_std(LEASE)?;
    let taken = instance::Entity::update_many()
        .col_expr(instance::Column::QueueHolder, Expr::value(holder))
        .col_expr(instance::Column::QueueLeaseUntil, Expr::value(until))
        .filter(instance::Column::Id.eq(instance))
        .filter(
            Condition::any()
                .add(instance::Column::QueueHolder.is_null())
                .add(instance::Column::QueueHolder.eq(holder))
                .add(instance::Column::QueueLeaseUntil.lt(now)),
        )
        .exec(runner.services.db.writer())
        .await?;
    Ok(taken.rows_affected == 1)
}

async fn holder_is_alive(runner: &Runner, instance: InstanceId) -> anyhow::Result<bool> {
    let row = instance::Entity::find_by_id(instance)
        .one(runner.services.db.writer())
        .await?;
    let now = crate::db::entities::now();
    Ok(row.is_some_and(|row| row.queue_lease_until.is_some_and(|until| until >= now)))
}

async fn renew(runner: Runner, instance: InstanceId, holder: JobId, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW_EVERY) => {}
        }
        if let Err(err) = acquire(&runner, instance, holder).await {
            tracing::warn!(%instance, error = format!("{err:#}"), "cannot renew the instance queue lease");
        }
    }
}

async fn release(runner: &Runner, instance: InstanceId, holder: JobId) -> anyhow::Result<()> {
    instance::Entity::update_many()
        .col_expr(
            instance::Column::QueueHolder,
            Expr::value(Option::<JobId>::None),
        )
        .col_expr(
            instance::Column::QueueLeaseUntil,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(instance::Column::Id.eq(instance))
        .filter(instance::Column::QueueHolder.eq(holder))
        .exec(runner.services.db.writer())
        .await?;
    Ok(())
}

/// The action to run next: one left running by a holder that vanished, else
/// the oldest waiting.
async fn next_action(
    runner: &Runner,
    instance: InstanceId,
) -> anyhow::Result<Option<instance_action::Model>> {
    Ok(instance_action::Entity::find()
        .filter(instance_action::Column::InstanceId.eq(instance))
        .filter(
            instance_action::Column::Status.is_in([ActionStatus::Running, ActionStatus::Pending]),
        )
        .order_by_desc(instance_action::Column::Status.eq(ActionStatus::Running))
        .order_by_asc(instance_action::Column::Id)
        .one(runner.services.db.writer())
        .await?)
}

async fn drain(runner: &Runner, instance: InstanceId) -> anyhow::Result<()> {
    while let Some(action) = next_action(runner, instance).await? {
        let mut active = action.clone().into_active_model();
        active.status = Set(ActionStatus::Running);
        if action.started_at.is_none() {
            active.started_at = Set(Some(crate::db::entities::now()));
        }
        let action = active.update(runner.services.db.writer()).await?;
        super::events::action_changed(&runner.services, &action).await?;
        let result = super::run::execute(runner, &action).await;
        let mut active = action.into_active_model();
        active.finished_at = Set(Some(crate::db::entities::now()));
        match result {
            Ok(()) => active.status = Set(ActionStatus::Succeeded),
            Err(err) => {
                active.status = Set(ActionStatus::Failed);
                active.error = Set(Some(format!("{err:#}")));
            }
        }
        let action = active.update(runner.services.db.writer()).await?;
        super::events::action_changed(&runner.services, &action).await?;
    }
    Ok(())
}
