//! The local QEMU driver: one daemonized `qemu-system-x86_64` per VM, driven
//! over QMP, with all its files in `<data_dir>/vms/<id>/`.
//!
//! The driver keeps no state of its own beyond that directory: a new driver on
//! the same `data_dir` (after a platform restart or upgrade) finds the VMs and
//! talks to the running ones through their QMP sockets.
//!
//! Snapshots are qcow2 internal snapshots of the VM's disk taken with
//! `qemu-img` while the VM is powered off: consistent by construction, no
//! guest agent needed, and they survive restarts with the disk.

pub mod accel;
mod args;
mod command;
mod disk;
mod passt;
mod paths;
mod process;
pub mod qmp;
mod tap;
mod watch;

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::UnixStream;
use uuid::Uuid;

use self::accel::{Accel, AccelProbe};
use self::args::{DISK_DRIVE, qemu_args};
use self::command::{command, run};
use self::disk::{GIB, QemuImg, SnapshotOp};
use self::paths::{MAX_SOCKET_PATH, VmPaths};
use self::process::QemuProcess;
use self::qmp::QmpClient;
use self::watch::Watchers;
use crate::cloud_init::SeedFiles;
use crate::driver::{
    ConsoleStream, Driver, Error, Result, SnapshotInfo, StopOutcome, VmEvent, VmStats, VmStatus,
    VmSummary, VncEndpoint, bounded,
};
use crate::guest_firewall::{
    GuestFirewall, allow_bridge_port, default_internal_networks, forget_bridge_port,
    install_bridge_tables,
};
use crate::spec::{Network, VmSpec, tap_name, validate_size};
use crate::vm_locks::VmLocks;

/// SeaBIOS reads this fw_cfg file as the I/O port of the serial port to
/// mirror its screen on: COM1, little-endian.
const SERCON_PORT: [u8; 2] = 0x3f8_u16.to_le_bytes();
/// The serial log is set aside at the next start once it grows past this.
const SERIAL_LOG_ROTATE_BYTES: u64 = 4 * 1024 * 1024;
/// How long QEMU gets to exit after `quit` or SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);
const EXIT_POLL: Duration = Duration::from_millis(100);
/// How long a QEMU whose monitor connection failed gets to finish exiting.
const EXITING_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// VMs live in `<data_dir>/vms/<id>/`.
    pub data_dir: PathBuf,
    pub qemu_system: PathBuf,
    pub qemu_img: PathBuf,
    pub accel: AccelChoice,
    /// Bound on every operation except `stop`, which adds its own timeout.
    pub op_timeout: Duration,
    /// passt, which user-mode VMs reach the network through. `None` (the
    /// default), or a node where it or the guest firewall cannot be set up:
    /// see [`UserNetworking::Restricted`]. Off by default because Debian
    /// 12's passt stops forwarding SSH to a guest for good once a client
    /// connected before the guest was up, which the platform's boot probe
    /// always does.
    pub passt: Option<PathBuf>,
    /// The unprivileged account passt runs as, which the guest firewall
    /// confines.
    pub guest_user: String,
    /// Networks guests must not reach besides the host itself, loopback and
    /// link-local addresses: where the node's internal services are.
    pub guest_internal_networks: Vec<ipnet::IpNet>,
}

impl QemuConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            qemu_system: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            accel: AccelChoice::Probe,
            op_timeout: Duration::from_secs(30),
            passt: None,
            guest_user: "vmcloud-guest".into(),
            guest_internal_networks: default_internal_networks(),
        }
    }
}

/// How this node's user-mode VMs reach the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNetworking {
    /// Through a passt per VM, confined by the nftables table
    /// `vmcloud_guests_<guest_user>`: the internet, not the host nor
    /// internal networks.
    Passt,
    /// QEMU's slirp with `restrict=on`: the forwarded SSH port works, the
    /// guest reaches nothing at all. What is left when passt or the
    /// firewall is unavailable (not root, no nft, no guest account), since
    /// plain slirp maps the guest's 10.0.2.2 to the host's loopback.
    Restricted { reason: String },
}

