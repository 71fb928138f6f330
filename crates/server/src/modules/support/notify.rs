//! Telling the other side of a ticket about a new message: a `ticket.reply`
//! notice (in the app and by email unless they opted out; never for an
//! internal note) and a live `ticket.message` event (internal notes to staff
//! only).
//!
//! The message is committed before this runs, so a failure here is logged,
//! never the writer's error: failing the request would invite a duplicate.

use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use super::rules::Side;
use super::{MessageView, Services};
use crate::db::entities::support_ticket;
use crate::db::entities::user::{self, UserRole, UserStatus};
use crate::error::Result;
use crate::ids::UserId;
use crate::modules::events::{self, Audience, Event, EventType};
use crate::modules::notifications::{self, Notice};

pub(super) async fn reply_posted(
    services: &Services,
    ticket: &support_ticket::Model,
    author: UserId,
    side: Side,
    message: &MessageView,
) {
    let mut audience = vec![Audience::Staff];
    if !message.internal {
        audience.push(Audience::User(ticket.user_id));
        if let Err(err) = tell_other_side(services, ticket, author, side, message).await {
            tracing::warn!(ticket = %ticket.id, error = %err, "cannot notify a ticket reply");
        }
    }
    let fields = serde_json::json!({ "ticket_id": ticket.id, "message": message });
    events::publish(
        &services.cache,
        audience,
        Event::new(EventType::TicketMessage, ticket.id, fields),
    )
    .await;
}

/// A customer's reply goes to the assignee, or to every Support account
/// while nobody is assigned; a staff reply goes to the customer.
async fn recipients(
    services: &Services,
    ticket: &support_ticket::Model,
    side: Side,
) -> Result<Vec<user::Model>> {
    let active = user::Entity::find()
        .filter(user::Column::Status.eq(UserStatus::Active))
        .filter(user::Column::DeletedAt.is_null());
    let select = match (side, ticket.assignee_id) {
        (Side::Staff, _) => active.filter(user::Column::Id.eq(ticket.user_id)),
        (Side::Customer, Some(assignee)) => active.filter(user::Column::Id.eq(assignee)),
        (Side::Customer, None) => active.filter(user::Column::Role.eq(UserRole::Support)),
    };
    Ok(select.all(services.db.reader()).await?)
}

async fn tell_other_side(
    services: &Services,
    ticket: &support_ticket::Model,
    author: UserId,
    side: Side,
    message: &MessageView,
) -> Result<()> {
    let author_name = user::Entity::find_by_id(author)
        .one(services.db.reader())
        .await?
        .map(|row| row.name)
        .unwrap_or_default();
    let notice = Notice::TicketReply {
        ticket_id: ticket.id,
        subject: ticket.subject.clone(),
        author_name,
        reply: message.body.clone(),
        url: format!("{}/tickets/{}", services.public_url, ticket.id),
    };
    for recipient in recipients(services, ticket, side).await? {
        if recipient.id == author {
            continue;
        }
        notifications::notify(
            &services.db,
            &services.cache,
            &services.jobs,
            recipient.id,
            notice.clone(),
        )
        .await?;
    }
    Ok(())
}
