//! The ticket workflow: open → awaiting_support ⇄ awaiting_customer →
//! resolved → closed, and what a reply does to it. Pure rules, no I/O.

use crate::db::entities::support_ticket::TicketStatus;
use crate::error::{Error, Result};

/// Which side of the conversation a writer is on: the ticket's owner, or
/// the staff answering it (a staff member's own ticket makes them the
/// customer of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Customer,
    Staff,
}

fn name(status: TicketStatus) -> String {
    sea_orm::ActiveEnum::to_value(&status)
}

fn closed() -> Error {
    Error::InvalidState {
        message: "This ticket is closed and takes no more replies: open a new ticket \
                  (you may mention this one)."
            .to_owned(),
        state: name(TicketStatus::Closed),
    }
}

/// Whether the workflow goes straight from `from` to `to`.
pub fn can_move(from: TicketStatus, to: TicketStatus) -> bool {
    use TicketStatus::{AwaitingCustomer, AwaitingSupport, Closed, Open, Resolved};
    matches!(
        (from, to),
        (Open, AwaitingSupport | AwaitingCustomer | Resolved)
            | (AwaitingSupport, AwaitingCustomer | Resolved)
            | (AwaitingCustomer, AwaitingSupport | Resolved)
            | (Resolved, Closed | AwaitingSupport)
    )
}

/// Checks a status change asked for explicitly. Customers may only mark
/// their ticket resolved, then closed; staff may move it along any edge.
pub fn check_move(from: TicketStatus, to: TicketStatus, side: Side) -> Result<()> {
    if from == TicketStatus::Closed {
        return Err(closed());
    }
    if side == Side::Customer && !matches!(to, TicketStatus::Resolved | TicketStatus::Closed) {
        return Err(Error::Forbidden(
            "Only support staff set a ticket to this status; reply to it instead.".to_owned(),
        ));
    }
    if !can_move(from, to) {
        return Err(Error::InvalidState {
            message: format!("A ticket cannot go from {} to {}.", name(from), name(to)),
            state: name(from),
        });
    }
    Ok(())
}

/// The status a public reply from `side` leaves the ticket in: the other
/// side's turn. A customer's reply reopens a resolved ticket; a staff
/// follow-up on one leaves it resolved. A closed ticket takes no reply.
pub fn after_reply(status: TicketStatus, side: Side) -> Result<TicketStatus> {
    match (status, side) {
        (TicketStatus::Closed, _) => Err(closed()),
        (_, Side::Customer) => Ok(TicketStatus::AwaitingSupport),
        (TicketStatus::Resolved, Side::Staff) => Ok(TicketStatus::Resolved),
        (_, Side::Staff) => Ok(TicketStatus::AwaitingCustomer),
    }
}

/// A closed ticket takes nothing more, attachments and notes included.
pub fn check_open(status: TicketStatus) -> Result<()> {
    if status == TicketStatus::Closed {
        Err(closed())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::Iterable as _;

    use super::*;
    use TicketStatus::{AwaitingCustomer, AwaitingSupport, Closed, Open, Resolved};

    #[test]
    fn the_workflow_only_moves_forward_along_its_edges() {
        assert!(can_move(Open, AwaitingSupport));
        assert!(can_move(AwaitingSupport, AwaitingCustomer));
        assert!(can_move(AwaitingCustomer, AwaitingSupport));
        assert!(can_move(AwaitingCustomer, Resolved));
        assert!(can_move(Resolved, Closed));
        assert!(!can_move(Open, Closed));
        assert!(!can_move(Resolved, AwaitingCustomer));
        for to in TicketStatus::iter() {
            assert!(!can_move(Closed, to), "closed is final: {to:?}");
            assert!(!can_move(to, to), "no move to the same status: {to:?}");
        }
    }

    #[test]
    fn customers_may_only_resolve_and_close() {
        assert!(check_move(AwaitingCustomer, Resolved, Side::Customer).is_ok());
        assert!(check_move(Resolved, Closed, Side::Customer).is_ok());
        assert!(matches!(
            check_move(Open, AwaitingCustomer, Side::Customer),
            Err(Error::Forbidden(_))
        ));
        assert!(check_move(Open, AwaitingCustomer, Side::Staff).is_ok());
        assert!(matches!(
            check_move(Open, Closed, Side::Staff),
            Err(Error::InvalidState { .. })
        ));
        assert!(matches!(
            check_move(Closed, Resolved, Side::Staff),
            Err(Error::InvalidState { .. })
        ));
    }

    #[test]
    fn a_reply_hands_the_turn_to_the_other_side() {
        assert_eq!(after_reply(Open, Side::Staff).ok(), Some(AwaitingCustomer));
        assert_eq!(
            after_reply(AwaitingCustomer, Side::Customer).ok(),
            Some(AwaitingSupport)
        );
        assert_eq!(
            after_reply(Resolved, Side::Customer).ok(),
            Some(AwaitingSupport),
            "a customer reply reopens"
        );
        assert_eq!(after_reply(Resolved, Side::Staff).ok(), Some(Resolved));
        let Err(Error::InvalidState { message, .. }) = after_reply(Closed, Side::Customer) else {
            panic!("a closed ticket takes no reply");
        };
        assert!(message.contains("open a new ticket"));
    }
}