/// Installs the guest firewall and checks passt, or says why not.
async fn settle_user_networking(config: &QemuConfig) -> UserNetworking {
    let Some(passt) = &config.passt else {
        return UserNetworking::Restricted {
            reason: "passt is not turned on in the configuration".into(),
        };
    };
    if let Err(error) = run(command(passt).arg("--version")).await {
        return UserNetworking::Restricted {
            reason: format!("passt is not usable: {error}"),
        };
    }
    let firewall =
        GuestFirewall::for_account(&config.guest_user, &config.guest_internal_networks).await;
    let prepared = match firewall.apply().await {
        Ok(()) => passt::prepare_socket_dir(&config.guest_user).await,
        Err(error) => Err(error),
    };
    match prepared {
        Ok(()) => UserNetworking::Passt,
        Err(error) => UserNetworking::Restricted {
            reason: format!(
                "the nftables table {} or passt's socket directory could not be set up: {error}",
                firewall.table()
            ),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// Use KVM if a bounded test boot works, else TCG.
    Probe,
    Fixed(Accel),
}

#[derive(Debug)]
pub struct QemuDriver {
    config: QemuConfig,
    vms_dir: PathBuf,
    accel: AccelProbe,
    user_networking: UserNetworking,
    locks: VmLocks,
    watchers: Watchers,
}

impl QemuDriver {
    /// Prepares `data_dir`, checks QEMU is installed and settles the
    /// accelerator (probing it once, for this driver's lifetime).
    pub async fn new(config: QemuConfig) -> Result<Self> {
        let vms_dir = config.data_dir.join("vms");
        tokio::fs::create_dir_all(&vms_dir)
            .await
            .map_err(Error::io(format!("creating {}", vms_dir.display())))?;
        // QEMU changes directory to / when it daemonizes: paths must be absolute.
        let vms_dir = tokio::fs::canonicalize(&vms_dir)
            .await
            .map_err(Error::io(format!("resolving {}", vms_dir.display())))?;
        check_vms_dir(&vms_dir)?;
        run(command(&config.qemu_system).arg("--version"))
            .await
            .map_err(|error| Error::Unavailable(error.to_string()))?;
        let accel = match config.accel {
            AccelChoice::Probe => accel::probe(&config.qemu_system).await,
            AccelChoice::Fixed(accel) => AccelProbe {
                accel,
                reason: "set in the configuration".into(),
            },
        };
        let user_networking = settle_user_networking(&config).await;
        if let Err(error) = install_bridge_tables().await {
            tracing::warn!(%error, "bridged VMs cannot start here: their anti-spoofing rules need nftables");
        }
        match &user_networking {
            UserNetworking::Passt => {
                tracing::info!("user-mode VMs reach the internet through passt, not the node");
            }
            UserNetworking::Restricted { reason } => tracing::warn!(
                %reason,
                "user-mode VMs get no network but their SSH port (slirp, restrict=on)"
            ),
        }
        tracing::info!(accel = ?accel.accel, reason = %accel.reason, "QEMU driver ready");
        let driver = Self {
            config,
            vms_dir,
            accel,
            user_networking,
            locks: VmLocks::default(),
            watchers: Watchers::new(),
        };
        // VMs that outlived the previous driver are watched again.
        driver.list_vms().await?;
        Ok(driver)
    }

    /// The accelerator VMs start with, and why (for the node's status page).
    pub fn accel(&self) -> &AccelProbe {
        &self.accel
    }

    /// How user-mode VMs reach the network here, and why (for the node's
    /// status page).
    pub fn user_networking(&self) -> &UserNetworking {
        &self.user_networking
    }

    fn paths(&self, id: Uuid) -> VmPaths {
        VmPaths::new(&self.vms_dir, id)
    }

    fn qemu_img(&self) -> QemuImg<'_> {
        QemuImg(&self.config.qemu_img)
    }

    async fn lock(&self, id: Uuid) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock(id).await
    }

    async fn read_spec(&self, id: Uuid) -> Result<VmSpec> {
        let path = self.paths(id).spec;
        let json = match tokio::fs::read(&path).await {
            Ok(json) => json,
            Err(error) if error.kind() == ErrorKind::NotFound => return Err(Error::NotFound(id)),
            Err(error) => return Err(Error::io(format!("reading {}", path.display()))(error)),
        };
        serde_json::from_slice(&json).map_err(|error| Error::Io {
            context: format!("parsing {}", path.display()),
            source: error.into(),
        })
    }

    /// Replaces spec.json atomically, so a crash never leaves half a spec.
    async fn write_spec(&self, spec: &VmSpec) -> Result<()> {
        let path = self.paths(spec.id).spec;
        let temporary = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(spec).map_err(|error| Error::Io {
            context: "serializing the spec".into(),
            source: error.into(),
        })?;
        tokio::fs::write(&temporary, json)
            .await
            .map_err(Error::io(format!("writing {}", temporary.display())))?;
        tokio::fs::rename(&temporary, &path)
            .await
            .map_err(Error::io(format!("replacing {}", path.display())))
    }

    async fn status_of(&self, id: Uuid) -> Result<VmStatus> {
        vm_status(&self.paths(id)).await
    }

    /// The status, or `NotFound` for a VM that does not exist.
    async fn existing_status(&self, id: Uuid) -> Result<VmStatus> {
        match self.status_of(id).await? {
            VmStatus::Missing => Err(Error::NotFound(id)),
            status => Ok(status),
        }
    }

    async fn require_status(
        &self,
        id: Uuid,
        op: &'static str,
        allowed: &[VmStatus],
    ) -> Result<VmStatus> {
        let state = self.existing_status(id).await?;
        if allowed.contains(&state) {
            Ok(state)
        } else {
            Err(Error::InvalidState { op, state })
        }
    }

    async fn define_vm(&self, spec: &VmSpec) -> Result<()> {
        spec.validate()?;
        let _guard = self.lock(spec.id).await;
        match self.read_spec(spec.id).await {
            Ok(existing) if existing == *spec => return Ok(()),
            Ok(_) => return Err(Error::AlreadyExists(spec.id)),
            Err(Error::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.check_base_image(spec).await?;
        let paths = self.paths(spec.id);
        // A directory without spec.json is what a failed define left behind.
        remove_dir_if_present(&paths.dir).await?;
        // Private: the spec and seed hold the customer's user-data.
        tokio::fs::DirBuilder::new()
            .mode(0o700)
            .create(&paths.dir)
            .await
            .map_err(Error::io(format!("creating {}", paths.dir.display())))?;
        let created = async {
            self.qemu_img()
                .create_overlay(&spec.base_image, &paths.disk, spec.disk_gib)
                .await?;
            let seed = SeedFiles::new(&spec.cloud_init, &spec.network)
                .fat_image()
                .map_err(Error::io("building the cloud-init seed"))?;
            tokio::fs::write(&paths.seed, seed)
                .await
                .map_err(Error::io(format!("writing {}", paths.seed.display())))?;
            self.write_spec(spec).await
        }
        .await;
        if created.is_err() {
            let _ = tokio::fs::remove_dir_all(&paths.dir).await;
        }
        created
    }

    async fn check_base_image(&self, spec: &VmSpec) -> Result<()> {
        let info = self
            .qemu_img()
            .info(&spec.base_image)
            .await
            .map_err(|error| {
                Error::InvalidArgument(format!(
                    "base image {} is not qcow2 or not readable: {error}",
                    spec.base_image.display()
                ))
            })?;
        if info.virtual_size > spec.disk_gib * GIB {
            return Err(Error::InvalidArgument(format!(
                "disk_gib {} is smaller than the base image ({} bytes)",
                spec.disk_gib, info.virtual_size
            )));
        }
        Ok(())
    }

    async fn start_vm(&self, id: Uuid) -> Result<()> {
        let _guard = self.lock(id).await;
        let spec = self.read_spec(id).await?;
        let allowed = [VmStatus::Running, VmStatus::Stopped, VmStatus::Crashed];
        if self.require_status(id, "start", &allowed).await? == VmStatus::Running {
            return Ok(());
        }
        let paths = self.paths(id);
        remove_if_present(&paths.pidfile).await?;
        rotate_serial_log(&paths.serial_log).await?;
        tokio::fs::write(&paths.sercon_port, SERCON_PORT)
            .await
            .map_err(Error::io(format!(
                "writing {}",
                paths.sercon_port.display()
            )))?;
        match (&spec.network, &self.user_networking, &self.config.passt) {
            (Network::Bridge { bridge, .. }, ..) => {
                allow_bridge_port(&spec).await?;
                tap::attach(&tap_name(id), bridge).await?;
            }
            (
                Network::User {
                    bind,
                    ssh_host_port,
                    ..
                },
                UserNetworking::Passt,
                Some(program),
            ) => {
                passt::start(
                    program,
                    &self.config.guest_user,
                    &paths,
                    *bind,
                    *ssh_host_port,
                )
                .await?;
            }
            (Network::User { .. }, ..) => {}
        }
        let args = qemu_args(&spec, &paths, self.accel.accel, &self.user_networking);
        tracing::info!(%id, accel = ?self.accel.accel, "starting QEMU");
        // With -daemonize this returns once the VM runs (or failed to start).
        let started = match run(command(&self.config.qemu_system).args(&args)).await {
            Ok(_) => match process::find(&paths.pidfile)? {
                QemuProcess::Alive(_) => Ok(()),
                _ => Err(Error::Unavailable(format!(
                    "QEMU for VM {id} exited right after starting"
                ))),
            },
            Err(error) => Err(error),
        };
        match started {
            Ok(()) => self.watchers.watch(id, paths),
            // Its passt would keep the SSH port.
            Err(_) => passt::stop(&paths).await?,
        }
        started
    }

    async fn stop_vm(&self, id: Uuid, timeout: Duration) -> Result<StopOutcome> {
        let _guard = self.lock(id).await;
        let paths = self.paths(id);
        match self.existing_status(id).await? {
            VmStatus::Crashed => {
                power_off(&paths).await?;
                return Ok(StopOutcome::AlreadyStopped);
            }
            // A paused guest cannot see the power button.
            VmStatus::Paused => {}
            VmStatus::Running => {
                qmp_execute(&paths, "system_powerdown", None).await?;
                if wait_for_exit(&paths, timeout).await? {
                    passt::stop(&paths).await?;
                    return Ok(StopOutcome::Graceful);
                }
                tracing::info!(%id, ?timeout, "guest ignored the power button; cutting power");
            }
            VmStatus::Stopped | VmStatus::Missing | VmStatus::Unknown => {
                return Ok(StopOutcome::AlreadyStopped);
            }
        }
        power_off(&paths).await?;
        Ok(StopOutcome::Forced)
    }

    async fn force_stop_vm(&self, id: Uuid) -> Result<()> {
        let _guard = self.lock(id).await;
        self.existing_status(id).await?;
        power_off(&self.paths(id)).await
    }

    /// Runs a QMP command that needs the VM in one of `allowed` states, unless
    /// it is already in `done` (which makes the command idempotent).
    async fn monitor_command(
        &self,
        id: Uuid,
        op: &'static str,
        allowed: VmStatus,
        done: Option<VmStatus>,
        qmp_command: &str,
    ) -> Result<()> {
        let _guard = self.lock(id).await;
        let statuses: Vec<_> = std::iter::once(allowed).chain(done).collect();
        if Some(self.require_status(id, op, &statuses).await?) == done {
            return Ok(());
        }
        qmp_execute(&self.paths(id), qmp_command, None)
            .await
            .map(drop)
    }

    async fn destroy_vm(&self, id: Uuid) -> Result<()> {
        let guard = self.lock(id).await;
        let paths = self.paths(id);
        if tokio::fs::try_exists(&paths.dir).await.unwrap_or(false) {
            power_off(&paths).await?;
            // Whatever the spec says (it may be gone): a tap is only ever ours.
            tap::remove(&tap_name(id)).await?;
            if let Ok(spec) = self.read_spec(id).await {
                forget_bridge_port(&spec).await;
            }
            remove_dir_if_present(&paths.dir).await?;
        }
        drop(guard);
        self.locks.forget(id);
        Ok(())
    }

    async fn resize_vm(&self, id: Uuid, vcpus: u32, memory_mib: u64) -> Result<()> {
        validate_size(vcpus, memory_mib)?;
        let _guard = self.lock(id).await;
        self.require_status(id, "resize", &[VmStatus::Stopped, VmStatus::Crashed])
            .await?;
        let mut spec = self.read_spec(id).await?;
        spec.vcpus = vcpus;
        spec.memory_mib = memory_mib;
        self.write_spec(&spec).await
    }

    async fn grow_disk_vm(&self, id: Uuid, new_gib: u64) -> Result<()> {
        let _guard = self.lock(id).await;
        let mut spec = self.read_spec(id).await?;
        if new_gib < spec.disk_gib {
            return Err(Error::InvalidArgument(format!(
                "disks only grow: {new_gib} GiB is less than the current {} GiB",
                spec.disk_gib
            )));
        }
        if new_gib == spec.disk_gib {
            return Ok(());
        }
        let paths = self.paths(id);
        match self.existing_status(id).await? {
            VmStatus::Running | VmStatus::Paused => {
                let arguments = json!({ "device": DISK_DRIVE, "size": new_gib * GIB });
                qmp_execute(&paths, "block_resize", Some(arguments)).await?;
            }
            _ => self.qemu_img().resize(&paths.disk, new_gib).await?,
        }
        spec.disk_gib = new_gib;
        self.write_spec(&spec).await
    }

    async fn snapshots_of(&self, id: Uuid) -> Result<Vec<SnapshotInfo>> {
        self.read_spec(id).await?;
        Ok(self
            .qemu_img()
            .info(&self.paths(id).disk)
            .await?
            .snapshots())
    }

    /// Common part of the snapshot commands: a valid name, a powered-off VM,
    /// and whether the snapshot exists.
    async fn prepare_snapshot_op(&self, id: Uuid, op: SnapshotOp, name: &str) -> Result<bool> {
        validate_snapshot_name(name)?;
        self.require_status(id, op.verb(), &[VmStatus::Stopped, VmStatus::Crashed])
            .await?;
        Ok(self.snapshots_of(id).await?.iter().any(|s| s.name == name))
    }

    async fn snapshot_create_vm(&self, id: Uuid, name: &str) -> Result<SnapshotInfo> {
        let _guard = self.lock(id).await;
        if self
            .prepare_snapshot_op(id, SnapshotOp::Create, name)
            .await?
        {
            return Err(Error::InvalidArgument(format!(
                "snapshot {name:?} already exists"
            )));
        }
        let disk = self.paths(id).disk;
        self.qemu_img()
            .snapshot(&disk, SnapshotOp::Create, name)
            .await?;
        self.snapshots_of(id)
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::SnapshotNotFound {
                vm: id,
                name: name.into(),
            })
    }

    async fn snapshot_change(&self, id: Uuid, name: &str, op: SnapshotOp) -> Result<()> {
        let _guard = self.lock(id).await;
        if !self.prepare_snapshot_op(id, op, name).await? {
            return Err(Error::SnapshotNotFound {
                vm: id,
                name: name.into(),
            });
        }
        let disk = self.paths(id).disk;
        self.qemu_img().snapshot(&disk, op, name).await?;
        if op == SnapshotOp::Revert {
            // A snapshot taken before the disk grew brings back its old size.
            let mut spec = self.read_spec(id).await?;
            spec.disk_gib = self
                .qemu_img()
                .info(&disk)
                .await?
                .virtual_size
                .div_ceil(GIB);
            self.write_spec(&spec).await?;
        }
        Ok(())
    }

    async fn serial_console_of(&self, id: Uuid) -> Result<ConsoleStream> {
        self.require_status(
            id,
            "open the console of",
            &[VmStatus::Running, VmStatus::Paused],
        )
        .await?;
        let path = self.paths(id).serial;
        let stream = UnixStream::connect(&path)
            .await
            .map_err(Error::io(format!("connecting to {}", path.display())))?;
        Ok(Box::new(stream))
    }

    async fn tail_of_serial_log(&self, paths: &VmPaths, max_bytes: usize) -> Result<Vec<u8>> {
        let mut file = match tokio::fs::File::open(&paths.serial_log).await {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(Error::io(format!("opening {}", paths.serial_log.display()))(error));
            }
        };
        let context = || format!("reading {}", paths.serial_log.display());
        let length = file.metadata().await.map_err(Error::io(context()))?.len();
        let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        file.seek(SeekFrom::Start(length.saturating_sub(max_bytes)))
            .await
            .map_err(Error::io(context()))?;
        let mut tail = Vec::new();
        file.take(max_bytes)
            .read_to_end(&mut tail)
            .await
            .map_err(Error::io(context()))?;
        Ok(tail)
    }

    async fn stats_of(&self, id: Uuid) -> Result<VmStats> {
        let spec = self.read_spec(id).await?;
        let paths = self.paths(id);
        let QemuProcess::Alive(pid) = process::find(&paths.pidfile)? else {
            let state = self.existing_status(id).await?;
            return Err(Error::InvalidState {
                op: "read statistics of",
                state,
            });
        };
        let blockstats = qmp_execute(&paths, "query-blockstats", None).await?;
        let (disk_read_bytes, disk_write_bytes) = disk_totals(&blockstats);
        let (net_rx_bytes, net_tx_bytes) = match &spec.network {
            Network::Bridge { .. } => tap::guest_counters(&tap_name(id)).await,
            Network::User { .. } => (None, None),
        };
        Ok(VmStats {
            cpu_time_ns: process::cpu_time_ns(pid)?,
            memory_rss_bytes: process::memory_rss_bytes(pid)?,
            disk_read_bytes,
            disk_write_bytes,
            net_rx_bytes,
            net_tx_bytes,
        })
    }

    /// Statuses are read concurrently, each bounded by half the operation
    /// timeout, so one hung QEMU shows as `Unknown` instead of failing the list.
    async fn list_vms(&self) -> Result<Vec<VmSummary>> {
        let listing = || format!("listing {}", self.vms_dir.display());
        let mut entries = tokio::fs::read_dir(&self.vms_dir)
            .await
            .map_err(Error::io(listing()))?;
        let mut statuses = tokio::task::JoinSet::new();
        while let Some(entry) = entries.next_entry().await.map_err(Error::io(listing()))? {
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            let spec = match self.read_spec(id).await {
                Ok(spec) => spec,
                // Half-defined or destroyed meanwhile: not a VM.
                Err(Error::NotFound(_)) => continue,
                Err(error) => return Err(error),
            };
            let paths = self.paths(id);
            let limit = self.config.op_timeout / 2;
            statuses.spawn(async move {
                let status = bounded("status", limit, vm_status(&paths))
                    .await
                    .unwrap_or_else(|error| {
                        tracing::warn!(%id, %error, "VM status unreadable");
                        VmStatus::Unknown
                    });
                VmSummary {
                    id,
                    name: spec.name,
                    status,
                }
            });
        }
        let mut vms = Vec::new();
        while let Some(summary) = statuses.join_next().await {
            vms.push(summary.map_err(|error| Error::Io {
                context: "reading a VM status".into(),
                source: error.into(),
            })?);
        }
        vms.sort_by_key(|vm| vm.id);
        // Also catches VMs another process's driver started.
        for vm in &vms {
            if matches!(vm.status, VmStatus::Running | VmStatus::Paused) {
                self.watchers.watch(vm.id, self.paths(vm.id));
            }
        }
        Ok(vms)
    }
}

