//! `/api/v1/admin/instances`: every customer's instances with their owner
//! and node. Support staff read them; only admins act on them, through the
//! same action path as owners (so the same state rules and queue), audited
//! with the admin as the actor.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo, Staff};
use crate::http::instances::accepted;
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::InstanceId;
use crate::modules::instances::actions::{self, ActionRequest, ActionView};
use crate::modules::instances::{self, InstanceFilter, StaffInstanceView};
use crate::pagination::Page;

/// Every customer's instances, newest first, filtered by node, owner,
/// status, plan or region, or searched by name, host name or address.
#[utoipa::path(get, path = "/admin/instances", tag = "admin", security(("bearer" = [])),
    params(PageQuery, InstanceFilter),
    responses((status = 200, body = Page<StaffInstanceView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Pagination(page): Pagination,
    Query(filter): Query<InstanceFilter>,
) -> Result<Json<Page<StaffInstanceView>>> {
    Ok(Json(
        instances::list_all(&state.instances(), &actor, filter, page).await?,
    ))
}

/// Act on any customer's instance: start, stop, force_stop, reboot, resize,
/// rebuild or retry, as its owner would. 409 with `state` when its state
/// does not allow it or another action is running.
#[utoipa::path(post, path = "/admin/instances/{id}/actions", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = ActionRequest,
    responses(
        (status = 202, body = ActionView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Invalid in this state (`state`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_action(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
    ValidJson(body): ValidJson<ActionRequest>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = actions::request(&state.instances(), &actor, id, body).await?;
    accepted(
        &state,
        &client,
        &actor,
        "admin.instance.action_requested",
        action,
    )
    .await
}

/// Delete any customer's instance, as its owner would.
#[utoipa::path(delete, path = "/admin/instances/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, body = ActionView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = instances::delete(&state.instances(), &actor, id).await?;
    accepted(
        &state,
        &client,
        &actor,
        "admin.instance.delete_requested",
        action,
    )
    .await
}
