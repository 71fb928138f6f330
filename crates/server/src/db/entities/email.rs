//! A message in the outbox; see the `mail` module.

use sea_orm::entity::prelude::*;

use crate::ids::{EmailId, UserId};

db_enum! {
    pub enum EmailStatus {
        /// Waiting for the delivery job.
        Pending,
        /// Accepted by the SMTP server.
        Sent,
        /// No SMTP server is configured: written to the log and kept here.
        Logged,
        /// Every delivery attempt failed.
        Failed,
    }
}

db_enum! {
    /// What a message is for.
    pub enum EmailKind {
        VerifyEmail,
        ResetPassword,
        InstanceReady,
        InstanceFailed,
        InvoiceIssued,
        PaymentFailed,
        /// Dunning: the deletion of the suspended instances is near.
        TerminationWarning,
        /// A new reply on a support ticket, to the other side.
        TicketReply,
        /// Dunning: an invoice is past its due date; suspension follows.
        InvoiceOverdue,
        /// Dunning: the account's instances were suspended.
        ServicesSuspended,
        /// Dunning: the instances were deleted.
        ServicesTerminated,
        /// Dunning: the overdue invoices are paid; the instances start again.
        ServicesRestored,
        /// The account's password or second factor changed.
        SecurityAlert,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "emails")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: EmailId,
    pub user_id: Option<UserId>,
    pub to_address: String,
    pub subject: String,
    /// Dropped once an SMTP server has accepted the message, and its one-time
    /// links masked once it is logged, so they are not left readable here.
    pub body_text: Option<String>,
    pub kind: EmailKind,
    pub status: EmailStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "SetNull"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

stamped_behavior!();