#[async_trait]
impl Driver for QemuDriver {
    async fn define(&self, spec: &VmSpec) -> Result<()> {
        bounded("define", self.config.op_timeout, self.define_vm(spec)).await
    }

    async fn start(&self, id: Uuid) -> Result<()> {
        bounded("start", self.config.op_timeout, self.start_vm(id)).await
    }

    async fn stop(&self, id: Uuid, timeout: Duration) -> Result<StopOutcome> {
        bounded(
            "stop",
            timeout + self.config.op_timeout,
            self.stop_vm(id, timeout),
        )
        .await
    }

    async fn force_stop(&self, id: Uuid) -> Result<()> {
        bounded("force_stop", self.config.op_timeout, self.force_stop_vm(id)).await
    }

    async fn reboot(&self, id: Uuid) -> Result<()> {
        let work = self.monitor_command(id, "reboot", VmStatus::Running, None, "system_reset");
        bounded("reboot", self.config.op_timeout, work).await
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        let work = self.monitor_command(
            id,
            "pause",
            VmStatus::Running,
            Some(VmStatus::Paused),
            "stop",
        );
        bounded("pause", self.config.op_timeout, work).await
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        let work = self.monitor_command(
            id,
            "resume",
            VmStatus::Paused,
            Some(VmStatus::Running),
            "cont",
        );
        bounded("resume", self.config.op_timeout, work).await
    }

