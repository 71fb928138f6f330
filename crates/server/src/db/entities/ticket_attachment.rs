//! A file attached to a support ticket; the bytes are under the data dir.

use sea_orm::entity::prelude::*;

use crate::ids::{TicketAttachmentId, TicketId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ticket_attachments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TicketAttachmentId,
    pub ticket_id: TicketId,
    pub uploaded_by: UserId,
    /// The name it was uploaded under, cleaned of any path.
    pub file_name: String,
    /// The type its magic bytes prove, never only the one declared.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the content, to check the file on disk.
    pub sha256: String,
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
}

impl Related<super::support_ticket::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Ticket.def()
    }
}

stamped_behavior!();
