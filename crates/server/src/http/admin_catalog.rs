//! `/api/v1/admin/{regions,images,products}`: admins manage the catalog.
//! Every change is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::ids::{ImageId, ProductId, RegionId};
use crate::modules::audit::{self, Event};
use crate::modules::auth::Actor;
use crate::modules::products::image_source::SourcePolicy;
use crate::modules::products::images::{self, AdminImageView, ImageChanges, NewImage};
use crate::modules::products::plans::{self, NewPlan, PlanChanges, PlanView};
use crate::modules::products::regions::{self, NewRegion, RegionChanges, RegionView};

async fn audit_change(
    state: &AppState,
    client: &ClientInfo,
    actor: &Actor,
    action: &'static str,
    kind: &'static str,
    id: uuid::Uuid,
) -> Result<()> {
    let event = Event::new(action).on(kind, id);
    audit::record(&state.db, &client.audit(Some(actor)), event).await
}

/// Every region, active or not.
#[utoipa::path(get, path = "/admin/regions", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<RegionView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_regions(
    State(state): State<AppState>,
    Admin(actor): Admin,
) -> Result<Json<Vec<RegionView>>> {
    actor.require_admin()?;
    Ok(Json(regions::list(&state.db, true).await?))
}

/// Add a region.
#[utoipa::path(post, path = "/admin/regions", tag = "admin", security(("bearer" = [])), request_body = NewRegion,
    responses(
        (status = 201, body = RegionView),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_region(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewRegion>,
) -> Result<(StatusCode, Json<RegionView>)> {
    let region = regions::create(&state.db, &actor, body).await?;
    audit_change(
        &state,
        &client,
        &actor,
        "region.created",
        "region",
        region.id.0,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(region)))
}

/// Rename, open or close a region.
#[utoipa::path(patch, path = "/admin/regions/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = RegionChanges,
    responses((status = 200, body = RegionView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn update_region(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<RegionId>,
    ValidJson(body): ValidJson<RegionChanges>,
) -> Result<Json<RegionView>> {
    let region = regions::update(&state.db, &actor, id, body).await?;
    audit_change(&state, &client, &actor, "region.updated", "region", id.0).await?;
    Ok(Json(region))
}

/// Delete a region nothing uses.
#[utoipa::path(delete, path = "/admin/regions/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In use", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_region(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<RegionId>,
) -> Result<StatusCode> {
    regions::delete(&state.db, &actor, id).await?;
    audit_change(&state, &client, &actor, "region.deleted", "region", id.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every image, with its source and import state.
#[utoipa::path(get, path = "/admin/images", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<AdminImageView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_images(
    State(state): State<AppState>,
    Admin(actor): Admin,
) -> Result<Json<Vec<AdminImageView>>> {
    Ok(Json(images::list_admin(&state.db, &actor).await?))
}

/// Register an image; it is imported in the background (`status` goes from
/// `importing` to `available` or `failed`) and stays unlisted until an admin
/// publishes it with `active: true`.
#[utoipa::path(post, path = "/admin/images", tag = "admin", security(("bearer" = [])), request_body = NewImage,
    responses(
        (status = 202, body = AdminImageView),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_image(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewImage>,
) -> Result<(StatusCode, Json<AdminImageView>)> {
    let sources = SourcePolicy::new(&state.config);
    let image = images::create(&state.db, &state.jobs, &actor, &sources, body).await?;
    audit_change(
        &state,
        &client,
        &actor,
        "image.created",
        "image",
        image.image.id.0,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(image)))
}

/// One image.
#[utoipa::path(get, path = "/admin/images/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = AdminImageView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_image(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<ImageId>,
) -> Result<Json<AdminImageView>> {
    Ok(Json(images::get_admin(&state.db, &actor, id).await?))
}

/// Rename, hide or publish an image (publishing needs a finished import).
#[utoipa::path(patch, path = "/admin/images/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = ImageChanges,
    responses(
        (status = 200, body = AdminImageView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not imported", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_image(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<ImageId>,
    ValidJson(body): ValidJson<ImageChanges>,
) -> Result<Json<AdminImageView>> {
    let image = images::update(&state.db, &actor, id, body).await?;
    audit_change(&state, &client, &actor, "image.updated", "image", id.0).await?;
    Ok(Json(image))
}

/// Run a failed import again.
#[utoipa::path(post, path = "/admin/images/{id}/import", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, body = AdminImageView),
        (status = 409, description = "Not failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry_image_import(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<ImageId>,
) -> Result<(StatusCode, Json<AdminImageView>)> {
    let image = images::retry_import(&state.db, &state.jobs, &actor, id).await?;
    audit_change(
        &state,
        &client,
        &actor,
        "image.import_retried",
        "image",
        id.0,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(image)))
}

/// Delete an image no instance uses, with its file.
#[utoipa::path(delete, path = "/admin/images/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "In use or importing", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_image(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<ImageId>,
) -> Result<StatusCode> {
    images::delete(&state.db, &actor, id).await?;
    audit_change(&state, &client, &actor, "image.deleted", "image", id.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every plan, listed or not.
#[utoipa::path(get, path = "/admin/products", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<PlanView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_products(
    State(state): State<AppState>,
    Admin(actor): Admin,
) -> Result<Json<Vec<PlanView>>> {
    actor.require_admin()?;
    Ok(Json(plans::list(&state.db, true).await?))
}

/// Add a plan.
#[utoipa::path(post, path = "/admin/products", tag = "admin", security(("bearer" = [])), request_body = NewPlan,
    responses(
        (status = 201, body = PlanView),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewPlan>,
) -> Result<(StatusCode, Json<PlanView>)> {
    let plan = plans::create(&state.db, &state.cache, &actor, body).await?;
    audit_change(
        &state,
        &client,
        &actor,
        "product.created",
        "product",
        plan.id.0,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// One plan.
#[utoipa::path(get, path = "/admin/products/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = PlanView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_product(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<ProductId>,
) -> Result<Json<PlanView>> {
    actor.require_admin()?;
    Ok(Json(plans::get(&state.db, id).await?))
}

/// Change a plan; instances already running keep their size.
#[utoipa::path(patch, path = "/admin/products/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = PlanChanges,
    responses(
        (status = 200, body = PlanView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<ProductId>,
    ValidJson(body): ValidJson<PlanChanges>,
) -> Result<Json<PlanView>> {
    let plan = plans::update(&state.db, &state.cache, &actor, id, body).await?;
    audit_change(&state, &client, &actor, "product.updated", "product", id.0).await?;
    Ok(Json(plan))
}

/// Delete a plan nothing was ordered with.
#[utoipa::path(delete, path = "/admin/products/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "In use", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_product(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<ProductId>,
) -> Result<StatusCode> {
    plans::delete(&state.db, &actor, id).await?;
    audit_change(&state, &client, &actor, "product.deleted", "product", id.0).await?;
    Ok(StatusCode::NO_CONTENT)
}