    async fn destroy(&self, id: Uuid) -> Result<()> {
        bounded("destroy", self.config.op_timeout, self.destroy_vm(id)).await
    }

    async fn status(&self, id: Uuid) -> Result<VmStatus> {
        bounded("status", self.config.op_timeout, self.status_of(id)).await
    }

    async fn spec(&self, id: Uuid) -> Result<VmSpec> {
        bounded("spec", self.config.op_timeout, self.read_spec(id)).await
    }

    async fn resize(&self, id: Uuid, vcpus: u32, memory_mib: u64) -> Result<()> {
        bounded(
            "resize",
            self.config.op_timeout,
            self.resize_vm(id, vcpus, memory_mib),
        )
        .await
    }

    async fn grow_disk(&self, id: Uuid, new_gib: u64) -> Result<()> {
        bounded(
            "grow_disk",
            self.config.op_timeout,
            self.grow_disk_vm(id, new_gib),
        )
        .await
    }

    async fn snapshot_create(&self, id: Uuid, name: &str) -> Result<SnapshotInfo> {
        bounded(
            "snapshot_create",
            self.config.op_timeout,
            self.snapshot_create_vm(id, name),
        )
        .await
    }

    async fn snapshot_list(&self, id: Uuid) -> Result<Vec<SnapshotInfo>> {
        bounded(
            "snapshot_list",
            self.config.op_timeout,
            self.snapshots_of(id),
        )
        .await
    }

