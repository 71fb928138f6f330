//! One message in a support ticket.

use sea_orm::entity::prelude::*;

use crate::ids::{TicketId, TicketMessageId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ticket_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TicketMessageId,
    pub ticket_id: TicketId,
    pub author_id: UserId,
    /// Markdown as written; rendered (and sanitised) on display.
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// A note between support staff, never shown to the customer.
    pub internal: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::support_ticket::Entity",
        from = "Column::TicketId",
        to = "super::support_ticket::Column::Id",
        on_delete = "Cascade"
    )]
    Ticket,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::AuthorId",
        to = "super::user::Column::Id",
        on_delete = "NoAction"
    )]
    Author,
}

impl Related<super::support_ticket::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Ticket.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Author.def()
    }
}

stamped_behavior!();
