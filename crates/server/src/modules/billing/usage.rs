//! Usage accrual: turns each subscription's segments into one ledger charge
//! per (subscription, hour), and the customer's view of this month's usage.
//!
//! A charge is booked only once its hour can no longer change: when the
//! hour is over, or when the subscription ended during it. Each charge
//! carries the idempotency key `usage:{subscription}:{hour}`, unique in the
//! ledger, so a run retried after a crash or racing another run cannot book
//! an hour twice; the subscription's `accrued_until` cursor, moved in the
//! same transaction, only spares the next run the work.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QuerySelect as _,
};
use serde::Serialize;

use super::hours::{self, HourCharge, hour_ceil, hour_floor, month_start, next_month_start};
use super::{Services, policy, subscriptions};
use crate::db::entities::subscription::{self, SubscriptionStatus};
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::{instance, product};
use crate::error::Result;
use crate::ids::{InstanceId, ProductId, SubscriptionId, TransactionId};
use crate::modules::auth::Actor;

/// What one accrual run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccrualRun {
    /// Subscriptions looked at.
    pub subscriptions: usize,
    /// Hours charged.
    pub charges: u64,
}

/// Charges every subscription's finished hours up to the clock's now.
pub async fn accrue_all(services: &Services) -> Result<AccrualRun> {
    let now = services.clock.now();
    let policy = policy::get(&services.db, &services.cache).await?;
    let due = subscription::Entity::find()
        .select_only()
        .column(subscription::Column::Id)
        .filter(
            Condition::any()
                .add(subscription::Column::AccruedUntil.is_null())
                .add(
                    Condition::all()
                        .add(subscription::Column::CancelledAt.is_null())
                        .add(subscription::Column::AccruedUntil.lt(hour_floor(now))),
                )
                .add(
                    Expr::col(subscription::Column::AccruedUntil)
                        .lt(Expr::col(subscription::Column::CancelledAt)),
                ),
        )
        .into_tuple::<SubscriptionId>()
        .all(services.db.writer())
        .await?;
    let mut run = AccrualRun {
        subscriptions: due.len(),
        charges: 0,
    };
    for id in due {
        run.charges += accrue(services, policy.charge_stopped_instances, id, now).await?;
    }
    Ok(run)
}

/// Charges one subscription's finished hours, in one transaction.
async fn accrue(
    services: &Services,
    charge_stopped: bool,
    id: SubscriptionId,
    now: DateTime<Utc>,
) -> Result<u64> {
    let txn = services.db.begin_write().await?;
    // Runs racing on PostgreSQL queue here, and the later one finds the
    // cursor moved (SQLite's write transaction already serialises them).
    let Some(sub) = subscription::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        return Ok(0);
    };
    let segments = subscriptions::segments(&txn, &sub).await?;
    let Some(first) = segments.first() else {
        return Ok(0);
    };
    let from = sub
        .accrued_until
        .unwrap_or_else(|| hour_floor(first.started_at));
    let until = match sub.cancelled_at {
        Some(end) => hour_ceil(end),
        None => hour_floor(now),
    };
    if from >= until {
        return Ok(0);
    }
    let charged_in_month = match sub.instance_id {
        Some(instance) => charged_between(&txn, instance, month_start(from), from).await?,
        None => 0,
    };
    let due = hours::charges(&segments, charge_stopped, from, until, charged_in_month);
    let booked = book(&txn, &sub, &due).await?;
    let mut active = sub.into_active_model();
    active.accrued_until = Set(Some(until));
    active.update(&txn).await?;
    txn.commit().await?;
    Ok(booked)
}

/// What an instance was charged for the hours in `[from, until)`.
async fn charged_between<C: sea_orm::ConnectionTrait>(
    conn: &C,
    instance: InstanceId,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<i64> {
    let sum: Option<i64> = transaction::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT)"),
            "charged",
        )
        .filter(transaction::Column::Kind.eq(TransactionKind::Usage))
        .filter(transaction::Column::InstanceId.eq(instance))
        .filter(transaction::Column::UsageHour.gte(from))
        .filter(transaction::Column::UsageHour.lt(until))
        .into_tuple()
        .one(conn)
        .await?;
    // Charges are debits: negative in the ledger.
    Ok(-sum.unwrap_or_default())
}

