//! An instance's consoles: its first serial port (for xterm.js) and its
//! display (VNC, for noVNC). Browsers open WebSockets without custom headers,
//! so the owner (or an admin) first asks for a ticket with their usual
//! credentials and the WebSocket presents it in its URL.
//!
//! A ticket is 256 random bits, lives [`TICKET_TTL`] in the cache (so any
//! replica can redeem it) and opens one connection to either console of its
//! instance: the first redemption uses it up. A client showing both consoles
//! asks for two tickets.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio::task::AbortHandle;
use vmcloud_hypervisor::{ConsoleStream, Driver, VncEndpoint};

use super::{Services, actions};
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::node;
use crate::error::{Error, Result};
use crate::ids::{InstanceId, UserId};
use crate::modules::auth::Actor;
use crate::modules::auth::sessions::{hash_token, new_token};

/// Long enough for a browser to open the WebSocket right after asking.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// How much of the serial log a new viewer gets first, so it sees the boot
/// output so far.
pub const SERIAL_BACKLOG_BYTES: usize = 64 * 1024;
/// Output chunks kept for viewers that fall behind; a viewer further behind
/// skips what it missed rather than slowing the others down.
const OUTPUT_BUFFER: usize = 1024;
const INPUT_BUFFER: usize = 64;
const READ_CHUNK: usize = 16 * 1024;

