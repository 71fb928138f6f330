//! Who may see and act on a ticket. A customer sees only their own tickets:
//! another customer's answers 404, exactly like one that does not exist.
//! Support and Admin see them all.

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use super::rules::Side;
use crate::db::Database;
use crate::db::entities::support_ticket;
use crate::error::{Error, Result};
use crate::ids::TicketId;
use crate::modules::auth::Actor;

/// A ticket the actor may see, or 404. Read from the primary, so a ticket
/// is visible right after it is opened or changed.
pub async fn visible(db: &Database, actor: &Actor, id: TicketId) -> Result<support_ticket::Model> {
    let mut select = support_ticket::Entity::find_by_id(id);
    if !actor.is_staff() {
        select = select.filter(support_ticket::Column::UserId.eq(actor.user_id));
    }
    select
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Ticket"))
}

/// The side the actor writes on in a ticket they may see: its owner is the
/// customer, anyone else (necessarily staff) answers it.
pub fn side(actor: &Actor, ticket: &support_ticket::Model) -> Side {
    if actor.user_id == ticket.user_id {
        Side::Customer
    } else {
        Side::Staff
    }
}
