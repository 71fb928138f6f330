//! Something asked of an instance (provision, start, resize, delete, …), in
//! the instance's queue: actions run one at a time, oldest first.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceActionId, InstanceId, UserId};

db_enum! {
    pub enum ActionKind {
        Provision,
        Start,
        Stop,
        ForceStop,
        Reboot,
        Resize,
        Rebuild,
        SnapshotCreate,
        SnapshotRestore,
        SnapshotDelete,
        Delete,
        /// Started again by the reconciler after the VM died.
        Recover,
        /// Stopped by the platform (an unpaid bill) and kept from starting.
        Suspend,
        /// Started again once the reason for the suspension is gone.
        Unsuspend,
    }
}

db_enum! {
    pub enum ActionStatus {
        Pending,
        Running,
        Succeeded,
        Failed,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instance_actions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: InstanceActionId,
    pub instance_id: InstanceId,
    pub kind: ActionKind,
    pub status: ActionStatus,
    /// The action's arguments (the new plan of a resize, a snapshot name, …).
    #[sea_orm(column_type = "JsonBinary")]
    pub params: Json,
    /// The step running or last finished, 0 before the first.
    pub step: i32,
    pub total_steps: i32,
    pub step_label: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub error: Option<String>,
    /// `None` when the platform itself asked (the reconciler).
    pub requested_by: Option<UserId>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
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
