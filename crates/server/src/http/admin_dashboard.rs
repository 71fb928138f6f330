//! `/api/v1/admin/dashboard` and `/api/v1/admin/billing/revenue`: the
//! figures of the admin console's home page.

use axum::Json;
use axum::extract::State;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, Staff};
use crate::http::problem::Problem;
use crate::modules::billing::revenue::{self, Revenue};
use crate::modules::monitoring::{self, Dashboard};

/// Accounts (active in 30 days, new), instances by state, node capacity,
/// revenue (MRR, this month, churn, ARPU), open tickets by priority, dead
/// jobs and payment failures of the last 7 days.
#[utoipa::path(get, path = "/admin/dashboard", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Dashboard), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn overview(
    State(state): State<AppState>,
    Admin(actor): Admin,
) -> Result<Json<Dashboard>> {
    let now = state.clock.now();
    Ok(Json(
        monitoring::dashboard(&state.db, &state.jobs, &actor, now).await?,
    ))
}

/// MRR, money received this month, paid invoices per month over the last
/// year, churn and ARPU, in minor units per currency.
#[utoipa::path(get, path = "/admin/billing/revenue", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Revenue), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn revenue(State(state): State<AppState>, Staff(actor): Staff) -> Result<Json<Revenue>> {
    let now = state.clock.now();
    Ok(Json(revenue::figures(&state.db, &actor, now).await?))
}
