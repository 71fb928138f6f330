//! One resource-usage sample of an instance, or the rollup of several as
//! they age. Byte counters are cumulative as the hypervisor reports them
//! (the last sample's, in a rollup); rates are derived between rows.

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
    /// 0 where the network backend has no counters (QEMU user networking).
    pub net_rx_bytes: i64,
    pub net_tx_bytes: i64,
    /// The seconds this row stands for: the sampling interval for a raw
    /// sample, the bucket for a rollup.
    pub resolution_secs: i32,
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
