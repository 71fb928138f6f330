//! `/api/v1/instances/{id}/console`: a ticket for an instance's consoles, and
//! the two WebSockets it opens, the serial console (xterm.js) and the display
//! (noVNC). The WebSockets are authenticated by the ticket alone, since
//! browsers cannot set headers on them.

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ClientInfo, CurrentUser};
use crate::http::problem::Problem;
use crate::ids::InstanceId;
use crate::modules::audit::{self, Event};
use crate::modules::instances::console::{self, ConsoleTicket, SerialViewer};

/// noVNC asks for this subprotocol; xterm.js asks for none.
const BINARY_PROTOCOL: &str = "binary";
const DISPLAY_CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    /// From `POST /instances/{id}/console`; single use.
    #[param(required = true)]
    ticket: Option<String>,
}

/// A WebSocket upgrade presenting a console ticket. A missing ticket is a
/// 401, checked first as the ticket is these routes' only credential; a
/// request that is not a WebSocket handshake gets the upgrade's own refusal.
pub struct TicketedUpgrade {
    upgrade: WebSocketUpgrade,
    ticket: String,
}

impl std::fmt::Debug for TicketedUpgrade {
    /// Without the ticket: it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketedUpgrade").finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TicketedUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Query(query) = Query::<TicketQuery>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let ticket = query.ticket.ok_or_else(|| {
            Error::Unauthorized("A console ticket is required.".to_owned()).into_response()
        })?;
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self { upgrade, ticket })
    }
}

/// A ticket for the instance's consoles, valid 30 seconds for one
/// connection to either WebSocket. For the owner and admins only.
#[utoipa::path(post, path = "/instances/{id}/console", tag = "instances", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = ConsoleTicket),
        (status = 403, description = "Support staff, or a read-only API token", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The instance is not up (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn issue_ticket(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    Path(id): Path<InstanceId>,
) -> Result<Json<ConsoleTicket>> {
    let ticket = console::issue(&state.instances(), &actor, id).await?;
    let event = Event::new("instance.console_ticket_issued").on("instance", id);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok(Json(ticket))
}

/// The serial console as a WebSocket: the guest's output in binary frames,
/// starting with the last 64 KiB of its log; binary or text frames are typed
/// on the console. Viewers share one connection to the VM.
#[utoipa::path(get, path = "/instances/{id}/console/serial", tag = "instances",
    params(("id" = uuid::Uuid, Path), TicketQuery),
    responses(
        (status = 101, description = "Switching Protocols to a WebSocket"),
        (status = 401, description = "No ticket, or one unknown, expired, used or for another instance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The VM is not running (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn serial(
    State(state): State<AppState>,
    Path(id): Path<InstanceId>,
    TicketedUpgrade { upgrade, ticket }: TicketedUpgrade,
) -> Result<Response> {
    let viewer = console::open_serial(&state.instances(), id, &ticket).await?;
    Ok(upgrade.on_upgrade(move |socket| relay_serial(socket, viewer)))
}

/// The display as a WebSocket for noVNC: plain RFB in binary frames both
/// ways (subprotocol `binary` when asked for).
#[utoipa::path(get, path = "/instances/{id}/console/vnc", tag = "instances",
    params(("id" = uuid::Uuid, Path), TicketQuery),
    responses(
        (status = 101, description = "Switching Protocols to a WebSocket"),
        (status = 401, description = "No ticket, or one unknown, expired, used or for another instance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The VM is not running (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn vnc(
    State(state): State<AppState>,
    Path(id): Path<InstanceId>,
    TicketedUpgrade { upgrade, ticket }: TicketedUpgrade,
) -> Result<Response> {
    let display = console::open_vnc(&state.instances(), id, &ticket).await?;
    Ok(upgrade
        .protocols([BINARY_PROTOCOL])
        .on_upgrade(move |socket| relay_display(socket, display)))
}

/// What the client sent.
enum FromClient {
    /// Bytes for the VM: binary frames, and text frames as their UTF-8.
    Bytes(Bytes),
    /// Pings and pongs, which the WebSocket answers by itself.
    Control,
    Gone,
}

async fn from_client(socket: &mut WebSocket) -> FromClient {
    match socket.recv().await {
        Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
            FromClient::Bytes(message.into_data())
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => FromClient::Control,
        Some(Ok(Message::Close(_)) | Err(_)) | None => FromClient::Gone,
    }
}

async fn relay_serial(mut socket: WebSocket, mut viewer: SerialViewer) {
    let backlog = std::mem::take(&mut viewer.backlog);
    if socket.send(Message::Binary(backlog)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            output = viewer.output() => {
                let Some(bytes) = output else {
                    let close = CloseFrame {
                        code: close_code::NORMAL,
                        reason: "The VM's console closed.".into(),
                    };
                    drop(socket.send(Message::Close(Some(close))).await);
                    return;
                };
                if socket.send(Message::Binary(bytes)).await.is_err() {
                    return;
                }
            }
            incoming = from_client(&mut socket) => match incoming {
                FromClient::Bytes(bytes) => {
                    if !viewer.input(bytes).await {
                        return;
                    }
                }
                FromClient::Control => {}
                FromClient::Gone => return,
            },
        }
    }
}

async fn relay_display(mut socket: WebSocket, mut display: UnixStream) {
    let mut buffer = BytesMut::new();
    loop {
        buffer.reserve(DISPLAY_CHUNK);
        tokio::select! {
            read = display.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if socket.send(Message::Binary(buffer.split().freeze())).await.is_err() {
                        return;
                    }
                }
            },
            incoming = from_client(&mut socket) => match incoming {
                FromClient::Bytes(bytes) => {
                    if display.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                FromClient::Control => {}
                FromClient::Gone => return,
            },
        }
    }
}
