//! Notifications: what the platform tells one account. [`notify`] is the one
//! entry point: it writes the in-app notification, publishes it live to the
//! account's Socket.IO room, and queues the email unless the account opted
//! out of that kind (see [`preferences`]). Texts are in the account's
//! language (`mail::templates::notice`).
//!
//! A notice about an object that happens once (an instance ready, an invoice
//! issued) carries a key that is unique per account, so a job retried after
//! it notified does not notify again.

pub mod preferences;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _,
    PaginatorTrait as _, QueryFilter as _, SqlErr,
};
use serde::Serialize;

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::email::EmailKind;
use crate::db::entities::{notification, now, user};
use crate::error::{Error, Result};
use crate::ids::{DunningCaseId, InstanceId, InvoiceId, NotificationId, TicketId, UserId};
use crate::jobs::JobQueue;
use crate::mail::{Email, outbox, templates};
use crate::modules::auth::Actor;
use crate::modules::events::{self as live, Audience, EventType};
use crate::pagination::{Page, PageRequest, fetch_page};

pub use preferences::EmailTopic;

/// Something to tell an account, with what its texts need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Provisioning finished: the instance runs for the first time.
    InstanceReady {
        instance_id: InstanceId,
        name: String,
        /// How to reach it, when it can be reached over SSH.
        ssh_command: Option<String>,
    },
    /// Provisioning ended in `error`.
    InstanceFailed {
        instance_id: InstanceId,
        name: String,
        reason: String,
    },
    InvoiceIssued {
        invoice_id: InvoiceId,
        number: String,
        total_minor: i64,
        currency: String,
    },
    /// A card payment failed; told once per provider event.
    PaymentFailed {
        event: String,
        invoice_id: Option<InvoiceId>,
        invoice_number: Option<String>,
        amount_minor: i64,
        currency: String,
        /// The card issuer's reason, as the provider words it.
        reason: Option<String>,
    },
    /// Dunning's first step: invoices are overdue, the instances will be
    /// suspended at `suspend_at`. Each dunning notice is told once per case.
    SuspensionWarning {
        case_id: DunningCaseId,
        /// The overdue invoices' numbers.
        invoices: Vec<String>,
        /// What they add up to, per currency (`12.50 EUR, 3.00 USD`).
        owed: String,
        suspend_at: DateTime<Utc>,
    },
    Suspended {
        case_id: DunningCaseId,
        owed: String,
        terminate_at: DateTime<Utc>,
    },
    TerminationWarning {
        case_id: DunningCaseId,
        owed: String,
        terminate_at: DateTime<Utc>,
    },
    Terminated {
        case_id: DunningCaseId,
        owed: String,
    },
    /// The overdue invoices are paid: the suspended instances start again.
    Restored { case_id: DunningCaseId },
    /// A reply on a ticket, for the other side of the conversation.
    TicketReply {
        ticket_id: TicketId,
        subject: String,
        author_name: String,
        /// The reply as written, quoted in the email.
        reply: String,
        /// The ticket's page in the console, for the email.
        url: String,
    },
}

