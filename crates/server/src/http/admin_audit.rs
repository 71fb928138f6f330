//! `/api/v1/admin/audit-logs`: the audit log, searched and exported. There
//! is deliberately no route that writes to it.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::Admin;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::modules::audit::search::{self, AuditEntry, AuditFilter};
use crate::pagination::Page;

#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    /// `json` (default): one page; `csv`: every match (up to 100,000) as a
    /// file, ignoring `limit` and `cursor`.
    #[param(inline)]
    pub format: Option<Format>,
}

/// Search the audit log, newest first.
#[utoipa::path(get, path = "/admin/audit-logs", tag = "admin", security(("bearer" = [])),
    params(AuditFilter, PageQuery, FormatQuery),
    responses(
        (status = 200, body = Page<AuditEntry>, description = "A page of entries"),
        (status = 200, content_type = "text/csv", body = String, description = "With `format=csv`"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Query(filter): Query<AuditFilter>,
    Query(format): Query<FormatQuery>,
    Pagination(page): Pagination,
) -> Result<Response> {
    Ok(match format.format.unwrap_or_default() {
        Format::Json => {
            Json(search::search(&state.db, &actor, &filter, page).await?).into_response()
        }
        Format::Csv => {
            let csv = search::export_csv(&state.db, &actor, &filter).await?;
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"audit-log.csv\"",
                    ),
                ],
                csv,
            )
                .into_response()
        }
    })
}
