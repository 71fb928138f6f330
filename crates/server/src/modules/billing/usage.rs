//! Usage accrual: turns each subscription's segments into one ledger charge
//! per (subscription, hour), and the customer's view of this month's usage.
//!
//! A charge is booked only once its hour can no longer change: when the
//! hour is over, or when the subscription ended during it. Each charge
//! carries the idempotency key `usage:{subscription}:{hour}`, unique in the
//! ledger, so a run retried after a crash or racing another run cannot book
//! an hour twice. The subscription's `accrued_until` cursor and what it was
//! charged in the cursor's month (`accrued_month_minor`, for the cap) move in
//! the same transaction, so a run reads neither the ledger nor hours it has
//! done. Subscriptions go by batches of [`BATCH`], one transaction each: a
//! run killed between two batches leaves whole batches behind it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
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

/// Subscriptions charged per write transaction: few enough that a batch's
/// locks are brief and its statements stay within SQLite's parameter limit,
/// many enough that 100k subscriptions cost a few hundred round trips.
const BATCH: usize = 500;
/// Ledger rows per INSERT (15 parameters each).
const ROWS_PER_INSERT: usize = 1_000;

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
        // Every run takes the batches, and locks their rows, in the same
        // order: two runs queue behind each other and never deadlock.
        .order_by_asc(subscription::Column::Id)
        .into_tuple::<SubscriptionId>()
        .all(services.db.writer())
        .await?;
    let mut run = AccrualRun {
        subscriptions: due.len(),
        charges: 0,
    };
    for batch in due.chunks(BATCH) {
        run.charges += accrue_batch(services, policy.charge_stopped_instances, batch, now).await?;
    }
    Ok(run)
}

/// What a run charges one subscription, and where its cursor moves.
struct Accrual {
    subscription: subscription::Model,
    charges: Vec<HourCharge>,
    until: DateTime<Utc>,
    /// Charged in `until`'s month before `until`.
    month_minor: i64,
}