impl Notice {
    /// The notification's `kind`, from which the console picks an icon.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InstanceReady { .. } => "instance.ready",
            Self::InstanceFailed { .. } => "instance.failed",
            Self::InvoiceIssued { .. } => "invoice.issued",
            Self::PaymentFailed { .. } => "payment.failed",
            Self::SuspensionWarning { .. } => "account.suspension_warning",
            Self::Suspended { .. } => "account.suspended",
            Self::TerminationWarning { .. } => "account.termination_warning",
            Self::Terminated { .. } => "account.terminated",
            Self::Restored { .. } => "account.restored",
            Self::TicketReply { .. } => "ticket.reply",
        }
    }

    /// The preference that governs its email.
    pub fn topic(&self) -> EmailTopic {
        match self {
            Self::InstanceReady { .. } => EmailTopic::InstanceReady,
            Self::InstanceFailed { .. } => EmailTopic::InstanceFailed,
            Self::InvoiceIssued { .. } => EmailTopic::InvoiceIssued,
            Self::PaymentFailed { .. } => EmailTopic::PaymentFailed,
            Self::SuspensionWarning { .. } => EmailTopic::SuspensionWarning,
            Self::Suspended { .. } | Self::Terminated { .. } | Self::Restored { .. } => {
                EmailTopic::Suspension
            }
            Self::TerminationWarning { .. } => EmailTopic::TerminationWarning,
            Self::TicketReply { .. } => EmailTopic::TicketReply,
        }
    }

    fn email_kind(&self) -> EmailKind {
        match self {
            Self::InstanceReady { .. } => EmailKind::InstanceReady,
            Self::InstanceFailed { .. } => EmailKind::InstanceFailed,
            Self::InvoiceIssued { .. } => EmailKind::InvoiceIssued,
            Self::PaymentFailed { .. } => EmailKind::PaymentFailed,
            Self::SuspensionWarning { .. } => EmailKind::InvoiceOverdue,
            Self::Suspended { .. } => EmailKind::ServicesSuspended,
            Self::TerminationWarning { .. } => EmailKind::TerminationWarning,
            Self::Terminated { .. } => EmailKind::ServicesTerminated,
            Self::Restored { .. } => EmailKind::ServicesRestored,
            Self::TicketReply { .. } => EmailKind::TicketReply,
        }
    }

    /// The console page it is about.
    fn link(&self) -> String {
        match self {
            Self::InstanceReady { instance_id, .. } | Self::InstanceFailed { instance_id, .. } => {
                format!("/instances/{instance_id}")
            }
            Self::InvoiceIssued { invoice_id, .. }
            | Self::PaymentFailed {
                invoice_id: Some(invoice_id),
                ..
            } => format!("/billing/invoices/{invoice_id}"),
            Self::PaymentFailed { .. }
            | Self::SuspensionWarning { .. }
            | Self::Suspended { .. }
            | Self::TerminationWarning { .. }
            | Self::Terminated { .. }
            | Self::Restored { .. } => "/billing".to_owned(),
            Self::TicketReply { ticket_id, .. } => format!("/support/tickets/{ticket_id}"),
        }
    }

    /// Notices about a one-time event are told once per account, whatever
    /// retries do: a ready or failed instance once per instance, a payment
    /// failure once per provider event, a dunning step once per case.
    fn dedupe_key(&self) -> Option<String> {
        let once_per = match self {
            Self::InstanceReady { instance_id, .. } | Self::InstanceFailed { instance_id, .. } => {
                instance_id.to_string()
            }
            Self::InvoiceIssued { invoice_id, .. } => invoice_id.to_string(),
            Self::PaymentFailed { event, .. } => event.clone(),
            Self::SuspensionWarning { case_id, .. }
            | Self::Suspended { case_id, .. }
            | Self::TerminationWarning { case_id, .. }
            | Self::Terminated { case_id, .. }
            | Self::Restored { case_id } => case_id.to_string(),
            Self::TicketReply { .. } => return None,
        };
        Some(format!("{}:{once_per}", self.kind()))
    }
}

/// A notification as its account sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub id: NotificationId,
    /// What it is about, e.g. `instance.ready`, `invoice.issued`.
    pub kind: String,
    pub title: String,
    pub body: String,
    /// A console path to open.
    pub link: Option<String>,
    /// `None` while unread.
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<notification::Model> for NotificationView {
    fn from(row: notification::Model) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            title: row.title,
            body: row.body,
            link: row.link,
            read_at: row.read_at,
            created_at: row.created_at,
        }
    }
}

/// A page of notifications and how many are unread in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    pub unread_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnreadCount {
    pub unread_count: u64,
}

