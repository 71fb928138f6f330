//! A hypervisor host that runs instances.

use sea_orm::entity::prelude::*;

use crate::ids::{NodeId, RegionId};

db_enum! {
    /// How the platform drives the node.
    pub enum NodeDriver {
        /// QEMU processes on this host, over QMP.
        Qemu,
        /// A remote host through libvirt.
        Libvirt,
    }
}

db_enum! {
    /// Whether the scheduler may place instances on the node.
    pub enum NodeStatus {
        Online,
        Offline,
        /// Out of service; its instances stay where they are.
        Maintenance,
        /// Takes no new instances while the existing ones move away.
        Draining,
    }
}

db_enum! {
    /// The virtualisation the node offers.
    pub enum Accelerator {
        /// Hardware virtualisation.
        Kvm,
        /// Software emulation, when `/dev/kvm` is unavailable.
        Tcg,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: NodeId,
    #[sea_orm(unique)]
    pub name: String,
    pub region_id: RegionId,
    pub driver: NodeDriver,
    /// Where to reach the node: a libvirt URI, or the local QEMU run directory.
    #[sea_orm(column_type = "Text")]
    pub uri: String,
    pub status: NodeStatus,
    /// The host bridge instances go on, each with an address from the pool;
    /// `None`: QEMU user networking with a forwarded SSH port.
    pub bridge: Option<String>,
    /// Unknown until the node first reports in.
    pub accelerator: Option<Accelerator>,
    pub vcpus_total: i32,
    pub memory_mib_total: i64,
    pub disk_gib_total: i64,
    /// vCPUs sold per 100 physical threads.
    pub cpu_overcommit_pct: i32,
    /// MiB of memory sold per 100 MiB installed.
    pub memory_overcommit_pct: i32,
    pub last_seen_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::region::Entity",
        from = "Column::RegionId",
        to = "super::region::Column::Id",
        on_delete = "NoAction"
    )]
    Region,
    #[sea_orm(has_many = "super::instance::Entity")]
    Instances,
    #[sea_orm(has_many = "super::ip_address::Entity")]
    IpAddresses,
}

impl Related<super::region::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Region.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

impl Related<super::ip_address::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::IpAddresses.def()
    }
}

stamped_behavior!();
