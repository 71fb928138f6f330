//! Real time: Socket.IO protocol v5 (socketioxide) at `/socket.io`, so the
//! official `socket.io-client` connects unchanged.
//!
//! - **Authentication**: the handshake's `auth` payload carries `{token}`, an
//!   access token or a personal API token, checked as the REST API checks
//!   it; a missing or invalid one gets a `connect_error`. When the
//!   credential expires the connection ends, after a `session.expired`
//!   event, unless the client sent a fresh token with `authenticate` first.
//! - **Rooms**: `user:{id}` for every connection, `staff` for support and
//!   admins, `admin` for admins, and `instance:{id}` on request (`subscribe`
//!   with an ack) after the REST API's own visibility check.
//! - **Fan-out**: modules publish live events on the cache's pub/sub
//!   ([`crate::modules::events`]); each process listens to every channel once
//!   and emits each event to its own sockets in the event's rooms. With
//!   Redis the pub/sub already crosses processes, so events from a worker or
//!   another replica reach every replica's clients; the in-memory adapter is
//!   all socketioxide needs, and no event is sent over Redis twice.
//! - **Delivery** is at most once. A client that reconnects re-reads the
//!   current state over REST, then applies the events that follow.
//! - **Limits**: connections per account on each replica
//!   ([`policy::RealtimePolicy`]), and Socket.IO's own ping/pong heartbeat
//!   (a ping every 25 s, a peer silent for 20 s more is dropped).

mod connections;
pub mod policy;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{OriginalUri, Request};
use axum::http::Uri;
use axum::http::header::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler as _;
use socketioxide::layer::SocketIoLayer;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::authenticate_token;
use crate::http::problem::Problem;
use crate::ids::{InstanceId, UserId};
use crate::modules::auth::Actor;
use crate::modules::auth::revocation::{self, Revoked};
use crate::modules::events::{Audience, CHANNELS};
use crate::modules::instances;
use connections::{Connections, Slot};

/// How often connections are checked for an expired credential.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// The event a connection receives just before it is closed because its
/// credential expired.
pub const SESSION_EXPIRED: &str = "session.expired";

/// The event a connection receives just before it is closed because its
/// credential was revoked (a logout, sessions signed out, an API token
/// deleted).
pub const SESSION_REVOKED: &str = "session.revoked";

/// What the handlers share.
#[derive(Clone, Debug)]
struct Shared {
    state: AppState,
    connections: Connections,
}

/// The Socket.IO layer to put in front of the HTTP router, and the handle
/// [`run`] needs.
pub fn layer(state: &AppState) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        // What clients send is small (subscriptions, fresh tokens): a 1 KiB
        // read buffer, grown when a message needs it, instead of 4 KiB kept
        // by every connection.
        .ws_read_buffer_size(WS_READ_BUFFER)
        .with_state(Shared {
            state: state.clone(),
            connections: Connections::default(),
        })
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    (layer, io)
}

/// The initial read buffer of a WebSocket connection.
const WS_READ_BUFFER: usize = 1024;

/// Where Socket.IO answers (socketioxide's default path).
const PATH: &str = "/socket.io";

/// Gives a Socket.IO handshake's request head its own memory. socketioxide
/// keeps each connection's handshake head for the connection's life, and
/// hyper parses the URI and header values as slices of the connection's
/// read buffer (16 KiB once it has grown): keeping them (and the router's
/// `OriginalUri`) kept that buffer, half of what an idle connection cost.
/// Copies of the few hundred bytes let it go. Other requests pass
/// untouched.
pub async fn detach_head(request: Request) -> Request {
    if !request.uri().path().starts_with(PATH) {
        return request;
    }
    let (mut head, body) = request.into_parts();
    head.headers = head
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
            Some((name, HeaderValue::from_bytes(value.as_bytes()).ok()?))
        })
        .collect();
    if let Ok(uri) = Uri::try_from(head.uri.to_string()) {
        // The router kept a copy of the URI as it came, too.
        if let Some(OriginalUri(original)) = head.extensions.get_mut::<OriginalUri>() {
            original.clone_from(&uri);
        }
        head.uri = uri;
    }
    Request::from_parts(head, body)
}

/// Relays live events to the connections and closes those whose credential
/// expired, until `stop`; then closes every connection.
pub async fn run<A: Adapter>(io: SocketIo<A>, cache: Cache, stop: CancellationToken) {
    tokio::select! {
        () = relay(&io, &cache) => {}
        () = expire(&io) => {}
        () = cut_off_revoked(&io, &cache) => {}
        () = stop.cancelled() => {}
    }
    io.close().await;
}

/// A connection's account and credential.
struct Session {
    actor: RwLock<Actor>,
    /// Given back when the connection's socket is dropped.
    _slot: Slot,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.actor().user_id)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn actor(&self) -> Actor {
        self.actor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes a fresh credential of the same account.
    fn renew(&self, fresh: Actor) -> Result<()> {
        let mut actor = self.actor.write().unwrap_or_else(PoisonError::into_inner);
        if actor.user_id != fresh.user_id {
            return Err(Error::Forbidden(
                "A connection stays with the account it opened as; reconnect to change accounts."
                    .to_owned(),
            ));
        }
        *actor = fresh;
        Ok(())
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.actor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .expires_at()
            .is_some_and(|at| at <= now)
    }
}

