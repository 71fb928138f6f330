//! `/api/v1/api-tokens`: personal tokens for automation and the CLI, used as
//! `Authorization: Bearer vmc_…` on the whole API.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{AccountHolder, ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::ApiTokenId;
use crate::modules::api_tokens::{self, ApiTokenView, CreatedApiToken, NewApiToken};
use crate::modules::audit::{self, Event};
use crate::modules::auth::revocation;
use crate::pagination::Page;

/// Create a token. Its secret is in this answer only; store it now.
#[utoipa::path(post, path = "/api-tokens", tag = "api-tokens", security(("bearer" = [])), request_body = NewApiToken,
    responses(
        (status = 403, description = "Not from the account holder's signed-in session", body = Problem, content_type = "application/problem+json"),
        (status = 201, body = CreatedApiToken),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AccountHolder(actor): AccountHolder,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewApiToken>,
) -> Result<(StatusCode, Json<CreatedApiToken>)> {
    let created = api_tokens::create(&state.db, actor.user_id, body).await?;
    let event = Event::new("api_token.created")
        .on("api_token", created.view.id)
        .details(serde_json::json!({ "scope": created.view.scope, "name": created.view.name }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The account's tokens, revoked ones included; never their secrets.
#[utoipa::path(get, path = "/api-tokens", tag = "api-tokens", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ApiTokenView>)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
) -> Result<Json<Page<ApiTokenView>>> {
    Ok(Json(
        api_tokens::list(&state.db, actor.user_id, page).await?,
    ))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/api-tokens/{id}", tag = "api-tokens", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = ApiTokenView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<ApiTokenId>,
) -> Result<Json<ApiTokenView>> {
    let view = api_tokens::revoke(&state.db, actor.user_id, id).await?;
    revocation::announce(&state.cache, &revocation::Revoked::ApiToken(id)).await;
    audit::record(
        &state.db,
        &client.audit(Some(&actor)),
        Event::new("api_token.revoked").on("api_token", id),
    )
    .await?;
    Ok(Json(view))
}
