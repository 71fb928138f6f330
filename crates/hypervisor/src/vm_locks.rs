//! One lock per VM, so that a driver's commands for a VM never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

#[derive(Debug, Default)]
pub(crate) struct VmLocks(Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>);

impl VmLocks {
    pub async fn lock(&self, id: Uuid) -> OwnedMutexGuard<()> {
        let lock = Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_default(),
        );
        lock.lock_owned().await
    }

    /// Drops the lock of a destroyed VM, so the map does not grow forever.
    pub fn forget(&self, id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}
