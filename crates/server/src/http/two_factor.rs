//! `/api/v1/users/me/2fa`: turning TOTP two-factor authentication on and
//! off, and the recovery codes. Only from a signed-in session, and every
//! change is audited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{AccountHolder, ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::mail::templates::SecurityChange;
use crate::modules::audit::{self, Event};
use crate::modules::auth::Actor;
use crate::modules::auth::two_factor::{self, Enrolment, TwoFactorStatus};
use crate::modules::users::flows;

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirmation {
    /// The current password, to confirm.
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeConfirmation {
    /// The current 6-digit code of the authenticator app.
    #[garde(length(min = 1, max = 32))]
    pub code: String,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReauthenticationRequest {
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// An authenticator code or an unused recovery code.
    #[garde(length(min = 1, max = 32))]
    pub code: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Each works once in place of an authenticator code. Shown only now.
    pub recovery_codes: Vec<String>,
}

/// Audits a change to the second factor, and tells the account holder of
/// the ones that change how they sign in.
async fn record_change(
    state: &AppState,
    client: &ClientInfo,
    actor: &Actor,
    action: &'static str,
    alert: Option<SecurityChange>,
) -> Result<()> {
    let event = Event::new(action).on("user", actor.user_id);
    audit::record(&state.db, &client.audit(Some(actor)), event).await?;
    if let Some(change) = alert {
        flows::send_security_alert(&state.db, &state.jobs, actor.user_id, change).await?;
    }
    Ok(())
}

/// Whether two-factor authentication is on, and how many recovery codes are left.
#[utoipa::path(get, path = "/users/me/2fa", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = TwoFactorStatus),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<TwoFactorStatus>> {
    Ok(Json(two_factor::status(&state.db, actor.user_id).await?))
}

/// Start enrolment: a new secret, as an otpauth URI and a QR code. It takes
/// effect once confirmed with a code.
#[utoipa::path(post, path = "/users/me/2fa/enrol", tag = "users", security(("bearer" = [])),
    request_body = PasswordConfirmation,
    responses(
        (status = 200, body = Enrolment),
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already on", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong password", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enrol(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<PasswordConfirmation>,
) -> Result<Json<Enrolment>> {
    let enrolment =
        two_factor::begin_enrolment(&state.second_factor(), actor.user_id, body.password).await?;
    record_change(&state, &client, &actor, "user.2fa_enrolment_started", None).await?;
    Ok(Json(enrolment))
}

/// Confirm enrolment with the authenticator's first code; turns two-factor
/// authentication on and returns the recovery codes.
#[utoipa::path(post, path = "/users/me/2fa/confirm", tag = "users", security(("bearer" = [])),
    request_body = CodeConfirmation,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = RecoveryCodes),
        (status = 409, description = "Already on, or no enrolment pending", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong code", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn confirm(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<CodeConfirmation>,
) -> Result<Json<RecoveryCodes>> {
    let recovery_codes =
        two_factor::confirm_enrolment(&state.second_factor(), actor.user_id, &body.code).await?;
    record_change(
        &state,
        &client,
        &actor,
        "user.2fa_enabled",
        Some(SecurityChange::TwoFactorEnabled),
    )
    .await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

/// Turn two-factor authentication off, with the password and a code.
#[utoipa::path(post, path = "/users/me/2fa/disable", tag = "users", security(("bearer" = [])),
    request_body = ReauthenticationRequest,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Turned off"),
        (status = 409, description = "Not on", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong password or code", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn disable(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<ReauthenticationRequest>,
) -> Result<StatusCode> {
    two_factor::disable(
        &state.second_factor(),
        actor.user_id,
        body.password,
        &body.code,
    )
    .await?;
    record_change(
        &state,
        &client,
        &actor,
        "user.2fa_disabled",
        Some(SecurityChange::TwoFactorDisabled),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the recovery codes; the old ones stop working.
#[utoipa::path(post, path = "/users/me/2fa/recovery-codes", tag = "users", security(("bearer" = [])),
    request_body = ReauthenticationRequest,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 200, body = RecoveryCodes),
        (status = 409, description = "Not on", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong password or code", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<ReauthenticationRequest>,
) -> Result<Json<RecoveryCodes>> {
    let recovery_codes = two_factor::regenerate_recovery_codes(
        &state.second_factor(),
        actor.user_id,
        body.password,
        &body.code,
    )
    .await?;
    record_change(
        &state,
        &client,
        &actor,
        "user.2fa_recovery_codes_regenerated",
        Some(SecurityChange::RecoveryCodesReplaced),
    )
    .await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}
