//! `/api/v1/admin/outbox`: the platform's emails, for admins, with their
//! one-time links masked. Every read is audited.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::db::entities::email::EmailStatus;
use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::mail::outbox::{self, EmailView, OutboxFilter};
use crate::modules::audit::{self, Event};
use crate::pagination::Page;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// The recipient's address.
    pub to: Option<String>,
    pub status: Option<EmailStatus>,
}

/// The outbox, newest first.
#[utoipa::path(get, path = "/admin/outbox", tag = "admin", security(("bearer" = [])),
    params(OutboxQuery, PageQuery),
    responses(
        (status = 200, body = Page<EmailView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Query(query): Query<OutboxQuery>,
    Pagination(page): Pagination,
) -> Result<Json<Page<EmailView>>> {
    let event = Event::new("outbox.read").details(serde_json::json!({
        "to": query.to, "status": query.status,
    }));
    let filter = OutboxFilter {
        to: query.to,
        status: query.status,
    };
    let messages = outbox::list(&state.db, &actor, filter, page).await?;
    // Messages name customers and what happened to their accounts.
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(messages))
}