    async fn snapshot_revert(&self, id: Uuid, name: &str) -> Result<()> {
        let work = self.snapshot_change(id, name, SnapshotOp::Revert);
        bounded("snapshot_revert", self.config.op_timeout, work).await
    }

    async fn snapshot_delete(&self, id: Uuid, name: &str) -> Result<()> {
        let work = self.snapshot_change(id, name, SnapshotOp::Delete);
        bounded("snapshot_delete", self.config.op_timeout, work).await
    }

    async fn serial_console(&self, id: Uuid) -> Result<ConsoleStream> {
        bounded(
            "serial_console",
            self.config.op_timeout,
            self.serial_console_of(id),
        )
        .await
    }

    async fn serial_log(&self, id: Uuid, max_bytes: usize) -> Result<Vec<u8>> {
        let work = async {
            self.read_spec(id).await?;
            self.tail_of_serial_log(&self.paths(id), max_bytes).await
        };
        bounded("serial_log", self.config.op_timeout, work).await
    }

    async fn vnc_endpoint(&self, id: Uuid) -> Result<VncEndpoint> {
        let work = async {
            self.require_status(
                id,
                "open the display of",
                &[VmStatus::Running, VmStatus::Paused],
            )
            .await?;
            Ok(VncEndpoint::UnixSocket(self.paths(id).vnc))
        };
        bounded("vnc_endpoint", self.config.op_timeout, work).await
    }

