//! Which emails an account wants. Every email kind is on by default; the
//! optional ones (instance ready or failed, invoice issued, ticket reply)
//! can be turned off. Those about money owed, suspension, termination and
//! security cannot: an account must hear of what is about to happen to it.
//! In-app notifications are always written.

use std::collections::BTreeMap;

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::db::entities::{notification_opt_out, now};
use crate::error::{Error, FieldError, Result};
use crate::ids::UserId;
use crate::modules::auth::Actor;

/// A kind of email, as preferences name it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EmailTopic {
    InstanceReady,
    InstanceFailed,
    InvoiceIssued,
    TicketReply,
    PaymentFailed,
    /// Overdue invoices, with the date the instances will be suspended.
    SuspensionWarning,
    /// The instances suspended, restored once paid, or deleted.
    Suspension,
    TerminationWarning,
    /// Email verification, password resets and sign-in security.
    Security,
}

impl EmailTopic {
    pub const ALL: [Self; 9] = [
        Self::InstanceReady,
        Self::InstanceFailed,
        Self::InvoiceIssued,
        Self::TicketReply,
        Self::PaymentFailed,
        Self::SuspensionWarning,
        Self::Suspension,
        Self::TerminationWarning,
        Self::Security,
    ];

    pub fn is_mandatory(self) -> bool {
        !matches!(
            self,
            Self::InstanceReady | Self::InstanceFailed | Self::InvoiceIssued | Self::TicketReply
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::InstanceReady => "instance_ready",
            Self::InstanceFailed => "instance_failed",
            Self::InvoiceIssued => "invoice_issued",
            Self::TicketReply => "ticket_reply",
            Self::PaymentFailed => "payment_failed",
            Self::SuspensionWarning => "suspension_warning",
            Self::Suspension => "suspension",
            Self::TerminationWarning => "termination_warning",
            Self::Security => "security",
        }
    }
}

/// An account's notification preferences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NotificationPreferences {
    /// Whether each kind of email is sent.
    pub email: BTreeMap<EmailTopic, bool>,
    /// The kinds that are always sent.
    pub mandatory: Vec<EmailTopic>,
}

/// Changes to the preferences: the kinds named are turned on or off, the
/// others stay as they are.
#[derive(Clone, Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    #[garde(skip)]
    pub email: BTreeMap<EmailTopic, bool>,
}

/// Whether `user` gets emails of `topic`.
pub async fn wants_email(db: &Database, user: UserId, topic: EmailTopic) -> Result<bool> {
    if topic.is_mandatory() {
        return Ok(true);
    }
    let opted_out = notification_opt_out::Entity::find_by_id((user, topic.as_str().to_owned()))
        .count(db.writer())
        .await?;
    Ok(opted_out == 0)
}

pub async fn get(db: &Database, actor: &Actor) -> Result<NotificationPreferences> {
    let off: Vec<String> = notification_opt_out::Entity::find()
        .filter(notification_opt_out::Column::UserId.eq(actor.user_id))
        .all(db.writer())
        .await?
        .into_iter()
        .map(|row| row.kind)
        .collect();
    Ok(NotificationPreferences {
        email: EmailTopic::ALL
            .into_iter()
            .map(|topic| {
                let on = topic.is_mandatory() || !off.iter().any(|kind| kind == topic.as_str());
                (topic, on)
            })
            .collect(),
        mandatory: EmailTopic::ALL
            .into_iter()
            .filter(|topic| topic.is_mandatory())
            .collect(),
    })
}

/// Applies `update`; turning a mandatory kind off is refused (422 naming
/// it) and nothing is changed.
pub async fn set(
    db: &Database,
    actor: &Actor,
    update: PreferencesUpdate,
) -> Result<NotificationPreferences> {
    actor.require_write()?;
    let refused: Vec<FieldError> = update
        .email
        .iter()
        .filter(|(topic, on)| topic.is_mandatory() && !**on)
        .map(|(topic, _)| {
            FieldError::new(
                format!("email.{}", topic.as_str()),
                "cannot be turned off: it concerns the account itself",
            )
        })
        .collect();
    Error::check_fields(refused)?;
    let txn = db.begin_write().await?;
    for (topic, on) in update.email {
        if topic.is_mandatory() {
            continue;
        }
        let key = (actor.user_id, topic.as_str().to_owned());
        notification_opt_out::Entity::delete_by_id(key.clone())
            .exec(&txn)
            .await?;
        if !on {
            notification_opt_out::Entity::insert(notification_opt_out::ActiveModel {
                user_id: Set(key.0),
                kind: Set(key.1),
                created_at: Set(now()),
            })
            .exec_without_returning(&txn)
            .await?;
        }
    }
    txn.commit().await?;
    get(db, actor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_serialize_as_their_stored_names() {
        for topic in EmailTopic::ALL {
            assert_eq!(
                serde_json::to_value(topic).expect("json"),
                serde_json::Value::from(topic.as_str())
            );
        }
    }
}