/// Charges a batch of subscriptions' finished hours, in one transaction.
async fn accrue_batch(
    services: &Services,
    charge_stopped: bool,
    ids: &[SubscriptionId],
    now: DateTime<Utc>,
) -> Result<u64> {
    let txn = services.db.begin_write().await?;
    // Runs racing on PostgreSQL queue here, and the later one finds the
    // cursors moved (SQLite's write transaction already serialises them).
    let subs = subscription::Entity::find()
        .filter(subscription::Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(subscription::Column::Id)
        .lock_exclusive()
        .all(&txn)
        .await?;
    let mut segments = subscriptions::segments_of(&txn, ids).await?;
    let mut accruals = Vec::with_capacity(subs.len());
    for sub in subs {
        let Some(segments) = segments.remove(&sub.id) else {
            continue;
        };
        if let Some(accrual) = accrual(&txn, sub, &segments, charge_stopped, now).await? {
            accruals.push(accrual);
        }
    }
    let booked = book(&txn, &accruals).await?;
    move_cursors(&txn, &accruals).await?;
    txn.commit().await?;
    Ok(booked)
}

/// The hours of `sub` that are over and not yet charged, priced.
async fn accrual<C: sea_orm::ConnectionTrait>(
    conn: &C,
    sub: subscription::Model,
    segments: &[hours::Segment],
    charge_stopped: bool,
    now: DateTime<Utc>,
) -> Result<Option<Accrual>> {
    let Some(first) = segments.first() else {
        return Ok(None);
    };
    let from = sub
        .accrued_until
        .unwrap_or_else(|| hour_floor(first.started_at));
    let until = match sub.cancelled_at {
        Some(end) => hour_ceil(end),
        None => hour_floor(now),
    };
    if from >= until {
        return Ok(None);
    }
    let charged_in_month = match (sub.accrued_until, sub.accrued_month_minor, sub.instance_id) {
        (Some(_), Some(known), _) => known,
        // No cursor yet, or one older than the running total: the ledger
        // knows.
        (_, _, Some(instance)) => charged_between(conn, instance, month_start(from), from).await?,
        (_, _, None) => 0,
    };
    let charges = hours::charges(segments, charge_stopped, from, until, charged_in_month);
    let month = month_start(until);
    let in_month: i64 = charges
        .iter()
        .filter(|c| c.hour >= month)
        .map(|c| c.amount_minor)
        .sum();
    let month_minor = if month == month_start(from) {
        charged_in_month + in_month
    } else {
        in_month
    };
    Ok(Some(Accrual {
        subscription: sub,
        charges,
        until,
        month_minor,
    }))
}

/// Moves the batch's cursors and running totals, in one statement.
async fn move_cursors<C: sea_orm::ConnectionTrait>(conn: &C, accruals: &[Accrual]) -> Result<()> {
    if accruals.is_empty() {
        return Ok(());
    }
    let mut until = CaseStatement::new();
    let mut month = CaseStatement::new();
    for accrual in accruals {
        let this = subscription::Column::Id.eq(accrual.subscription.id);
        until = until.case(this.clone(), Expr::val(accrual.until));
        month = month.case(this, Expr::val(accrual.month_minor));
    }
    subscription::Entity::update_many()
        .col_expr(subscription::Column::AccruedUntil, until.into())
        .col_expr(subscription::Column::AccruedMonthMinor, month.into())
        .col_expr(
            subscription::Column::UpdatedAt,
            Expr::val(crate::db::entities::now()),
        )
        .filter(subscription::Column::Id.is_in(accruals.iter().map(|a| a.subscription.id)))
        .exec(conn)
        .await?;
    Ok(())
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

/// Writes the batch's charges; an hour already in the ledger is left as it
/// is.
async fn book<C: sea_orm::ConnectionTrait>(conn: &C, accruals: &[Accrual]) -> Result<u64> {
    let charged = || accruals.iter().filter(|a| !a.charges.is_empty());
    if charged().next().is_none() {
        return Ok(0);
    }
    let plans: HashMap<ProductId, String> = product::Entity::find()
        .filter(
            product::Column::Id.is_in(
                charged()
                    .flat_map(|a| a.charges.iter().map(|c| c.product_id))
                    .collect::<HashSet<_>>(),
            ),
        )
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let instance_names: HashMap<InstanceId, String> = instance::Entity::find()
        .select_only()
        .column(instance::Column::Id)
        .column(instance::Column::Name)
        .filter(instance::Column::Id.is_in(charged().filter_map(|a| a.subscription.instance_id)))
        .into_tuple()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let (plans, stamp) = (&plans, crate::db::entities::now());
    let rows: Vec<_> = charged()
        .flat_map(|accrual| {
            let sub = &accrual.subscription;
            let instance_name = sub
                .instance_id
                .and_then(|id| instance_names.get(&id))
                .map_or("Deleted instance", String::as_str);
            accrual.charges.iter().map(move |charge| {
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
                        "{instance_name} ({plan}), {} UTC",
                        charge.hour.format("%Y-%m-%d %H:00"),
                    )),
                    created_by: Set(None),
                    created_at: Set(stamp),
                    updated_at: Set(stamp),
                }
            })
        })
        .collect();
    let mut booked = 0;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let inserted = transaction::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing_on([transaction::Column::IdempotencyKey])
            .exec_without_returning(conn)
            .await?;
        if let sea_orm::TryInsertResult::Inserted(rows) = inserted {
            booked += rows;
        }
    }
    Ok(booked)
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
    let ids: Vec<_> = subs.iter().map(|s| s.id).collect();
    let mut segments_of = subscriptions::segments_of(conn, &ids).await?;
    let mut instances = Vec::with_capacity(subs.len());
    for sub in subs {
        let segments = segments_of.remove(&sub.id).unwrap_or_default();
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
