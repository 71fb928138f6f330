//! Invoices: one per account, currency and calendar month of usage, issued
//! once the month is over (or by an admin on demand for a finished month).
//!
//! Numbers are `YYYY-NNNNNN`, sequential per year without gaps: the year's
//! counter row is incremented in the write transaction that inserts the
//! issued invoice, so a number exists exactly when its invoice does — a
//! crash or a failed issue rolls both back, and concurrent runs queue on the
//! counter row. The unique (account, currency, period) index stops two runs
//! from invoicing the same month twice.
//!
//! Usage was debited from the balance hour by hour (net); issuing adds the
//! VAT as one ledger row, so the account is debited the invoice's total. An
//! invoice is paid from credit at issue, or later when credit arrives, when
//! the credit covers it (see [`settle_from_credit`]).

use chrono::{DateTime, Datelike as _, Duration, TimeZone as _, Utc};
use futures::{StreamExt as _, TryStreamExt as _};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Query};
use sea_orm::{
    ActiveEnum as _, ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};

use super::hours::{month_start, next_month_start};
use super::{Services, coupons, ledger, tax};
use crate::db::entities::invoice::{self, InvoiceStatus};
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::{instance, invoice_counter, invoice_line, user};
use crate::error::{Error, Result};
use crate::ids::{InstanceId, InvoiceId, InvoiceLineId, UserId};
use crate::modules::auth::Actor;
use crate::modules::events::{self as live, Audience, EventType};
use crate::modules::notifications::{self, Notice};
use crate::pagination::{Page, PageRequest, fetch_page};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvoiceView {
    pub id: InvoiceId,
    pub user_id: UserId,
    /// `YYYY-NNNNNN`, sequential per year.
    pub number: Option<String>,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    /// Hundredths of a percent: 2000 is 20 %.
    pub tax_rate_basis_points: i32,
    pub reverse_charge: bool,
    /// The legal mention a reverse-charged invoice carries.
    pub legal_mention: Option<String>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InvoiceLineView {
    pub instance_id: Option<InstanceId>,
    pub description: String,
    pub quantity: i64,
    pub unit_amount_minor: i64,
    pub amount_minor: i64,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

/// An invoice with its lines and the parties as they were at issue.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InvoiceDetail {
    #[serde(flatten)]
    pub invoice: InvoiceView,
    pub lines: Vec<InvoiceLineView>,
    /// The seller and the customer, frozen at issue.
    pub parties: serde_json::Value,
}

impl From<invoice::Model> for InvoiceView {
    fn from(row: invoice::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            number: row.number,
            status: row.status,
            currency: row.currency,
            subtotal_minor: row.subtotal_minor,
            tax_minor: row.tax_minor,
            total_minor: row.total_minor,
            tax_rate_basis_points: row.tax_rate_basis_points,
            reverse_charge: row.reverse_charge,
            legal_mention: row
                .reverse_charge
                .then(|| tax::REVERSE_CHARGE_MENTION.to_owned()),
            period_start: row.period_start,
            period_end: row.period_end,
            issued_at: row.issued_at,
            due_at: row.due_at,
            paid_at: row.paid_at,
            voided_at: row.voided_at,
        }
    }
}

/// Which finished month an admin invoices on demand.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceRequest {
    #[garde(range(min = 2000, max = 9999))]
    pub year: i32,
    #[garde(range(min = 1, max = 12))]
    pub month: u32,
}

/// A payment received outside the platform (bank transfer, …).
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualPayment {
    /// The bank reference or a note, kept on the ledger row.
    #[garde(length(min = 1, max = 200))]
    pub reference: String,
}

/// Filters of the staff invoice list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFilter {
    pub user_id: Option<UserId>,
    pub status: Option<InvoiceStatus>,
}