    async fn stats(&self, id: Uuid) -> Result<VmStats> {
        bounded("stats", self.config.op_timeout, self.stats_of(id)).await
    }

    async fn list(&self) -> Result<Vec<VmSummary>> {
        bounded("list", self.config.op_timeout, self.list_vms()).await
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<VmEvent> {
        self.watchers.subscribe()
    }
}

fn check_vms_dir(vms_dir: &Path) -> Result<()> {
    let Some(text) = vms_dir.to_str() else {
        return Err(Error::InvalidArgument(format!(
            "data_dir must be valid UTF-8 (QEMU options are text): {}",
            vms_dir.display()
        )));
    };
    let longest_socket = VmPaths::new(vms_dir, Uuid::nil())
        .sockets()
        .iter()
        .map(|path| path.as_os_str().len())
        .max()
        .unwrap_or_default();
    if longest_socket > MAX_SOCKET_PATH {
        return Err(Error::InvalidArgument(format!(
            "data_dir {text} is too long: VM sockets under it would exceed the {MAX_SOCKET_PATH}-byte unix socket path limit"
        )));
    }
    Ok(())
}

/// Maps QEMU's run state (`query-status`) to ours.
fn status_of_run_state(run_state: &str) -> VmStatus {
    match run_state {
        "running" => VmStatus::Running,
        "shutdown" => VmStatus::Stopped,
        "internal-error" | "io-error" | "guest-panicked" => VmStatus::Crashed,
        // paused, suspended, prelaunch, migration and snapshot states: the
        // vCPUs are not running.
        _ => VmStatus::Paused,
    }
}

pub(crate) fn validate_snapshot_name(name: &str) -> Result<()> {
    if crate::driver::snapshot_name_is_valid(name) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "snapshot names are {}, got {name:?}",
            crate::driver::SNAPSHOT_NAME_RULE
        )))
    }
}

