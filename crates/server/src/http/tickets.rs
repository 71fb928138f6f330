//! `/api/v1/tickets`: support tickets, their messages and attachments.
//! Customers see their own tickets, Support and Admin all of them; every
//! change is audited.

use std::fmt::Write as _;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use tokio_util::io::ReaderStream;

use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ClientInfo, CurrentUser, Staff};
use crate::http::json::ValidJson;
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::{TicketAttachmentId, TicketId};
use crate::modules::audit::{self, Event};
use crate::modules::auth::Actor;
use crate::modules::support::attachments::{self, AttachmentView, Upload};
use crate::modules::support::{
    self, Assignment, MessageView, NewMessage, NewTicket, StatusChange, TicketDetail, TicketFilter,
    TicketView,
};
use crate::pagination::Page;

async fn record(
    state: &AppState,
    client: &ClientInfo,
    actor: &Actor,
    action: &'static str,
    ticket: TicketId,
    details: serde_json::Value,
) -> Result<()> {
    let event = Event::new(action).on("ticket", ticket).details(details);
    audit::record(&state.db, &client.audit(Some(actor)), event).await
}

/// Open a ticket with its first message.
#[utoipa::path(post, path = "/tickets", tag = "support", security(("bearer" = [])), request_body = NewTicket,
    responses(
        (status = 201, body = TicketDetail),
        (status = 422, description = "Invalid fields, or an instance that is not the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    ValidJson(body): ValidJson<NewTicket>,
) -> Result<(StatusCode, Json<TicketDetail>)> {
    let opened = support::open(&state.support(), &actor, body).await?;
    let details = serde_json::json!({
        "category": opened.ticket.category,
        "priority": opened.ticket.priority,
    });
    record(
        &state,
        &client,
        &actor,
        "ticket.opened",
        opened.ticket.id,
        details,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

/// The caller's tickets (every ticket for staff), newest first.
#[utoipa::path(get, path = "/tickets", tag = "support", security(("bearer" = [])),
    params(PageQuery, TicketFilter),
    responses((status = 200, body = Page<TicketView>)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Pagination(page): Pagination,
    Query(filter): Query<TicketFilter>,
) -> Result<Json<Page<TicketView>>> {
    Ok(Json(
        support::list(&state.support(), &actor, filter, page).await?,
    ))
}

/// A ticket with its messages (internal notes for staff only) and
/// attachments.
#[utoipa::path(get, path = "/tickets/{id}", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = TicketDetail), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path(id): Path<TicketId>,
) -> Result<Json<TicketDetail>> {
    Ok(Json(support::get(&state.support(), &actor, id).await?))
}

/// Reply to a ticket, or (staff) add an internal note. The reply is emailed
/// to the other side and pushed live.
#[utoipa::path(post, path = "/tickets/{id}/messages", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = NewMessage,
    responses(
        (status = 201, body = MessageView),
        (status = 403, description = "An internal note from a customer", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The ticket is closed: open a new one", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn post_message(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<TicketId>,
    ValidJson(body): ValidJson<NewMessage>,
) -> Result<(StatusCode, Json<MessageView>)> {
    let message = support::reply(&state.support(), &actor, id, body).await?;
    let details = serde_json::json!({"message_id": message.id, "internal": message.internal});
    record(
        &state,
        &client,
        &actor,
        "ticket.message_posted",
        id,
        details,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// Attach a file: a multipart form with one part named `file`. Its size and
/// type (told by its content) are checked against the support settings.
#[utoipa::path(post, path = "/tickets/{id}/attachments", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body(content_type = "multipart/form-data", description = "One part named `file`."),
    responses(
        (status = 201, body = AttachmentView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The ticket is closed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A type not allowed, or not the one declared", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn upload_attachment(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<TicketId>,
    mut multipart: Multipart,
) -> Result<(StatusCode, Json<AttachmentView>)> {
    let unreadable = |err: axum::extract::multipart::MultipartError| {
        Error::BadRequest(format!("The multipart body could not be read: {err}."))
    };
    let missing =
        || Error::invalid_field("file", "send the file as one multipart part named `file`");
    let field = multipart
        .next_field()
        .await
        .map_err(unreadable)?
        .ok_or_else(missing)?;
    if field.name() != Some("file") {
        return Err(missing());
    }
    let upload = Upload {
        file_name: field.file_name().map(str::to_owned),
        declared_type: field.content_type().map(str::to_owned),
        content: Box::pin(field),
    };
    let attached = attachments::upload(&state.support(), &actor, id, upload).await?;
    let details = serde_json::json!({
        "attachment_id": attached.id,
        "file_name": attached.file_name,
        "content_type": attached.content_type,
        "size_bytes": attached.size_bytes,
    });
    record(
        &state,
        &client,
        &actor,
        "ticket.attachment_added",
        id,
        details,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(attached)))
}

/// `attachment; filename="…"; filename*=UTF-8''…`: an ASCII fallback and the
/// exact name (RFC 6266), so the browser saves rather than shows the file.
fn content_disposition(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Download an attachment of a ticket the caller may see.
#[utoipa::path(get, path = "/tickets/{id}/attachments/{attachment_id}", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("attachment_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The file, as an attachment", content_type = "application/octet-stream"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn download_attachment(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    Path((id, attachment)): Path<(TicketId, TicketAttachmentId)>,
) -> Result<Response> {
    let (view, file) = attachments::open(&state.support(), &actor, id, attachment).await?;
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    let content_type = HeaderValue::from_str(&view.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(view.size_bytes));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&view.file_name),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    // Even opened in a tab, the file runs nothing.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

/// Assign a ticket to a Support or Admin account (staff only).
#[utoipa::path(post, path = "/tickets/{id}/assign", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = Assignment,
    responses(
        (status = 200, body = TicketView),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The ticket is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The assignee is not an active Support or Admin account", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn assign(
    State(state): State<AppState>,
    Staff(actor): Staff,
    client: ClientInfo,
    Path(id): Path<TicketId>,
    ValidJson(body): ValidJson<Assignment>,
) -> Result<Json<TicketView>> {
    let ticket = support::assign(&state.support(), &actor, id, body).await?;
    let details = serde_json::json!({"assignee_id": ticket.assignee_id});
    record(&state, &client, &actor, "ticket.assigned", id, details).await?;
    Ok(Json(ticket))
}

/// Move a ticket along its workflow: open → awaiting_support ⇄
/// awaiting_customer → resolved → closed. Customers may resolve, then
/// close, their own tickets.
#[utoipa::path(post, path = "/tickets/{id}/status", tag = "support", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = StatusChange,
    responses(
        (status = 200, body = TicketView),
        (status = 403, description = "A status only staff set", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a move the workflow allows (`state`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_status(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<TicketId>,
    ValidJson(body): ValidJson<StatusChange>,
) -> Result<Json<TicketView>> {
    let ticket = support::change_status(&state.support(), &actor, id, body).await?;
    let details = serde_json::json!({"status": ticket.status});
    record(
        &state,
        &client,
        &actor,
        "ticket.status_changed",
        id,
        details,
    )
    .await?;
    Ok(Json(ticket))
}