/// The handshake's `auth` payload, and the `authenticate` event's.
#[derive(Deserialize)]
struct Credentials {
    token: String,
}

/// Why a connection was refused: the `connect_error` message is the
/// problem's detail.
struct Refusal(Problem);

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        Self(Problem::from(err))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.detail)
    }
}

fn missing_token() -> Error {
    Error::Unauthorized(
        "Send an access token or API token in the handshake: `auth: {token}`.".to_owned(),
    )
}

/// The connect middleware: authenticates the handshake and takes one of the
/// account's connections.
async fn authenticate<A: Adapter>(
    socket: SocketRef<A>,
    State(shared): State<Shared>,
    TryData(credentials): TryData<Credentials>,
) -> std::result::Result<(), Refusal> {
    let credentials = credentials.map_err(|_| missing_token())?;
    let actor = authenticate_token(&shared.state, credentials.token.trim()).await?;
    let max = policy::get(&shared.state.db, &shared.state.cache)
        .await?
        .max_connections_per_user;
    let slot = shared
        .connections
        .try_open(actor.user_id, max)
        .ok_or_else(|| Error::QuotaExceeded {
            message: format!(
                "This account already holds {max} real-time connections; close one first."
            ),
            limit: max.into(),
        })?;
    socket.extensions.insert(Arc::new(Session {
        actor: RwLock::new(actor),
        _slot: slot,
    }));
    Ok(())
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>, Extension(session): Extension<Arc<Session>>) {
    join_role_rooms(&socket, &session.actor());
    socket.on("subscribe", subscribe);
    socket.on("unsubscribe", unsubscribe);
    socket.on("authenticate", reauthenticate);
}

/// The account's room, and the staff and admin rooms as its role allows
/// (not while it is held back for want of a second factor).
fn join_role_rooms<A: Adapter>(socket: &SocketRef<A>, actor: &Actor) {
    socket.join(Audience::User(actor.user_id).room());
    for (room, member) in [
        (Audience::Staff, actor.is_staff()),
        (Audience::Admin, actor.is_admin()),
    ] {
        if matches!(member, Ok(true)) {
            socket.join(room.room());
        } else {
            socket.leave(room.room());
        }
    }
}

/// The `subscribe` and `unsubscribe` events' payload.
#[derive(Deserialize)]
struct InstanceRef {
    instance_id: InstanceId,
}

fn instance_ref(data: std::result::Result<InstanceRef, impl fmt::Display>) -> Result<InstanceId> {
    data.map(|data| data.instance_id).map_err(|_| {
        Error::invalid_field("/instance_id", "Name the instance: `{instance_id: \"…\"}`.")
    })
}

/// Answers an ack: `{ok: true, …}`, or `{ok: false, error: problem}` with
/// the problem the REST API would give.
fn reply<A: Adapter>(ack: AckSender<A>, outcome: Result<serde_json::Value>) {
    let body = match outcome {
        Ok(mut body) => {
            body["ok"] = true.into();
            body
        }
        Err(err) => json!({ "ok": false, "error": Problem::from(err) }),
    };
    // The client may be gone already; there is nobody left to tell.
    let _ = ack.send(&body);
}

/// Joins `instance:{id}` when the account may see the instance.
async fn subscribe<A: Adapter>(
    socket: SocketRef<A>,
    State(shared): State<Shared>,
    Extension(session): Extension<Arc<Session>>,
    TryData(data): TryData<InstanceRef>,
    ack: AckSender<A>,
) {
    let outcome = async {
        let id = instance_ref(data)?;
        instances::visible(&shared.state.db, &session.actor(), id).await?;
        socket.join(Audience::Instance(id).room());
        Ok(json!({ "instance_id": id }))
    }
    .await;
    reply(ack, outcome);
}

async fn unsubscribe<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<InstanceRef>,
    ack: AckSender<A>,
) {
    let outcome = instance_ref(data).map(|id| {
        socket.leave(Audience::Instance(id).room());
        json!({ "instance_id": id })
    });
    reply(ack, outcome);
}

/// Takes a fresh token for the same account, so the connection outlives
/// the credential it opened with.
async fn reauthenticate<A: Adapter>(
    socket: SocketRef<A>,
    State(shared): State<Shared>,
    Extension(session): Extension<Arc<Session>>,
    TryData(credentials): TryData<Credentials>,
    ack: AckSender<A>,
) {
    let outcome = async {
        let credentials = credentials.map_err(|_| missing_token())?;
        let actor = authenticate_token(&shared.state, credentials.token.trim()).await?;
        let expires_at = actor.expires_at();
        session.renew(actor)?;
        join_role_rooms(&socket, &session.actor());
        Ok(json!({ "expires_at": expires_at }))
    }
    .await;
    reply(ack, outcome);
}

