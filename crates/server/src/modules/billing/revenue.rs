//! Revenue figures for the admin dashboard, in integer minor units per
//! currency: monthly recurring revenue, what came in, churn and ARPU.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike as _, Duration, Utc};
use sea_orm::{ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _};
use serde::Serialize;

use super::hours::month_start;
use crate::db::Database;
use crate::db::entities::invoice::{self, InvoiceStatus};
use crate::db::entities::product;
use crate::db::entities::subscription::{self, SubscriptionStatus};
use crate::db::entities::transaction::{self, TransactionKind};
use crate::error::Result;
use crate::modules::auth::Actor;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MonthRevenue {
    /// `YYYY-MM`, the month the invoices cover.
    pub month: String,
    pub currency: String,
    /// Paid invoices' totals.
    pub amount_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Revenue {
    /// The monthly prices of the subscriptions that are billed now (active
    /// or past due), per currency.
    pub mrr_minor: BTreeMap<String, i64>,
    /// Money received this calendar month (card and manual payments,
    /// top-ups), per currency.
    pub received_this_month_minor: BTreeMap<String, i64>,
    /// Paid invoices per month, the last 12 months, oldest first.
    pub by_month: Vec<MonthRevenue>,
    /// Subscriptions cancelled during the last 30 days over those running
    /// 30 days ago, in hundredths of a percent.
    pub churn_rate_basis_points: i64,
    /// MRR per paying account, per currency.
    pub arpu_minor: BTreeMap<String, i64>,
}

/// The figures at `now`. Staff only.
pub async fn figures(db: &Database, actor: &Actor, now: DateTime<Utc>) -> Result<Revenue> {
    actor.require_staff()?;
    let conn = db.reader();
    let billed = subscription::Entity::find()
        .find_also_related(product::Entity)
        .filter(
            subscription::Column::Status
                .is_in([SubscriptionStatus::Active, SubscriptionStatus::PastDue]),
        )
        .all(conn)
        .await?;
    let mut mrr_minor: BTreeMap<String, i64> = BTreeMap::new();
    let mut payers: BTreeMap<String, BTreeSet<_>> = BTreeMap::new();
    for (subscription, product) in billed {
        let Some(product) = product else { continue };
        *mrr_minor.entry(product.currency.clone()).or_default() += product.price_monthly_minor;
        payers
            .entry(product.currency)
            .or_default()
            .insert(subscription.user_id);
    }
    let arpu_minor = mrr_minor
        .iter()
        .map(|(currency, mrr)| {
            let accounts = payers.get(currency).map_or(1, BTreeSet::len).max(1);
            (
                currency.clone(),
                mrr / i64::try_from(accounts).unwrap_or(i64::MAX),
            )
        })
        .collect();

    let mut received_this_month_minor = BTreeMap::new();
    for row in transaction::Entity::find()
        .filter(transaction::Column::Kind.is_in([TransactionKind::Payment, TransactionKind::TopUp]))
        .filter(transaction::Column::CreatedAt.gte(month_start(now)))
        .all(conn)
        .await?
    {
        *received_this_month_minor.entry(row.currency).or_default() += row.amount_minor;
    }

    let since = month_start(month_start(now) - Duration::days(335));
    let mut by_month: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in invoice::Entity::find()
        .filter(invoice::Column::Status.eq(InvoiceStatus::Paid))
        .filter(invoice::Column::PeriodStart.gte(since))
        .all(conn)
        .await?
    {
        let month = format!(
            "{:04}-{:02}",
            row.period_start.year(),
            row.period_start.month()
        );
        *by_month.entry((month, row.currency)).or_default() += row.total_minor;
    }
    let by_month = by_month
        .into_iter()
        .map(|((month, currency), amount_minor)| MonthRevenue {
            month,
            currency,
            amount_minor,
        })
        .collect();

    let window = now - Duration::days(30);
    let running_then = subscription::Entity::find()
        .filter(subscription::Column::CreatedAt.lt(window))
        .filter(
            Condition::any()
                .add(subscription::Column::CancelledAt.is_null())
                .add(subscription::Column::CancelledAt.gte(window)),
        )
        .all(conn)
        .await?;
    let churned = running_then
        .iter()
        .filter(|s| s.cancelled_at.is_some_and(|at| at < now))
        .count();
    let churn_rate_basis_points = if running_then.is_empty() {
        0
    } else {
        i64::try_from(churned * 10_000 / running_then.len()).unwrap_or(0)
    };

    Ok(Revenue {
        mrr_minor,
        received_this_month_minor,
        by_month,
        churn_rate_basis_points,
        arpu_minor,
    })
}
