//! An operating system image instances boot from.

use sea_orm::entity::prelude::*;

use crate::ids::ImageId;

db_enum! {
    /// Where an image is in its import.
    pub enum ImageStatus {
        Importing,
        Available,
        Failed,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "images")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ImageId,
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    /// e.g. `debian`, `ubuntu`.
    pub os_family: String,
    pub os_version: String,
    /// The account cloud-init creates for SSH access.
    pub default_user: String,
    pub min_disk_gib: i32,
    #[sea_orm(column_type = "Text")]
    pub source_url: Option<String>,
    /// The base disk on the nodes, once imported.
    #[sea_orm(column_type = "Text")]
    pub file_path: Option<String>,
    /// `sha256:<hex>` (or another algorithm prefix) of the source file.
    pub checksum: Option<String>,
    pub size_bytes: Option<i64>,
    pub status: ImageStatus,
    #[sea_orm(column_type = "Text")]
    pub status_reason: Option<String>,
    pub active: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::instance::Entity")]
    Instances,
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

stamped_behavior!();
