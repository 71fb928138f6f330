//! The ledger: every money movement of an account is one row of
//! `transactions`, never edited nor deleted. A balance is the sum of the
//! account's rows, per currency; corrections are new rows.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};

use super::Services;
use super::policy;
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::user;
use crate::error::{Error, FieldError, Result};
use crate::ids::{InstanceId, InvoiceId, TransactionId, UserId};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

/// Longest reason an admin may give for an adjustment.
const MAX_REASON_CHARS: usize = 500;
/// Largest single adjustment, in minor units (ten million units of the
/// currency): a typo's extra zeros are refused, not booked.
const MAX_ADJUSTMENT_MINOR: i64 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub currency: String,
    /// Minor units; negative when the account owes.
    pub amount_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TransactionView {
    pub id: TransactionId,
    pub user_id: UserId,
    pub kind: TransactionKind,
    /// Minor units; positive credits the account, negative debits it.
    pub amount_minor: i64,
    pub currency: String,
    pub description: String,
    pub instance_id: Option<InstanceId>,
    pub invoice_id: Option<InvoiceId>,
    /// The hour a usage charge is for.
    pub usage_hour: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<transaction::Model> for TransactionView {
    fn from(row: transaction::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            kind: row.kind,
            amount_minor: row.amount_minor,
            currency: row.currency,
            description: row.description,
            instance_id: row.instance_id,
            invoice_id: row.invoice_id,
            usage_hour: row.usage_hour,
            created_at: row.created_at,
        }
    }
}

/// An admin's correction of an account's balance.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct CreditAdjustment {
    /// Minor units; positive credits the account, negative debits it.
    pub amount_minor: i64,
    /// ISO 4217 code among the platform's currencies.
    pub currency: String,
    /// Why: shown to the customer on their transactions, and audited.
    pub reason: String,
}

/// Filters of the customer's transaction list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KindFilter {
    pub kind: Option<TransactionKind>,
}

/// Filters of the staff transaction list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransactionFilter {
    /// One customer's transactions.
    pub user_id: Option<UserId>,
    pub kind: Option<TransactionKind>,
}

/// The balance of each currency the account ever moved money in.
pub async fn balances<C: ConnectionTrait>(conn: &C, user: UserId) -> Result<Vec<Balance>> {
    let rows: Vec<(String, i64)> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::Currency)
        // SUM of a bigint is a numeric on PostgreSQL: bring it back.
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT)"),
            "amount_minor",
        )
        .filter(transaction::Column::UserId.eq(user))
        .group_by(transaction::Column::Currency)
        .order_by_asc(transaction::Column::Currency)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(currency, amount_minor)| Balance {
            currency,
            amount_minor,
        })
        .collect())
}

/// The actor's balances, with a zero in the default currency for an account
/// that never moved money.
pub async fn my_balances(services: &Services, actor: &Actor) -> Result<Vec<Balance>> {
    let mut found = balances(services.db.reader(), actor.user_id).await?;
    if found.is_empty() {
        let policy = policy::get(&services.db, &services.cache).await?;
        found.push(Balance {
            currency: policy.currencies[0].clone(),
            amount_minor: 0,
        });
    }
    Ok(found)
}

/// The actor's own transactions, newest first.
pub async fn list_own(
    services: &Services,
    actor: &Actor,
    kind: Option<TransactionKind>,
    page: PageRequest,
) -> Result<Page<TransactionView>> {
    let filter = TransactionFilter {
        user_id: Some(actor.user_id),
        kind,
    };
    page_of(services, filter, page).await
}

/// Every account's transactions, newest first, for staff.
pub async fn list_all(
    services: &Services,
    actor: &Actor,
    filter: TransactionFilter,
    page: PageRequest,
) -> Result<Page<TransactionView>> {
    actor.require_staff()?;
    page_of(services, filter, page).await
}

async fn page_of(
    services: &Services,
    filter: TransactionFilter,
    page: PageRequest,
) -> Result<Page<TransactionView>> {
    let mut select = transaction::Entity::find();
    if let Some(user) = filter.user_id {
        select = select.filter(transaction::Column::UserId.eq(user));
    }
    if let Some(kind) = filter.kind {
        select = select.filter(transaction::Column::Kind.eq(kind));
    }
    let page = fetch_page(
        services.db.reader(),
        select,
        transaction::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?;
    Ok(page.map(TransactionView::from))
}

/// Books an admin's credit adjustment on `user`'s account. The reason is
/// mandatory; the handler audits the adjustment.
pub async fn adjust(
    services: &Services,
    actor: &Actor,
    user: UserId,
    adjustment: CreditAdjustment,
) -> Result<TransactionView> {
    actor.require_admin()?;
    let policy = policy::get(&services.db, &services.cache).await?;
    let mut fields = Vec::new();
    if adjustment.amount_minor == 0 || adjustment.amount_minor.abs() > MAX_ADJUSTMENT_MINOR {
        fields.push(FieldError::new(
            "amount_minor",
            format!("must be non-zero and at most {MAX_ADJUSTMENT_MINOR} either way"),
        ));
    }
    fields.extend(policy.check_currency("currency", &adjustment.currency));
    let reason = adjustment.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        fields.push(FieldError::new(
            "reason",
            format!("is required, at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Error::check_fields(fields)?;
    let account = user::Entity::find_by_id(user)
        .one(services.db.writer())
        .await?
        .filter(|u| u.status != user::UserStatus::Deleted)
        .ok_or_else(|| Error::not_found("Account"))?;
    let row = transaction::ActiveModel {
        user_id: Set(account.id),
        kind: Set(TransactionKind::CreditAdjustment),
        amount_minor: Set(adjustment.amount_minor),
        currency: Set(adjustment.currency),
        invoice_id: Set(None),
        instance_id: Set(None),
        provider: Set(None),
        provider_ref: Set(None),
        idempotency_key: Set(None),
        usage_hour: Set(None),
        description: Set(reason.to_owned()),
        created_by: Set(Some(actor.user_id)),
        ..Default::default()
    }
    .insert(services.db.writer())
    .await?;
    super::credit_arrived(services, account.id).await?;
    Ok(row.into())
}
