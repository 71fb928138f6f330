//! One resource-usage sample of an instance. Byte counters are cumulative as
//! the hypervisor reports them; rates are derived between samples.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceId, InstanceMetricId};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "instance_metrics")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: InstanceMetricId,
    pub instance_id: InstanceId,
    pub sampled_at: DateTimeUtc,
    /// Share of the instance's vCPUs in use, 0–100.
    pub cpu_percent: f64,
    pub memory_used_mib: i64,
    pub disk_read_bytes: i64,
    pub disk_write_bytes: i64,
    pub net_rx_bytes: i64,
    pub net_tx_bytes: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::instance::Entity",
        from = "Column::InstanceId",
        to = "super::instance::Column::Id",
        on_delete = "Cascade"
    )]
    Instance,
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instance.def()
    }
}

stamped_behavior!();
