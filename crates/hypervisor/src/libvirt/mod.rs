//! The libvirt driver: VMs as persistent libvirt domains named
//! `vmcloud-<id>`, their disks as volumes of one storage pool, their spec in
//! the domain's metadata. It keeps no state of its own, so any driver on the
//! same URI sees the same VMs, and it works against remote daemons
//! (`qemu+ssh://`, `qemu+tls://`) as well as the local one.
//!
//! libvirt calls block: each operation runs on tokio's blocking pool, bounded
//! by the configured timeout.

mod connection;
mod console;
mod domain_xml;
mod storage;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::{Domain, DomainShutoffReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use self::connection::{Connection, error_is, is_local_uri, libvirt_error};
use self::console::KeptOutput;
use self::domain_xml::{
    DISK_TARGET, DOMAIN_PREFIX, DomainFiles, SEED_TARGET, SPEC_NAMESPACE, attribute, domain_name,
    domain_xml, element_text, hostfwd_command, snapshot_xml, spec_from_metadata,
};
use crate::cloud_init::SeedFiles;
use crate::driver::{
    ConsoleStream, Driver, Error, Result, SnapshotInfo, StopOutcome, VmEvent, VmStats, VmStatus,
    VmSummary, VncEndpoint, bounded,
};
use crate::guest_firewall::{
    GuestFirewall, allow_bridge_port, forget_bridge_port, install_bridge_tables,
};
use crate::qemu::accel::Accel;
use crate::qemu::{AccelChoice, validate_snapshot_name};
use crate::spec::{Network, VmSpec, tap_name, validate_size};
use crate::vm_locks::VmLocks;

const GIB: u64 = 1024 * 1024 * 1024;
const POLL: Duration = Duration::from_millis(250);
/// Lifecycle events queued for a slow subscriber before it starts missing some.
const EVENT_BUFFER: usize = 256;

#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    /// `qemu:///system`, `qemu+ssh://host/system`, `qemu+tls://host/system`, …
    pub uri: String,
    /// Pool the VMs' volumes live in; created as a directory pool if missing.
    pub storage_pool: String,
    /// Directory of that pool on the libvirt host, used when creating it.
    pub storage_pool_path: PathBuf,
    /// Directory on the libvirt host where virtlogd keeps serial logs.
    pub serial_log_dir: PathBuf,
    /// `Probe` asks libvirt whether KVM domains are possible.
    pub accel: AccelChoice,
    /// Bound on every operation except `stop`, which adds its own timeout.
    pub op_timeout: Duration,
    /// How often domain states are read for [`LibvirtDriver::events`].
    pub event_poll_interval: Duration,
    /// The account libvirt runs QEMU as (`user` in qemu.conf), whose sockets
    /// carry user-mode guests' traffic (slirp runs inside QEMU).
    pub guest_user: String,
    /// Networks guests must not reach besides the host itself, loopback and
    /// link-local addresses.
    pub guest_internal_networks: Vec<ipnet::IpNet>,
}

impl LibvirtConfig {
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            storage_pool: "vmcloud".into(),
            storage_pool_path: "/var/lib/vmcloud/libvirt-pool".into(),
            serial_log_dir: "/var/log/libvirt/qemu".into(),
            accel: AccelChoice::Probe,
            op_timeout: Duration::from_secs(30),
            event_poll_interval: Duration::from_secs(1),
            guest_user: "libvirt-qemu".into(),
            guest_internal_networks: crate::guest_firewall::default_internal_networks(),
        }
    }
}

#[derive(Debug)]
pub struct LibvirtDriver {
    node: Arc<Node>,
    locks: VmLocks,
    events: broadcast::Sender<VmEvent>,
}

/// Serializes base image uploads across every driver of this process (the
/// platform makes one per node, tests several per daemon), so two defines
/// never upload the same image at once.
static BASE_UPLOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the blocking side of every operation needs.
#[derive(Debug)]
struct Node {
    config: LibvirtConfig,
    connection: Connection,
    accel: Accel,
    /// Whether the daemon's files (serial logs, VNC sockets) are on this machine.
    local: bool,
    /// Console output per VM, the serial log of VMs on remote hosts.
    kept_output: Mutex<HashMap<Uuid, Arc<KeptOutput>>>,
}