/// Tells `user_id` about `notice`: in the app, live, and by email unless
/// they opted out of that kind. Answers the notification, or `None` when the
/// notice was already given (its dedupe key is taken).
///
/// The in-app row is written first: a caller retried after a failure here
/// may leave that notice without its email, never with two.
pub async fn notify(
    db: &Database,
    cache: &Cache,
    jobs: &JobQueue,
    user_id: UserId,
    notice: Notice,
) -> Result<Option<NotificationView>> {
    let account = user::Entity::find_by_id(user_id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Account"))?;
    let texts = templates::notice(&notice, &account.name, &account.locale);
    let inserted = notification::ActiveModel {
        user_id: Set(user_id),
        kind: Set(notice.kind().to_owned()),
        title: Set(texts.title),
        body: Set(texts.body),
        link: Set(Some(notice.link())),
        read_at: Set(None),
        dedupe_key: Set(notice.dedupe_key()),
        ..Default::default()
    }
    .insert(db.writer())
    .await;
    let row = match inserted {
        Ok(row) => row,
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let view = NotificationView::from(row);
    // The event's `id` is the notification's; the rest are its fields.
    let event = live::Event::new(
        EventType::Notification,
        view.id,
        serde_json::json!({
            "kind": view.kind,
            "title": view.title,
            "body": view.body,
            "link": view.link,
            "created_at": view.created_at,
        }),
    );
    live::publish(cache, vec![Audience::User(user_id)], event).await;
    if preferences::wants_email(db, user_id, notice.topic()).await? {
        let email = Email {
            to: account.email,
            subject: texts.subject,
            body_text: texts.email_body,
        };
        outbox::queue(db, jobs, Some(user_id), notice.email_kind(), email).await?;
    }
    metrics::counter!("vmcloud_notifications_total", "kind" => notice.kind()).increment(1);
    Ok(Some(view))
}

fn mine(actor: &Actor) -> Condition {
    Condition::all().add(notification::Column::UserId.eq(actor.user_id))
}

fn unread(actor: &Actor) -> Condition {
    mine(actor).add(notification::Column::ReadAt.is_null())
}

/// The caller's notifications, newest first; `unread` keeps only the unread
/// (`true`) or the read (`false`) ones.
pub async fn list(
    db: &Database,
    actor: &Actor,
    unread_only: Option<bool>,
    page: PageRequest,
) -> Result<NotificationList> {
    let scope = match unread_only {
        None => mine(actor),
        Some(true) => unread(actor),
        Some(false) => mine(actor).add(notification::Column::ReadAt.is_not_null()),
    };
    let page = fetch_page(
        db.reader(),
        notification::Entity::find().filter(scope),
        notification::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?
    .map(NotificationView::from);
    let Page { items, next_cursor } = page;
    Ok(NotificationList {
        items,
        next_cursor,
        unread_count: unread_count(db, actor).await?.unread_count,
    })
}

pub async fn unread_count(db: &Database, actor: &Actor) -> Result<UnreadCount> {
    let unread_count = notification::Entity::find()
        .filter(unread(actor))
        .count(db.reader())
        .await?;
    Ok(UnreadCount { unread_count })
}

/// Marks one of the caller's notifications read (again: no change); another
/// account's is a 404.
pub async fn mark_read(
    db: &Database,
    actor: &Actor,
    id: NotificationId,
) -> Result<NotificationView> {
    actor.require_write()?;
    let row = notification::Entity::find_by_id(id)
        .filter(mine(actor))
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Notification"))?;
    if row.read_at.is_some() {
        return Ok(row.into());
    }
    let mut active = row.into_active_model();
    active.read_at = Set(Some(now()));
    Ok(active.update(db.writer()).await?.into())
}

/// Marks every unread notification of the caller read; answers how many
/// were marked.
pub async fn mark_all_read(db: &Database, actor: &Actor) -> Result<u64> {
    actor.require_write()?;
    let at = now();
    let result = notification::Entity::update_many()
        .col_expr(notification::Column::ReadAt, Expr::value(at))
        .col_expr(notification::Column::UpdatedAt, Expr::value(at))
        .filter(unread(actor))
        .exec(db.writer())
        .await?;
    Ok(result.rows_affected)
}