/// Issues the invoices of last month that are not issued yet; returns how
/// many. Run after the accrual, which has charged the month's last hours.
pub async fn issue_due(services: &Services) -> Result<usize> {
    let now = services.clock.now();
    let end = month_start(now);
    let start = month_start(end - Duration::days(1));
    let accounts: Vec<(UserId, String)> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::UserId)
        .column(transaction::Column::Currency)
        .distinct()
        .filter(transaction::Column::Kind.is_in(INVOICED))
        .filter(transaction::Column::UsageHour.gte(start))
        .filter(transaction::Column::UsageHour.lt(end))
        .into_tuple()
        .all(services.db.writer())
        .await?;
    // A few accounts at once: their transactions queue only on the year's
    // counter, which each takes after its reads, so those overlap.
    let mut issuing = futures::stream::iter(accounts)
        .map(|(user, currency)| async move { issue(services, user, &currency, start, end).await })
        .buffer_unordered(ISSUING_AT_ONCE);
    let mut issued = 0;
    while let Some(invoice) = issuing.try_next().await? {
        issued += usize::from(invoice.is_some());
    }
    Ok(issued)
}

/// Accounts invoiced concurrently by [`issue_due`].
const ISSUING_AT_ONCE: usize = 4;

/// Issues, on an admin's demand, the invoices of one account for a finished
/// month (one per currency it was charged in). 409 when there is nothing
/// left to invoice.
pub async fn issue_on_demand(
    services: &Services,
    actor: &Actor,
    user: UserId,
    request: &InvoiceRequest,
) -> Result<Vec<InvoiceView>> {
    actor.require_admin()?;
    let start = Utc
        .with_ymd_and_hms(request.year, request.month, 1, 0, 0, 0)
        .single()
        .ok_or_else(|| Error::invalid_field("month", "is not a month"))?;
    let end = next_month_start(start);
    if end > month_start(services.clock.now()) {
        return Err(Error::invalid_field(
            "month",
            "must be over: its usage is still accruing",
        ));
    }
    user::Entity::find_by_id(user)
        .one(services.db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Account"))?;
    let currencies: Vec<String> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::Currency)
        .distinct()
        .filter(transaction::Column::UserId.eq(user))
        .filter(transaction::Column::Kind.is_in(INVOICED))
        .filter(transaction::Column::UsageHour.gte(start))
        .filter(transaction::Column::UsageHour.lt(end))
        .into_tuple()
        .all(services.db.writer())
        .await?;
    let mut issued = Vec::new();
    for currency in currencies {
        if let Some(invoice) = issue(services, user, &currency, start, end).await? {
            issued.push(invoice.into());
        }
    }
    if issued.is_empty() {
        return Err(Error::Conflict(
            "That month has no usage left to invoice for this account.".to_owned(),
        ));
    }
    Ok(issued)
}

/// What an invoice bills: the usage charges and setup fees of its period.
const INVOICED: [TransactionKind; 2] = [TransactionKind::Usage, TransactionKind::SetupFee];

/// Charges of one kind for one instance over the period: how many and
/// their sum.
#[derive(Debug, sea_orm::FromQueryResult)]
struct UsageSum {
    instance_id: Option<InstanceId>,
    kind: TransactionKind,
    hours: i64,
    amount: i64,
}

