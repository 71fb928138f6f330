//! `/api/v1/admin/security`: platform-wide security policy.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::modules::audit::{self, Event};
use crate::modules::settings;

#[derive(Debug, Serialize, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicy {
    /// Support and admin accounts must turn on two-factor authentication
    /// before they can use staff routes.
    #[garde(skip)]
    pub require_2fa_for_staff: bool,
}

async fn current(state: &AppState) -> Result<SecurityPolicy> {
    Ok(SecurityPolicy {
        require_2fa_for_staff: settings::get(
            &state.db,
            &state.cache,
            settings::REQUIRE_2FA_FOR_STAFF,
            false,
        )
        .await?,
    })
}

/// The security policy.
#[utoipa::path(get, path = "/admin/security", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SecurityPolicy), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Admin(_admin): Admin,
) -> Result<Json<SecurityPolicy>> {
    Ok(Json(current(&state).await?))
}

/// Change the security policy.
#[utoipa::path(put, path = "/admin/security", tag = "admin", security(("bearer" = [])),
    request_body = SecurityPolicy,
    responses((status = 200, body = SecurityPolicy), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<SecurityPolicy>,
) -> Result<Json<SecurityPolicy>> {
    actor.require_admin()?;
    settings::set(
        &state.db,
        &state.cache,
        settings::REQUIRE_2FA_FOR_STAFF,
        &body.require_2fa_for_staff,
        actor.user_id,
    )
    .await?;
    let event = Event::new("settings.security_changed")
        .details(serde_json::json!({ "require_2fa_for_staff": body.require_2fa_for_staff }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(current(&state).await?))
}
