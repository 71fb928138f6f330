//! `/api/v1/billing`: the signed-in account's money — balance, this month's
//! usage, the ledger and invoices. Each answer covers the caller's own
//! account only, whatever their role. And `/api/v1/webhooks/stripe`, which
//! Stripe calls, authenticated by its signature.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::CurrentUser;
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::InvoiceId;
use crate::modules::billing::coupons::{self, Redeem, RedemptionView};
use crate::modules::billing::invoices::{self, InvoiceDetail, InvoiceView};
use crate::modules::billing::ledger::{self, Balance, KindFilter, TransactionView};
use crate::modules::billing::payments::{self, Checkout, TopUpRequest};
use crate::modules::billing::pdf::{self, InvoicePdf};
use crate::modules::billing::stripe;
use crate::modules::billing::usage::{self, UsageReport};
use crate::pagination::Page;

/// The account's balance in each currency it moved money in: credit
/// minus charges. Negative when the account owes.
#[utoipa::path(get, path = "/billing/balance", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Vec<Balance>)))]
pub async fn balance(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<Vec<Balance>>> {
    Ok(Json(ledger::my_balances(&state.billing(), &actor).await?))
}

/// This month's usage per instance: what accrued so far (every started
/// hour) and the forecast for the whole month, each capped at the plan's
/// monthly price.
#[utoipa::path(get, path = "/billing/usage", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = UsageReport)))]
pub async fn usage(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<UsageReport>> {
    Ok(Json(usage::report(&state.billing(), &actor).await?))
}

/// The account's ledger, newest first: usage charges, credits, payments.
#[utoipa::path(get, path = "/billing/transactions", tag = "billing", security(("bearer" = [])),
    params(PageQuery, KindFilter),
    responses((status = 200, body = Page<TransactionView>)))]
pub async fn transactions(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
    Query(filter): Query<KindFilter>,
) -> Result<Json<Page<TransactionView>>> {
    Ok(Json(
        ledger::list_own(&state.billing(), &actor, filter.kind, page).await?,
    ))
}

/// The account's invoices, newest first.
#[utoipa::path(get, path = "/billing/invoices", tag = "billing", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<InvoiceView>)))]
pub async fn list_invoices(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
) -> Result<Json<Page<InvoiceView>>> {
    Ok(Json(
        invoices::list_own(&state.billing(), &actor, page).await?,
    ))
}

/// One of the account's invoices, with its lines and the parties.
#[utoipa::path(get, path = "/billing/invoices/{id}", tag = "billing", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = InvoiceDetail), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_invoice(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InvoiceId>,
) -> Result<Json<InvoiceDetail>> {
    Ok(Json(invoices::get(&state.billing(), &actor, id).await?))
}

/// Open a card payment page that credits the account with the amount once
/// paid. 503 when card payments are not configured.
#[utoipa::path(post, path = "/billing/top-ups", tag = "billing", security(("bearer" = [])),
    request_body = TopUpRequest,
    responses(
        (status = 201, body = Checkout),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The payment provider refused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Payments are not configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn top_up(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    ValidJson(body): ValidJson<TopUpRequest>,
) -> Result<(StatusCode, Json<Checkout>)> {
    let checkout =
        payments::top_up(&state.billing(), &actor, &body, &state.config.public_url()).await?;
    Ok((StatusCode::CREATED, Json(checkout)))
}

/// Open a card payment page for the total of one of the account's open
/// invoices; the invoice is paid when the provider reports the payment.
#[utoipa::path(post, path = "/billing/invoices/{id}/pay", tag = "billing", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 201, body = Checkout),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Paid or void already (`state`)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The payment provider refused", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Payments are not configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pay_invoice(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InvoiceId>,
) -> Result<(StatusCode, Json<Checkout>)> {
    let checkout =
        payments::pay_invoice(&state.billing(), &actor, id, &state.config.public_url()).await?;
    Ok((StatusCode::CREATED, Json(checkout)))
}

/// One of the account's invoices as a PDF. A draft has none (409).
#[utoipa::path(get, path = "/billing/invoices/{id}/pdf", tag = "billing", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The invoice", content_type = "application/pdf", body = PdfFile),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A draft", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InvoiceId>,
) -> Result<PdfFile> {
    Ok(PdfFile(pdf::own(&state.billing(), &actor, id).await?))
}

/// A PDF answer: shown inline by browsers, saved under its own name.
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PdfFile(pub InvoicePdf);

impl IntoResponse for PdfFile {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, "application/pdf".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{}\"", self.0.file_name),
                ),
            ],
            self.0.bytes,
        )
            .into_response()
    }
}

/// Stripe's webhook: verified by its `Stripe-Signature` (400 when it does
/// not match or is older than five minutes, and nothing changes), booked
/// once per event id however often it is delivered. 503 until
/// `stripe_webhook_secret` is configured.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…")),
    request_body(content = String, content_type = "application/json", description = "The event, as Stripe signed it"),
    responses(
        (status = 200, description = "Booked, or not an event we act on"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode> {
    let secret = state
        .config
        .stripe_webhook_secret
        .as_ref()
        .map(|secret| secret.expose_secret().as_bytes());
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    stripe::handle_webhook(&state.billing(), secret, signature, &body).await?;
    Ok(StatusCode::OK)
}

/// Redeem a coupon: it comes off the account's next invoices, before VAT.
/// 422 when the code is unknown, expired, used up or already redeemed by
/// the account.
#[utoipa::path(post, path = "/billing/coupons/redeem", tag = "billing", security(("bearer" = [])),
    request_body = Redeem,
    responses(
        (status = 201, body = RedemptionView),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn redeem_coupon(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    ValidJson(body): ValidJson<Redeem>,
) -> Result<(StatusCode, Json<RedemptionView>)> {
    Ok((
        StatusCode::CREATED,
        Json(coupons::redeem(&state.billing(), &actor, &body.code).await?),
    ))
}