/// Writes the charges; an hour already in the ledger is left as it is.
async fn book<C: sea_orm::ConnectionTrait>(
    conn: &C,
    sub: &subscription::Model,
    charges: &[HourCharge],
) -> Result<u64> {
    if charges.is_empty() {
        return Ok(0);
    }
    let plans: HashMap<ProductId, String> = product::Entity::find()
        .filter(product::Column::Id.is_in(charges.iter().map(|c| c.product_id)))
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let instance_name = match sub.instance_id {
        Some(id) => instance::Entity::find_by_id(id)
            .one(conn)
            .await?
            .map(|i| i.name),
        None => None,
    };
    let stamp = crate::db::entities::now();
    let rows = charges.iter().map(|charge| {
        let plan = plans.get(&charge.product_id).map_or("", String::as_str);
        transaction::ActiveModel {
            id: Set(TransactionId::new()),
            user_id: Set(sub.user_id),
            kind: Set(TransactionKind::Usage),
            amount_minor: Set(-charge.amount_minor),
            currency: Set(charge.currency.clone()),
            invoice_id: Set(None),
            instance_id: Set(sub.instance_id),
            provider: Set(None),
            provider_ref: Set(None),
            idempotency_key: Set(Some(usage_key(sub.id, charge.hour))),
            usage_hour: Set(Some(charge.hour)),
            description: Set(format!(
                "{} ({plan}), {} UTC",
                instance_name.as_deref().unwrap_or("Deleted instance"),
                charge.hour.format("%Y-%m-%d %H:00"),
            )),
            created_by: Set(None),
            created_at: Set(stamp),
            updated_at: Set(stamp),
        }
    });
    let inserted = transaction::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([transaction::Column::IdempotencyKey])
        .exec_without_returning(conn)
        .await?;
    Ok(match inserted {
        sea_orm::TryInsertResult::Inserted(rows) => rows,
        sea_orm::TryInsertResult::Empty | sea_orm::TryInsertResult::Conflicted => 0,
    })
}

/// Charges the plan's setup fee, if it has one, in the order's
/// transaction. It is booked in the hour of the order so the month's
/// invoice carries it; its key makes it once per instance.
pub async fn charge_setup_fee<C: sea_orm::ConnectionTrait>(
    conn: &C,
    row: &instance::Model,
    plan: &product::Model,
    now: DateTime<Utc>,
) -> Result<()> {
    if plan.setup_fee_minor <= 0 {
        return Ok(());
    }
    let stamp = crate::db::entities::now();
    transaction::Entity::insert_many([transaction::ActiveModel {
        id: Set(TransactionId::new()),
        user_id: Set(row.user_id),
        kind: Set(TransactionKind::SetupFee),
        amount_minor: Set(-plan.setup_fee_minor),
        currency: Set(plan.currency.clone()),
        invoice_id: Set(None),
        instance_id: Set(Some(row.id)),
        provider: Set(None),
        provider_ref: Set(None),
        idempotency_key: Set(Some(format!("setup-fee:{}", row.id))),
        usage_hour: Set(Some(hour_floor(now))),
        description: Set(format!("{} ({}): setup fee", row.name, plan.name)),
        created_by: Set(None),
        created_at: Set(stamp),
        updated_at: Set(stamp),
    }])
    .on_conflict_do_nothing_on([transaction::Column::IdempotencyKey])
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The ledger key of a subscription's charge for `hour`.
pub fn usage_key(subscription: SubscriptionId, hour: DateTime<Utc>) -> String {
    format!("usage:{subscription}:{}", hour.timestamp())
}

/// One instance's usage this month.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstanceUsage {
    pub subscription_id: SubscriptionId,
    /// `None` once the instance is purged.
    pub instance_id: Option<InstanceId>,
    pub plan_id: ProductId,
    pub status: SubscriptionStatus,
    pub currency: String,
    /// Every started hour so far this month, the current one included.
    pub accrued_minor: i64,
    /// What the month will cost if the instance stays as it is.
    pub forecast_minor: i64,
    /// The plan's monthly price, which the month never exceeds.
    pub monthly_cap_minor: i64,
}

/// This month's usage of the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub instances: Vec<InstanceUsage>,
}

pub async fn report(services: &Services, actor: &Actor) -> Result<UsageReport> {
    let now = services.clock.now();
    let (start, end) = (month_start(now), next_month_start(now));
    let policy = policy::get(&services.db, &services.cache).await?;
    let conn = services.db.reader();
    let subs = subscription::Entity::find()
        .filter(subscription::Column::UserId.eq(actor.user_id))
        .filter(
            Condition::any()
                .add(subscription::Column::CancelledAt.is_null())
                .add(subscription::Column::CancelledAt.gte(start)),
        )
        .all(conn)
        .await?;
    let mut instances = Vec::with_capacity(subs.len());
    for sub in subs {
        let segments = subscriptions::segments(conn, &sub).await?;
        let Some(last) = segments.last() else {
            continue;
        };
        let horizon = |limit: DateTime<Utc>| {
            sub.cancelled_at
                .map_or(limit, |cancelled| Ord::min(limit, hour_ceil(cancelled)))
        };
        let sum = |until| -> i64 {
            hours::charges(
                &segments,
                policy.charge_stopped_instances,
                start,
                horizon(until),
                0,
            )
            .iter()
            .map(|c| c.amount_minor)
            .sum()
        };
        instances.push(InstanceUsage {
            subscription_id: sub.id,
            instance_id: sub.instance_id,
            plan_id: last.product_id,
            status: sub.status,
            currency: last.currency.clone(),
            accrued_minor: sum(hour_floor(now) + chrono::Duration::hours(1)),
            forecast_minor: sum(end),
            monthly_cap_minor: last.monthly_minor,
        });
    }
    Ok(UsageReport {
        period_start: start,
        period_end: end,
        instances,
    })
}