/// User-mode guests run on QEMU's slirp, which maps their 10.0.2.2 to the
/// libvirt host's loopback: on a local URI the driver installs the guest
/// firewall for libvirt's QEMU account; a remote node's operator must
/// (README, "Guest isolation").
async fn confine_guests(config: &LibvirtConfig, local: bool) {
    let firewall =
        GuestFirewall::for_account(&config.guest_user, &config.guest_internal_networks).await;
    if !local {
        tracing::warn!(
            uri = %config.uri,
            table = %firewall.table(),
            "user-mode guests of a remote libvirt node are confined only if its operator installed the guest firewall"
        );
        return;
    }
    if let Err(error) = install_bridge_tables().await {
        tracing::warn!(%error, "bridged VMs cannot start here: their anti-spoofing rules need nftables");
    }
    match firewall.apply().await {
        Ok(()) => {
            tracing::info!(table = %firewall.table(), "user-mode guests reach the internet, not this node");
        }
        Err(error) => tracing::warn!(
            %error,
            table = %firewall.table(),
            "the guest firewall could not be installed: user-mode guests can reach this node's loopback services"
        ),
    }
}

impl LibvirtDriver {
    /// Connects, prepares the storage pool and settles the domain type.
    pub async fn connect(config: LibvirtConfig) -> Result<Self> {
        let limit = config.op_timeout;
        let local = is_local_uri(&config.uri);
        let node = Node {
            connection: Connection::new(config.uri.clone()),
            config,
            accel: Accel::Tcg,
            local,
            kept_output: Mutex::default(),
        };
        let node = bounded("connect", limit, async move {
            tokio::task::spawn_blocking(move || {
                let connection = node.connection.get()?;
                node.pool(&connection)?;
                let accel = match node.config.accel {
                    AccelChoice::Fixed(accel) => accel,
                    AccelChoice::Probe => probe_accel(&connection),
                };
                Ok(Node { accel, ..node })
            })
            .await
            .map_err(panicked("connect"))?
        })
        .await?;
        confine_guests(&node.config, node.local).await;
        tracing::info!(uri = %node.config.uri, accel = ?node.accel, "libvirt driver ready");
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let node = Arc::new(node);
        tokio::spawn(watch_domains(
            Arc::downgrade(&node),
            events.clone(),
            node.config.event_poll_interval,
        ));
        Ok(Self {
            node,
            locks: VmLocks::default(),
            events,
        })
    }

    /// The accelerator domains are defined with.
    pub fn accel(&self) -> Accel {
        self.node.accel
    }

    /// Runs `work` on the blocking pool with the (re)opened connection.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        limit: Duration,
        work: impl FnOnce(&Node, &Connect) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let node = Arc::clone(&self.node);
        bounded(op, limit, async move {
            tokio::task::spawn_blocking(move || {
                let connection = node.connection.get()?;
                work(&node, &connection)
            })
            .await
            .map_err(panicked(op))?
        })
        .await
    }

    /// [`Self::blocking`] under the VM's lock and the operation timeout.
    async fn locked<T: Send + 'static>(
        &self,
        op: &'static str,
        id: Uuid,
        work: impl FnOnce(&Node, &Connect) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let limit = self.node.config.op_timeout;
        bounded(op, limit, async {
            let _guard = self.locks.lock(id).await;
            self.blocking(op, limit, work).await
        })
        .await
    }
}

