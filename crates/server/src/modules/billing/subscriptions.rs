//! One subscription per instance: opened in the order's transaction, moved
//! to a new usage segment when the instance is resized, stopped or started,
//! and cancelled when it is deleted.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};

use super::hours::{Segment, next_month_start};
use crate::db::Database;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::subscription::{self, SubscriptionStatus};
use crate::db::entities::{product, usage_segment};
use crate::error::Result;
use crate::ids::SubscriptionId;

/// Opens the subscription of a new instance, in the transaction that writes
/// the instance, with its first usage segment.
pub async fn open<C: ConnectionTrait>(
    conn: &C,
    row: &instance::Model,
    plan: &product::Model,
    now: DateTime<Utc>,
) -> Result<subscription::Model> {
    let subscription = subscription::ActiveModel {
        user_id: Set(row.user_id),
        instance_id: Set(Some(row.id)),
        product_id: Set(plan.id),
        status: Set(SubscriptionStatus::Active),
        current_period_start: Set(now),
        current_period_end: Set(next_month_start(now)),
        cancelled_at: Set(None),
        accrued_until: Set(None),
        accrued_month_minor: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    start_segment(conn, &subscription, plan, is_running(row), now).await?;
    Ok(subscription)
}

/// Whether the instance counts as running for billing: everything but
/// `stopped` (and `suspended`, which the platform stopped).
fn is_running(row: &instance::Model) -> bool {
    !matches!(
        row.status,
        InstanceStatus::Stopped | InstanceStatus::Suspended
    )
}

async fn start_segment<C: ConnectionTrait>(
    conn: &C,
    subscription: &subscription::Model,
    plan: &product::Model,
    running: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    usage_segment::ActiveModel {
        subscription_id: Set(subscription.id),
        product_id: Set(plan.id),
        running: Set(running),
        hourly_minor: Set(plan.price_hourly_minor),
        monthly_minor: Set(plan.price_monthly_minor),
        currency: Set(plan.currency.clone()),
        started_at: Set(at),
        ended_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Ends the open segment at `at`; `false` when another change ended it
/// first (two changes racing: the other one wins and this one stops).
async fn end_segment<C: ConnectionTrait>(
    conn: &C,
    segment: &usage_segment::Model,
    at: DateTime<Utc>,
) -> Result<bool> {
    let ended = usage_segment::Entity::update_many()
        .col_expr(usage_segment::Column::EndedAt, Expr::value(Some(at)))
        .col_expr(
            usage_segment::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        )
        .filter(usage_segment::Column::Id.eq(segment.id))
        .filter(usage_segment::Column::EndedAt.is_null())
        .exec(conn)
        .await?;
    Ok(ended.rows_affected == 1)
}

/// Brings the instance's subscription in line with the instance: a new
/// segment when its plan or power state changed, the end of it when it was
/// deleted. Idempotent: nothing happens when they already agree. An
/// instance without a subscription (ordered before billing existed) gets
/// one from now on.
pub async fn track(db: &Database, row: &instance::Model, now: DateTime<Utc>) -> Result<()> {
    let txn = db.begin_write().await?;
    let deleted = row.deleted_at.is_some() || row.status == InstanceStatus::Deleted;
    let found = subscription::Entity::find()
        .filter(subscription::Column::InstanceId.eq(row.id))
        .one(&txn)
        .await?;
    let plan = product::Entity::find_by_id(row.product_id)
        .one(&txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the instance's plan {} is gone", row.product_id))?;
    let Some(subscription) = found else {
        if !deleted {
            open(&txn, row, &plan, now).await?;
        }
        return Ok(txn.commit().await?);
    };
    if subscription.status == SubscriptionStatus::Cancelled {
        return Ok(());
    }
    let open_segment = usage_segment::Entity::find()
        .filter(usage_segment::Column::SubscriptionId.eq(subscription.id))
        .filter(usage_segment::Column::EndedAt.is_null())
        .one(&txn)
        .await?;
    if deleted {
        if let Some(segment) = &open_segment
            && !end_segment(&txn, segment, now).await?
        {
            return Ok(());
        }
        let mut active = subscription.into_active_model();
        active.status = Set(SubscriptionStatus::Cancelled);
        active.cancelled_at = Set(Some(now));
        active.update(&txn).await?;
        return Ok(txn.commit().await?);
    }
    let running = is_running(row);
    match &open_segment {
        Some(segment) if segment.product_id == plan.id && segment.running == running => {
            return Ok(());
        }
        Some(segment) => {
            if !end_segment(&txn, segment, now).await? {
                return Ok(());
            }
            if segment.product_id == plan.id {
                // Same plan, new power state: the price stays the one the
                // instance was ordered (or resized) at.
                usage_segment::ActiveModel {
                    subscription_id: Set(subscription.id),
                    product_id: Set(plan.id),
                    running: Set(running),
                    hourly_minor: Set(segment.hourly_minor),
                    monthly_minor: Set(segment.monthly_minor),
                    currency: Set(segment.currency.clone()),
                    started_at: Set(now),
                    ended_at: Set(None),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
            } else {
                start_segment(&txn, &subscription, &plan, running, now).await?;
            }
        }
        None => start_segment(&txn, &subscription, &plan, running, now).await?,
    }
    if subscription.product_id != plan.id {
        let mut active = subscription.into_active_model();
        active.product_id = Set(plan.id);
        active.update(&txn).await?;
    }
    Ok(txn.commit().await?)
}

/// The segments of each of `subscriptions`, oldest first; one without
/// segments is absent.
pub async fn segments_of<C: ConnectionTrait>(
    conn: &C,
    subscriptions: &[SubscriptionId],
) -> Result<HashMap<SubscriptionId, Vec<Segment>>> {
    let mut by_subscription: HashMap<SubscriptionId, Vec<Segment>> = HashMap::new();
    let rows = usage_segment::Entity::find()
        .filter(usage_segment::Column::SubscriptionId.is_in(subscriptions.iter().copied()))
        .order_by_asc(usage_segment::Column::SubscriptionId)
        .order_by_asc(usage_segment::Column::StartedAt)
        .all(conn)
        .await?;
    for s in rows {
        by_subscription
            .entry(s.subscription_id)
            .or_default()
            .push(Segment {
                product_id: s.product_id,
                running: s.running,
                hourly_minor: s.hourly_minor,
                monthly_minor: s.monthly_minor,
                currency: s.currency,
                started_at: s.started_at,
                ended_at: s.ended_at,
            });
    }
    Ok(by_subscription)
}
