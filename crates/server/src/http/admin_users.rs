//! `/api/v1/admin/users`: staff read accounts; admins change roles, suspend,
//! and impersonate. Every change is audited.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use crate::db::entities::user::{UserRole, UserStatus};
use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo, Staff};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::UserId;
use crate::mail::templates::SecurityChange;
use crate::modules::audit::{self, Event};
use crate::modules::auth::access::{self, ACCESS_TOKEN_TTL, Grant};
use crate::modules::auth::{revocation, sessions};
use crate::modules::users::admin::{self, UserFilter};
use crate::modules::users::{self, UserView, flows};
use crate::pagination::Page;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Part of the email or name.
    pub q: Option<String>,
    pub role: Option<UserRole>,
    pub status: Option<UserStatus>,
}

/// Search accounts (support and admin).
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserListQuery, PageQuery),
    responses(
        (status = 200, body = Page<UserView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Query(query): Query<UserListQuery>,
    Pagination(page): Pagination,
) -> Result<Json<Page<UserView>>> {
    let filter = UserFilter {
        query: query.q,
        role: query.role,
        status: query.status,
    };
    Ok(Json(admin::list(&state.db, &actor, filter, page).await?))
}

/// One account (support and admin).
#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Staff(_staff): Staff,
    Path(id): Path<UserId>,
) -> Result<Json<UserView>> {
    Ok(Json(users::find(&state.db, id).await?.into()))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    #[garde(skip)]
    pub role: UserRole,
}

/// Change an account's role; its sessions end so the new role applies at once.
#[utoipa::path(patch, path = "/admin/users/{id}/role", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = RoleChange,
    responses(
        (status = 200, body = UserView),
        (status = 409, description = "Own account, or the last admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_role(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<UserId>,
    ValidJson(body): ValidJson<RoleChange>,
) -> Result<Json<UserView>> {
    let before = users::find(&state.db, id).await?.role;
    let account = admin::change_role(&state.db, &state.user_views, &actor, id, body.role).await?;
    end_sessions(&state, id).await?;
    let event = Event::new("user.role_changed")
        .on("user", id)
        .details(serde_json::json!({ "from": before, "to": body.role }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(account.into()))
}

async fn end_sessions(state: &AppState, id: UserId) -> Result<()> {
    revocation::end_sessions_of(&state.db, &state.cache, id, None).await?;
    Ok(())
}

async fn set_suspended(
    state: AppState,
    actor: crate::modules::auth::Actor,
    client: &ClientInfo,
    id: UserId,
    suspended: bool,
) -> Result<Json<UserView>> {
    let account = admin::set_suspended(&state.db, &state.user_views, &actor, id, suspended).await?;
    if suspended {
        end_sessions(&state, id).await?;
    }
    let action = if suspended {
        "user.suspended"
    } else {
        "user.unsuspended"
    };
    audit::record(
        &state.db,
        &client.audit(Some(&actor)),
        Event::new(action).on("user", id),
    )
    .await?;
    Ok(Json(account.into()))
}

/// Suspend an account: it can no longer sign in and its sessions end.
#[utoipa::path(post, path = "/admin/users/{id}/suspend", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn suspend(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<UserId>,
) -> Result<Json<UserView>> {
    set_suspended(state, actor, &client, id, true).await
}

/// Lift a suspension.
#[utoipa::path(post, path = "/admin/users/{id}/unsuspend", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn unsuspend(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<UserId>,
) -> Result<Json<UserView>> {
    set_suspended(state, actor, &client, id, false).await
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImpersonationResponse {
    /// Acts as the user until it expires; marked with the admin's id.
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub user: UserView,
}

/// Act as a customer or support agent for a short while. No refresh cookie
/// is set, so the admin's own session is untouched; every action taken with
/// the token is audited with both ids.
#[utoipa::path(post, path = "/admin/users/{id}/impersonate", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = ImpersonationResponse),
        (status = 403, description = "Target is an admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn impersonate(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<UserId>,
) -> Result<Json<ImpersonationResponse>> {
    let account = admin::impersonable(&state.db, &actor, id).await?;
    let session =
        sessions::open(&state.db, id, Some(actor.user_id), &client.session_origin()).await?;
    let token = access::issue(
        &state.keys,
        Grant {
            user_id: id,
            role: account.role,
            session_id: session.session_id,
            impersonator: Some(actor.user_id),
            two_factor: account.totp_enabled_at.is_some(),
        },
    )?;
    let event = Event::new("user.impersonation_started")
        .on("user", id)
        .details(serde_json::json!({ "session_id": session.session_id }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(ImpersonationResponse {
        access_token: token.token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_TTL.num_seconds(),
        user: account.into(),
    }))
}

/// Turn off a user's two-factor authentication (a lost device). Their
/// sessions end so they sign in again.
#[utoipa::path(post, path = "/admin/users/{id}/reset-2fa", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No two-factor authentication to reset", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset_two_factor(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<UserId>,
) -> Result<Json<UserView>> {
    let account = admin::reset_two_factor(&state.db, &state.user_views, &actor, id).await?;
    end_sessions(&state, id).await?;
    audit::record(
        &state.db,
        &client.audit(Some(&actor)),
        Event::new("user.2fa_reset").on("user", id),
    )
    .await?;
    flows::send_security_alert(
        &state.db,
        &state.jobs,
        id,
        SecurityChange::TwoFactorDisabled,
    )
    .await?;
    Ok(Json(account.into()))
}