fn panicked(op: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Error {
    move |error| Error::Libvirt(format!("{op} failed: {error}"))
}

/// KVM when libvirt can make KVM domains for x86_64 here, else TCG.
fn probe_accel(connection: &Connect) -> Accel {
    match connection.domain_capabilities(None, Some("x86_64"), None, Some("kvm"), 0) {
        Ok(capabilities) if capabilities.contains("<domain>kvm</domain>") => Accel::Kvm,
        Ok(_) => Accel::Tcg,
        Err(error) => {
            tracing::info!(%error, "no KVM domains on this libvirt host; using TCG");
            Accel::Tcg
        }
    }
}

impl Node {
    fn pool(&self, connection: &Connect) -> Result<virt::storage_pool::StoragePool> {
        let path = self.config.storage_pool_path.to_string_lossy();
        storage::ensure_pool(connection, &self.config.storage_pool, &path)
    }

    fn serial_log_path(&self, id: Uuid) -> PathBuf {
        self.config
            .serial_log_dir
            .join(format!("{}-serial.log", domain_name(id)))
    }

    fn kept_output(&self, id: Uuid) -> Arc<KeptOutput> {
        Arc::clone(
            self.kept_output
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_default(),
        )
    }

    /// Where the VM's volumes and log are, for its domain XML.
    fn files(&self, connection: &Connect, id: Uuid) -> Result<DomainFiles> {
        let pool = self.pool(connection)?;
        let path_of = |name: String| {
            storage::find_volume(&pool, &name)?
                .ok_or_else(|| Error::Libvirt(format!("volume {name} is missing")))?
                .path()
                .map_err(libvirt_error)
        };
        Ok(DomainFiles {
            disk: path_of(storage::disk_volume_name(id))?,
            seed: path_of(storage::seed_volume_name(id))?,
            serial_log: self.serial_log_path(id).to_string_lossy().into_owned(),
        })
    }

    fn define(&self, connection: &Connect, spec: &VmSpec) -> Result<()> {
        if let Some(domain) = find_domain(connection, spec.id)? {
            return if stored_spec(&domain)? == *spec {
                Ok(())
            } else {
                Err(Error::AlreadyExists(spec.id))
            };
        }
        let base_file = base_image_file(spec)?;
        let pool = self.pool(connection)?;
        // Volumes without a domain are what a failed define left behind.
        self.delete_volumes(connection, spec.id)?;
        let created = (|| {
            let base = storage::ensure_base_volume(connection, &pool, &spec.base_image, base_file)?;
            storage::create_disk_volume(&pool, spec.id, spec.disk_gib * GIB, &base)?;
            let seed = SeedFiles::new(&spec.cloud_init, &spec.network)
                .fat_image()
                .map_err(Error::io("building the cloud-init seed"))?;
            storage::create_seed_volume(connection, &pool, spec.id, &seed)?;
            self.write_definition(connection, spec)
        })();
        if created.is_err() {
            let _ = self.delete_volumes(connection, spec.id);
        }
        created
    }

    /// Defines (or redefines) the domain from `spec`.
    fn write_definition(&self, connection: &Connect, spec: &VmSpec) -> Result<()> {
        let xml = domain_xml(spec, self.accel, &self.files(connection, spec.id)?)?;
        connection
            .define_domain_xml(&xml)
            .map(drop)
            .map_err(libvirt_error)
    }

    fn delete_volumes(&self, connection: &Connect, id: Uuid) -> Result<()> {
        let pool = self.pool(connection)?;
        storage::delete_volume(&pool, &storage::disk_volume_name(id))?;
        storage::delete_volume(&pool, &storage::seed_volume_name(id))
    }

    fn start(&self, connection: &Connect, id: Uuid) -> Result<()> {
        let domain = existing_domain(connection, id)?;
        let allowed = [VmStatus::Running, VmStatus::Stopped, VmStatus::Crashed];
        if require_status(&domain, "start", &allowed)? == VmStatus::Running {
            return Ok(());
        }
        tracing::info!(%id, accel = ?self.accel, "starting domain");
        domain.create().map_err(libvirt_error)?;
        if let Some(command) = hostfwd_command(&stored_spec(&domain)?.network) {
            // HMP answers failures as text, not as an error.
            let answer = domain
                .qemu_monitor_command(&command, virt_sys::VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
                .map_err(libvirt_error);
            if let Err(error) | Ok(Err(error)) = answer.map(|text| match text.trim() {
                "" => Ok(()),
                failure => Err(Error::Unavailable(format!(
                    "cannot forward the SSH port: {failure}"
                ))),
            }) {
                let _ = domain.destroy();
                return Err(error);
            }
        }
        Ok(())
    }

    fn destroy(&self, connection: &Connect, id: Uuid) -> Result<()> {
        if let Some(domain) = find_domain(connection, id)? {
            power_off(&domain)?;
            let flags = virt_sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | virt_sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | virt_sys::VIR_DOMAIN_UNDEFINE_NVRAM;
            domain.undefine_flags(flags).map_err(libvirt_error)?;
        }
        self.delete_volumes(connection, id)?;
        self.kept_output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if self.local {
            let log = self.serial_log_path(id);
            match std::fs::remove_file(&log) {
                Err(error) if error.kind() != ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", log.display()))(error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn resize(&self, connection: &Connect, id: Uuid, vcpus: u32, memory_mib: u64) -> Result<()> {
        let domain = existing_domain(connection, id)?;
        require_status(&domain, "resize", &[VmStatus::Stopped, VmStatus::Crashed])?;
        let spec = VmSpec {
            vcpus,
            memory_mib,
            ..stored_spec(&domain)?
        };
        self.write_definition(connection, &spec)
    }

    fn grow_disk(&self, connection: &Connect, id: Uuid, new_gib: u64) -> Result<()> {
        let domain = existing_domain(connection, id)?;
        let mut spec = stored_spec(&domain)?;
        if new_gib < spec.disk_gib {
            return Err(Error::InvalidArgument(format!(
                "disks only grow: {new_gib} GiB is less than the current {} GiB",
                spec.disk_gib
            )));
        }
        if new_gib == spec.disk_gib {
            return Ok(());
        }
        match domain_status(&domain) {
            VmStatus::Running | VmStatus::Paused => domain
                .block_resize(
                    DISK_TARGET,
                    new_gib * GIB,
                    virt_sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES,
                )
                .map_err(libvirt_error)?,
            _ => {
                let pool = self.pool(connection)?;
                let name = storage::disk_volume_name(id);
                storage::find_volume(&pool, &name)?
                    .ok_or_else(|| Error::Libvirt(format!("volume {name} is missing")))?
                    .resize(new_gib * GIB, 0)
                    .map_err(libvirt_error)?;
            }
        }
        spec.disk_gib = new_gib;
        self.write_definition(connection, &spec)
    }

    fn serial_log(&self, connection: &Connect, id: Uuid, max_bytes: usize) -> Result<Vec<u8>> {
        existing_domain(connection, id)?;
        if !self.local {
            return Ok(self.kept_output(id).tail(max_bytes));
        }
        let path = self.serial_log_path(id);
        let context = || format!("reading {}", path.display());
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Error::io(context())(error)),
        };
        let length = file.metadata().map_err(Error::io(context()))?.len();
        let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        file.seek(SeekFrom::Start(length.saturating_sub(max_bytes)))
            .map_err(Error::io(context()))?;
        let mut tail = Vec::new();
        file.take(max_bytes)
            .read_to_end(&mut tail)
            .map_err(Error::io(context()))?;
        Ok(tail)
    }
}

fn stop_domain(connection: &Connect, id: Uuid, timeout: Duration) -> Result<StopOutcome> {
    let domain = existing_domain(connection, id)?;
    match domain_status(&domain) {
        VmStatus::Running => {
            domain.shutdown().map_err(libvirt_error)?;
            if wait_until_off(&domain, timeout)? {
                return Ok(StopOutcome::Graceful);
            }
            tracing::info!(%id, ?timeout, "guest ignored the power button; cutting power");
        }
        // A paused guest cannot see the power button.
        VmStatus::Paused | VmStatus::Unknown => {}
        VmStatus::Stopped | VmStatus::Crashed | VmStatus::Missing => {
            return Ok(StopOutcome::AlreadyStopped);
        }
    }
    power_off(&domain)?;
    Ok(StopOutcome::Forced)
}

fn domain_stats(connection: &Connect, id: Uuid) -> Result<VmStats> {
    let domain = existing_domain(connection, id)?;
    let state = domain_status(&domain);
    if !matches!(state, VmStatus::Running | VmStatus::Paused) {
        return Err(Error::InvalidState {
            op: "read statistics of",
            state,
        });
    }
    let info = domain.info().map_err(libvirt_error)?;
    let memory_rss_bytes = domain
        .memory_stats(0)
        .map_err(libvirt_error)?
        .iter()
        .find(|stat| stat.tag == virt_sys::VIR_DOMAIN_MEMORY_STAT_RSS)
        .map_or(0, |stat| stat.val * 1024);
    let (mut disk_read_bytes, mut disk_write_bytes) = (0, 0);
    for target in [DISK_TARGET, SEED_TARGET] {
        let block = domain.block_stats(target).map_err(libvirt_error)?;
        disk_read_bytes += block.rd_bytes.max(0).unsigned_abs();
        disk_write_bytes += block.wr_bytes.max(0).unsigned_abs();
    }
    // libvirt reports tap counters from the guest's side already.
    let spec = stored_spec(&domain)?;
    let (net_rx_bytes, net_tx_bytes) = match &spec.network {
        Network::Bridge { .. } => {
            let net = domain
                .interface_stats(&tap_name(spec.id))
                .map_err(libvirt_error)?;
            (
                Some(net.rx_bytes.max(0).unsigned_abs()),
                Some(net.tx_bytes.max(0).unsigned_abs()),
            )
        }
        Network::User { .. } => (None, None),
    };
    Ok(VmStats {
        cpu_time_ns: info.cpu_time,
        memory_rss_bytes,
        disk_read_bytes,
        disk_write_bytes,
        net_rx_bytes,
        net_tx_bytes,
    })
}

fn list_domains(connection: &Connect) -> Result<Vec<VmSummary>> {
    let mut vms: Vec<_> = connection
        .list_all_domains(0)
        .map_err(libvirt_error)?
        .iter()
        .filter_map(|domain| {
            let id = our_domain_id(domain)?;
            let summary = match stored_spec(domain) {
                Ok(spec) => VmSummary {
                    id,
                    name: spec.name,
                    status: domain_status(domain),
                },
                Err(error) => {
                    tracing::warn!(%id, %error, "domain without a readable spec");
                    VmSummary {
                        id,
                        name: domain_name(id),
                        status: VmStatus::Unknown,
                    }
                }
            };
            Some(summary)
        })
        .collect();
    vms.sort_by_key(|vm| vm.id);
    Ok(vms)
}

/// The VM id of a domain this driver made.
fn our_domain_id(domain: &Domain) -> Option<Uuid> {
    domain
        .name()
        .ok()?
        .strip_prefix(DOMAIN_PREFIX)?
        .parse()
        .ok()
}

fn find_domain(connection: &Connect, id: Uuid) -> Result<Option<Domain>> {
    match connection.lookup_domain_by_uuid(id) {
        Ok(domain) => Ok(Some(domain)),
        Err(error) if error_is(&error, ErrorNumber::NoDomain) => Ok(None),
        Err(error) => Err(libvirt_error(error)),
    }
}

fn existing_domain(connection: &Connect, id: Uuid) -> Result<Domain> {
    find_domain(connection, id)?.ok_or(Error::NotFound(id))
}

/// The spec in the persistent definition (what the next start uses).
fn stored_spec(domain: &Domain) -> Result<VmSpec> {
    let element = domain
        .metadata(
            virt_sys::VIR_DOMAIN_METADATA_ELEMENT.cast_signed(),
            Some(SPEC_NAMESPACE),
            virt_sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .map_err(libvirt_error)?;
    spec_from_metadata(&element)
}

fn domain_status(domain: &Domain) -> VmStatus {
    match domain.state() {
        Ok((Enum::Known(state), Enum::Known(reason))) => status_of_state(state, &reason),
        _ => VmStatus::Unknown,
    }
}

/// Maps libvirt's state (and, for shut off domains, its reason) to ours.
fn status_of_state(state: DomainState, reason: &DomainStateReason) -> VmStatus {
    match state {
        // Blocked: running, waiting on I/O. Shutdown: running, powering off.
        DomainState::Running | DomainState::Blocked | DomainState::Shutdown => VmStatus::Running,
        DomainState::Paused | DomainState::PMSuspended => VmStatus::Paused,
        DomainState::Shutoff => match reason {
            // QEMU died without being asked to (killed, OOM, host crash).
            DomainStateReason::Shutoff(Enum::Known(DomainShutoffReason::Crashed)) => {
                VmStatus::Crashed
            }
            _ => VmStatus::Stopped,
        },
        DomainState::Crashed => VmStatus::Crashed,
        DomainState::NoState => VmStatus::Unknown,
    }
}

fn require_status(domain: &Domain, op: &'static str, allowed: &[VmStatus]) -> Result<VmStatus> {
    let state = domain_status(domain);
    if allowed.contains(&state) {
        Ok(state)
    } else {
        Err(Error::InvalidState { op, state })
    }
}

/// True once the domain is off, false if it still runs after `limit`.
fn wait_until_off(domain: &Domain, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if !domain.is_active().map_err(libvirt_error)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}

/// Cuts the power of a running domain; a stopped one is left as it is.
fn power_off(domain: &Domain) -> Result<()> {
    match domain.destroy() {
        Err(error) if error_is(&error, ErrorNumber::OperationInvalid) => Ok(()),
        result => result.map_err(libvirt_error),
    }
}

/// The virtual size of the spec's base image, which must be a qcow2 no
/// larger than the VM's disk. Read from the local file the driver uploads.
fn base_image_file(spec: &VmSpec) -> Result<storage::BaseFile> {
    let path = &spec.base_image;
    let unusable = |why: String| {
        Error::InvalidArgument(format!(
            "base image {} is not usable: {why}",
            path.display()
        ))
    };
    let mut file = std::fs::File::open(path).map_err(|error| unusable(error.to_string()))?;
    let mut header = [0; 32];
    file.read_exact(&mut header)
        .map_err(|error| unusable(error.to_string()))?;
    let virtual_size =
        storage::qcow2_virtual_size(&header).ok_or_else(|| unusable("not a qcow2 image".into()))?;
    if virtual_size > spec.disk_gib * GIB {
        return Err(Error::InvalidArgument(format!(
            "disk_gib {} is smaller than the base image ({virtual_size} bytes)",
            spec.disk_gib
        )));
    }
    let metadata = file
        .metadata()
        .map_err(|error| unusable(error.to_string()))?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs());
    Ok(storage::BaseFile {
        size: metadata.len(),
        modified,
    })
}

fn snapshot_info(snapshot: &virt::domain_snapshot::DomainSnapshot) -> Result<SnapshotInfo> {
    let xml = snapshot.xml_desc(0).map_err(libvirt_error)?;
    Ok(SnapshotInfo {
        name: snapshot.name().map_err(libvirt_error)?,
        created_at_unix_secs: element_text(&xml, "creationTime")
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_default(),
        // Taken while powered off: disk only.
        vm_state_bytes: 0,
    })
}

fn find_snapshot(
    domain: &Domain,
    id: Uuid,
    name: &str,
) -> Result<virt::domain_snapshot::DomainSnapshot> {
    Domain::lookup_snapshot_by_name(domain, name, 0).map_err(|error| {
        if error_is(&error, ErrorNumber::NoDomainSnapshot) {
            Error::SnapshotNotFound {
                vm: id,
                name: name.into(),
            }
        } else {
            libvirt_error(error)
        }
    })
}

/// Reports status changes of the driver's domains until the driver is gone.
async fn watch_domains(node: Weak<Node>, events: broadcast::Sender<VmEvent>, interval: Duration) {
    let mut known: HashMap<Uuid, VmStatus> = HashMap::new();
    loop {
        tokio::time::sleep(interval).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let limit = node.config.op_timeout;
        let listing = tokio::task::spawn_blocking(move || {
            let connection = node.connection.get()?;
            let domains = connection.list_all_domains(0).map_err(libvirt_error)?;
            Ok::<_, Error>(
                domains
                    .iter()
                    .filter_map(|domain| Some((our_domain_id(domain)?, domain_status(domain))))
                    .collect::<HashMap<_, _>>(),
            )
        });
        let current = match tokio::time::timeout(limit, listing).await {
            Ok(Ok(Ok(current))) => current,
            outcome => {
                tracing::debug!(?outcome, "domain states unreadable; retrying");
                continue;
            }
        };
        for (&id, &status) in &current {
            if known.get(&id) != Some(&status) {
                let _ = events.send(VmEvent { id, status });
            }
        }
        for &id in known.keys().filter(|id| !current.contains_key(id)) {
            let _ = events.send(VmEvent {
                id,
                status: VmStatus::Missing,
            });
        }
        known = current;
    }
}

#[async_trait]
impl Driver for LibvirtDriver {
    async fn define(&self, spec: &VmSpec) -> Result<()> {
        spec.validate()?;
        let limit = self.node.config.op_timeout;
        bounded("define", limit, async {
            let _guard = self.locks.lock(spec.id).await;
            let _upload = BASE_UPLOADS.lock().await;
            let spec = spec.clone();
            self.blocking("define", limit, move |node, connection| {
                node.define(connection, &spec)
            })
            .await
        })
        .await
    }

    async fn start(&self, id: Uuid) -> Result<()> {
        // libvirt makes the tap on its host: its rules are set here for a
        // local one only (README, "Guest isolation").
        if self.node.local {
            allow_bridge_port(&self.spec(id).await?).await?;
        }
        self.locked("start", id, move |node, connection| {
            node.start(connection, id)
        })
        .await
    }

    async fn stop(&self, id: Uuid, timeout: Duration) -> Result<StopOutcome> {
        let limit = timeout + self.node.config.op_timeout;
        bounded("stop", limit, async {
            let _guard = self.locks.lock(id).await;
            self.blocking("stop", limit, move |_, connection| {
                stop_domain(connection, id, timeout)
            })
            .await
        })
        .await
    }

    async fn force_stop(&self, id: Uuid) -> Result<()> {
        self.locked("force_stop", id, move |_, connection| {
            power_off(&existing_domain(connection, id)?)
        })
        .await
    }

    async fn reboot(&self, id: Uuid) -> Result<()> {
        self.locked("reboot", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            require_status(&domain, "reboot", &[VmStatus::Running])?;
            domain.reset().map_err(libvirt_error)
        })
        .await
    }

    async fn pause(&self, id: Uuid) -> Result<()> {
        self.locked("pause", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let allowed = [VmStatus::Running, VmStatus::Paused];
            if require_status(&domain, "pause", &allowed)? == VmStatus::Running {
                domain.suspend().map_err(libvirt_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn resume(&self, id: Uuid) -> Result<()> {
        self.locked("resume", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let allowed = [VmStatus::Paused, VmStatus::Running];
            if require_status(&domain, "resume", &allowed)? == VmStatus::Paused {
                domain.resume().map_err(libvirt_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn destroy(&self, id: Uuid) -> Result<()> {
        let spec = self.spec(id).await.ok();
        self.locked("destroy", id, move |node, connection| {
            node.destroy(connection, id)
        })
        .await?;
        if let Some(spec) = spec.filter(|_| self.node.local) {
            forget_bridge_port(&spec).await;
        }
        self.locks.forget(id);
        Ok(())
    }

    async fn status(&self, id: Uuid) -> Result<VmStatus> {
        let limit = self.node.config.op_timeout;
        self.blocking("status", limit, move |_, connection| {
            Ok(find_domain(connection, id)?
                .map_or(VmStatus::Missing, |domain| domain_status(&domain)))
        })
        .await
    }

    async fn spec(&self, id: Uuid) -> Result<VmSpec> {
        let limit = self.node.config.op_timeout;
        self.blocking("spec", limit, move |_, connection| {
            stored_spec(&existing_domain(connection, id)?)
        })
        .await
    }

    async fn resize(&self, id: Uuid, vcpus: u32, memory_mib: u64) -> Result<()> {
        validate_size(vcpus, memory_mib)?;
        self.locked("resize", id, move |node, connection| {
            node.resize(connection, id, vcpus, memory_mib)
        })
        .await
    }

    async fn grow_disk(&self, id: Uuid, new_gib: u64) -> Result<()> {
        self.locked("grow_disk", id, move |node, connection| {
            node.grow_disk(connection, id, new_gib)
        })
        .await
    }

    async fn snapshot_create(&self, id: Uuid, name: &str) -> Result<SnapshotInfo> {
        validate_snapshot_name(name)?;
        let name = name.to_owned();
        self.locked("snapshot_create", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            require_status(&domain, "snapshot", &[VmStatus::Stopped, VmStatus::Crashed])?;
            match find_snapshot(&domain, id, &name) {
                Ok(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "snapshot {name:?} already exists"
                    )));
                }
                Err(Error::SnapshotNotFound { .. }) => {}
                Err(error) => return Err(error),
            }
            let snapshot = domain
                .create_snapshot_xml(&snapshot_xml(&name), 0)
                .map_err(libvirt_error)?;
            snapshot_info(&snapshot)
        })
        .await
    }

    async fn snapshot_list(&self, id: Uuid) -> Result<Vec<SnapshotInfo>> {
        let limit = self.node.config.op_timeout;
        self.blocking("snapshot_list", limit, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let mut snapshots = domain
                .list_all_snapshots(0)
                .map_err(libvirt_error)?
                .iter()
                .map(snapshot_info)
                .collect::<Result<Vec<_>>>()?;
            snapshots.sort_by(|a, b| {
                (a.created_at_unix_secs, &a.name).cmp(&(b.created_at_unix_secs, &b.name))
            });
            Ok(snapshots)
        })
        .await
    }

    /// Also brings back the definition saved with the snapshot: its size,
    /// disk size and spec.
    async fn snapshot_revert(&self, id: Uuid, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        let name = name.to_owned();
        self.locked("snapshot_revert", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let allowed = [VmStatus::Stopped, VmStatus::Crashed];
            require_status(&domain, "restore a snapshot of", &allowed)?;
            find_snapshot(&domain, id, &name)?
                .revert(0)
                .map_err(libvirt_error)
        })
        .await
    }

    async fn snapshot_delete(&self, id: Uuid, name: &str) -> Result<()> {
        validate_snapshot_name(name)?;
        let name = name.to_owned();
        self.locked("snapshot_delete", id, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let allowed = [VmStatus::Stopped, VmStatus::Crashed];
            require_status(&domain, "delete a snapshot of", &allowed)?;
            find_snapshot(&domain, id, &name)?
                .delete(0)
                .map_err(libvirt_error)
        })
        .await
    }

    /// libvirt allows one console client per domain: while another is
    /// connected, this retries until the operation timeout.
    async fn serial_console(&self, id: Uuid) -> Result<ConsoleStream> {
        let limit = self.node.config.op_timeout;
        let (stream, kept) = self
            .blocking("serial_console", limit, move |node, connection| {
                let domain = existing_domain(connection, id)?;
                let allowed = [VmStatus::Running, VmStatus::Paused];
                require_status(&domain, "open the console of", &allowed)?;
                let stream = virt::stream::Stream::new(connection, 0).map_err(libvirt_error)?;
                loop {
                    match domain.open_console(None, &stream, 0) {
                        Ok(()) => break,
                        Err(error) if error_is(&error, ErrorNumber::OperationFailed) => {
                            std::thread::sleep(POLL);
                        }
                        Err(error) => return Err(libvirt_error(error)),
                    }
                }
                let kept = (!node.local).then(|| node.kept_output(id));
                Ok((stream, kept))
            })
            .await?;
        Ok(console::bridge(stream, kept))
    }

    async fn serial_log(&self, id: Uuid, max_bytes: usize) -> Result<Vec<u8>> {
        let limit = self.node.config.op_timeout;
        self.blocking("serial_log", limit, move |node, connection| {
            node.serial_log(connection, id, max_bytes)
        })
        .await
    }

    async fn vnc_endpoint(&self, id: Uuid) -> Result<VncEndpoint> {
        if !self.node.local {
            return Err(Error::Unavailable(format!(
                "the VNC socket of VM {id} is on the libvirt host of {}",
                self.node.connection.uri()
            )));
        }
        let limit = self.node.config.op_timeout;
        self.blocking("vnc_endpoint", limit, move |_, connection| {
            let domain = existing_domain(connection, id)?;
            let allowed = [VmStatus::Running, VmStatus::Paused];
            require_status(&domain, "open the display of", &allowed)?;
            let live = domain.xml_desc(0).map_err(libvirt_error)?;
            attribute(&live, "<graphics type='vnc'", "socket")
                .map(|socket| VncEndpoint::UnixSocket(socket.into()))
                .ok_or_else(|| Error::Libvirt(format!("VM {id} has no VNC socket")))
        })
        .await
    }

    async fn stats(&self, id: Uuid) -> Result<VmStats> {
        let limit = self.node.config.op_timeout;
        self.blocking("stats", limit, move |_, connection| {
            domain_stats(connection, id)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<VmSummary>> {
        let limit = self.node.config.op_timeout;
        self.blocking("list", limit, |_, connection| list_domains(connection))
            .await
    }

    /// virt 0.5 has no binding for libvirt's domain event callbacks and the
    /// workspace forbids `unsafe`, so the driver reads every domain's state
    /// once per `event_poll_interval` (one listing call) and reports changes.
    fn events(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use virt::domain::{DomainCrashedReason, DomainRunningReason};

    use super::*;

    #[test]
    fn libvirt_states_map_to_vm_statuses() {
        let shutoff = |reason| DomainStateReason::Shutoff(Enum::Known(reason));
        let running = DomainStateReason::Running(Enum::Known(DomainRunningReason::Booted));
        assert_eq!(
            status_of_state(DomainState::Running, &running),
            VmStatus::Running
        );
        assert_eq!(
            status_of_state(DomainState::Paused, &running),
            VmStatus::Paused
        );
        assert_eq!(
            status_of_state(
                DomainState::Shutoff,
                &shutoff(DomainShutoffReason::Shutdown)
            ),
            VmStatus::Stopped
        );
        assert_eq!(
            status_of_state(
                DomainState::Shutoff,
                &shutoff(DomainShutoffReason::Destroyed)
            ),
            VmStatus::Stopped
        );
        assert_eq!(
            status_of_state(DomainState::Shutoff, &shutoff(DomainShutoffReason::Crashed)),
            VmStatus::Crashed
        );
        let panicked = DomainStateReason::Crashed(Enum::Known(DomainCrashedReason::Panicked));
        assert_eq!(
            status_of_state(DomainState::Crashed, &panicked),
            VmStatus::Crashed
        );
    }
}
