//! Card payments through a [`PaymentProvider`]: a customer tops their
//! credit up, or pays an open invoice, on the provider's hosted checkout
//! page; the provider's webhook then books the money (see [`super::stripe`]).
//!
//! The invoice's total was debited at issue (usage hour by hour, the VAT
//! when issued), so a payment credits the account, as a manual one does
//! (see [`invoices::mark_paid`](super::invoices::mark_paid)).

use std::fmt;
use std::sync::Arc;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveEnum as _, ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QuerySelect as _, TryInsertResult,
};
use serde::{Deserialize, Serialize};

use super::{Services, policy};
use crate::db::entities::invoice::{self, InvoiceStatus};
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::{stripe_event, user};
use crate::error::{Error, FieldError, Result};
use crate::ids::{InvoiceId, UserId};
use crate::modules::audit::{self, Event};
use crate::modules::auth::Actor;
use crate::modules::notifications::{self, Notice};

/// Largest single top-up, in minor units (one hundred thousand units of
/// the currency): more is a typo or fraud, and goes through an admin.
pub const MAX_TOP_UP_MINOR: i64 = 10_000_000;

/// What a checkout is for. It travels in the session's metadata, so the
/// webhook books the money where it belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    TopUp,
    Invoice(InvoiceId),
}

/// A hosted payment page to open for `account`.
#[derive(Clone, Debug)]
pub struct CheckoutRequest {
    pub account: UserId,
    pub amount_minor: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// The line the customer sees on the payment page.
    pub description: String,
    pub purpose: Purpose,
    /// Where the customer comes back to after paying, or giving up.
    pub success_url: String,
    pub cancel_url: String,
}

/// The payment page the customer is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Checkout {
    pub checkout_url: String,
    /// The provider's id of the session (`cs_…`).
    pub session_id: String,
}

/// Money to give back from a payment the provider took.
#[derive(Clone, Debug)]
pub struct ProviderRefund {
    /// The provider's id of the payment (Stripe's PaymentIntent).
    pub payment_ref: String,
    pub amount_minor: i64,
    /// The same key asks the provider for the same refund once.
    pub idempotency_key: String,
}

/// A payment provider that takes cards on its own hosted page.
#[async_trait::async_trait]
pub trait PaymentProvider: fmt::Debug + Send + Sync {
    /// The name booked in the ledger's `provider` column.
    fn name(&self) -> &'static str;

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout>;

    /// Refunds part or all of a payment; returns the provider's refund id.
    async fn refund(&self, refund: &ProviderRefund) -> Result<String>;
}

pub type SharedProvider = Arc<dyn PaymentProvider>;

/// A top-up the customer asks for.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct TopUpRequest {
    /// Minor units, at least 1 and at most 10 000 000.
    pub amount_minor: i64,
    /// ISO 4217 code among the platform's currencies.
    pub currency: String,
}

fn provider(services: &Services) -> Result<&SharedProvider> {
    services.payments.as_ref().ok_or_else(|| {
        Error::Unavailable(
            "Card payments are not configured on this platform; ask for a bank transfer."
                .to_owned(),
        )
    })
}

fn return_urls(public_url: &str) -> (String, String) {
    (
        // Stripe fills in `{CHECKOUT_SESSION_ID}` itself.
        format!("{public_url}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"),
        format!("{public_url}/billing?checkout=cancelled"),
    )
}

/// Opens a payment page that credits the actor's account with the amount
/// once paid.
pub async fn top_up(
    services: &Services,
    actor: &Actor,
    request: &TopUpRequest,
    public_url: &str,
) -> Result<Checkout> {
    let provider = provider(services)?;
    let policy = policy::get(&services.db, &services.cache).await?;
    let mut fields = Vec::new();
    if !(1..=MAX_TOP_UP_MINOR).contains(&request.amount_minor) {
        fields.push(FieldError::new(
            "amount_minor",
            format!("must be between 1 and {MAX_TOP_UP_MINOR}"),
        ));
    }
    fields.extend(policy.check_currency("currency", &request.currency));
    Error::check_fields(fields)?;
    let (success_url, cancel_url) = return_urls(public_url);
    provider
        .create_checkout(&CheckoutRequest {
            account: actor.user_id,
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
            description: "Account credit".to_owned(),
            purpose: Purpose::TopUp,
            success_url,
            cancel_url,
        })
        .await
}

