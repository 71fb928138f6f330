//! The hypervisor-neutral interface the platform drives VMs through.
//!
//! Every method is bounded in time by the driver and reports an elapsed bound
//! as [`Error::Timeout`], so a hung hypervisor can never stall a worker.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::qemu::qmp::QmpError;
use crate::spec::VmSpec;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("VM {0} does not exist on this node")]
    NotFound(Uuid),
    #[error("VM {0} is already defined with a different spec")]
    AlreadyExists(Uuid),
    #[error("VM {vm} has no snapshot named {name:?}")]
    SnapshotNotFound { vm: Uuid, name: String },
    #[error("cannot {op} a VM that is {state}")]
    InvalidState { op: &'static str, state: VmStatus },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("{op} did not finish within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    #[error("hypervisor unavailable: {0}")]
    Unavailable(String),
    /// libvirt refused or failed a call (its own message).
    #[error("libvirt: {0}")]
    Libvirt(String),
    #[error("QEMU monitor: {0}")]
    Qmp(#[from] QmpError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done, so the message names the file.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Runs `work`, turning "took longer than `limit`" into [`Error::Timeout`].
pub(crate) async fn bounded<T>(
    op: &'static str,
    limit: Duration,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(Error::Timeout { op, after: limit }))
}

/// What a VM is doing, as seen from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    Running,
    /// vCPUs are not executing (paused by us, or a transitional hypervisor state).
    Paused,
    /// Powered off cleanly (guest shutdown, `stop`, `force_stop`).
    Stopped,
    /// Should be running but its process is gone (killed, host reboot) or the
    /// guest hit an unrecoverable error.
    Crashed,
    /// The driver has no VM with this id on this node.
    Missing,
    /// Its process is alive but the hypervisor did not say what it is doing.
    /// Only [`Driver::list`] reports it; [`Driver::status`] returns the error.
    Unknown,
}

impl fmt::Display for VmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Missing => "missing",
            Self::Unknown => "unknown",
        })
    }
}

/// A VM's status changed on the node, as its hypervisor reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    pub id: Uuid,
    pub status: VmStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The guest powered off within the timeout.
    Graceful,
    /// The guest did not power off in time (or was paused) and was cut off.
    Forced,
    /// Nothing was running.
    AlreadyStopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    pub id: Uuid,
    pub name: String,
    pub status: VmStatus,
}

/// Cumulative counters since the VM's process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmStats {
    /// CPU time of the whole hypervisor process (vCPUs and device emulation).
    pub cpu_time_ns: u64,
    pub memory_rss_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    /// `None` where the network backend has no counters (QEMU user networking).
    pub net_rx_bytes: Option<u64>,
    pub net_tx_bytes: Option<u64>,
}

/// The snapshot names every driver accepts, in words for error messages.
pub const SNAPSHOT_NAME_RULE: &str = "1-64 of A-Z a-z 0-9 . _ - starting with a letter";

/// Whether every driver accepts `name` for a snapshot. A leading letter keeps
/// names apart from qemu-img's numeric snapshot ids and from command options.
pub fn snapshot_name_is_valid(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub created_at_unix_secs: i64,
    /// Bytes of saved RAM/device state; 0 for a disk-only snapshot.
    pub vm_state_bytes: u64,
}

/// Where the VM's VNC server (plain RFB) accepts connections. The platform
/// relays the bytes of a noVNC WebSocket (binary frames) to it, so VNC is never
/// exposed on the network and needs no port allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VncEndpoint {
    UnixSocket(PathBuf),
}

/// A bidirectional byte stream, e.g. a serial console.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

pub type ConsoleStream = Box<dyn ByteStream>;

