//! Hypervisor nodes: registration by admins (and the local node by itself),
//! capacity accounting from the instances placed on them, and placement.

pub mod addresses;
pub mod drivers;
pub mod placement;

use std::collections::HashMap;
use std::path::Path;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::node::{self, NodeDriver, NodeStatus};
use crate::db::entities::{instance, region};
use crate::error::{Error, FieldError, Result};
use crate::ids::{NodeId, RegionId};
use crate::modules::auth::Actor;
use crate::modules::nodes::placement::{Candidate, Capacity};
use crate::modules::settings;
use crate::validation::check_name;

/// How a node's instances reach the network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeNetwork {
    /// QEMU user networking (NAT): each instance's SSH is forwarded from a
    /// port of the node. Needs no setup and no root.
    #[default]
    User,
    /// On an existing host bridge, each instance with an address of its own
    /// from the region's pool (`/admin/ip-addresses`). The node's driver
    /// makes a tap per VM, which takes root (CAP_NET_ADMIN) on QEMU nodes.
    Bridge { bridge: String },
}

impl NodeNetwork {
    fn of(row: &node::Model) -> Self {
        row.bridge
            .clone()
            .map_or(Self::User, |bridge| Self::Bridge { bridge })
    }

    fn bridge(&self) -> Option<String> {
        match self {
            Self::User => None,
            Self::Bridge { bridge } => Some(bridge.clone()),
        }
    }

    fn check(&self) -> Option<FieldError> {
        match self {
            Self::Bridge { bridge } if !vmcloud_hypervisor::spec::is_interface_name(bridge) => {
                Some(FieldError::new(
                    "network.bridge",
                    "must be a network interface name: 1 to 15 of A-Z a-z 0-9 . _ -",
                ))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub id: NodeId,
    pub name: String,
    pub region: String,
    pub driver: NodeDriver,
    pub uri: String,
    pub status: NodeStatus,
    pub network: NodeNetwork,
    /// `kvm` or `tcg`, once the node has been probed.
    pub accelerator: Option<node::Accelerator>,
    /// Installed, before overcommit.
    pub total: Capacity,
    pub cpu_overcommit_pct: i32,
    pub memory_overcommit_pct: i32,
    /// Taken by the instances placed on the node.
    pub used: Capacity,
    /// What new instances can still take, after overcommit.
    pub free: Capacity,
    pub instances: i64,
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    #[garde(skip)]
    pub name: String,
    /// Region slug.
    #[garde(length(min = 1, max = 64))]
    pub region: String,
    #[garde(skip)]
    pub driver: NodeDriver,
    /// A libvirt URI (`qemu:///system`, `qemu+ssh://host/system`, …), or the
    /// run directory of a QEMU node.
    #[garde(length(min = 1, max = 1000))]
    pub uri: String,
    #[garde(range(min = 1, max = 4096))]
    pub vcpus: i32,
    #[garde(range(min = 256, max = 1_073_741_824))]
    pub memory_mib: i64,
    #[garde(range(min = 1, max = 10_000_000))]
    pub disk_gib: i64,
    /// Defaults to the `nodes` setting (100, no overcommit, unless changed).
    #[garde(range(min = 100, max = 1600))]
    pub cpu_overcommit_pct: Option<i32>,
    #[garde(range(min = 100, max = 400))]
    pub memory_overcommit_pct: Option<i32>,
    /// Defaults to user networking.
    #[garde(skip)]
    #[serde(default)]
    pub network: NodeNetwork,
}

/// What an admin may set on a node. `status` takes `online`, `maintenance`
/// (no new instances, existing ones untouched) or `draining`.
#[derive(Debug, Default, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeChanges {
    #[garde(skip)]
    pub status: Option<NodeStatus>,
    #[garde(range(min = 1, max = 4096))]
    pub vcpus: Option<i32>,
    #[garde(range(min = 256, max = 1_073_741_824))]
    pub memory_mib: Option<i64>,
    #[garde(range(min = 1, max = 10_000_000))]
    pub disk_gib: Option<i64>,
    #[garde(range(min = 100, max = 1600))]
    pub cpu_overcommit_pct: Option<i32>,
    #[garde(range(min = 100, max = 400))]
    pub memory_overcommit_pct: Option<i32>,
    /// Only while the node holds no instances.
    #[garde(skip)]
    pub network: Option<NodeNetwork>,
}

#[derive(Clone, Copy, Debug, Default, sea_orm::FromQueryResult)]
struct Usage {
    vcpus: Option<i64>,
    memory_mib: Option<i64>,
    disk_gib: Option<i64>,
    instances: i64,
}

#[derive(Debug, sea_orm::FromQueryResult)]
struct NodeUsage {
    node_id: Option<NodeId>,
    #[sea_orm(nested)]
    usage: Usage,
}

/// What the live instances matching `scope` take on each node.
async fn usage_by_node(
    conn: &impl ConnectionTrait,
    scope: Condition,
) -> Result<HashMap<NodeId, Usage>> {
    let rows = instance::Entity::find()
        .select_only()
        .column(instance::Column::NodeId)
        .column_as(
            Expr::from(Func::sum(Expr::col(instance::Column::Vcpus))),
            "vcpus",
        )
        .column_as(
            Expr::from(Func::sum(Expr::col(instance::Column::MemoryMib))),
            "memory_mib",
        )
        .column_as(
            Expr::from(Func::sum(Expr::col(instance::Column::DiskGib))),
            "disk_gib",
        )
        .column_as(
            Expr::from(Func::count(Expr::col(instance::Column::Id))),
            "instances",
        )
        .filter(instance::Column::NodeId.is_not_null())
        .filter(instance::Column::DeletedAt.is_null())
        .filter(scope)
        .group_by(instance::Column::NodeId)
        .into_model::<NodeUsage>()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.node_id?, row.usage)))
        .collect())
}

