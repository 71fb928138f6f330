//! An address in a region's pool; assigned to at most one instance.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceId, IpAddressId, NodeId, RegionId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ip_addresses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: IpAddressId,
    pub region_id: RegionId,
    /// Set when the address is routed to one node only.
    pub node_id: Option<NodeId>,
    #[sea_orm(unique)]
    pub address: String,
    /// 4 or 6.
    pub version: i16,
    pub prefix_len: i32,
    pub gateway: Option<String>,
    /// JSON array of the name servers the guest is told to use.
    #[sea_orm(column_type = "Text", nullable)]
    pub nameservers: Option<String>,
    /// The instance holding the address; `None` while free.
    #[sea_orm(unique)]
    pub instance_id: Option<InstanceId>,
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
    #[sea_orm(
        belongs_to = "super::node::Entity",
        from = "Column::NodeId",
        to = "super::node::Column::Id",
        on_delete = "SetNull"
    )]
    Node,
    #[sea_orm(
        belongs_to = "super::instance::Entity",
        from = "Column::InstanceId",
        to = "super::instance::Column::Id",
        on_delete = "SetNull"
    )]
    Instance,
}

impl Related<super::region::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Region.def()
    }
}

impl Related<super::node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Node.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instance.def()
    }
}

stamped_behavior!();
