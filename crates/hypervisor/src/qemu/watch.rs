//! Turns each running VM's QMP events into [`VmEvent`]s.
//!
//! Every QEMU has a second monitor (`events.sock`) kept open by a watcher for
//! as long as the process lives, so commands on the main monitor, which
//! serves one client at a time, are never blocked by it. When QEMU closes the
//! monitor the watcher reads the VM's final state from its files.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::passt;
use super::paths::VmPaths;
use super::qmp::{QmpClient, QmpEvent};
use super::{EXIT_GRACE, vm_status, wait_for_exit};
use crate::driver::{VmEvent, VmStatus};

/// Events queued for a slow subscriber before it starts missing some.
pub(crate) const EVENT_BUFFER: usize = 256;
/// How long a watcher waits for the events monitor to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The VMs a driver watches. Dropping it stops the watchers, so that the
/// next driver on the same VMs can take over their event monitors (QEMU
/// serves one client per monitor).
#[derive(Debug)]
pub(crate) struct Watchers(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    events: broadcast::Sender<VmEvent>,
    watched: Mutex<HashMap<Uuid, AbortHandle>>,
}

impl Watchers {
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            events: broadcast::channel(EVENT_BUFFER).0,
            watched: Mutex::default(),
        }))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.0.events.subscribe()
    }

    /// Starts watching a VM whose QEMU runs, unless it is watched already.
    pub fn watch(&self, id: Uuid, paths: VmPaths) {
        // Held while spawning, so a watcher that ends at once removes itself
        // only after it was added.
        if let Entry::Vacant(slot) = self.0.lock().entry(id) {
            let task = tokio::spawn(Arc::clone(&self.0).follow(id, paths));
            slot.insert(task.abort_handle());
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for (_, task) in self.0.lock().drain() {
            task.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, AbortHandle>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn follow(self: Arc<Self>, id: Uuid, paths: VmPaths) {
        match tokio::time::timeout(CONNECT_TIMEOUT, QmpClient::connect(&paths.events)).await {
            Ok(Ok(client)) => self.relay(id, &paths, &client).await,
            // A QEMU started before event monitors existed, or one that is
            // exiting: the reconciler's timer still sees its changes.
            outcome => tracing::debug!(%id, ?outcome, "cannot watch the VM's events"),
        }
        self.lock().remove(&id);
    }

    async fn relay(&self, id: Uuid, paths: &VmPaths, client: &QmpClient) {
        let mut events = client.subscribe();
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(status) = status_after(&event) {
                        self.send(id, status);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        // The monitor closes as QEMU exits; its pidfile says how it ended.
        let exited = wait_for_exit(paths, EXIT_GRACE).await.unwrap_or(false);
        if exited && let Err(error) = passt::stop(paths).await {
            tracing::warn!(%id, %error, "the exited VM's passt is still running");
        }
        let status = match vm_status(paths).await {
            Ok(status) if exited => status,
            outcome => {
                tracing::warn!(%id, ?outcome, "the VM's monitor closed but its state is unclear");
                VmStatus::Unknown
            }
        };
        self.send(id, status);
    }

    fn send(&self, id: Uuid, status: VmStatus) {
        // Nobody listening is fine: events are hints, states are re-read.
        let _ = self.events.send(VmEvent { id, status });
    }
}

/// The state a QMP event leaves the VM in, for the events that change it.
/// `SHUTDOWN` is not one: the process exit that follows is reported instead.
fn status_after(event: &QmpEvent) -> Option<VmStatus> {
    match event.name.as_str() {
        "STOP" => Some(VmStatus::Paused),
        "RESUME" => Some(VmStatus::Running),
        "GUEST_PANICKED" => Some(VmStatus::Crashed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn event(name: &str) -> QmpEvent {
        QmpEvent {
            name: name.into(),
            data: Value::Null,
        }
    }

    #[test]
    fn only_events_that_change_the_state_map_to_one() {
        assert_eq!(status_after(&event("STOP")), Some(VmStatus::Paused));
        assert_eq!(status_after(&event("RESUME")), Some(VmStatus::Running));
        assert_eq!(
            status_after(&event("GUEST_PANICKED")),
            Some(VmStatus::Crashed)
        );
        for other in ["RESET", "POWERDOWN", "SHUTDOWN", "RTC_CHANGE"] {
            assert_eq!(status_after(&event(other)), None, "{other}");
        }
    }
}