impl Usage {
    fn capacity(self) -> Capacity {
        Capacity {
            vcpus: self.vcpus.unwrap_or_default(),
            memory_mib: self.memory_mib.unwrap_or_default(),
            disk_gib: self.disk_gib.unwrap_or_default(),
        }
    }
}

fn free_capacity(row: &node::Model, used: Usage) -> Capacity {
    let used = used.capacity();
    Capacity {
        vcpus: i64::from(row.vcpus_total) * i64::from(row.cpu_overcommit_pct) / 100 - used.vcpus,
        memory_mib: row.memory_mib_total * i64::from(row.memory_overcommit_pct) / 100
            - used.memory_mib,
        disk_gib: row.disk_gib_total - used.disk_gib,
    }
}

fn view(row: node::Model, region: String, used: Usage) -> NodeView {
    let free = free_capacity(&row, used);
    let network = NodeNetwork::of(&row);
    NodeView {
        id: row.id,
        name: row.name,
        region,
        driver: row.driver,
        network,
        uri: row.uri,
        status: row.status,
        accelerator: row.accelerator,
        total: Capacity {
            vcpus: i64::from(row.vcpus_total),
            memory_mib: row.memory_mib_total,
            disk_gib: row.disk_gib_total,
        },
        cpu_overcommit_pct: row.cpu_overcommit_pct,
        memory_overcommit_pct: row.memory_overcommit_pct,
        used: used.capacity(),
        free,
        instances: used.instances,
        last_seen_at: row.last_seen_at,
    }
}

pub async fn list(db: &Database, actor: &Actor) -> Result<Vec<NodeView>> {
    actor.require_staff()?;
    all(db).await
}

/// The names of the nodes whose last health check failed.
pub async fn offline(db: &Database) -> Result<Vec<String>> {
    Ok(node::Entity::find()
        .select_only()
        .column(node::Column::Name)
        .filter(node::Column::Status.eq(NodeStatus::Offline))
        .order_by_asc(node::Column::Name)
        .into_tuple()
        .all(db.reader())
        .await?)
}

/// Every node with its usage, for monitoring.
pub async fn all(db: &Database) -> Result<Vec<NodeView>> {
    let rows = node::Entity::find()
        .find_also_related(region::Entity)
        .order_by_asc(node::Column::Name)
        .all(db.reader())
        .await?;
    let usage = usage_by_node(db.reader(), Condition::all()).await?;
    Ok(rows
        .into_iter()
        .map(|(row, region)| {
            let used = usage.get(&row.id).copied().unwrap_or_default();
            view(row, region.map(|r| r.slug).unwrap_or_default(), used)
        })
        .collect())
}

