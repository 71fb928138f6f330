//! Refunds of payments and top-ups: a Refund row in the ledger debiting
//! what goes back, tied to the payment it comes from so the refunds of a
//! payment never add up to more than was paid.
//!
//! An admin refunds a card payment through the provider and a manual one
//! directly; a refund made in the provider's dashboard arrives as a webhook
//! and is booked for the part not booked yet.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QuerySelect as _,
};
use serde::Deserialize;

use super::Services;
use super::ledger::TransactionView;
use super::payments::ProviderRefund;
use crate::db::entities::payment_refund;
use crate::db::entities::transaction::{self, TransactionKind};
use crate::error::{Error, FieldError, Result};
use crate::ids::TransactionId;
use crate::modules::auth::Actor;

const MAX_REASON_CHARS: usize = 500;

/// Money an admin gives back from a payment or top-up.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct RefundRequest {
    /// The payment or top-up's ledger row.
    pub transaction_id: TransactionId,
    /// Minor units, at most what is left of the payment after its earlier
    /// refunds.
    pub amount_minor: i64,
    /// Why: shown to the customer on their transactions, and audited.
    pub reason: String,
}

/// What the refunds of `payment` add up to, positive.
async fn refunded<C: ConnectionTrait>(conn: &C, payment: TransactionId) -> Result<i64> {
    let sum: Option<i64> = payment_refund::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT)"),
            "refunded",
        )
        .filter(payment_refund::Column::PaymentId.eq(payment))
        .into_tuple()
        .one(conn)
        .await?;
    Ok(sum.unwrap_or(0))
}

/// Books a refund of `amount` from `payment`: its ledger row and its tie.
async fn book<C: ConnectionTrait>(
    conn: &C,
    payment: &transaction::Model,
    amount: i64,
    description: String,
    provider_ref: Option<String>,
    idempotency_key: Option<String>,
    by: Option<&Actor>,
) -> Result<transaction::Model> {
    let row = transaction::ActiveModel {
        user_id: Set(payment.user_id),
        kind: Set(TransactionKind::Refund),
        amount_minor: Set(-amount),
        currency: Set(payment.currency.clone()),
        invoice_id: Set(payment.invoice_id),
        provider: Set(payment.provider.clone()),
        provider_ref: Set(provider_ref),
        idempotency_key: Set(idempotency_key),
        description: Set(description),
        created_by: Set(by.map(|a| a.user_id)),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    payment_refund::ActiveModel {
        transaction_id: Set(row.id),
        payment_id: Set(payment.id),
        amount_minor: Set(amount),
        created_at: Set(row.created_at),
        updated_at: Set(row.created_at),
    }
    .insert(conn)
    .await?;
    Ok(row)
}

/// Refunds part or all of a payment or top-up: through the provider when
/// it took the money (a 503 when it is not configured), else booked
/// directly. More than is left of the payment is a 422. The handler
/// audits it.
///
/// The payment's row stays locked while the provider refunds, so two
/// admins cannot both refund its last euro, and a webhook reporting this
/// refund waits and then finds it booked.
pub async fn refund(
    services: &Services,
    actor: &Actor,
    request: &RefundRequest,
) -> Result<TransactionView> {
    actor.require_admin()?;
    let reason = request.reason.trim();
    let mut fields = Vec::new();
    if request.amount_minor <= 0 {
        fields.push(FieldError::new("amount_minor", "must be positive"));
    }
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        fields.push(FieldError::new(
            "reason",
            format!("is required, at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Error::check_fields(fields)?;
    let txn = services.db.begin_write().await?;
    let payment = transaction::Entity::find_by_id(request.transaction_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .filter(|row| matches!(row.kind, TransactionKind::Payment | TransactionKind::TopUp))
        .ok_or_else(|| Error::invalid_field("transaction_id", "is not a payment or a top-up"))?;
    let already = refunded(&txn, payment.id).await?;
    let left = payment.amount_minor - already;
    if request.amount_minor > left {
        return Err(Error::invalid_field(
            "amount_minor",
            format!("must be at most {left}: what is left of the payment after its refunds"),
        ));
    }
    let description = format!("Refund: {reason}");
    let row = match payment.provider.as_deref() {
        Some(name) if name != "manual" => {
            let provider = services
                .payments
                .as_ref()
                .filter(|p| p.name() == name)
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "The payment provider {name} is not configured on this platform."
                    ))
                })?;
            let payment_ref = payment.provider_ref.clone().ok_or_else(|| {
                Error::Conflict("This payment has no provider reference to refund.".to_owned())
            })?;
            // The same refund asked twice (a retry after a timeout) is made
            // once by the provider.
            let key = format!("refund:{}:{already}:{}", payment.id, request.amount_minor);
            let refund_id = provider
                .refund(&ProviderRefund {
                    payment_ref,
                    amount_minor: request.amount_minor,
                    idempotency_key: key,
                })
                .await?;
            book(
                &txn,
                &payment,
                request.amount_minor,
                description,
                Some(refund_id.clone()),
                Some(format!("{name}-refund:{refund_id}")),
                Some(actor),
            )
            .await?
        }
        _ => {
            book(
                &txn,
                &payment,
                request.amount_minor,
                description,
                None,
                None,
                Some(actor),
            )
            .await?
        }
    };
    txn.commit().await?;
    Ok(row.into())
}

/// A charge the provider reports refunded: `amount_refunded` is the total
/// refunded so far, whoever made the refunds.
#[derive(Debug)]
pub struct RefundedCharge {
    pub payment_ref: String,
    pub amount_refunded: i64,
}

/// Books what the provider refunded of a payment beyond the refunds booked
/// already (made from the dashboard, say); nothing when they match. Keyed
/// by the event, so a replay books nothing more.
pub async fn book_charge_refunded(
    services: &Services,
    provider: &str,
    event: &str,
    charge: RefundedCharge,
) -> Result<()> {
    let txn = services.db.begin_write().await?;
    let Some(payment) = transaction::Entity::find()
        .filter(transaction::Column::Provider.eq(provider))
        .filter(transaction::Column::ProviderRef.eq(&charge.payment_ref))
        .filter(transaction::Column::Kind.is_in([TransactionKind::Payment, TransactionKind::TopUp]))
        .lock_exclusive()
        .one(&txn)
        .await?
    else {
        tracing::warn!(
            event,
            payment = charge.payment_ref,
            "a refund of a payment we never booked"
        );
        return Ok(());
    };
    let missing =
        charge.amount_refunded.min(payment.amount_minor) - refunded(&txn, payment.id).await?;
    let key = format!("{provider}:{event}");
    let replay = transaction::Entity::find()
        .filter(transaction::Column::IdempotencyKey.eq(&key))
        .one(&txn)
        .await?
        .is_some();
    if missing > 0 && !replay {
        book(
            &txn,
            &payment,
            missing,
            "Refund by the payment provider".to_owned(),
            None,
            Some(key),
            None,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(())
}
