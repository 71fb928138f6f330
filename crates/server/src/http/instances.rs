//! `/api/v1/instances`: customers' virtual machines, their actions and
//! snapshots. Customers reach their own; support and admins reach all.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};

use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::{InstanceActionId, InstanceId};
use crate::modules::audit::{self, Event};
use crate::modules::instances::actions::{self, ActionRequest, ActionView};
use crate::modules::instances::metrics::{self, MetricSeries, MetricsRange};
use crate::modules::instances::snapshots::{self, NewSnapshot, SnapshotView};
use crate::modules::instances::{self, InstanceChanges, InstanceFilter, InstanceView, NewInstance};
use crate::pagination::Page;

const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.trim().is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY => {
            Ok(Some(key.trim().to_owned()))
        }
        _ => Err(Error::invalid_field(
            "Idempotency-Key",
            format!("must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )),
    }
}

/// Order an instance. It is placed on a node at once (409 when none has
/// room) and provisioned in the background: poll it, or its
/// `pending_action`, until it is `running`. Send an `Idempotency-Key` to
/// retry safely: the same key returns the first instance.
#[utoipa::path(post, path = "/instances", tag = "instances", security(("bearer" = [])),
    request_body = NewInstance,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    responses(
        (status = 202, description = "Accepted; provisioning", body = InstanceView),
        (status = 402, description = "The billing policy asks for credit and the balance is not positive", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Email not verified, or quota reached (`limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No capacity (`reason`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    headers: HeaderMap,
    ValidJson(body): ValidJson<NewInstance>,
) -> Result<(StatusCode, Json<InstanceView>)> {
    let key = idempotency_key(&headers)?;
    let (instance, _created) = instances::create(&state.instances(), &actor, body, key).await?;
    Ok((StatusCode::ACCEPTED, Json(instance)))
}

/// Instances, newest first: the caller's own, or for staff every customer's.
#[utoipa::path(get, path = "/instances", tag = "instances", security(("bearer" = [])),
    params(PageQuery, InstanceFilter),
    responses((status = 200, body = Page<InstanceView>)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
    Query(filter): Query<InstanceFilter>,
) -> Result<Json<Page<InstanceView>>> {
    Ok(Json(
        instances::list(&state.instances(), &actor, filter, page).await?,
    ))
}

/// One instance.
#[utoipa::path(get, path = "/instances/{id}", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = InstanceView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InstanceId>,
) -> Result<Json<InstanceView>> {
    Ok(Json(instances::get(&state.instances(), &actor, id).await?))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// The window: `1h` (one point per sample, the default), `24h`
    /// (5-minute averages) or `7d` (hourly averages).
    #[param(value_type = Option<MetricsRange>, inline)]
    pub range: Option<String>,
}

/// An instance's resource usage over a window: CPU and memory averages and
/// disk and network byte rates, oldest first.
#[utoipa::path(get, path = "/instances/{id}/metrics", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), MetricsQuery),
    responses(
        (status = 200, body = MetricSeries),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown `range`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_metrics(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InstanceId>,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<MetricSeries>> {
    let range = query
        .range
        .as_deref()
        .map_or(Ok(MetricsRange::LastHour), str::parse)?;
    Ok(Json(metrics::series(&state.db, &actor, id, range).await?))
}

/// Rename an instance (its label; the host name stays).
#[utoipa::path(patch, path = "/instances/{id}", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = InstanceChanges,
    responses((status = 200, body = InstanceView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn rename(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
    ValidJson(body): ValidJson<InstanceChanges>,
) -> Result<Json<InstanceView>> {
    let context = client.audit(Some(&actor));
    Ok(Json(
        instances::rename(&state.instances(), &actor, id, body, &context).await?,
    ))
}

/// Delete an instance: its VM is stopped, its disks and snapshots destroyed,
/// its port and address released. Answers the deletion's action.
#[utoipa::path(delete, path = "/instances/{id}", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 202, body = ActionView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = instances::delete(&state.instances(), &actor, id).await?;
    accepted(&state, &client, &actor, "instance.delete_requested", action).await
}

/// Audits a queued action and answers 202 with it.
pub(crate) async fn accepted(
    state: &AppState,
    client: &ClientInfo,
    actor: &crate::modules::auth::Actor,
    what: &'static str,
    action: ActionView,
) -> Result<(StatusCode, Json<ActionView>)> {
    let event = Event::new(what).on("instance", action.instance_id).details(
        serde_json::json!({ "action_id": action.id, "type": action.kind, "params": action.params }),
    );
    audit::record(&state.db, &client.audit(Some(actor)), event).await?;
    Ok((StatusCode::ACCEPTED, Json(action)))
}

/// Ask something of an instance: start, stop, force_stop, reboot, resize (to
/// a larger plan) or rebuild (from an image). 409 with `state` when the
/// instance's state does not allow it or another action is running.
#[utoipa::path(post, path = "/instances/{id}/actions", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = ActionRequest,
    responses(
        (status = 202, body = ActionView),
        (status = 409, description = "Invalid in this state (`state`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn request_action(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
    ValidJson(body): ValidJson<ActionRequest>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = actions::request(&state.instances(), &actor, id, body).await?;
    accepted(&state, &client, &actor, "instance.action_requested", action).await
}

/// The instance's actions, newest first.
#[utoipa::path(get, path = "/instances/{id}/actions", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), PageQuery),
    responses((status = 200, body = Page<ActionView>)))]
pub async fn list_actions(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InstanceId>,
    Pagination(page): Pagination,
) -> Result<Json<Page<ActionView>>> {
    Ok(Json(
        actions::list(&state.instances(), &actor, id, page).await?,
    ))
}

/// One action: its progress (step n of m) and result.
#[utoipa::path(get, path = "/instances/{id}/actions/{action_id}", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("action_id" = uuid::Uuid, Path)),
    responses((status = 200, body = ActionView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_action(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path((id, action_id)): Path<(InstanceId, InstanceActionId)>,
) -> Result<Json<ActionView>> {
    Ok(Json(
        actions::get(&state.instances(), &actor, id, action_id).await?,
    ))
}

/// The instance's snapshots, as its node keeps them.
#[utoipa::path(get, path = "/instances/{id}/snapshots", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<SnapshotView>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn list_snapshots(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<InstanceId>,
) -> Result<Json<Vec<SnapshotView>>> {
    Ok(Json(snapshots::list(&state.instances(), &actor, id).await?))
}

/// Take a snapshot of the disk. A running instance is stopped for it and
/// started again.
#[utoipa::path(post, path = "/instances/{id}/snapshots", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = NewSnapshot,
    responses((status = 202, body = ActionView), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_snapshot(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
    ValidJson(body): ValidJson<NewSnapshot>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = snapshots::create(&state.instances(), &actor, id, body).await?;
    accepted(&state, &client, &actor, "instance.action_requested", action).await
}

/// Put the disk back as it was in a snapshot.
#[utoipa::path(post, path = "/instances/{id}/snapshots/{name}/restore", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("name" = String, Path)),
    responses((status = 202, body = ActionView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn restore_snapshot(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path((id, name)): Path<(InstanceId, String)>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = snapshots::restore(&state.instances(), &actor, id, name).await?;
    accepted(&state, &client, &actor, "instance.action_requested", action).await
}

/// Delete a snapshot.
#[utoipa::path(delete, path = "/instances/{id}/snapshots/{name}", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("name" = String, Path)),
    responses((status = 202, body = ActionView), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_snapshot(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path((id, name)): Path<(InstanceId, String)>,
) -> Result<(StatusCode, Json<ActionView>)> {
    let action = snapshots::delete(&state.instances(), &actor, id, name).await?;
    accepted(&state, &client, &actor, "instance.action_requested", action).await
}
