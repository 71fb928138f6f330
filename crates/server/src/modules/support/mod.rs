//! Support tickets: a customer opens one (optionally about one of their
//! instances), customers and staff exchange Markdown messages, staff add
//! internal notes customers never see, attach files, assign the ticket to a
//! member of Support and move it through the workflow of [`rules`]. Each
//! public reply is notified to the other side (in the app and by email) and
//! pushed live; a resolved ticket left silent closes itself
//! ([`run_auto_close`]).
//!
//! Customers see only their own tickets ([`access`]); Support and Admin see
//! them all. Ticket times come from the services' [`Clock`], so tests drive
//! auto-closing through simulated days.
//!
//! [`Clock`]: crate::clock::Clock

pub mod access;
pub mod attachments;
pub mod markdown;
mod notify;
pub mod policy;
pub mod rules;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::db::Database;
use crate::db::entities::support_ticket::{self, TicketCategory, TicketPriority, TicketStatus};
use crate::db::entities::user::{self, UserRole, UserStatus};
use crate::db::entities::{instance, ticket_attachment, ticket_message};
use crate::error::{Error, FieldError, Result};
use crate::ids::{InstanceId, TicketId, TicketMessageId, UserId};
use crate::jobs::JobQueue;
use crate::modules::audit;
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

use self::access::visible;
use self::attachments::AttachmentView;
use self::rules::Side;

pub const MAX_SUBJECT_CHARS: usize = 150;
pub const MAX_BODY_CHARS: usize = 20_000;

/// How often silent resolved tickets are looked for: the delay is counted
/// in days, so an hour late is on time.
pub const AUTO_CLOSE_INTERVAL: Duration = Duration::from_secs(3600);

/// What the support services need.
#[derive(Clone, Debug)]
pub struct Services {
    pub db: Database,
    pub cache: Cache,
    pub jobs: JobQueue,
    pub clock: SharedClock,
    /// Where attachment files are kept (`{data_dir}/attachments`).
    pub attachments_dir: PathBuf,
    /// The platform's address, for the links in emails.
    pub public_url: String,
}

/// What a customer submits to open a ticket.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewTicket {
    /// One line, at most 150 characters.
    pub subject: String,
    pub category: TicketCategory,
    pub priority: TicketPriority,
    /// One of the caller's own instances, when the ticket is about it.
    pub instance_id: Option<InstanceId>,
    /// The first message, in Markdown.
    pub body: String,
}

/// A reply, or (staff only) an internal note.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewMessage {
    /// Markdown, at most 20 000 characters; shown rendered and sanitised.
    pub body: String,
    /// A note between staff, never shown to the customer nor emailed.
    #[serde(default)]
    pub internal: bool,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct Assignment {
    /// An active Support or Admin account.
    pub assignee_id: UserId,
}

#[derive(Clone, Debug, Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct StatusChange {
    /// Customers may set `resolved`, then `closed`; staff any status the
    /// workflow allows next.
    pub status: TicketStatus,
}

/// Filters of the ticket list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub category: Option<TicketCategory>,
    /// Tickets assigned to this account.
    pub assignee: Option<UserId>,
}

/// A ticket as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    pub id: TicketId,
    /// The customer who opened it.
    pub user_id: UserId,
    pub instance_id: Option<InstanceId>,
    pub assignee_id: Option<UserId>,
    pub subject: String,
    pub category: TicketCategory,
    pub priority: TicketPriority,
    pub status: TicketStatus,
    /// The first public reply from staff.
    pub first_response_at: Option<DateTime<Utc>>,
    /// When it was last resolved; cleared when the customer reopens it.
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// The last public message.
    pub last_message_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Seconds from opening to the first staff reply.
    pub first_response_secs: Option<i64>,
    /// Seconds from opening to resolution.
    pub resolution_secs: Option<i64>,
}

