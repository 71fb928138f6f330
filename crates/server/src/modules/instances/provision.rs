//! Making a VM for an instance, as steps that are each idempotent (a retried
//! job redoes them without harm) and undone in reverse when a later one
//! fails: reserve room on a node, take an SSH port (or, on a bridged node,
//! an address from the pool), create the disk and the cloud-init seed, start
//! the VM, wait for the guest's SSH server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QuerySelect as _,
};
use tokio::io::AsyncReadExt as _;
use vmcloud_hypervisor::{CloudInit, Driver, MacAddress, Network, StaticIpv4, VmSpec, VmStatus};

use super::queue::Runner;
use super::run::Progress;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::{image, node};
use crate::error::{Error, Result};
use crate::ids::{NodeId, RegionId};
use crate::modules::instances::policy;
use crate::modules::nodes::{self, addresses, placement};

/// How long one look for the guest's SSH banner waits.
const BANNER_WAIT: Duration = Duration::from_secs(2);
/// A new look starts this often, while earlier ones still wait: a
/// connection opened before the guest's network was up stalls in QEMU's
/// user-mode stack for seconds, so only a fresh one answers at once.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How often the VM's own state and the deadline are checked.
const GUEST_POLL: Duration = Duration::from_secs(1);

/// Picks a node in the instance's region with room for it. Run inside the
/// transaction that records the choice.
pub(super) async fn place(
    conn: &impl ConnectionTrait,
    region: RegionId,
    demand: &placement::Demand,
    strategy: placement::Strategy,
) -> Result<NodeId> {
    let candidates = nodes::candidates(conn, region).await?;
    placement::choose(&candidates, demand, strategy).map_err(Error::NoCapacity)
}

/// What an instance of this size takes on a node.
pub(super) fn demand(vcpus: i32, memory_mib: i32, disk_gib: i32) -> placement::Demand {
    placement::Demand {
        vcpus: i64::from(vcpus),
        memory_mib: i64::from(memory_mib),
        disk_gib: i64::from(disk_gib),
    }
}

pub(super) async fn provision(
    runner: &Runner,
    progress: &Progress<'_>,
    row: instance::Model,
) -> anyhow::Result<()> {
    match try_provision(runner, progress, &row).await {
        Ok(()) => {
            super::events::provisioned(&runner.services, row.id).await;
            Ok(())
        }
        Err(err) => {
            undo(runner, &row).await?;
            let failed = super::run::set_status(
                runner,
                row.id,
                InstanceStatus::Error,
                Some(format!("Provisioning failed: {err:#}")),
                progress.actor(),
            )
            .await?;
            super::events::provisioning_failed(&runner.services, &failed, &format!("{err:#}"))
                .await;
            Err(err)
        }
    }
}

async fn try_provision(
    runner: &Runner,
    progress: &Progress<'_>,
    row: &instance::Model,
) -> anyhow::Result<()> {
    let db = &runner.services.db;
    progress.step(1, "Reserving capacity on a node").await?;
    let node = reserve(runner, row).await?;
    progress.step(2, "Allocating the network address").await?;
    let attachment = attach(runner, row, &node).await?;
    progress
        .step(3, "Creating the disk and the cloud-init seed")
        .await?;
    let driver = runner.services.drivers.for_node(&node).await?;
    let image = image::Entity::find_by_id(row.image_id)
        .one(db.writer())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the image was deleted"))?;
    let spec = spec_for(row, &image, &attachment, row.id.to_string())?;
    driver.define(&spec).await?;
    progress.step(4, "Starting the VM").await?;
    driver.start(spec.id).await?;
    progress.step(5, "Waiting for the guest to boot").await?;
    wait_for_guest(runner, driver.as_ref(), row, &attachment).await?;
    super::run::set_status(
        runner,
        row.id,
        InstanceStatus::Running,
        None,
        progress.actor(),
    )
    .await?;
    Ok(())
}

