//! The public catalog: what the pricing page and the order form show. No
//! sign-in needed.

use axum::Json;
use axum::extract::State;

use crate::error::Result;
use crate::http::AppState;
use crate::modules::products::images::{self, ImageView};
use crate::modules::products::plans::{self, PlanView};
use crate::modules::products::regions::{self, RegionView};

/// Plans on sale, in display order.
#[utoipa::path(get, path = "/products", tag = "catalog",
    responses((status = 200, body = Vec<PlanView>)))]
pub async fn products(State(state): State<AppState>) -> Result<Json<Vec<PlanView>>> {
    Ok(Json(plans::list(&state.db, false).await?))
}

/// Regions open for new instances.
#[utoipa::path(get, path = "/regions", tag = "catalog",
    responses((status = 200, body = Vec<RegionView>)))]
pub async fn regions(State(state): State<AppState>) -> Result<Json<Vec<RegionView>>> {
    Ok(Json(regions::list(&state.db, false).await?))
}

/// Images instances can be created from.
#[utoipa::path(get, path = "/images", tag = "catalog",
    responses((status = 200, body = Vec<ImageView>)))]
pub async fn images(State(state): State<AppState>) -> Result<Json<Vec<ImageView>>> {
    Ok(Json(images::list_public(&state.db).await?))
}
