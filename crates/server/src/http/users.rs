//! `/api/v1/users/me`: the signed-in account, its password and its sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{AccountHolder, ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::mail::templates::SecurityChange;
use crate::modules::audit::{self, Event};
use crate::modules::auth::sessions::{self, SessionView};
use crate::modules::auth::{rate_limit, revocation};
use crate::modules::users::{self, ProfileChanges, UserView, flows};

/// The signed-in account.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = UserView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<UserView>> {
    Ok(Json(state.user_views.get(&state.db, actor.user_id).await?))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    #[garde(skip)]
    pub name: Option<String>,
    /// `en` or `fr`.
    #[garde(skip)]
    pub locale: Option<String>,
    /// ISO 3166-1 alpha-2; an empty string clears it.
    #[garde(skip)]
    pub country: Option<String>,
    #[garde(skip)]
    pub company: Option<String>,
    #[garde(skip)]
    pub vat_id: Option<String>,
}

/// Update the signed-in account's profile.
#[utoipa::path(patch, path = "/users/me", tag = "users", security(("bearer" = [])), request_body = ProfileUpdate,
    responses(
        (status = 200, body = UserView),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    ValidJson(body): ValidJson<ProfileUpdate>,
) -> Result<Json<UserView>> {
    let changes = ProfileChanges {
        name: body.name,
        locale: body.locale,
        country: body.country,
        company: body.company,
        vat_id: body.vat_id,
    };
    Ok(Json(
        users::update_profile(&state.db, &state.user_views, actor.user_id, changes)
            .await?
            .into(),
    ))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Change the password; every other session is signed out.
#[utoipa::path(post, path = "/users/me/password", tag = "users", security(("bearer" = [])), request_body = PasswordChange,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Changed"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<PasswordChange>,
) -> Result<StatusCode> {
    users::change_password(
        &state.db,
        &state.cache,
        actor.user_id,
        body.current_password,
        body.new_password,
    )
    .await?;
    let others =
        revocation::end_sessions_of(&state.db, &state.cache, actor.user_id, actor.session_id())
            .await?;
    let event = Event::new("user.password_changed")
        .on("user", actor.user_id)
        .details(serde_json::json!({ "sessions_revoked": others }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    flows::send_security_alert(
        &state.db,
        &state.jobs,
        actor.user_id,
        SecurityChange::PasswordChanged,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in account's live sessions.
#[utoipa::path(get, path = "/users/me/sessions", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<SessionView>)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<Vec<SessionView>>> {
    Ok(Json(
        sessions::list(&state.db, actor.user_id, actor.session_id()).await?,
    ))
}

/// Sign one session out.
#[utoipa::path(delete, path = "/users/me/sessions/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Revoked"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_session(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    Path(id): Path<uuid::Uuid>,
) -> Result<StatusCode> {
    sessions::revoke_own_session(&state.db, actor.user_id, id).await?;
    revocation::revoke_sessions(&state.cache, &[id]).await?;
    let event = Event::new("auth.session.revoked")
        .on("user", actor.user_id)
        .details(serde_json::json!({ "session_id": id }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountDeletion {
    /// The current password, to confirm.
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Close the signed-in account. Invoices and payments are kept, as the law
/// requires; every session ends.
#[utoipa::path(post, path = "/users/me/deletion", tag = "users", security(("bearer" = [])), request_body = AccountDeletion,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Account closed"),
        (status = 422, description = "Wrong password", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_me(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<AccountDeletion>,
) -> Result<StatusCode> {
    let before = users::find(&state.db, actor.user_id).await?;
    users::delete_account(
        &state.db,
        &state.cache,
        &state.user_views,
        actor.user_id,
        body.password,
    )
    .await?;
    revocation::end_sessions_of(&state.db, &state.cache, actor.user_id, None).await?;
    let event = Event::new("user.deleted")
        .on("user", actor.user_id)
        .details(serde_json::json!({ "email": before.email }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send the verification email again; the earlier link stops working.
#[utoipa::path(post, path = "/users/me/email-verification", tag = "users", security(("bearer" = [])),
    responses(
        (status = 202, description = "On its way"),
        (status = 409, description = "Verified already", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resend_verification(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<StatusCode> {
    rate_limit::hit(
        &state.cache,
        rate_limit::VERIFY_RESEND_PER_ACCOUNT,
        &actor.user_id.to_string(),
    )
    .await?;
    let account = users::find(&state.db, actor.user_id).await?;
    flows::send_verification(&state.db, &state.jobs, &state.config.public_url(), &account).await?;
    Ok(StatusCode::ACCEPTED)
}
