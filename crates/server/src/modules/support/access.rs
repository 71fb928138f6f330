//! Who may see and act on a ticket. A customer sees only their own tickets:
//! another customer's answers 404, exactly like one that does not exist.
//! Support and Admin see them all, unless held back for want of a second
//! factor ([`Actor::is_staff`]).

use sea_orm::EntityTrait as _;

use super::rules::Side;
use crate::db::Database;
use crate::db::entities::support_ticket;
use crate::error::{Error, Result};
use crate::ids::TicketId;
use crate::modules::auth::Actor;

/// A ticket the actor may see, or 404. Read from the primary, so a ticket
/// is visible right after it is opened or changed.
pub async fn visible(db: &Database, actor: &Actor, id: TicketId) -> Result<support_ticket::Model> {
    match support_ticket::Entity::find_by_id(id)
        .one(db.writer())
        .await?
    {
        Some(ticket) if actor.reaches(ticket.user_id)? => Ok(ticket),
        _ => Err(Error::not_found("Ticket")),
    }
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
