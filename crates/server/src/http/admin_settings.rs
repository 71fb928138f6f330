//! `/api/v1/admin/settings`: every platform setting by key, typed and
//! validated by its module (see `crate::modules::settings`).

use axum::Json;
use axum::extract::{Path, State};

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::modules::audit::{self, Event};
use crate::modules::settings::{self, SettingView};

/// Any JSON value: its setting's type checks it.
#[derive(Debug, serde::Deserialize, garde::Validate)]
#[serde(transparent)]
pub struct SettingValue(#[garde(skip)] serde_json::Value);

/// Every setting with its description, current value and default.
#[utoipa::path(get, path = "/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<SettingView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<Vec<SettingView>>> {
    Ok(Json(settings::list(&state.db, &state.cache).await?))
}

/// One setting's current value. Keys: `accounts`, `security`, `billing`,
/// `invoicing`, `instances`, `nodes`, `realtime` and the others
/// `GET /admin/settings` lists. An unknown key is a 422.
#[utoipa::path(get, path = "/admin/settings/{key}", tag = "admin", security(("bearer" = [])),
    params(("key" = String, Path)),
    responses((status = 200, body = serde_json::Value), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(key): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(
        settings::read(&state.db, &state.cache, &key).await?.value,
    ))
}

/// Replace a setting's value. It is checked against the setting's type and
/// rules (422 naming the bad field), seen at once by every replica, and
/// audited.
#[utoipa::path(put, path = "/admin/settings/{key}", tag = "admin", security(("bearer" = [])),
    params(("key" = String, Path)),
    request_body = serde_json::Value,
    responses((status = 200, body = serde_json::Value), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(key): Path<String>,
    ValidJson(SettingValue(value)): ValidJson<SettingValue>,
) -> Result<Json<serde_json::Value>> {
    actor.require_admin()?;
    let view = settings::write(&state.db, &state.cache, &key, value, actor.user_id).await?;
    let event = Event::new("settings.changed")
        .on("setting", view.key)
        .details(view.value.clone());
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(view.value))
}
