//! `/api/v1/admin/settings/support`: attachment limits and the auto-close
//! delay of resolved tickets.

use axum::Json;
use axum::extract::State;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::modules::audit::{self, Event};
use crate::modules::support::policy::{self, SupportSettings};

/// The support settings.
#[utoipa::path(get, path = "/admin/settings/support", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SupportSettings), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn get_settings(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<SupportSettings>> {
    Ok(Json(policy::get(&state.db, &state.cache).await?))
}

/// Change the support settings; attachments already stored are kept.
#[utoipa::path(put, path = "/admin/settings/support", tag = "admin", security(("bearer" = [])),
    request_body = SupportSettings,
    responses((status = 200, body = SupportSettings), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update_settings(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<SupportSettings>,
) -> Result<Json<SupportSettings>> {
    policy::set(&state.db, &state.cache, &body, actor.user_id).await?;
    let event = Event::new("settings.support_changed")
        .details(serde_json::to_value(&body).map_err(anyhow::Error::from)?);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(body))
}
