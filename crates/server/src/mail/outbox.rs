//! The outbox table and its delivery job.

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _,
};
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::db::entities::email::{self, EmailKind, EmailStatus};
use crate::db::entities::now;
use crate::error::Result;
use crate::ids::{EmailId, UserId};
use crate::jobs::{JobContext, JobQueue, NewJob};
use crate::mail::{Delivery, Email, Mailer, redact_tokens};
use crate::pagination::{Page, PageRequest, fetch_page};

pub const SEND_JOB: &str = "send_email";
const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, Serialize, Deserialize)]
struct SendPayload {
    email_id: EmailId,
}

/// Writes the message to the outbox and schedules its delivery.
pub async fn queue(
    db: &Database,
    jobs: &JobQueue,
    user_id: Option<UserId>,
    kind: EmailKind,
    email: Email,
) -> Result<EmailId> {
    let row = email::ActiveModel {
        user_id: Set(user_id),
        to_address: Set(email.to),
        subject: Set(email.subject),
        body_text: Set(Some(email.body_text)),
        kind: Set(kind),
        status: Set(EmailStatus::Pending),
        attempts: Set(0),
        ..Default::default()
    }
    .insert(db.writer())
    .await?;
    let payload =
        serde_json::to_value(SendPayload { email_id: row.id }).map_err(anyhow::Error::from)?;
    jobs.enqueue(
        NewJob::new(SEND_JOB, payload)
            .unique_key(format!("email:{}", row.id))
            .max_attempts(MAX_ATTEMPTS),
    )
    .await?;
    // No kind label: a count of password-reset mails would tell whether an
    // address has an account, which the identical answers keep secret.
    metrics::counter!("vmcloud_emails_queued_total").increment(1);
    Ok(row.id)
}

/// The `send_email` job: delivers one outbox message. Idempotent: a message
/// already delivered is left alone.
pub async fn deliver(
    db: &Database,
    mailer: &Mailer,
    ctx: &JobContext,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
    let SendPayload { email_id } = serde_json::from_value(payload)?;
    let Some(row) = email::Entity::find_by_id(email_id).one(db.writer()).await? else {
        tracing::warn!(%email_id, "outbox message vanished before delivery");
        return Ok(());
    };
    if row.status != EmailStatus::Pending {
        return Ok(());
    }
    let message = Email {
        to: row.to_address.clone(),
        subject: row.subject.clone(),
        body_text: row.body_text.clone().unwrap_or_default(),
    };
    let outcome = mailer.deliver(&message).await;
    let attempts = row.attempts.saturating_add(1);
    let mut active = row.into_active_model();
    active.attempts = Set(attempts);
    match &outcome {
        Ok(delivery) => {
            active.status = Set(match delivery {
                Delivery::Smtp => EmailStatus::Sent,
                Delivery::Logged => EmailStatus::Logged,
            });
            // The token-bearing links were for the recipient only.
            active.body_text = Set(match delivery {
                Delivery::Smtp => None,
                Delivery::Logged => Some(redact_tokens(&message.body_text)),
            });
            active.sent_at = Set(Some(now()));
            active.last_error = Set(None);
        }
        Err(err) => {
            active.last_error = Set(Some(format!("{err:#}")));
            if ctx.attempt >= ctx.max_attempts {
                active.status = Set(EmailStatus::Failed);
            }
        }
    }
    active.update(db.writer()).await?;
    outcome.map(|_| ())
}

/// A message as admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailView {
    pub id: EmailId,
    pub user_id: Option<UserId>,
    pub to: String,
    pub subject: String,
    /// Absent once an SMTP server accepted the message; one-time links are
    /// masked (`token=[redacted]`), for the recipient's eyes only.
    pub body_text: Option<String>,
    pub kind: EmailKind,
    pub status: EmailStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<email::Model> for EmailView {
    fn from(row: email::Model) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            to: row.to_address,
            subject: row.subject,
            body_text: row.body_text.as_deref().map(redact_tokens),
            kind: row.kind,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            sent_at: row.sent_at,
            created_at: row.created_at,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct OutboxFilter {
    /// The exact recipient, case-insensitive.
    pub to: Option<String>,
    pub status: Option<EmailStatus>,
}

/// The outbox, newest first. Admin only; its one-time links are masked.
pub async fn list(
    db: &Database,
    actor: &crate::modules::auth::Actor,
    filter: OutboxFilter,
    page: PageRequest,
) -> Result<Page<EmailView>> {
    use sea_orm::QueryFilter as _;
    actor.require_admin()?;
    let mut condition = Condition::all();
    if let Some(to) = filter.to.map(|t| t.trim().to_lowercase()) {
        condition = condition.add(email::Column::ToAddress.eq(to));
    }
    if let Some(status) = filter.status {
        condition = condition.add(email::Column::Status.eq(status));
    }
    let select = email::Entity::find().filter(condition);
    let page = fetch_page(db.reader(), select, email::Column::Id, page, |e| e.id.0).await?;
    Ok(page.map(EmailView::from))
}