/// A node's hypervisor. Implementations are cheap to share as `Arc<dyn Driver>`;
/// commands for one VM are serialized by the driver, so concurrent calls for the
/// same VM never interleave.
#[async_trait]
pub trait Driver: Send + Sync + fmt::Debug {
    /// Creates the VM's disk (overlay on the base image), cloud-init seed and
    /// stored spec. Idempotent: defining the same spec again is a no-op.
    async fn define(&self, spec: &VmSpec) -> Result<()>;
    /// Boots a stopped or crashed VM; a running VM is left as it is.
    async fn start(&self, id: Uuid) -> Result<()>;
    /// Asks the guest to power off (ACPI), then cuts it off after `timeout`.
    async fn stop(&self, id: Uuid, timeout: Duration) -> Result<StopOutcome>;
    /// Cuts the power. A stopped VM is left as it is.
    async fn force_stop(&self, id: Uuid) -> Result<()>;
    /// Hard reset, like pressing the reset button.
    async fn reboot(&self, id: Uuid) -> Result<()>;
    async fn pause(&self, id: Uuid) -> Result<()>;
    async fn resume(&self, id: Uuid) -> Result<()>;
    /// Kills the VM and deletes everything the driver made for it. Idempotent.
    async fn destroy(&self, id: Uuid) -> Result<()>;
    /// [`VmStatus::Missing`] for an id the driver does not know.
    async fn status(&self, id: Uuid) -> Result<VmStatus>;
    /// The spec as stored on the node (after resizes).
    async fn spec(&self, id: Uuid) -> Result<VmSpec>;
    /// New CPU/memory size, applied at the next start. Only while stopped.
    async fn resize(&self, id: Uuid, vcpus: u32, memory_mib: u64) -> Result<()>;
    /// Grows the disk (never shrinks). The guest grows its filesystem itself.
    async fn grow_disk(&self, id: Uuid, new_gib: u64) -> Result<()>;
    async fn snapshot_create(&self, id: Uuid, name: &str) -> Result<SnapshotInfo>;
    async fn snapshot_list(&self, id: Uuid) -> Result<Vec<SnapshotInfo>>;
    async fn snapshot_revert(&self, id: Uuid, name: &str) -> Result<()>;
    async fn snapshot_delete(&self, id: Uuid, name: &str) -> Result<()>;
    /// The guest's first serial port. One client at a time: a second
    /// connection waits until the first closes, so the platform should fan
    /// one connection out to its viewers.
    async fn serial_console(&self, id: Uuid) -> Result<ConsoleStream>;
    /// The last `max_bytes` of everything the guest wrote on its serial port,
    /// across boots, whether or not anyone was connected.
    async fn serial_log(&self, id: Uuid, max_bytes: usize) -> Result<Vec<u8>>;
    async fn vnc_endpoint(&self, id: Uuid) -> Result<VncEndpoint>;
    async fn stats(&self, id: Uuid) -> Result<VmStats>;
    /// Every VM defined on this node, for reconcilers looking for drift.
    async fn list(&self) -> Result<Vec<VmSummary>>;
    /// Status changes of this node's VMs as they happen (`Missing` once one
    /// is gone), including those nobody asked for: a guest powering itself
    /// off, a crash. Best effort: a lagging receiver misses some, so callers
    /// treat an event as a reason to read the state again.
    fn events(&self) -> broadcast::Receiver<VmEvent>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_reports_the_operation_that_timed_out() {
        let limit = Duration::from_millis(10);
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        };
        let err = bounded("pause", limit, slow)
            .await
            .expect_err("bounded should fail");
        assert!(matches!(err, Error::Timeout { op: "pause", after } if after == limit));
        assert_eq!(err.to_string(), "pause did not finish within 10ms");
    }

    #[tokio::test]
    async fn bounded_passes_results_through() {
        let value = bounded("status", Duration::from_secs(1), async { Ok(7) }).await;
        assert_eq!(value.expect("bounded result"), 7);
    }

    #[test]
    fn invalid_state_message_names_operation_and_state() {
        let err = Error::InvalidState {
            op: "pause",
            state: VmStatus::Stopped,
        };
        assert_eq!(err.to_string(), "cannot pause a VM that is stopped");
    }
}