/// The instance's node, placing it first if it has none (a retry after a
/// failure released it).
async fn reserve(runner: &Runner, row: &instance::Model) -> anyhow::Result<node::Model> {
    let db = &runner.services.db;
    let node_id = if let Some(node) = row.node_id {
        node
    } else {
        let strategy = policy::get(db, &runner.services.cache)
            .await?
            .placement_strategy;
        let _serialized = super::PLACEMENT.lock().await;
        let txn = db.begin_write().await?;
        let demand = demand(row.vcpus, row.memory_mib, row.disk_gib);
        let node = place(&txn, row.region_id, &demand, strategy).await?;
        instance::Entity::update_many()
            .col_expr(instance::Column::NodeId, node.into())
            .filter(instance::Column::Id.eq(row.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        node
    };
    node::Entity::find_by_id(node_id)
        .one(db.writer())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the instance's node was removed"))
}

/// How an instance is reached on its node's network.
pub(super) enum Attachment {
    /// QEMU user networking: the guest's SSH is forwarded from this port of
    /// the node.
    Forwarded { bind: IpAddr, port: u16 },
    /// On the node's bridge, with an address of its own.
    Bridged { bridge: String, ipv4: StaticIpv4 },
}

impl Attachment {
    fn network(&self, mac: MacAddress) -> Network {
        match self {
            Self::Forwarded { bind, port } => Network::User {
                mac,
                bind: *bind,
                ssh_host_port: *port,
            },
            Self::Bridged { bridge, ipv4 } => Network::Bridge {
                mac,
                bridge: bridge.clone(),
                ipv4: Some(ipv4.clone()),
            },
        }
    }

    /// Where the guest's SSH server answers, seen from this host.
    fn ssh_address(&self) -> SocketAddr {
        match *self {
            Self::Forwarded { bind, port } => {
                let host = match bind {
                    IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(ip) if ip.is_unspecified() => {
                        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                    }
                    ip => ip,
                };
                SocketAddr::new(host, port)
            }
            Self::Bridged { ref ipv4, .. } => SocketAddr::new(IpAddr::V4(ipv4.address), 22),
        }
    }
}

/// The instance's way onto its node's network: an address from the pool on
/// a bridged node, else a forwarded SSH port. Idempotent: it returns what
/// the instance holds already.
pub(super) async fn attach(
    runner: &Runner,
    row: &instance::Model,
    node: &node::Model,
) -> anyhow::Result<Attachment> {
    let Some(bridge) = node.bridge.clone() else {
        let port = allocate_port(runner, row, node).await?;
        return Ok(Attachment::Forwarded {
            bind: runner.settings.ssh_bind,
            port,
        });
    };
    let txn = runner.services.db.begin_write().await?;
    let address = addresses::claim(&txn, node, row.id)
        .await?
        .with_context(|| {
            format!(
                "no free IPv4 address left in the pool for node {}",
                node.name
            )
        })?;
    instance::Entity::update_many()
        .col_expr(instance::Column::Ipv4, Expr::value(&address.address))
        .filter(instance::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Attachment::Bridged {
        bridge,
        ipv4: addresses::static_ipv4(&address)?,
    })
}

/// The instance's SSH port on its node: the one it has, else the lowest free
/// one in the range that nothing else on the host listens on. The unique
/// index on (node, port) settles races between workers.
async fn allocate_port(
    runner: &Runner,
    row: &instance::Model,
    node: &node::Model,
) -> anyhow::Result<u16> {
    let db = runner.services.db.writer();
    let current = instance::Entity::find_by_id(row.id)
        .one(db)
        .await?
        .and_then(|r| r.ssh_port);
    if let Some(port) = current {
        return Ok(u16::try_from(port)?);
    }
    let taken: Vec<Option<i32>> = instance::Entity::find()
        .select_only()
        .column(instance::Column::SshPort)
        .filter(instance::Column::NodeId.eq(node.id))
        .filter(instance::Column::SshPort.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    let taken: std::collections::HashSet<i32> = taken.into_iter().flatten().collect();
    for port in runner.settings.ssh_ports.clone() {
        if taken.contains(&i32::from(port)) || !bindable(runner.settings.ssh_bind, port) {
            continue;
        }
        let claimed = instance::Entity::update_many()
            .col_expr(instance::Column::SshPort, i32::from(port).into())
            .filter(instance::Column::Id.eq(row.id))
            .filter(instance::Column::SshPort.is_null())
            .exec(db)
            .await;
        match claimed {
            Ok(done) if done.rows_affected == 1 => return Ok(port),
            Ok(_) => anyhow::bail!("the instance's port changed under us"),
            Err(err)
                if matches!(
                    err.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) => {}
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!(
        "no free SSH port left in {}-{} on node {}",
        runner.settings.ssh_ports.start(),
        runner.settings.ssh_ports.end(),
        node.name
    )
}

/// Whether a port is free on this host, so QEMU's forward will not fail.
fn bindable(bind: IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(bind, port)).is_ok()
}

pub(super) fn spec_for(
    row: &instance::Model,
    image: &image::Model,
    attachment: &Attachment,
    cloud_init_id: String,
) -> anyhow::Result<VmSpec> {
    let keys: Vec<String> = row
        .ssh_authorized_keys
        .as_deref()
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or_default();
    let base_image = image
        .file_path
        .as_deref()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("image {} has no file on this node", image.slug))?;
    let id: uuid::Uuid = row.id.into();
    Ok(VmSpec {
        id,
        name: row.name.clone(),
        vcpus: u32::try_from(row.vcpus)?,
        memory_mib: u64::try_from(row.memory_mib)?,
        disk_gib: u64::try_from(row.disk_gib)?,
        base_image,
        cloud_init: CloudInit {
            instance_id: cloud_init_id,
            hostname: row.hostname.clone(),
            ssh_authorized_keys: keys,
            user_data: row.user_data.clone(),
            network_config: None,
        },
        network: attachment.network(MacAddress::for_vm(id)),
    })
}

/// Waits until the guest's SSH server greets us, failing early if the VM
/// stops.
pub(super) async fn wait_for_guest(
    runner: &Runner,
    driver: &dyn Driver,
    row: &instance::Model,
    attachment: &Attachment,
) -> anyhow::Result<()> {
    let address = attachment.ssh_address();
    let deadline = tokio::time::Instant::now() + runner.settings.boot_timeout;
    let mut probes = tokio::task::JoinSet::new();
    let mut next_probe = tokio::time::interval(PROBE_EVERY);
    let mut next_check = tokio::time::interval(GUEST_POLL);
    loop {
        tokio::select! {
            _ = next_probe.tick() => {
                probes.spawn(ssh_banner(address));
            }
            Some(answered) = probes.join_next(), if !probes.is_empty() => {
                if answered.unwrap_or(false) {
                    return Ok(());
                }
            }
            _ = next_check.tick() => {
                match driver.status(row.id.into()).await? {
                    VmStatus::Running | VmStatus::Paused | VmStatus::Unknown => {}
                    other => anyhow::bail!("the VM is {other} before its guest came up"),
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "the guest did not answer on SSH within {:?}",
                        runner.settings.boot_timeout
                    );
                }
            }
        }
    }
}

/// Whether an SSH server answers at `address`. QEMU's user-mode forward
/// accepts connections before the guest is up, so only the banner counts.
async fn ssh_banner(address: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let mut banner = [0_u8; 4];
        stream.read_exact(&mut banner).await.ok()?;
        Some(&banner == b"SSH-")
    };
    tokio::time::timeout(BANNER_WAIT, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Undoes provisioning in reverse: the VM and its files, the port or the
/// address, the room on the node. Each part is idempotent.
pub(super) async fn undo(runner: &Runner, row: &instance::Model) -> anyhow::Result<()> {
    let db = runner.services.db.writer();
    if let Some(node_id) = row.node_id.or(current_node(runner, row).await?)
        && let Some(node) = node::Entity::find_by_id(node_id).one(db).await?
    {
        runner
            .services
            .drivers
            .for_node(&node)
            .await?
            .destroy(row.id.into())
            .await?;
    }
    let txn = runner.services.db.begin_write().await?;
    addresses::release(&txn, row.id).await?;
    instance::Entity::update_many()
        .col_expr(instance::Column::SshPort, Option::<i32>::None.into())
        .col_expr(instance::Column::Ipv4, Option::<String>::None.into())
        .col_expr(instance::Column::NodeId, Option::<NodeId>::None.into())
        .filter(instance::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

async fn current_node(runner: &Runner, row: &instance::Model) -> anyhow::Result<Option<NodeId>> {
    Ok(instance::Entity::find_by_id(row.id)
        .one(runner.services.db.writer())
        .await?
        .and_then(|r| r.node_id))
}