/// Opens a payment page for the total of one of the actor's open
/// invoices; another account's invoice is not found, a paid or void one is
/// a 409.
pub async fn pay_invoice(
    services: &Services,
    actor: &Actor,
    id: InvoiceId,
    public_url: &str,
) -> Result<Checkout> {
    let row = invoice::Entity::find_by_id(id)
        .filter(invoice::Column::UserId.eq(actor.user_id))
        .one(services.db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Invoice"))?;
    if row.status != InvoiceStatus::Open || row.total_minor <= 0 {
        return Err(Error::InvalidState {
            message: "Only an open invoice with an amount due can be paid.".to_owned(),
            state: row.status.to_value(),
        });
    }
    let provider = provider(services)?;
    let (success_url, cancel_url) = return_urls(public_url);
    provider
        .create_checkout(&CheckoutRequest {
            account: actor.user_id,
            amount_minor: row.total_minor,
            currency: row.currency.clone(),
            description: format!("Invoice {}", row.number.as_deref().unwrap_or_default()),
            purpose: Purpose::Invoice(row.id),
            success_url,
            cancel_url,
        })
        .await
}

/// A paid checkout, as the webhook reports it.
#[derive(Debug)]
pub struct PaidCheckout {
    pub session_id: String,
    pub account: UserId,
    pub amount_minor: i64,
    pub currency: String,
    /// The provider's payment (Stripe's PaymentIntent), what a refund names.
    pub payment_ref: Option<String>,
    pub invoice: Option<InvoiceId>,
}

/// Books a paid checkout once, however often it is reported: a top-up
/// credits the account (keyed by the event); an invoice's payment credits
/// it and marks the invoice paid (keyed by the invoice). Money that arrives
/// for an invoice settled meanwhile (paid by transfer, voided) is still
/// credited, never dropped. The provider's payment id is unique too, so two
/// events of one payment book it once.
pub async fn book_checkout(
    services: &Services,
    provider: &str,
    event: &str,
    paid: PaidCheckout,
) -> Result<()> {
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    if user::Entity::find_by_id(paid.account)
        .one(&txn)
        .await?
        .is_none()
    {
        tracing::warn!(event, session = paid.session_id, account = %paid.account, "a payment for an unknown account");
        return Ok(());
    }
    let open = match paid.invoice {
        Some(id) => invoice::Entity::find_by_id(id)
            .filter(invoice::Column::UserId.eq(paid.account))
            .lock_exclusive()
            .one(&txn)
            .await?
            .filter(|row| {
                row.status == InvoiceStatus::Open
                    && row.total_minor == paid.amount_minor
                    && row.currency == paid.currency
            }),
        None => None,
    };
    let (kind, key, description) = match (&open, paid.invoice) {
        (Some(row), _) => (
            TransactionKind::Payment,
            format!("invoice-payment:{}", row.id),
            format!(
                "Card payment of invoice {}",
                row.number.as_deref().unwrap_or_default()
            ),
        ),
        (None, Some(_)) => (
            TransactionKind::Payment,
            format!("{provider}:{event}"),
            "Card payment of an invoice settled meanwhile, kept as credit".to_owned(),
        ),
        (None, None) => (
            TransactionKind::TopUp,
            format!("{provider}:{event}"),
            "Top-up by card".to_owned(),
        ),
    };
    let inserted = transaction::Entity::insert(transaction::ActiveModel {
        id: Set(crate::ids::TransactionId::new()),
        user_id: Set(paid.account),
        kind: Set(kind),
        amount_minor: Set(paid.amount_minor),
        currency: Set(paid.currency),
        invoice_id: Set(paid.invoice),
        instance_id: Set(None),
        provider: Set(Some(provider.to_owned())),
        provider_ref: Set(Some(paid.payment_ref.unwrap_or(paid.session_id))),
        idempotency_key: Set(Some(key)),
        usage_hour: Set(None),
        description: Set(description),
        created_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    // Booked already (this event, this invoice's payment or this provider
    // payment): a replay, nothing to do.
    .on_conflict(OnConflict::new().do_nothing().to_owned())
    .try_insert()
    .exec_without_returning(&txn)
    .await?;
    if let (Some(row), true) = (open, inserted_one(&inserted)) {
        let mut active: invoice::ActiveModel = row.into();
        active.status = Set(InvoiceStatus::Paid);
        active.paid_at = Set(Some(now));
        active.update(&txn).await?;
    }
    txn.commit().await?;
    // Credit settles other open invoices and may end a dunning case; run
    // on every delivery, so a crash before this point heals on the retry.
    super::credit_arrived(services, paid.account).await
}

pub(super) fn inserted_one(result: &TryInsertResult<u64>) -> bool {
    matches!(result, TryInsertResult::Inserted(rows) if *rows > 0)
}

/// A card payment that failed, as the webhook reports it.
#[derive(Debug)]
pub struct FailedPayment {
    pub payment_ref: String,
    pub account: Option<UserId>,
    pub amount_minor: i64,
    pub currency: String,
    pub invoice: Option<InvoiceId>,
    /// The provider's reason, for the customer.
    pub reason: Option<String>,
}

/// Records a failed card payment once per event: counted in
/// `vmcloud_payment_failures_total`, audited, and the customer is notified
/// (in the app and by email) so they can try again.
pub async fn payment_failed(
    services: &Services,
    event: &str,
    kind: &str,
    failed: FailedPayment,
) -> Result<()> {
    if !claim_event(services.db.writer(), event, kind).await? {
        return Ok(());
    }
    metrics::counter!("vmcloud_payment_failures_total", "currency" => failed.currency.clone())
        .increment(1);
    let account = match failed.account {
        Some(id) => {
            user::Entity::find_by_id(id)
                .one(services.db.writer())
                .await?
        }
        None => None,
    };
    let mut audited =
        Event::new(crate::modules::monitoring::PAYMENT_FAILED).details(serde_json::json!({
            "event": event,
            "payment_ref": failed.payment_ref,
            "amount_minor": failed.amount_minor,
            "currency": failed.currency,
            "invoice_id": failed.invoice,
            "reason": failed.reason,
        }));
    if let Some(account) = &account {
        audited = audited.on("user", account.id);
    }
    audit::record(&services.db, &audit::Context::default(), audited).await?;
    let Some(account) = account.filter(|a| a.status != user::UserStatus::Deleted) else {
        tracing::warn!(
            event,
            payment = failed.payment_ref,
            "a failed payment of no known account"
        );
        return Ok(());
    };
    let number = match failed.invoice {
        Some(id) => invoice::Entity::find_by_id(id)
            .one(services.db.writer())
            .await?
            .and_then(|row| row.number),
        None => None,
    };
    let notice = Notice::PaymentFailed {
        event: event.to_owned(),
        invoice_id: failed.invoice,
        invoice_number: number,
        amount_minor: failed.amount_minor,
        currency: failed.currency,
        reason: failed.reason,
    };
    notifications::notify(
        &services.db,
        &services.cache,
        &services.jobs,
        account.id,
        notice,
    )
    .await?;
    Ok(())
}

/// Claims a provider event that books no ledger row; `false` when it was
/// claimed before (a replay).
async fn claim_event<C: ConnectionTrait>(conn: &C, event: &str, kind: &str) -> Result<bool> {
    let now = crate::db::entities::now();
    let claimed = stripe_event::Entity::insert(stripe_event::ActiveModel {
        id: Set(event.to_owned()),
        kind: Set(kind.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(stripe_event::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .try_insert()
    .exec_without_returning(conn)
    .await?;
    Ok(inserted_one(&claimed))
}
