//! A support conversation between a customer and the support team.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceId, TicketId, UserId};

db_enum! {
    /// The team a ticket goes to.
    pub enum TicketCategory {
        Billing,
        Technical,
        Sales,
        Abuse,
    }
}

db_enum! {
    pub enum TicketPriority {
        Low,
        Normal,
        High,
        Urgent,
    }
}

db_enum! {
    /// Whose turn it is.
    pub enum TicketStatus {
        Open,
        AwaitingSupport,
        AwaitingCustomer,
        Resolved,
        Closed,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "support_tickets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TicketId,
    pub user_id: UserId,
    /// The instance the ticket is about, if any.
    pub instance_id: Option<InstanceId>,
    /// The support agent handling it.
    pub assignee_id: Option<UserId>,
    pub subject: String,
    pub category: TicketCategory,
    pub priority: TicketPriority,
    pub status: TicketStatus,
    /// The first reply from support, for response-time reporting.
    pub first_response_at: Option<DateTimeUtc>,
    pub resolved_at: Option<DateTimeUtc>,
    pub closed_at: Option<DateTimeUtc>,
    pub last_message_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "NoAction"
    )]
    User,
    #[sea_orm(
        belongs_to = "super::instance::Entity",
        from = "Column::InstanceId",
        to = "super::instance::Column::Id",
        on_delete = "SetNull"
    )]
    Instance,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::AssigneeId",
        to = "super::user::Column::Id",
        on_delete = "SetNull"
    )]
    Assignee,
    #[sea_orm(has_many = "super::ticket_message::Entity")]
    Messages,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instance.def()
    }
}

impl Related<super::ticket_message::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Messages.def()
    }
}

stamped_behavior!();
