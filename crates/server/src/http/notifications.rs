//! `/api/v1/notifications`: the signed-in account's in-app notifications,
//! and `/api/v1/users/me/notification-preferences`: which emails it wants.
//! Every account reaches only its own.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::CurrentUser;
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::NotificationId;
use crate::modules::notifications::preferences::{
    self, NotificationPreferences, PreferencesUpdate,
};
use crate::modules::notifications::{self, NotificationList, NotificationView, UnreadCount};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// `true`: only the unread ones; `false`: only the read ones.
    pub unread: Option<bool>,
}

/// The account's notifications, newest first, with the unread count.
#[utoipa::path(get, path = "/notifications", tag = "notifications", security(("bearer" = [])),
    params(NotificationQuery, PageQuery),
    responses((status = 200, body = NotificationList)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Query(query): Query<NotificationQuery>,
    Pagination(page): Pagination,
) -> Result<Json<NotificationList>> {
    Ok(Json(
        notifications::list(&state.db, &actor, query.unread, page).await?,
    ))
}

/// How many notifications are unread.
#[utoipa::path(get, path = "/notifications/unread-count", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = UnreadCount)))]
pub async fn unread_count(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<UnreadCount>> {
    Ok(Json(notifications::unread_count(&state.db, &actor).await?))
}

/// Mark a notification read.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = NotificationView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn mark_read(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<NotificationId>,
) -> Result<Json<NotificationView>> {
    Ok(Json(notifications::mark_read(&state.db, &actor, id).await?))
}

#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct MarkedRead {
    /// How many were unread until now.
    pub marked: u64,
}

/// Mark every notification read.
#[utoipa::path(post, path = "/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = MarkedRead)))]
pub async fn mark_all_read(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<MarkedRead>> {
    let marked = notifications::mark_all_read(&state.db, &actor).await?;
    Ok(Json(MarkedRead { marked }))
}

/// Which emails the account gets; `mandatory` lists those always sent.
#[utoipa::path(get, path = "/users/me/notification-preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = NotificationPreferences)))]
pub async fn get_preferences(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
) -> Result<Json<NotificationPreferences>> {
    Ok(Json(preferences::get(&state.db, &actor).await?))
}

/// Turn kinds of email on or off. Turning off a mandatory one (payment
/// failed, suspension warning, suspension, termination warning, security)
/// is a 422 naming it.
#[utoipa::path(put, path = "/users/me/notification-preferences", tag = "notifications", security(("bearer" = [])),
    request_body = PreferencesUpdate,
    responses((status = 200, body = NotificationPreferences), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn update_preferences(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    ValidJson(body): ValidJson<PreferencesUpdate>,
) -> Result<Json<NotificationPreferences>> {
    Ok(Json(preferences::set(&state.db, &actor, body).await?))
}
