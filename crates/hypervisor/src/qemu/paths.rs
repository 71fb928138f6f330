//! Where a VM's files live: everything under one directory per VM, so a new
//! driver finds running VMs again and `destroy` removes one tree.

use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Where passt, which binds its socket after dropping to the guest account,
/// may create it: VM directories are root's alone.
pub(crate) const PASST_SOCKET_DIR: &str = "/run/vmcloud-guest";

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with
/// its terminating NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone)]
pub(crate) struct VmPaths {
    pub dir: PathBuf,
    /// Written last by `define`: its presence means the VM is fully defined.
    pub spec: PathBuf,
    pub disk: PathBuf,
    pub seed: PathBuf,
    pub pidfile: PathBuf,
    pub qmp: PathBuf,
    /// A second monitor, held open by the driver's event watcher.
    pub events: PathBuf,
    pub serial: PathBuf,
    pub serial_log: PathBuf,
    pub vnc: PathBuf,
    /// SeaBIOS setting that mirrors its screen on the serial port.
    pub sercon_port: PathBuf,
    /// The NIC's stream socket to the VM's passt (user-mode networking),
    /// outside `dir`.
    pub passt_socket: PathBuf,
    pub passt_log: PathBuf,
}

impl VmPaths {
    pub fn new(vms_dir: &Path, id: Uuid) -> Self {
        let dir = vms_dir.join(id.to_string());
        let file = |name: &str| dir.join(name);
        Self {
            spec: file("spec.json"),
            disk: file("disk.qcow2"),
            seed: file("seed.img"),
            pidfile: file("qemu.pid"),
            qmp: file("qmp.sock"),
            events: file("events.sock"),
            serial: file("serial.sock"),
            serial_log: file("serial.log"),
            vnc: file("vnc.sock"),
            sercon_port: file("sercon-port.bin"),
            passt_socket: Path::new(PASST_SOCKET_DIR).join(format!("{id}.sock")),
            passt_log: file("passt.log"),
            dir,
        }
    }

    pub fn sockets(&self) -> [&Path; 5] {
        [
            &self.qmp,
            &self.events,
            &self.serial,
            &self.vnc,
            &self.passt_socket,
        ]
    }
}
