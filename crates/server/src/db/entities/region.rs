//! A location where instances run (a data centre or a group of nodes).

use sea_orm::entity::prelude::*;

use crate::ids::RegionId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "regions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: RegionId,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    pub active: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::node::Entity")]
    Nodes,
    #[sea_orm(has_many = "super::ip_address::Entity")]
    IpAddresses,
    #[sea_orm(has_many = "super::instance::Entity")]
    Instances,
    #[sea_orm(has_many = "super::product_region::Entity")]
    ProductRegions,
}

impl Related<super::node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Nodes.def()
    }
}

impl Related<super::ip_address::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::IpAddresses.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

impl Related<super::product_region::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ProductRegions.def()
    }
}

/// The products offered in this region, through `product_regions`.
impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        super::product_region::Relation::Product.def()
    }

    fn via() -> Option<RelationDef> {
        Some(super::product_region::Relation::Region.def().rev())
    }
}

stamped_behavior!();