/// The states in which the VM may be up: a console is worth opening, even to
/// watch it boot or shut down.
const CONSOLE_STATES: [InstanceStatus; 5] = [
    InstanceStatus::Provisioning,
    InstanceStatus::Starting,
    InstanceStatus::Running,
    InstanceStatus::Rebooting,
    InstanceStatus::Stopping,
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConsoleTicket {
    /// Opens one WebSocket to either console of the instance, once.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
    /// The serial console's WebSocket (raw bytes both ways), ticket included.
    pub serial_url: String,
    /// The display's WebSocket (plain RFB in binary frames, for noVNC),
    /// ticket included.
    pub vnc_url: String,
}

/// What a ticket grants, as stored in the cache.
#[derive(Debug, Serialize, Deserialize)]
struct Grant {
    instance_id: InstanceId,
    user_id: UserId,
}

/// The cache holds a hash, so whoever can read the cache cannot use it.
fn ticket_key(ticket: &str) -> String {
    format!("console:ticket:{}", hash_token(ticket))
}

/// Issues a console ticket for an instance of the actor's, or any instance
/// for an admin. Support staff may not type into customers' machines.
pub async fn issue(services: &Services, actor: &Actor, id: InstanceId) -> Result<ConsoleTicket> {
    actor.require_write()?;
    let row = super::changeable(&services.db, actor, id, "open the console of").await?;
    if !CONSOLE_STATES.contains(&row.status) {
        return Err(actions::invalid_state("open the console of", row.status));
    }
    let ticket = new_token();
    let grant = Grant {
        instance_id: id,
        user_id: actor.user_id,
    };
    services
        .cache
        .set_json(&ticket_key(&ticket), &grant, Some(TICKET_TTL))
        .await?;
    let expires_at = Utc::now() + TICKET_TTL;
    let base = format!("/api/v1/instances/{id}/console");
    Ok(ConsoleTicket {
        serial_url: format!("{base}/serial?ticket={ticket}"),
        vnc_url: format!("{base}/vnc?ticket={ticket}"),
        ticket,
        expires_at,
    })
}

/// Uses a ticket up for a connection to `id`'s console and returns the
/// instance's driver. Removing the ticket is the atomic step: of two
/// concurrent redemptions only one removes it, and only that one succeeds.
async fn redeem(services: &Services, id: InstanceId, ticket: &str) -> Result<Arc<dyn Driver>> {
    let refused = || {
        Error::Unauthorized(
            "The console ticket is unknown, expired or used; ask for a new one.".to_owned(),
        )
    };
    let key = ticket_key(ticket);
    let grant: Grant = services.cache.get_json(&key).await?.ok_or_else(refused)?;
    if grant.instance_id != id || !services.cache.delete(&key).await? {
        return Err(refused());
    }
    tracing::info!(instance_id = %id, user_id = %grant.user_id, "console ticket redeemed");
    let row = instance::Entity::find_by_id(id)
        .filter(instance::Column::DeletedAt.is_null())
        .one(services.db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Instance"))?;
    let node_id = row
        .node_id
        .ok_or_else(|| actions::invalid_state("open the console of", row.status))?;
    let node = node::Entity::find_by_id(node_id)
        .one(services.db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Node"))?;
    services.drivers.for_node(&node).await
}

/// A driver's refusal as the caller should see it: a VM that is not up is a
/// conflict with its state; anything else is the node's trouble.
fn console_error(err: vmcloud_hypervisor::Error) -> Error {
    match err {
        vmcloud_hypervisor::Error::InvalidState { state, .. } => Error::InvalidState {
            message: format!("The VM is {state}; its console opens while it runs."),
            state: state.to_string(),
        },
        other => Error::Unavailable(format!("The node could not open the console: {other}")),
    }
}

/// Redeems `ticket` for a connection to the VM's display: plain RFB, one
/// connection per viewer (the VNC server handles several).
pub async fn open_vnc(services: &Services, id: InstanceId, ticket: &str) -> Result<UnixStream> {
    let driver = redeem(services, id, ticket).await?;
    match driver
        .vnc_endpoint(id.into())
        .await
        .map_err(console_error)?
    {
        VncEndpoint::UnixSocket(path) => UnixStream::connect(&path)
            .await
            .map_err(|err| Error::Unavailable(format!("The VM's display did not answer: {err}"))),
        other => Err(Error::Unavailable(format!(
            "The node offers the display as {other:?}, which cannot be relayed."
        ))),
    }
}

/// Redeems `ticket` for a view of the VM's serial console.
pub async fn open_serial(
    services: &Services,
    id: InstanceId,
    ticket: &str,
) -> Result<SerialViewer> {
    let driver = redeem(services, id, ticket).await?;
    let connect = async {
        driver
            .serial_console(id.into())
            .await
            .map_err(console_error)
    };
    // Joined before reading the log, so no output falls between the two; a
    // few bytes may show twice instead.
    let mut viewer = services.serial_hubs.join(id, connect).await?;
    viewer.backlog = driver
        .serial_log(id.into(), SERIAL_BACKLOG_BYTES)
        .await
        .map_err(console_error)?
        .into();
    Ok(viewer)
}

/// One viewer of a serial console.
#[derive(Debug)]
pub struct SerialViewer {
    /// The end of the serial log, to show before the live output.
    pub backlog: Bytes,
    output: broadcast::Receiver<Bytes>,
    hub: Arc<SerialHub>,
}

impl SerialViewer {
    /// The guest's next output; `None` once the console closed (the VM
    /// stopped). A viewer that fell too far behind skips what it missed.
    pub async fn output(&mut self) -> Option<Bytes> {
        loop {
            match self.output.recv().await {
                Ok(bytes) => return Some(bytes),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Types `bytes` on the console; `false` once it closed.
    pub async fn input(&self, bytes: Bytes) -> bool {
        self.hub.input.send(bytes).await.is_ok()
    }
}

/// A VM's serial console takes one client at a time, so each process keeps
/// one connection per instance and shares it among the viewers it serves.
/// The connection closes when the last viewer leaves.
#[derive(Clone, Debug, Default)]
pub struct SerialHubs {
    hubs: Arc<Mutex<HashMap<InstanceId, Weak<SerialHub>>>>,
}

/// One instance's console connection, held by its viewers.
#[derive(Debug)]
struct SerialHub {
    /// Weak, so the channel closes when the pump ends (the VM stopped).
    output: broadcast::WeakSender<Bytes>,
    input: mpsc::Sender<Bytes>,
    pump: AbortHandle,
}

impl Drop for SerialHub {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl SerialHubs {
    /// A new viewer of `id`'s console: on its live hub, or on a new one
    /// connected with `connect`.
    async fn join(
        &self,
        id: InstanceId,
        connect: impl Future<Output = Result<ConsoleStream>>,
    ) -> Result<SerialViewer> {
        let mut hubs = self.hubs.lock().await;
        if let Some(hub) = hubs.get(&id).and_then(Weak::upgrade)
            && let Some(output) = hub.output.upgrade()
        {
            return Ok(SerialViewer {
                backlog: Bytes::new(),
                output: output.subscribe(),
                hub,
            });
        }
        let console = connect.await?;
        let (output, receiver) = broadcast::channel(OUTPUT_BUFFER);
        let (input, typed) = mpsc::channel(INPUT_BUFFER);
        let hub = Arc::new(SerialHub {
            output: output.downgrade(),
            input,
            pump: tokio::spawn(pump(console, output, typed)).abort_handle(),
        });
        hubs.retain(|_, hub| hub.strong_count() > 0);
        hubs.insert(id, Arc::downgrade(&hub));
        Ok(SerialViewer {
            backlog: Bytes::new(),
            output: receiver,
            hub,
        })
    }
}

/// Moves bytes between the VM's console and its viewers until the console
/// closes or the hub is dropped.
async fn pump(
    mut console: ConsoleStream,
    output: broadcast::Sender<Bytes>,
    mut typed: mpsc::Receiver<Bytes>,
) {
    let mut buffer = BytesMut::new();
    loop {
        buffer.reserve(READ_CHUNK);
        tokio::select! {
            read = console.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                // No viewer at this instant is fine: the serial log keeps it.
                Ok(_) => drop(output.send(buffer.split().freeze())),
            },
            Some(bytes) = typed.recv() => {
                if console.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::*;

    /// A console connection whose far end plays the VM.
    fn console() -> (ConsoleStream, DuplexStream) {
        let (platform, vm) = tokio::io::duplex(1024);
        (Box::new(platform), vm)
    }

    /// For a join that must find the live hub.
    fn refuse_to_connect() -> std::future::Ready<Result<ConsoleStream>> {
        std::future::ready(Err(Error::Conflict("connected a second time".to_owned())))
    }

    async fn read_some(vm: &mut DuplexStream) -> Vec<u8> {
        let mut buffer = vec![0; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), vm.read(&mut buffer))
            .await
            .expect("in time")
            .expect("read");
        buffer.truncate(read);
        buffer
    }

    #[tokio::test]
    async fn viewers_share_one_connection_closed_when_the_last_leaves() {
        let hubs = SerialHubs::default();
        let id = InstanceId::new();
        let (platform, mut vm) = console();
        let mut first = hubs.join(id, async { Ok(platform) }).await.expect("join");
        let mut second = hubs.join(id, refuse_to_connect()).await.expect("join");

        vm.write_all(b"login: ").await.expect("write");
        assert_eq!(first.output().await.expect("output"), "login: ");
        assert_eq!(second.output().await.expect("output"), "login: ");
        assert!(second.input(Bytes::from_static(b"root\n")).await);
        assert_eq!(read_some(&mut vm).await, b"root\n");

        drop(first);
        vm.write_all(b"#").await.expect("write");
        assert_eq!(second.output().await.expect("output"), "#");
        drop(second);
        assert_eq!(read_some(&mut vm).await, b"", "the connection closed");

        let (platform, _vm) = console();
        hubs.join(id, async { Ok(platform) })
            .await
            .expect("a new connection for a new viewer");
    }

    #[tokio::test]
    async fn viewers_are_told_when_the_console_closes() {
        let hubs = SerialHubs::default();
        let id = InstanceId::new();
        let (platform, vm) = console();
        let mut viewer = hubs.join(id, async { Ok(platform) }).await.expect("join");
        drop(vm);
        assert_eq!(viewer.output().await, None);
        assert!(!viewer.input(Bytes::from_static(b"x")).await);

        let (platform, _vm) = console();
        hubs.join(id, async { Ok(platform) })
            .await
            .expect("the next viewer connects again");
    }
}
