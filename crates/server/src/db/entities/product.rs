//! A plan customers can order: a size and a price.

use sea_orm::entity::prelude::*;

use crate::ids::ProductId;

/// Prices are in minor units of `currency` (cents for EUR).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ProductId,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub description: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i32,
    pub disk_gib: i32,
    pub transfer_gib: i32,
    pub price_monthly_minor: i64,
    pub price_hourly_minor: i64,
    pub setup_fee_minor: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Inactive products cannot be ordered; existing instances keep them.
    pub active: bool,
    /// Hidden products can be ordered but are not listed.
    pub hidden: bool,
    pub sort_order: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::product_region::Entity")]
    ProductRegions,
    #[sea_orm(has_many = "super::instance::Entity")]
    Instances,
    #[sea_orm(has_many = "super::subscription::Entity")]
    Subscriptions,
}

impl Related<super::product_region::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ProductRegions.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscriptions.def()
    }
}

/// The regions this product is offered in, through `product_regions`.
impl Related<super::region::Entity> for Entity {
    fn to() -> RelationDef {
        super::product_region::Relation::Region.def()
    }

    fn via() -> Option<RelationDef> {
        Some(super::product_region::Relation::Product.def().rev())
    }
}

stamped_behavior!();