/// Issues the invoice of `user`'s usage in `currency` over `[start, end)`,
/// numbered, in one transaction. `None` when there was no usage, or the
/// period is invoiced already.
async fn issue(
    services: &Services,
    user: UserId,
    currency: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<invoice::Model>> {
    let settings = tax::get(&services.db, &services.cache).await?;
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    let exists = invoice::Entity::find()
        .filter(invoice::Column::UserId.eq(user))
        .filter(invoice::Column::Currency.eq(currency))
        .filter(invoice::Column::PeriodStart.eq(start))
        .filter(invoice::Column::PeriodEnd.eq(end))
        .one(&txn)
        .await?
        .is_some();
    if exists {
        return Ok(None);
    }
    let sums = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::InstanceId)
        .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "hours")
        .column_as(
            Expr::cust("CAST(COALESCE(-SUM(amount_minor), 0) AS BIGINT)"),
            "amount",
        )
        .filter(transaction::Column::UserId.eq(user))
        .filter(transaction::Column::Currency.eq(currency))
        .filter(transaction::Column::Kind.is_in(INVOICED))
        .filter(transaction::Column::UsageHour.gte(start))
        .filter(transaction::Column::UsageHour.lt(end))
        .column(transaction::Column::Kind)
        .group_by(transaction::Column::InstanceId)
        .group_by(transaction::Column::Kind)
        .order_by_asc(transaction::Column::InstanceId)
        .order_by_asc(transaction::Column::Kind)
        .into_model::<UsageSum>()
        .all(&txn)
        .await?;
    if sums.is_empty() {
        return Ok(None);
    }
    let customer = user::Entity::find_by_id(user)
        .one(&txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("account {user} vanished"))?;
    let decision = tax::decide(
        &settings,
        customer.country.as_deref(),
        customer.vat_id.as_deref(),
    );
    let instances = instances_of(&txn, &sums).await?;
    let lines: Vec<_> = sums
        .iter()
        .map(|s| {
            let plan = s
                .instance_id
                .and_then(|id| instances.iter().find(|i| i.id == id))
                .map(|i| i.product_id);
            (plan, s.amount)
        })
        .collect();
    // Coupons come off before VAT.
    let discounts = coupons::discounts(&txn, user, currency, &lines).await?;
    let subtotal: i64 = sums.iter().map(|s| s.amount).sum::<i64>()
        - discounts.iter().map(|d| d.amount_minor).sum::<i64>();
    let tax_minor = tax::tax_of(subtotal, decision.rate_basis_points);
    let number = next_number(&txn, now.year(), now).await?;
    let inserted = invoice::ActiveModel {
        user_id: Set(user),
        number: Set(Some(number)),
        status: Set(InvoiceStatus::Open),
        currency: Set(currency.to_owned()),
        subtotal_minor: Set(subtotal),
        tax_minor: Set(tax_minor),
        total_minor: Set(subtotal + tax_minor),
        tax_rate_basis_points: Set(decision.rate_basis_points),
        reverse_charge: Set(decision.reverse_charge),
        period_start: Set(start),
        period_end: Set(end),
        issued_at: Set(Some(now)),
        due_at: Set(Some(
            now + Duration::days(i64::from(settings.payment_terms_days)),
        )),
        paid_at: Set(None),
        voided_at: Set(None),
        billing_snapshot: Set(serde_json::json!({
            "seller": settings.seller,
            "customer": {
                "name": customer.company.clone().unwrap_or_else(|| customer.name.clone()),
                "email": customer.email,
                "country": customer.country,
                "vat_id": customer.vat_id,
            },
        })),
        ..Default::default()
    }
    .insert(&txn)
    .await;
    let row = match inserted {
        Ok(row) => row,
        // A concurrent run issued this period first (it held the counter
        // while we waited for it): dropping the transaction gives our
        // number back.
        Err(err)
            if matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let month = start.format("%B %Y");
    let stamp = crate::db::entities::now();
    let line = |instance_id, description, amount_minor| invoice_line::ActiveModel {
        id: Set(InvoiceLineId::new()),
        invoice_id: Set(row.id),
        instance_id: Set(instance_id),
        description: Set(description),
        quantity: Set(1),
        unit_amount_minor: Set(amount_minor),
        amount_minor: Set(amount_minor),
        period_start: Set(Some(start)),
        period_end: Set(Some(end)),
        created_at: Set(stamp),
        updated_at: Set(stamp),
    };
    let mut lines: Vec<_> = sums
        .iter()
        .map(|sum| {
            let name = sum
                .instance_id
                .and_then(|id| instances.iter().find(|i| i.id == id))
                .map_or("Deleted instance", |i| i.name.as_str());
            let description = if sum.kind == TransactionKind::SetupFee {
                format!("{name}: setup fee")
            } else {
                format!("{name}: {} hours, {month}", sum.hours)
            };
            line(sum.instance_id, description, sum.amount)
        })
        .collect();
    lines.extend(
        discounts
            .iter()
            .map(|d| line(None, format!("Coupon {}", d.code), -d.amount_minor)),
    );
    // One statement per thousand lines: an account with many instances
    // costs a few round trips, not one per instance.
    for chunk in lines.chunks(1_000) {
        invoice_line::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }
    for discount in &discounts {
        // The usage was debited in full hour by hour: the discount is
        // credited back.
        transaction::ActiveModel {
            user_id: Set(user),
            kind: Set(TransactionKind::Coupon),
            amount_minor: Set(discount.amount_minor),
            currency: Set(currency.to_owned()),
            invoice_id: Set(Some(row.id)),
            idempotency_key: Set(Some(format!("coupon:{}:{}", row.id, discount.redemption))),
            description: Set(format!(
                "Coupon {} on invoice {}",
                discount.code,
                row.number.as_deref().unwrap_or_default()
            )),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    if tax_minor > 0 {
        transaction::ActiveModel {
            user_id: Set(user),
            kind: Set(TransactionKind::Invoice),
            amount_minor: Set(-tax_minor),
            currency: Set(currency.to_owned()),
            invoice_id: Set(Some(row.id)),
            idempotency_key: Set(Some(format!("invoice-tax:{}", row.id))),
            description: Set(format!(
                "VAT of invoice {}",
                row.number.as_deref().unwrap_or_default()
            )),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
    }
    // Paid from credit at once when the credit covers it (and every older
    // open invoice of the currency).
    let paid = settle_in(&txn, user, now).await?;
    let row = paid.into_iter().find(|p| p.id == row.id).unwrap_or(row);
    txn.commit().await?;
    announce_issued(services, &row).await;
    Ok(Some(row))
}

/// Tells the account of a new invoice: a live `invoice.issued` event, and a
/// notification (in-app, and by email unless the account opted out). The
/// invoice is committed already, so a failure here is only logged.
async fn announce_issued(services: &Services, row: &invoice::Model) {
    let number = row.number.clone().unwrap_or_default();
    let event = live::Event::new(
        EventType::InvoiceIssued,
        row.id,
        serde_json::json!({
            "number": number,
            "status": row.status,
            "total_minor": row.total_minor,
            "currency": row.currency,
        }),
    );
    live::publish(&services.cache, vec![Audience::User(row.user_id)], event).await;
    let notice = Notice::InvoiceIssued {
        invoice_id: row.id,
        number,
        total_minor: row.total_minor,
        currency: row.currency.clone(),
    };
    if let Err(err) = notifications::notify(
        &services.db,
        &services.cache,
        &services.jobs,
        row.user_id,
        notice,
    )
    .await
    {
        tracing::warn!(invoice = %row.id, error = %err, "cannot notify an issued invoice");
    }
}

/// Pays `user`'s open invoices from the account's credit, oldest first,
/// while the credit covers them; returns the invoices it paid. Called
/// wherever credit arrives (a top-up, an admin's credit, a manual payment)
/// and at issue.
pub async fn settle_from_credit(services: &Services, user: UserId) -> Result<Vec<InvoiceView>> {
    let txn = services.db.begin_write().await?;
    let paid = settle_in(&txn, user, services.clock.now()).await?;
    txn.commit().await?;
    Ok(paid.into_iter().map(InvoiceView::from).collect())
}

/// The settlement rule, in the caller's transaction.
///
/// Paying an open invoice from credit books no ledger row: its total was
/// debited already (its usage hour by hour, its VAT at issue), so the
/// balance shows the debt whether the invoice is open or paid. Settling
/// only decides which debts the credit covers. Per currency, the credit
/// left for open invoices is the balance with their totals added back;
/// the invoices are taken oldest first and each is paid while that credit
/// covers it, i.e. while the balance would be >= 0 right after its debit
/// had it been the last one. The first invoice not covered stops the run,
/// so an older debt is never passed over for a newer, smaller one.
///
/// Each invoice is paid by an update conditional on it being `open`: a
/// settlement, manual payment or void racing this one never pays an
/// invoice twice nor revives a voided one.
async fn settle_in<C: ConnectionTrait>(
    conn: &C,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Vec<invoice::Model>> {
    let open = invoice::Entity::find()
        .filter(invoice::Column::UserId.eq(user))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .order_by_asc(invoice::Column::IssuedAt)
        .order_by_asc(invoice::Column::Number)
        .all(conn)
        .await?;
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let balances = ledger::balances(conn, user).await?;
    let mut paid = Vec::new();
    for balance in balances {
        let owed = open.iter().filter(|i| i.currency == balance.currency);
        let mut credit = balance.amount_minor + owed.clone().map(|i| i.total_minor).sum::<i64>();
        for invoice in owed {
            if invoice.total_minor > credit {
                break;
            }
            credit -= invoice.total_minor;
            let updated = invoice::Entity::update_many()
                .col_expr(invoice::Column::Status, Expr::value(InvoiceStatus::Paid))
                .col_expr(invoice::Column::PaidAt, Expr::value(Some(now)))
                .col_expr(
                    invoice::Column::UpdatedAt,
                    Expr::value(crate::db::entities::now()),
                )
                .filter(invoice::Column::Id.eq(invoice.id))
                .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
                .exec(conn)
                .await?;
            if updated.rows_affected == 1 {
                paid.push(invoice::Model {
                    status: InvoiceStatus::Paid,
                    paid_at: Some(now),
                    ..invoice.clone()
                });
            }
        }
    }
    Ok(paid)
}

/// Takes the next number of `year`, in the caller's transaction: the
/// counter row is created at 1 or incremented, and stays locked until the
/// transaction ends.
async fn next_number<C: ConnectionTrait>(
    conn: &C,
    year: i32,
    now: DateTime<Utc>,
) -> Result<String> {
    let upsert = Query::insert()
        .into_table(invoice_counter::Entity)
        .columns([
            invoice_counter::Column::Year,
            invoice_counter::Column::LastNumber,
            invoice_counter::Column::CreatedAt,
            invoice_counter::Column::UpdatedAt,
        ])
        .values_panic([year.into(), 1_i64.into(), now.into(), now.into()])
        .on_conflict(
            OnConflict::column(invoice_counter::Column::Year)
                .value(
                    invoice_counter::Column::LastNumber,
                    Expr::col((invoice_counter::Entity, invoice_counter::Column::LastNumber))
                        .add(1),
                )
                .value(invoice_counter::Column::UpdatedAt, now)
                .to_owned(),
        )
        .returning_col(invoice_counter::Column::LastNumber)
        .to_owned();
    let row = conn
        .query_one(&upsert)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the invoice counter returned no row"))?;
    let last: i64 = row.try_get("", "last_number")?;
    Ok(format_number(year, last))
}

pub fn format_number(year: i32, number: i64) -> String {
    format!("{year}-{number:06}")
}

async fn instances_of<C: ConnectionTrait>(
    conn: &C,
    sums: &[UsageSum],
) -> Result<Vec<instance::Model>> {
    Ok(instance::Entity::find()
        .filter(instance::Column::Id.is_in(sums.iter().filter_map(|s| s.instance_id)))
        .all(conn)
        .await?)
}

/// The manual payment provider: an admin records that an open invoice was
/// paid in full outside the platform. The payment is credited to the
/// account (the invoice's total was debited at issue) and the invoice is
/// paid, in one transaction; a paid or void invoice is a 409.
pub async fn mark_paid(
    services: &Services,
    actor: &Actor,
    id: InvoiceId,
    payment: &ManualPayment,
) -> Result<InvoiceView> {
    actor.require_admin()?;
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    let row = invoice::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(|| Error::not_found("Invoice"))?;
    if row.status != InvoiceStatus::Open {
        return Err(Error::InvalidState {
            message: "Only an open invoice can be marked paid.".to_owned(),
            state: row.status.to_value(),
        });
    }
    transaction::ActiveModel {
        user_id: Set(row.user_id),
        kind: Set(TransactionKind::Payment),
        amount_minor: Set(row.total_minor),
        currency: Set(row.currency.clone()),
        invoice_id: Set(Some(row.id)),
        provider: Set(Some("manual".to_owned())),
        idempotency_key: Set(Some(format!("invoice-payment:{}", row.id))),
        description: Set(format!(
            "Payment of invoice {} ({})",
            row.number.as_deref().unwrap_or_default(),
            payment.reference.trim()
        )),
        created_by: Set(Some(actor.user_id)),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let mut active: invoice::ActiveModel = row.into();
    active.status = Set(InvoiceStatus::Paid);
    active.paid_at = Set(Some(now));
    let row = active.update(&txn).await?;
    txn.commit().await?;
    super::credit_arrived(services, row.user_id).await?;
    Ok(row.into())
}

/// Voids an open invoice: what its issue debited (its usage and VAT, its
/// total) is credited back by one ledger row, in the same transaction. A
/// paid invoice is refunded instead, so voiding one is a 409, as is a void
/// or draft one. The handler audits it.
pub async fn void(services: &Services, actor: &Actor, id: InvoiceId) -> Result<InvoiceView> {
    actor.require_admin()?;
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    let row = invoice::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(|| Error::not_found("Invoice"))?;
    if row.status != InvoiceStatus::Open {
        return Err(Error::InvalidState {
            message: "Only an open invoice can be voided; refund a paid one.".to_owned(),
            state: row.status.to_value(),
        });
    }
    transaction::ActiveModel {
        user_id: Set(row.user_id),
        kind: Set(TransactionKind::Invoice),
        amount_minor: Set(row.total_minor),
        currency: Set(row.currency.clone()),
        invoice_id: Set(Some(row.id)),
        idempotency_key: Set(Some(format!("invoice-void:{}", row.id))),
        description: Set(format!(
            "Invoice {} voided",
            row.number.as_deref().unwrap_or_default()
        )),
        created_by: Set(Some(actor.user_id)),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let mut active: invoice::ActiveModel = row.into();
    active.status = Set(InvoiceStatus::Void);
    active.voided_at = Set(Some(now));
    let row = active.update(&txn).await?;
    txn.commit().await?;
    Ok(row.into())
}

/// The actor's own invoices, newest first.
pub async fn list_own(
    services: &Services,
    actor: &Actor,
    page: PageRequest,
) -> Result<Page<InvoiceView>> {
    let filter = InvoiceFilter {
        user_id: Some(actor.user_id),
        status: None,
    };
    page_of(services, filter, page).await
}

/// Every account's invoices, for staff.
pub async fn list_all(
    services: &Services,
    actor: &Actor,
    filter: InvoiceFilter,
    page: PageRequest,
) -> Result<Page<InvoiceView>> {
    actor.require_staff()?;
    page_of(services, filter, page).await
}

async fn page_of(
    services: &Services,
    filter: InvoiceFilter,
    page: PageRequest,
) -> Result<Page<InvoiceView>> {
    let mut select = invoice::Entity::find();
    if let Some(user) = filter.user_id {
        select = select.filter(invoice::Column::UserId.eq(user));
    }
    if let Some(status) = filter.status {
        select = select.filter(invoice::Column::Status.eq(status));
    }
    let page = fetch_page(
        services.db.reader(),
        select,
        invoice::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?;
    Ok(page.map(InvoiceView::from))
}

/// One invoice with its lines: the actor's own, or any for staff; another
/// customer's is not found.
pub async fn get(services: &Services, actor: &Actor, id: InvoiceId) -> Result<InvoiceDetail> {
    let row = match invoice::Entity::find_by_id(id)
        .one(services.db.reader())
        .await?
    {
        Some(row) if actor.reaches(row.user_id)? => row,
        _ => return Err(Error::not_found("Invoice")),
    };
    let lines = invoice_line::Entity::find()
        .filter(invoice_line::Column::InvoiceId.eq(row.id))
        .order_by_asc(invoice_line::Column::Id)
        .all(services.db.reader())
        .await?
        .into_iter()
        .map(|line| InvoiceLineView {
            instance_id: line.instance_id,
            description: line.description,
            quantity: line.quantity,
            unit_amount_minor: line.unit_amount_minor,
            amount_minor: line.amount_minor,
            period_start: line.period_start,
            period_end: line.period_end,
        })
        .collect();
    let parties = row.billing_snapshot.clone();
    Ok(InvoiceDetail {
        invoice: row.into(),
        lines,
        parties,
    })
}

#[cfg(test)]
mod tests {
    use super::format_number;

    #[test]
    fn numbers_carry_the_year_and_six_digits() {
        assert_eq!(format_number(2026, 1), "2026-000001");
        assert_eq!(format_number(2026, 1_234_567), "2026-1234567");
    }
}
