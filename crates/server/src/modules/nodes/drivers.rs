//! The hypervisor driver of each node, made on first use and kept for the
//! life of the process (a QEMU driver probes its accelerator once; a libvirt
//! driver keeps its connection).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{Mutex, broadcast};
use vmcloud_hypervisor::{Accel, AccelChoice, Driver, QemuConfig, QemuDriver, VmEvent};

use crate::config::QemuAccel;
use crate::db::entities::node::{self, Accelerator, NodeDriver};
use crate::error::{Error, Result};
use crate::ids::NodeId;

#[derive(Clone, Debug)]
pub struct Drivers {
    accel: QemuAccel,
    /// What guests on QEMU nodes must not reach (besides the node itself).
    guest_internal_networks: Vec<ipnet::IpNet>,
    /// Whether QEMU nodes give user-mode guests passt instead of no network.
    passt: bool,
    made: Arc<Mutex<HashMap<NodeId, MadeDriver>>>,
    /// Every made driver's events, merged.
    events: broadcast::Sender<VmEvent>,
}

/// Events of all nodes queued for a slow subscriber before it misses some.
const EVENT_BUFFER: usize = 1024;

/// A node's driver, with the accelerator it settled on.
type MadeDriver = (Arc<dyn Driver>, Accel);

impl Drivers {
    pub fn new(accel: QemuAccel, guest_internal_networks: Vec<ipnet::IpNet>, passt: bool) -> Self {
        Self {
            accel,
            guest_internal_networks,
            passt,
            made: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Status changes of VMs on every node whose driver was made, as their
    /// hypervisors report them. Best effort: see [`Driver::events`].
    pub fn events(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    /// The node's driver. A node that cannot be reached answers
    /// [`Error::Unavailable`] naming it, and is tried again next time.
    pub async fn for_node(&self, node: &node::Model) -> Result<Arc<dyn Driver>> {
        let mut made = self.made.lock().await;
        if let Some((driver, _)) = made.get(&node.id) {
            return Ok(driver.clone());
        }
        let (driver, accel): (Arc<dyn Driver>, _) = match node.driver {
            NodeDriver::Qemu => {
                let driver = QemuDriver::new(self.qemu_config(Path::new(&node.uri)))
                    .await
                    .map_err(|err| unreachable(node, &err))?;
                let accel = driver.accel().accel;
                (Arc::new(driver), accel)
            }
            NodeDriver::Libvirt => self.libvirt(node).await?,
        };
        tokio::spawn(forward(driver.events(), self.events.clone()));
        made.insert(node.id, (driver.clone(), accel));
        Ok(driver)
    }

    /// The accelerator a node's driver settled on, once it was made.
    pub async fn accelerator(&self, node: NodeId) -> Option<Accelerator> {
        let made = self.made.lock().await;
        made.get(&node).map(|(_, accel)| accelerator(*accel))
    }

    #[cfg(feature = "libvirt")]
    async fn libvirt(&self, node: &node::Model) -> Result<(Arc<dyn Driver>, Accel)> {
        let mut config = vmcloud_hypervisor::LibvirtConfig::new(node.uri.clone());
        config.accel = self.accel_choice();
        config
            .guest_internal_networks
            .clone_from(&self.guest_internal_networks);
        let driver = vmcloud_hypervisor::LibvirtDriver::connect(config)
            .await
            .map_err(|err| unreachable(node, &err))?;
        let accel = driver.accel();
        Ok((Arc::new(driver), accel))
    }

    #[cfg(not(feature = "libvirt"))]
    #[allow(clippy::unused_async)]
    async fn libvirt(&self, node: &node::Model) -> Result<(Arc<dyn Driver>, Accel)> {
        Err(Error::Unavailable(format!(
            "Node {} uses libvirt, which this build does not include (build with --features libvirt).",
            node.name
        )))
    }

    fn accel_choice(&self) -> AccelChoice {
        match self.accel {
            QemuAccel::Auto => AccelChoice::Probe,
            QemuAccel::Kvm => AccelChoice::Fixed(Accel::Kvm),
            QemuAccel::Tcg => AccelChoice::Fixed(Accel::Tcg),
        }
    }

    /// A QEMU node's URI is its VM directory, `<data_dir>/vms`.
    fn qemu_config(&self, vms_dir: &Path) -> QemuConfig {
        let mut config = QemuConfig::new(vms_dir.parent().unwrap_or(vms_dir));
        config.accel = self.accel_choice();
        config
            .guest_internal_networks
            .clone_from(&self.guest_internal_networks);
        config.passt = self.passt.then(|| "passt".into());
        config
    }
}

async fn forward(mut from: broadcast::Receiver<VmEvent>, to: broadcast::Sender<VmEvent>) {
    loop {
        match from.recv().await {
            Ok(event) => {
                let _ = to.send(event);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "a node's VM events were dropped");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn accelerator(accel: Accel) -> Accelerator {
    match accel {
        Accel::Kvm => Accelerator::Kvm,
        Accel::Tcg => Accelerator::Tcg,
    }
}

fn unreachable(node: &node::Model, err: &vmcloud_hypervisor::Error) -> Error {
    Error::Unavailable(format!("Node {} cannot be reached: {err}", node.name))
}