/// Sums the read/write counters of every disk the VM has.
fn disk_totals(blockstats: &Value) -> (u64, u64) {
    let devices = blockstats.as_array().map(Vec::as_slice).unwrap_or_default();
    devices.iter().fold((0, 0), |(read, written), device| {
        let counter = |name: &str| device["stats"][name].as_u64().unwrap_or_default();
        (read + counter("rd_bytes"), written + counter("wr_bytes"))
    })
}

/// Connects to the VM's monitor for one command. QEMU serves one QMP client
/// at a time, so the connection is never kept.
async fn qmp_execute(paths: &VmPaths, command: &str, arguments: Option<Value>) -> Result<Value> {
    let client = QmpClient::connect(&paths.qmp).await?;
    Ok(client.execute(command, arguments).await?)
}

async fn vm_status(paths: &VmPaths) -> Result<VmStatus> {
    if !tokio::fs::try_exists(&paths.spec).await.unwrap_or(false) {
        return Ok(VmStatus::Missing);
    }
    // Only a pidfile left behind means QEMU died abnormally.
    let exited_status = |process| {
        if process == QemuProcess::Vanished {
            VmStatus::Crashed
        } else {
            VmStatus::Stopped
        }
    };
    let process = process::find(&paths.pidfile)?;
    if !matches!(process, QemuProcess::Alive(_)) {
        return Ok(exited_status(process));
    }
    match qmp_execute(paths, "query-status", None).await {
        Ok(reply) => Ok(status_of_run_state(
            reply["status"].as_str().unwrap_or_default(),
        )),
        // A QEMU on its way out closes its monitor before its process ends.
        Err(error) if wait_for_exit(paths, EXITING_GRACE).await? => {
            tracing::debug!(%error, "monitor closed by an exiting QEMU");
            Ok(exited_status(process::find(&paths.pidfile)?))
        }
        Err(error) => Err(error),
    }
}