impl From<support_ticket::Model> for TicketView {
    fn from(row: support_ticket::Model) -> Self {
        let since_opened =
            |at: Option<DateTime<Utc>>| at.map(|at| (at - row.created_at).num_seconds());
        Self {
            first_response_secs: since_opened(row.first_response_at),
            resolution_secs: since_opened(row.resolved_at),
            id: row.id,
            user_id: row.user_id,
            instance_id: row.instance_id,
            assignee_id: row.assignee_id,
            subject: row.subject,
            category: row.category,
            priority: row.priority,
            status: row.status,
            first_response_at: row.first_response_at,
            resolved_at: row.resolved_at,
            closed_at: row.closed_at,
            last_message_at: row.last_message_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A message of a ticket's thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: TicketMessageId,
    pub ticket_id: TicketId,
    pub author_id: UserId,
    /// Whether staff wrote it (rather than the ticket's owner).
    pub from_staff: bool,
    /// Only ever `true` for staff.
    pub internal: bool,
    /// The Markdown as written.
    pub body: String,
    /// The Markdown rendered to HTML with everything unsafe removed: the
    /// only form to put in a page.
    pub body_html: String,
    pub created_at: DateTime<Utc>,
}

impl MessageView {
    fn new(row: ticket_message::Model, owner: UserId) -> Self {
        Self {
            body_html: markdown::to_safe_html(&row.body),
            from_staff: row.author_id != owner,
            id: row.id,
            ticket_id: row.ticket_id,
            author_id: row.author_id,
            internal: row.internal,
            body: row.body,
            created_at: row.created_at,
        }
    }
}

/// A ticket with its thread and attachments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: TicketView,
    /// Oldest first; internal notes only for staff.
    pub messages: Vec<MessageView>,
    pub attachments: Vec<AttachmentView>,
}

/// A trimmed line of text, or the problem with it.
fn check_subject(subject: &str) -> std::result::Result<String, FieldError> {
    let subject = subject.trim();
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(FieldError::new(
            "subject",
            format!("must be 1 to {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err(FieldError::new(
            "subject",
            "must be one line without control characters",
        ));
    }
    Ok(subject.to_owned())
}

fn check_body(body: &str) -> std::result::Result<String, FieldError> {
    if body.trim().is_empty() || body.chars().count() > MAX_BODY_CHARS {
        return Err(FieldError::new(
            "body",
            format!("must be 1 to {MAX_BODY_CHARS} characters"),
        ));
    }
    Ok(body.to_owned())
}

/// Opens a ticket for the caller with its first message, which is sent to
/// Support like a reply.
pub async fn open(services: &Services, actor: &Actor, new: NewTicket) -> Result<TicketDetail> {
    let subject = check_subject(&new.subject);
    let body = check_body(&new.body);
    let instance = match new.instance_id {
        Some(id) => instance::Entity::find_by_id(id)
            .filter(instance::Column::UserId.eq(actor.user_id))
            .filter(instance::Column::DeletedAt.is_null())
            .one(services.db.reader())
            .await?
            .map(|_| ())
            .ok_or_else(|| FieldError::new("instance_id", "must be one of your instances")),
        None => Ok(()),
    };
    let (subject, body) = match (subject, body, instance) {
        (Ok(subject), Ok(body), Ok(())) => (subject, body),
        (subject, body, instance) => {
            let fields = [subject.err(), body.err(), instance.err()];
            return Err(Error::invalid(fields.into_iter().flatten().collect()));
        }
    };
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    let ticket = support_ticket::ActiveModel {
        user_id: Set(actor.user_id),
        instance_id: Set(new.instance_id),
        assignee_id: Set(None),
        subject: Set(subject),
        category: Set(new.category),
        priority: Set(new.priority),
        status: Set(TicketStatus::Open),
        first_response_at: Set(None),
        resolved_at: Set(None),
        closed_at: Set(None),
        last_message_at: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let message = insert_message(&txn, &ticket, actor.user_id, body, false, now).await?;
    txn.commit().await?;
    let message = MessageView::new(message, ticket.user_id);
    // The first message reaches Support like any customer reply.
    notify::reply_posted(services, &ticket, actor.user_id, Side::Customer, &message).await;
    Ok(TicketDetail {
        messages: vec![message],
        ticket: ticket.into(),
        attachments: Vec::new(),
    })
}

async fn insert_message<C: ConnectionTrait>(
    conn: &C,
    ticket: &support_ticket::Model,
    author: UserId,
    body: String,
    internal: bool,
    now: DateTime<Utc>,
) -> Result<ticket_message::Model> {
    Ok(ticket_message::ActiveModel {
        ticket_id: Set(ticket.id),
        author_id: Set(author),
        body: Set(body),
        internal: Set(internal),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

/// The tickets the caller may see, newest first: their own, or every
/// ticket for staff.
pub async fn list(
    services: &Services,
    actor: &Actor,
    filter: TicketFilter,
    page: PageRequest,
) -> Result<Page<TicketView>> {
    let mut scope = Condition::all();
    if !actor.is_staff()? {
        scope = scope.add(support_ticket::Column::UserId.eq(actor.user_id));
    }
    if let Some(status) = filter.status {
        scope = scope.add(support_ticket::Column::Status.eq(status));
    }
    if let Some(priority) = filter.priority {
        scope = scope.add(support_ticket::Column::Priority.eq(priority));
    }
    if let Some(category) = filter.category {
        scope = scope.add(support_ticket::Column::Category.eq(category));
    }
    if let Some(assignee) = filter.assignee {
        scope = scope.add(support_ticket::Column::AssigneeId.eq(assignee));
    }
    let page = fetch_page(
        services.db.reader(),
        support_ticket::Entity::find().filter(scope),
        support_ticket::Column::Id,
        page,
        |row| row.id.0,
    )
    .await?;
    Ok(page.map(TicketView::from))
}

/// A ticket with its thread; internal notes only for staff.
pub async fn get(services: &Services, actor: &Actor, id: TicketId) -> Result<TicketDetail> {
    let ticket = visible(&services.db, actor, id).await?;
    let mut messages = ticket_message::Entity::find()
        .filter(ticket_message::Column::TicketId.eq(id))
        .order_by_asc(ticket_message::Column::CreatedAt)
        .order_by_asc(ticket_message::Column::Id);
    if !actor.sees_staff_details() {
        messages = messages.filter(ticket_message::Column::Internal.eq(false));
    }
    let messages = messages.all(services.db.writer()).await?;
    let attachments = ticket_attachment::Entity::find()
        .filter(ticket_attachment::Column::TicketId.eq(id))
        .order_by_asc(ticket_attachment::Column::Id)
        .all(services.db.writer())
        .await?;
    Ok(TicketDetail {
        messages: messages
            .into_iter()
            .map(|row| MessageView::new(row, ticket.user_id))
            .collect(),
        attachments: attachments.into_iter().map(AttachmentView::from).collect(),
        ticket: ticket.into(),
    })
}

/// Adds a message. A public reply hands the turn to the other side (see
/// [`rules::after_reply`]), dates the first staff response, and is notified
/// (in the app and by email) and pushed live to the other side; an internal
/// note (staff only) changes nothing but the thread and reaches staff only.
pub async fn reply(
    services: &Services,
    actor: &Actor,
    id: TicketId,
    new: NewMessage,
) -> Result<MessageView> {
    let body = check_body(&new.body).map_err(|field| Error::invalid(vec![field]))?;
    if new.internal && !actor.is_staff()? {
        return Err(Error::Forbidden(
            "Only support staff write internal notes.".to_owned(),
        ));
    }
    let seen = visible(&services.db, actor, id).await?;
    rules::check_open(seen.status)?;
    let side = access::side(actor, &seen);
    let now = services.clock.now();
    let txn = services.db.begin_write().await?;
    // Read again under the write lock: the status may have moved since.
    let ticket = support_ticket::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or_else(|| Error::not_found("Ticket"))?;
    rules::check_open(ticket.status)?;
    let message = insert_message(&txn, &ticket, actor.user_id, body, new.internal, now).await?;
    let ticket = if new.internal {
        ticket
    } else {
        let status = rules::after_reply(ticket.status, side)?;
        let mut change = moved(&ticket, status, now);
        change.last_message_at = Set(now);
        if side == Side::Staff && ticket.first_response_at.is_none() {
            change.first_response_at = Set(Some(now));
        }
        change.update(&txn).await?
    };
    txn.commit().await?;
    let view = MessageView::new(message, ticket.user_id);
    notify::reply_posted(services, &ticket, actor.user_id, side, &view).await;
    Ok(view)
}

/// The change that moves `ticket` to `status` at `now`: resolving dates
/// it, closing dates that, reopening clears the resolution.
fn moved(
    ticket: &support_ticket::Model,
    status: TicketStatus,
    now: DateTime<Utc>,
) -> support_ticket::ActiveModel {
    let mut change = support_ticket::ActiveModel {
        id: Set(ticket.id),
        status: Set(status),
        updated_at: Set(now),
        ..Default::default()
    };
    if status != ticket.status {
        match status {
            TicketStatus::Resolved => change.resolved_at = Set(Some(now)),
            TicketStatus::Closed => change.closed_at = Set(Some(now)),
            TicketStatus::Open | TicketStatus::AwaitingSupport | TicketStatus::AwaitingCustomer => {
                change.resolved_at = Set(None);
            }
        }
    }
    change
}

/// Applies `change` to ticket `id` unless it left status `from` meanwhile;
/// `false` then.
async fn update_from(
    db: &Database,
    id: TicketId,
    from: TicketStatus,
    change: support_ticket::ActiveModel,
) -> Result<bool> {
    let updated = support_ticket::Entity::update_many()
        .set(change)
        .filter(support_ticket::Column::Id.eq(id))
        .filter(support_ticket::Column::Status.eq(from))
        .exec(db.writer())
        .await?;
    Ok(updated.rows_affected == 1)
}

async fn reload(db: &Database, id: TicketId) -> Result<TicketView> {
    support_ticket::Entity::find_by_id(id)
        .one(db.writer())
        .await?
        .map(TicketView::from)
        .ok_or_else(|| Error::not_found("Ticket"))
}

fn moved_meanwhile() -> Error {
    Error::Conflict("The ticket changed meanwhile; read it again and retry.".to_owned())
}

/// Moves a ticket along the workflow (see [`rules::check_move`]).
pub async fn change_status(
    services: &Services,
    actor: &Actor,
    id: TicketId,
    change: StatusChange,
) -> Result<TicketView> {
    let ticket = visible(&services.db, actor, id).await?;
    rules::check_move(ticket.status, change.status, access::side(actor, &ticket))?;
    let now = services.clock.now();
    if !update_from(
        &services.db,
        id,
        ticket.status,
        moved(&ticket, change.status, now),
    )
    .await?
    {
        return Err(moved_meanwhile());
    }
    reload(&services.db, id).await
}

/// Hands a ticket to an active Support or Admin account (staff only).
pub async fn assign(
    services: &Services,
    actor: &Actor,
    id: TicketId,
    assignment: Assignment,
) -> Result<TicketView> {
    actor.require_staff()?;
    let ticket = visible(&services.db, actor, id).await?;
    rules::check_open(ticket.status)?;
    let assignee = user::Entity::find_by_id(assignment.assignee_id)
        .filter(user::Column::Status.eq(UserStatus::Active))
        .filter(user::Column::DeletedAt.is_null())
        .filter(user::Column::Role.is_in([UserRole::Support, UserRole::Admin]))
        .one(services.db.reader())
        .await?;
    if assignee.is_none() {
        return Err(Error::invalid_field(
            "assignee_id",
            "must be an active support or admin account",
        ));
    }
    let change = support_ticket::ActiveModel {
        id: Set(id),
        assignee_id: Set(Some(assignment.assignee_id)),
        updated_at: Set(services.clock.now()),
        ..Default::default()
    };
    if !update_from(&services.db, id, ticket.status, change).await? {
        return Err(moved_meanwhile());
    }
    reload(&services.db, id).await
}

/// Closes every ticket resolved at least `auto_close_days` ago and silent
/// since (a reply would have reopened it). Each closure is audited; a ticket
/// reopened concurrently is left alone. Returns the tickets closed.
pub async fn close_silent(services: &Services) -> Result<Vec<TicketId>> {
    let settings = policy::get(&services.db, &services.cache).await?;
    let now = services.clock.now();
    let cutoff = now - chrono::Duration::days(i64::from(settings.auto_close_days));
    let due = support_ticket::Entity::find()
        .filter(support_ticket::Column::Status.eq(TicketStatus::Resolved))
        .filter(support_ticket::Column::ResolvedAt.lte(cutoff))
        .all(services.db.writer())
        .await?;
    let mut closed = Vec::new();
    for ticket in due {
        let change = moved(&ticket, TicketStatus::Closed, now);
        if update_from(&services.db, ticket.id, TicketStatus::Resolved, change).await? {
            let event = audit::Event::new("ticket.auto_closed")
                .on("ticket", ticket.id)
                .details(serde_json::json!({
                    "resolved_at": ticket.resolved_at,
                    "auto_close_days": settings.auto_close_days,
                }));
            audit::record(&services.db, &audit::Context::default(), event).await?;
            closed.push(ticket.id);
        }
    }
    Ok(closed)
}

/// Closes silent resolved tickets every `interval` until `stop`. Every
/// process may run it: a ticket is closed by one conditional update, so
/// overlapping runs close it once.
pub async fn run_auto_close(services: Services, interval: Duration, stop: CancellationToken) {
    loop {
        match close_silent(&services).await {
            Ok(closed) if !closed.is_empty() => {
                tracing::info!(closed = closed.len(), "silent resolved tickets closed");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "ticket auto-close failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_trimmed_line() {
        assert_eq!(
            check_subject("  Disk full ").ok().as_deref(),
            Some("Disk full")
        );
        assert!(check_subject("   ").is_err());
        assert!(check_subject("two\nlines").is_err());
        assert!(check_subject(&"x".repeat(MAX_SUBJECT_CHARS + 1)).is_err());
        assert!(check_body(" \n ").is_err());
        assert_eq!(check_body("# Hi\n").ok().as_deref(), Some("# Hi\n"));
    }
}
