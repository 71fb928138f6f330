//! Who did what to which object, and from where. Rows are only ever added;
//! they survive the deletion of the users they name.

use sea_orm::entity::prelude::*;

use crate::ids::{AuditLogId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AuditLogId,
    /// `None` for the system itself (workers, reconcilers).
    pub actor_id: Option<UserId>,
    /// The administrator behind `actor_id` during an impersonation.
    pub impersonator_id: Option<UserId>,
    /// Dotted verb, e.g. `instance.stop`.
    pub action: String,
    /// e.g. `instance`; with `object_id`, the thing acted on.
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub ip: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub details: Json,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::ActorId",
        to = "super::user::Column::Id",
        on_delete = "SetNull"
    )]
    Actor,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::ImpersonatorId",
        to = "super::user::Column::Id",
        on_delete = "SetNull"
    )]
    Impersonator,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Actor.def()
    }
}

stamped_behavior!();
