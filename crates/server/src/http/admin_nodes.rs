//! `/api/v1/admin/nodes`: hypervisor hosts. Staff read them; admins add,
//! resize, put into maintenance, drain and remove them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo, Staff};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::ids::NodeId;
use crate::modules::audit::{self, Event};
use crate::modules::nodes::{self, NewNode, NodeChanges, NodeView};

/// Every node with its capacity, usage and health.
#[utoipa::path(get, path = "/admin/nodes", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<NodeView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    Staff(actor): Staff,
) -> Result<Json<Vec<NodeView>>> {
    Ok(Json(nodes::list(&state.db, &actor).await?))
}

/// One node.
#[utoipa::path(get, path = "/admin/nodes/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Path(id): Path<NodeId>,
) -> Result<Json<NodeView>> {
    Ok(Json(nodes::get(&state.db, &actor, id).await?))
}

/// Register a node.
#[utoipa::path(post, path = "/admin/nodes", tag = "admin", security(("bearer" = [])), request_body = NewNode,
    responses(
        (status = 201, body = NodeView),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewNode>,
) -> Result<(StatusCode, Json<NodeView>)> {
    let node = nodes::create(&state.db, &state.cache, &actor, body).await?;
    let event = Event::new("node.created").on("node", node.id);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(node)))
}

/// Change a node's capacity or overcommit, or put it into maintenance or
/// draining (and back online).
#[utoipa::path(patch, path = "/admin/nodes/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = NodeChanges,
    responses(
        (status = 200, body = NodeView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<NodeId>,
    ValidJson(body): ValidJson<NodeChanges>,
) -> Result<Json<NodeView>> {
    let status = body.status;
    let node = nodes::update(&state.db, &actor, id, body).await?;
    let event = Event::new("node.updated")
        .on("node", id)
        .details(serde_json::json!({ "status": status }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(node))
}

/// Remove a node that holds no instances.
#[utoipa::path(delete, path = "/admin/nodes/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "Still holds instances", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<NodeId>,
) -> Result<StatusCode> {
    nodes::delete(&state.db, &actor, id).await?;
    audit::record(
        &state.db,
        &client.audit(Some(&actor)),
        Event::new("node.deleted").on("node", id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