/// True once the VM's QEMU is gone, false if it is still there after `limit`.
async fn wait_for_exit(paths: &VmPaths, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if !matches!(process::find(&paths.pidfile)?, QemuProcess::Alive(_)) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// Ends the VM's QEMU however it takes: `quit` (which flushes disk caches),
/// then SIGKILL, and its passt. Leaves no pidfile, so the VM reads as
/// cleanly stopped.
async fn power_off(paths: &VmPaths) -> Result<()> {
    if let QemuProcess::Alive(pid) = process::find(&paths.pidfile)? {
        let quit = tokio::time::timeout(EXIT_GRACE, qmp_execute(paths, "quit", None)).await;
        if !matches!(quit, Ok(Ok(_))) || !wait_for_exit(paths, EXIT_GRACE).await? {
            tracing::warn!(pid = pid.as_raw_nonzero(), "QEMU did not quit; killing it");
            process::kill(pid)?;
            if !wait_for_exit(paths, EXIT_GRACE).await? {
                return Err(Error::Unavailable(format!(
                    "QEMU process {} survived SIGKILL",
                    pid.as_raw_nonzero()
                )));
            }
        }
    }
    passt::stop(paths).await?;
    remove_if_present(&paths.pidfile).await
}

async fn remove_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()))(error))
        }
        _ => Ok(()),
    }
}

async fn remove_dir_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(path).await {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()))(error))
        }
        _ => Ok(()),
    }
}

async fn rotate_serial_log(log: &Path) -> Result<()> {
    let size = tokio::fs::metadata(log).await.map_or(0, |m| m.len());
    if size > SERIAL_LOG_ROTATE_BYTES {
        tokio::fs::rename(log, log.with_extension("log.old"))
            .await
            .map_err(Error::io(format!("rotating {}", log.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_map_to_vm_statuses() {
        assert_eq!(status_of_run_state("running"), VmStatus::Running);
        assert_eq!(status_of_run_state("paused"), VmStatus::Paused);
        assert_eq!(status_of_run_state("suspended"), VmStatus::Paused);
        assert_eq!(status_of_run_state("shutdown"), VmStatus::Stopped);
        assert_eq!(status_of_run_state("guest-panicked"), VmStatus::Crashed);
        assert_eq!(status_of_run_state("internal-error"), VmStatus::Crashed);
    }

    #[test]
    fn snapshot_names_are_restricted() {
        for good in ["before-upgrade", "s1", "nightly_2024.01.01"] {
            validate_snapshot_name(good).expect("validate snapshot name");
        }
        for bad in ["", "1", "-a", "with space", "a,b", &"a".repeat(65)] {
            assert!(validate_snapshot_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn disk_totals_add_up_every_device() {
        let blockstats = json!([
            { "device": "disk0", "stats": { "rd_bytes": 100, "wr_bytes": 10 } },
            { "device": "seed", "stats": { "rd_bytes": 5, "wr_bytes": 0 } },
        ]);
        assert_eq!(disk_totals(&blockstats), (105, 10));
        assert_eq!(disk_totals(&json!({})), (0, 0));
    }

    #[test]
    fn data_dirs_too_long_for_sockets_are_refused() {
        check_vms_dir(Path::new("/var/lib/vmcloud/vms")).expect("check vms dir");
        let long = format!("/{}", "d".repeat(80));
        let error = check_vms_dir(Path::new(&long)).expect_err("check vms dir should fail");
        assert!(
            error.to_string().contains("unix socket path limit"),
            "{error}"
        );
    }
}
