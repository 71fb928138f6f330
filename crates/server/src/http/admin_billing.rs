//! `/api/v1/admin/billing` and `/api/v1/admin/settings/billing`: staff read
//! every account's ledger; admins adjust credit (with a reason, audited) and
//! set the billing policy.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::billing::PdfFile;
use crate::http::extract::{Admin, ClientInfo, Staff};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::{CouponId, InvoiceId, UserId};
use crate::modules::audit::{self, Event};
use crate::modules::billing::coupons::{self, CouponInput, CouponView};
use crate::modules::billing::invoices::{
    self, InvoiceFilter, InvoiceRequest, InvoiceView, ManualPayment,
};
use crate::modules::billing::ledger::{self, CreditAdjustment, TransactionFilter, TransactionView};
use crate::modules::billing::pdf;
use crate::modules::billing::refunds::{self, RefundRequest};
use crate::pagination::Page;

/// Every account's transactions, newest first.
#[utoipa::path(get, path = "/admin/billing/transactions", tag = "admin", security(("bearer" = [])),
    params(PageQuery, TransactionFilter),
    responses((status = 200, body = Page<TransactionView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn transactions(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Pagination(page): Pagination,
    Query(filter): Query<TransactionFilter>,
) -> Result<Json<Page<TransactionView>>> {
    Ok(Json(
        ledger::list_all(&state.billing(), &actor, filter, page).await?,
    ))
}

/// Credit (positive amount) or debit (negative) an account, with the reason
/// the customer will read. Audited.
#[utoipa::path(post, path = "/admin/billing/users/{id}/adjustments", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = CreditAdjustment,
    responses(
        (status = 201, body = TransactionView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn adjust(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(user): Path<UserId>,
    ValidJson(body): ValidJson<CreditAdjustment>,
) -> Result<(StatusCode, Json<TransactionView>)> {
    let booked = ledger::adjust(&state.billing(), &actor, user, body).await?;
    let event = Event::new("billing.credit_adjusted")
        .on("user", user)
        .details(serde_json::json!({
            "transaction_id": booked.id,
            "amount_minor": booked.amount_minor,
            "currency": booked.currency,
            "reason": booked.description,
        }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(booked)))
}

/// Every account's invoices, newest first.
#[utoipa::path(get, path = "/admin/billing/invoices", tag = "admin", security(("bearer" = [])),
    params(PageQuery, InvoiceFilter),
    responses((status = 200, body = Page<InvoiceView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_invoices(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Pagination(page): Pagination,
    Query(filter): Query<InvoiceFilter>,
) -> Result<Json<Page<InvoiceView>>> {
    Ok(Json(
        invoices::list_all(&state.billing(), &actor, filter, page).await?,
    ))
}

/// Invoice an account's usage of a finished month now, instead of waiting
/// for the monthly run. Audited.
#[utoipa::path(post, path = "/admin/billing/users/{id}/invoices", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = InvoiceRequest,
    responses(
        (status = 201, body = Vec<InvoiceView>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing left to invoice", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn issue_invoices(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(user): Path<UserId>,
    ValidJson(body): ValidJson<InvoiceRequest>,
) -> Result<(StatusCode, Json<Vec<InvoiceView>>)> {
    let issued = invoices::issue_on_demand(&state.billing(), &actor, user, &body).await?;
    let numbers: Vec<_> = issued.iter().map(|i| i.number.clone()).collect();
    let event = Event::new("billing.invoices_issued")
        .on("user", user)
        .details(serde_json::json!({"numbers": numbers}));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Record that an open invoice was paid outside the platform (bank
/// transfer): the payment is credited and the invoice is paid. Audited.
#[utoipa::path(post, path = "/admin/billing/invoices/{id}/payments", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = ManualPayment,
    responses(
        (status = 200, body = InvoiceView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Paid or void already (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn mark_paid(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<InvoiceId>,
    ValidJson(body): ValidJson<ManualPayment>,
) -> Result<Json<InvoiceView>> {
    let paid = invoices::mark_paid(&state.billing(), &actor, id, &body).await?;
    let event = Event::new("billing.invoice_marked_paid")
        .on("invoice", id)
        .details(serde_json::json!({"number": paid.number, "reference": body.reference}));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(paid))
}

/// Refund part or all of a payment or top-up: through the payment provider
/// for a card payment, booked directly for a manual one. Never more than
/// what is left of the payment (422). Audited.
#[utoipa::path(post, path = "/admin/billing/refunds", tag = "admin", security(("bearer" = [])),
    request_body = RefundRequest,
    responses(
        (status = 201, body = TransactionView),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The payment provider refused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The payment's provider is not configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refund(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<RefundRequest>,
) -> Result<(StatusCode, Json<TransactionView>)> {
    let booked = refunds::refund(&state.billing(), &actor, &body).await?;
    let event = Event::new("billing.refunded")
        .on("user", booked.user_id)
        .details(serde_json::json!({
            "transaction_id": booked.id,
            "payment_id": body.transaction_id,
            "amount_minor": body.amount_minor,
            "currency": booked.currency,
            "reason": body.reason.trim(),
        }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(booked)))
}

/// Void an open invoice: what it debited is credited back. A paid invoice
/// is refunded instead (409). Audited.
#[utoipa::path(post, path = "/admin/billing/invoices/{id}/void", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = InvoiceView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not open (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn void_invoice(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<InvoiceId>,
) -> Result<Json<InvoiceView>> {
    let voided = invoices::void(&state.billing(), &actor, id).await?;
    let event = Event::new("billing.invoice_voided")
        .on("invoice", id)
        .details(serde_json::json!({
            "number": voided.number,
            "user_id": voided.user_id,
            "total_minor": voided.total_minor,
            "currency": voided.currency,
        }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(voided))
}

/// Any account's invoice as a PDF. A draft has none (409).
#[utoipa::path(get, path = "/admin/billing/invoices/{id}/pdf", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The invoice", content_type = "application/pdf", body = PdfFile),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A draft", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Path(id): Path<InvoiceId>,
) -> Result<PdfFile> {
    Ok(PdfFile(pdf::any(&state.billing(), &actor, id).await?))
}

/// Every coupon, newest first.
#[utoipa::path(get, path = "/admin/billing/coupons", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<CouponView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_coupons(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Pagination(page): Pagination,
) -> Result<Json<Page<CouponView>>> {
    Ok(Json(coupons::list(&state.billing(), &actor, page).await?))
}

/// Make a coupon: a percentage or an amount off, optionally limited in
/// time, redemptions, plans and number of invoices. Audited.
#[utoipa::path(post, path = "/admin/billing/coupons", tag = "admin", security(("bearer" = [])),
    request_body = CouponInput,
    responses(
        (status = 201, body = CouponView),
        (status = 409, description = "The code is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_coupon(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<CouponInput>,
) -> Result<(StatusCode, Json<CouponView>)> {
    let made = coupons::create(&state.billing(), &actor, body).await?;
    audit_coupon(&state, &client, &actor, "billing.coupon_created", &made).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// One coupon, with how often it was redeemed.
#[utoipa::path(get, path = "/admin/billing/coupons/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = CouponView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_coupon(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<CouponId>,
) -> Result<Json<CouponView>> {
    Ok(Json(coupons::get(&state.billing(), &actor, id).await?))
}

/// Replace a coupon's terms; accounts that redeemed it keep it. Audited.
#[utoipa::path(put, path = "/admin/billing/coupons/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = CouponInput,
    responses(
        (status = 200, body = CouponView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_coupon(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<CouponId>,
    ValidJson(body): ValidJson<CouponInput>,
) -> Result<Json<CouponView>> {
    let changed = coupons::update(&state.billing(), &actor, id, body).await?;
    audit_coupon(&state, &client, &actor, "billing.coupon_updated", &changed).await?;
    Ok(Json(changed))
}

/// Delete a coupon nobody redeemed. Audited.
#[utoipa::path(delete, path = "/admin/billing/coupons/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Redeemed already", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_coupon(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<CouponId>,
) -> Result<StatusCode> {
    coupons::delete(&state.billing(), &actor, id).await?;
    let event = Event::new("billing.coupon_deleted").on("coupon", id);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit_coupon(
    state: &AppState,
    client: &ClientInfo,
    actor: &crate::modules::auth::Actor,
    action: &'static str,
    coupon: &CouponView,
) -> Result<()> {
    let event = Event::new(action)
        .on("coupon", coupon.id)
        .details(serde_json::to_value(coupon).map_err(anyhow::Error::from)?);
    audit::record(&state.db, &client.audit(Some(actor)), event).await
}
