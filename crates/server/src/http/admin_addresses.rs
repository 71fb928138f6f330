//! `/api/v1/admin/ip-addresses`: the address pool of bridged nodes. Staff
//! read it; admins add ranges and remove free addresses.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo, Staff};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::IpAddressId;
use crate::modules::audit::{self, Event};
use crate::modules::nodes::addresses::{self, AddressFilter, IpAddressView, NewAddresses};
use crate::pagination::Page;

/// Pool addresses, newest first, with the instance holding each.
#[utoipa::path(get, path = "/admin/ip-addresses", tag = "admin", security(("bearer" = [])),
    params(PageQuery, AddressFilter),
    responses(
        (status = 200, body = Page<IpAddressView>),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown region", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Staff(actor): Staff,
    Pagination(page): Pagination,
    Query(filter): Query<AddressFilter>,
) -> Result<Json<Page<IpAddressView>>> {
    Ok(Json(
        addresses::list(&state.db, &actor, filter, page).await?,
    ))
}

/// Add a range of IPv4 addresses to a region's pool (all or none).
#[utoipa::path(post, path = "/admin/ip-addresses", tag = "admin", security(("bearer" = [])),
    request_body = NewAddresses,
    responses(
        (status = 201, body = Vec<IpAddressView>),
        (status = 409, description = "An address is in the pool already", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn add(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewAddresses>,
) -> Result<(StatusCode, Json<Vec<IpAddressView>>)> {
    let added = addresses::add(&state.db, &actor, body).await?;
    let event = Event::new("ip_addresses.added").details(serde_json::json!({
        "first": added.first().map(|a| &a.address),
        "last": added.last().map(|a| &a.address),
        "count": added.len(),
    }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// Remove a free address from the pool.
#[utoipa::path(delete, path = "/admin/ip-addresses/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Held by an instance", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<IpAddressId>,
) -> Result<StatusCode> {
    addresses::remove(&state.db, &actor, id).await?;
    let event = Event::new("ip_address.removed").on("ip_address", id);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(StatusCode::NO_CONTENT)
}