pub async fn get(db: &Database, actor: &Actor, id: NodeId) -> Result<NodeView> {
    actor.require_staff()?;
    let (row, region) = node::Entity::find_by_id(id)
        .find_also_related(region::Entity)
        .one(db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Node"))?;
    let used = usage_by_node(
        db.reader(),
        Condition::all().add(instance::Column::NodeId.eq(id)),
    )
    .await?
    .remove(&id)
    .unwrap_or_default();
    Ok(view(row, region.map(|r| r.slug).unwrap_or_default(), used))
}

async fn region_by_slug(db: &Database, slug: &str) -> Result<region::Model> {
    region::Entity::find()
        .filter(region::Column::Slug.eq(slug))
        .one(db.reader())
        .await?
        .ok_or_else(|| Error::invalid(vec![FieldError::new("region", "is not a known region")]))
}

/// The overcommit a node gets unless its admin sets its own, in percent of
/// what is installed.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct NodeDefaults {
    #[garde(range(min = 100, max = 1600))]
    pub cpu_overcommit_pct: i32,
    #[garde(range(min = 100, max = 400))]
    pub memory_overcommit_pct: i32,
}

impl Default for NodeDefaults {
    fn default() -> Self {
        Self {
            cpu_overcommit_pct: 100,
            memory_overcommit_pct: 100,
        }
    }
}

impl settings::Setting for NodeDefaults {
    const KEY: &'static str = "nodes";
    const DESCRIPTION: &'static str =
        "The CPU and memory overcommit of new nodes, in percent of what is installed.";
}

pub async fn create(
    db: &Database,
    cache: &Cache,
    actor: &Actor,
    mut new: NewNode,
) -> Result<NodeView> {
    actor.require_admin()?;
    let defaults = settings::load::<NodeDefaults>(db, cache).await?;
    new.cpu_overcommit_pct
        .get_or_insert(defaults.cpu_overcommit_pct);
    new.memory_overcommit_pct
        .get_or_insert(defaults.memory_overcommit_pct);
    Error::check_fields(
        [check_name("name", &new.name), new.network.check()]
            .into_iter()
            .flatten()
            .collect(),
    )?;
    let region = region_by_slug(db, &new.region).await?;
    let row = insert(db, &new, region.id).await?;
    get(db, actor, row.id).await
}