/// Listens to every live-event channel and emits each event to its rooms.
async fn relay<A: Adapter>(io: &SocketIo<A>, cache: &Cache) {
    let mut channels = Vec::with_capacity(CHANNELS.len());
    for channel in CHANNELS {
        match cache.subscribe(channel).await {
            Ok(subscription) => channels.push(Box::pin(subscription.into_stream())),
            Err(err) => {
                tracing::error!(
                    channel,
                    error = format!("{err:#}"),
                    "real-time events cannot be relayed"
                );
                return std::future::pending().await;
            }
        }
    }
    let mut messages = futures::stream::select_all(channels);
    while let Some(message) = messages.next().await {
        deliver(io, &message).await;
    }
}

/// An envelope as relayed: the event is passed on as it is, so a type this
/// process does not know yet (a newer replica's) still reaches clients.
#[derive(Deserialize)]
struct Relayed {
    audience: Vec<Audience>,
    event: serde_json::Value,
}

async fn deliver<A: Adapter>(io: &SocketIo<A>, message: &[u8]) {
    let relayed = match serde_json::from_slice::<Relayed>(message) {
        Ok(relayed) => relayed,
        Err(err) => {
            tracing::warn!(%err, "dropping a live event that does not decode");
            return;
        }
    };
    let Some(name) = relayed.event["type"].as_str() else {
        tracing::warn!("dropping a live event without a type");
        return;
    };
    let rooms: Vec<String> = relayed.audience.iter().map(Audience::room).collect();
    if let Err(err) = io.to(rooms).emit(name, &relayed.event).await {
        tracing::debug!(%err, event = name, "a live event did not reach every socket");
    }
}

/// Closes the connections whose credential is revoked, on any replica, as
/// the revocations are announced.
async fn cut_off_revoked<A: Adapter>(io: &SocketIo<A>, cache: &Cache) {
    let mut announced = match cache.subscribe(revocation::CHANNEL).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "revocations cannot close live connections"
            );
            return std::future::pending().await;
        }
    };
    while let Some(message) = announced.next().await {
        let Ok(revoked) = serde_json::from_slice::<Revoked>(&message) else {
            tracing::warn!("dropping a revocation that does not decode");
            continue;
        };
        let now = Utc::now();
        for socket in io.sockets() {
            let Some(session) = socket.extensions.get::<Arc<Session>>() else {
                continue;
            };
            let actor = session.actor();
            if revoked.covers(&actor.credential) {
                let reason = "The credential was revoked; sign in again.";
                close_with_notice(socket, SESSION_REVOKED, actor.user_id, now, reason);
            }
        }
    }
}

/// Tells a connection why it is being closed, then closes it: the notice is
/// queued before the disconnect packet, so it arrives first.
fn close_with_notice<A: Adapter>(
    socket: SocketRef<A>,
    event: &'static str,
    user: UserId,
    now: DateTime<Utc>,
    reason: &str,
) {
    let notice = json!({ "type": event, "timestamp": now, "id": user, "reason": reason });
    let _ = socket.emit(event, &notice);
    let _ = socket.disconnect();
}

/// Closes, every [`EXPIRY_CHECK`], the connections whose credential expired.
async fn expire<A: Adapter>(io: &SocketIo<A>) {
    let mut ticks = tokio::time::interval(EXPIRY_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Utc::now();
        for socket in io.sockets() {
            let Some(session) = socket.extensions.get::<Arc<Session>>() else {
                continue;
            };
            if !session.expired(now) {
                continue;
            }
            let reason = "The credential expired; send a fresh token with `authenticate` \
                          before it does, or connect again with one.";
            close_with_notice(
                socket,
                SESSION_EXPIRED,
                session.actor().user_id,
                now,
                reason,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::{OriginalUri, Request};
    use bytes::Bytes;

    use super::detach_head;

    /// A request whose URI and header value are slices of one buffer, as
    /// hyper parses them.
    fn parsed(path: &str) -> (Request, Bytes) {
        let buffer = Bytes::from(format!("{path} ada-token").into_bytes());
        let uri = axum::http::Uri::from_maybe_shared(buffer.slice(..path.len())).expect("uri");
        let value = axum::http::HeaderValue::from_maybe_shared(buffer.slice(path.len() + 1..))
            .expect("value");
        let mut request = Request::builder()
            .uri(uri.clone())
            .header("x-token", value)
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(OriginalUri(uri));
        (request, buffer)
    }

    #[tokio::test]
    async fn a_handshake_keeps_its_head_but_not_the_buffer_it_was_parsed_from() {
        let (request, buffer) = parsed("/socket.io/?EIO=4&transport=websocket");
        let request = detach_head(request).await;
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(request.headers()["x-token"], "ada-token");
        let original = request.extensions().get::<OriginalUri>().expect("kept");
        assert_eq!(original.0, "/socket.io/?EIO=4&transport=websocket");
        // Nothing but this test holds the buffer any more.
        assert!(buffer.is_unique());
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let (request, buffer) = parsed("/api/v1/users/me");
        let request = detach_head(request).await;
        assert_eq!(request.headers()["x-token"], "ada-token");
        assert!(!buffer.is_unique(), "still shared with the request");
    }
}
