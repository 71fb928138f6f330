//! `/api/v1/ssh-keys`: the signed-in account's public keys, offered when an
//! instance is created.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::SshKeyId;
use crate::modules::audit::{self, Event};
use crate::modules::ssh_keys::{self, NewSshKey, SshKeyView};
use crate::pagination::Page;

/// Add a public key (ed25519, ecdsa, or rsa of 2048 bits or more).
#[utoipa::path(post, path = "/ssh-keys", tag = "ssh-keys", security(("bearer" = [])), request_body = NewSshKey,
    responses(
        (status = 201, body = SshKeyView),
        (status = 409, description = "Key already added", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewSshKey>,
) -> Result<(StatusCode, Json<SshKeyView>)> {
    let key = ssh_keys::create(&state.db, actor.user_id, body).await?;
    let event = Event::new("ssh_key.created")
        .on("ssh_key", key.id)
        .details(serde_json::json!({ "fingerprint": key.fingerprint }));
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::CREATED, Json(key)))
}

/// The account's keys, newest first.
#[utoipa::path(get, path = "/ssh-keys", tag = "ssh-keys", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<SshKeyView>)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
) -> Result<Json<Page<SshKeyView>>> {
    Ok(Json(ssh_keys::list(&state.db, actor.user_id, page).await?))
}

/// One key.
#[utoipa::path(get, path = "/ssh-keys/{id}", tag = "ssh-keys", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SshKeyView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<SshKeyId>,
) -> Result<Json<SshKeyView>> {
    Ok(Json(ssh_keys::get(&state.db, actor.user_id, id).await?))
}

/// Remove a key; instances made with it keep it.
#[utoipa::path(delete, path = "/ssh-keys/{id}", tag = "ssh-keys", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<SshKeyId>,
) -> Result<StatusCode> {
    ssh_keys::delete(&state.db, actor.user_id, id).await?;
    audit::record(
        &state.db,
        &client.audit(Some(&actor)),
        Event::new("ssh_key.deleted").on("ssh_key", id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