async fn insert(db: &Database, new: &NewNode, region: RegionId) -> Result<node::Model> {
    node::ActiveModel {
        name: Set(new.name.trim().to_owned()),
        region_id: Set(region),
        driver: Set(new.driver),
        uri: Set(new.uri.clone()),
        status: Set(NodeStatus::Online),
        vcpus_total: Set(new.vcpus),
        memory_mib_total: Set(new.memory_mib),
        disk_gib_total: Set(new.disk_gib),
        cpu_overcommit_pct: Set(new.cpu_overcommit_pct.unwrap_or(100)),
        memory_overcommit_pct: Set(new.memory_overcommit_pct.unwrap_or(100)),
        bridge: Set(new.network.bridge()),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .map_err(|err| Error::on_duplicate(err, "This node name is taken already."))
}

pub async fn update(
    db: &Database,
    actor: &Actor,
    id: NodeId,
    changes: NodeChanges,
) -> Result<NodeView> {
    actor.require_admin()?;
    Error::check_fields(
        changes
            .network
            .iter()
            .filter_map(NodeNetwork::check)
            .collect(),
    )?;
    let row = node::Entity::find_by_id(id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Node"))?;
    if let Some(network) = &changes.network
        && *network != NodeNetwork::of(&row)
    {
        let holding = get(db, actor, id).await?.instances;
        if holding > 0 {
            return Err(Error::Conflict(format!(
                "The node holds {holding} instance(s) on its current network; move them away before changing it."
            )));
        }
    }
    let mut active = row.into_active_model();
    if let Some(network) = &changes.network {
        active.bridge = Set(network.bridge());
    }
    if let Some(status) = changes.status {
        if status == NodeStatus::Offline {
            return Err(Error::invalid_field(
                "status",
                "must be online, maintenance or draining; offline is set by the health check",
            ));
        }
        active.status = Set(status);
    }
    if let Some(vcpus) = changes.vcpus {
        active.vcpus_total = Set(vcpus);
    }
    if let Some(memory) = changes.memory_mib {
        active.memory_mib_total = Set(memory);
    }
    if let Some(disk) = changes.disk_gib {
        active.disk_gib_total = Set(disk);
    }
    if let Some(pct) = changes.cpu_overcommit_pct {
        active.cpu_overcommit_pct = Set(pct);
    }
    if let Some(pct) = changes.memory_overcommit_pct {
        active.memory_overcommit_pct = Set(pct);
    }
    active.update(db.writer()).await?;
    get(db, actor, id).await
}

/// Removes a node that holds no instances.
pub async fn delete(db: &Database, actor: &Actor, id: NodeId) -> Result<()> {
    actor.require_admin()?;
    let view = get(db, actor, id).await?;
    if view.instances > 0 {
        return Err(Error::Conflict(format!(
            "The node still holds {} instance(s); drain it first.",
            view.instances
        )));
    }
    node::Entity::delete_by_id(id)
        .exec(db.writer())
        .await
        .map_err(|err| {
            Error::on_still_referenced(err, "This node is still in use; deactivate it instead.")
        })?;
    Ok(())
}

/// The nodes of a region as placement sees them. Inside a transaction on
/// PostgreSQL the node rows stay locked until it ends, so two placements in
/// one region never both take the last room.
pub async fn candidates(conn: &impl ConnectionTrait, region: RegionId) -> Result<Vec<Candidate>> {
    let rows = node::Entity::find()
        .filter(node::Column::RegionId.eq(region))
        .lock_exclusive()
        .all(conn)
        .await?;
    let usage = usage_by_node(
        conn,
        Condition::all().add(instance::Column::RegionId.eq(region)),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| Candidate {
            node: row.id,
            accepting: row.status == NodeStatus::Online,
            free: free_capacity(row, usage.get(&row.id).copied().unwrap_or_default()),
        })
        .collect())
}

/// This host's size, for the local node.
pub fn host_capacity(data_dir: &Path) -> (i32, i64, i64) {
    let vcpus = std::thread::available_parallelism()
        .map_or(1, |n| i32::try_from(n.get()).unwrap_or(i32::MAX));
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
        })
        .map_or(1024, |kib| kib / 1024);
    let disk_gib = rustix::fs::statvfs(data_dir).map_or(10, |stats| {
        let bytes = u128::from(stats.f_blocks) * u128::from(stats.f_frsize);
        i64::try_from(bytes >> 30).unwrap_or(i64::MAX)
    });
    (vcpus, memory_mib, disk_gib)
}

/// Registers this host as a QEMU node on first start, in `region_slug`
/// (created when missing). Later starts find it by its run directory.
pub async fn ensure_local_node(
    db: &Database,
    data_dir: &Path,
    region_slug: &str,
) -> Result<NodeId> {
    let run_dir = data_dir.join("vms").to_string_lossy().into_owned();
    if let Some(existing) = node::Entity::find()
        .filter(node::Column::Driver.eq(NodeDriver::Qemu))
        .filter(node::Column::Uri.eq(run_dir.as_str()))
        .one(db.writer())
        .await?
    {
        return Ok(existing.id);
    }
    let region = match region::Entity::find()
        .filter(region::Column::Slug.eq(region_slug))
        .one(db.writer())
        .await?
    {
        Some(region) => region,
        None => region::ActiveModel {
            slug: Set(region_slug.to_owned()),
            name: Set(format!("Local ({region_slug})")),
            active: Set(true),
            ..Default::default()
        }
        .insert(db.writer())
        .await
        .map_err(|err| Error::on_duplicate(err, "The local region slug is taken already."))?,
    };
    let (vcpus, memory_mib, disk_gib) = host_capacity(data_dir);
    let name = format!(
        "local-{}",
        rustix::system::uname().nodename().to_string_lossy()
    );
    let row = insert(
        db,
        &NewNode {
            name,
            region: region.slug,
            driver: NodeDriver::Qemu,
            uri: run_dir,
            vcpus,
            memory_mib,
            disk_gib,
            cpu_overcommit_pct: None,
            memory_overcommit_pct: None,
            network: NodeNetwork::User,
        },
        region.id,
    )
    .await?;
    tracing::info!(node = %row.id, name = row.name, "registered this host as the local node");
    Ok(row.id)
}
