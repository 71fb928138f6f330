//! `/api/v1/admin/settings/realtime`: the real-time policy.

use axum::Json;
use axum::extract::State;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::modules::audit::{self, Event};
use crate::realtime::policy::{self, RealtimePolicy};

/// The real-time policy: Socket.IO connections per account.
#[utoipa::path(get, path = "/admin/settings/realtime", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RealtimePolicy), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn get_policy(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<RealtimePolicy>> {
    Ok(Json(policy::get(&state.db, &state.cache).await?))
}

/// Change the real-time policy; connections already open stay open.
#[utoipa::path(put, path = "/admin/settings/realtime", tag = "admin", security(("bearer" = [])),
    request_body = RealtimePolicy,
    responses((status = 200, body = RealtimePolicy), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update_policy(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<RealtimePolicy>,
) -> Result<Json<RealtimePolicy>> {
    actor.require_admin()?;
    policy::set(&state.db, &state.cache, &body, actor.user_id).await?;
    let event = Event::new("settings.realtime_changed")
        .details(serde_json::to_value(&body).map_err(anyhow::Error::from)?);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(body))
}
