//! VMCloud's hypervisor layer: the [`Driver`] trait the platform drives VMs
//! through, [`QemuDriver`], which runs them with the local QEMU, and (feature
//! `libvirt`) `LibvirtDriver`, which runs them through a libvirt daemon.
//!
//! No database, no HTTP: the platform stores [`VmSpec`]s and calls a driver.

mod cloud_init;
pub mod driver;
pub mod guest_firewall;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod qemu;
pub mod spec;
mod vm_locks;

pub use driver::{
    ByteStream, ConsoleStream, Driver, Error, Result, SNAPSHOT_NAME_RULE, SnapshotInfo,
    StopOutcome, VmEvent, VmStats, VmStatus, VmSummary, VncEndpoint, snapshot_name_is_valid,
};
#[cfg(feature = "libvirt")]
pub use libvirt::{LibvirtConfig, LibvirtDriver};
pub use qemu::accel::{Accel, AccelProbe};
pub use qemu::{AccelChoice, QemuConfig, QemuDriver, UserNetworking};
pub use spec::{CloudInit, MacAddress, Network, StaticIpv4, VmSpec, tap_name};
