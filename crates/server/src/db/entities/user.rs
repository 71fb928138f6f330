//! An account: a customer, a support agent or an administrator.

use sea_orm::entity::prelude::*;

use crate::ids::UserId;

db_enum! {
    /// What an account may do.
    pub enum UserRole {
        Customer,
        Support,
        Admin,
    }
}

db_enum! {
    /// Whether an account may sign in. `deleted` accounts keep their row so
    /// billing records still point somewhere.
    pub enum UserStatus {
        Active,
        Suspended,
        Deleted,
    }
}

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: UserId,
    /// Trimmed and lowercased on save, so uniqueness ignores case.
    #[sea_orm(unique)]
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: UserRole,
    pub status: UserStatus,
    pub email_verified_at: Option<DateTimeUtc>,
    pub totp_secret: Option<String>,
    pub totp_enabled_at: Option<DateTimeUtc>,
    /// The last TOTP time step accepted, so no code is accepted twice.
    pub totp_last_step: Option<i64>,
    pub failed_login_count: i32,
    pub locked_until: Option<DateTimeUtc>,
    pub last_login_at: Option<DateTimeUtc>,
    pub locale: String,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub company: Option<String>,
    pub vat_id: Option<String>,
    pub deleted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Leaves out the password hash and TOTP secret, so a logged model never
/// leaks them.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("status", &self.status)
            .field("email_verified_at", &self.email_verified_at)
            .field("totp_enabled_at", &self.totp_enabled_at)
            .field("failed_login_count", &self.failed_login_count)
            .field("locked_until", &self.locked_until)
            .field("last_login_at", &self.last_login_at)
            .field("locale", &self.locale)
            .field("country", &self.country)
            .field("company", &self.company)
            .field("vat_id", &self.vat_id)
            .field("deleted_at", &self.deleted_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::refresh_token::Entity", via_rel = "Relation::User")]
    RefreshTokens,
    #[sea_orm(has_many = "super::api_token::Entity")]
    ApiTokens,
    #[sea_orm(has_many = "super::ssh_key::Entity")]
    SshKeys,
    #[sea_orm(has_many = "super::instance::Entity")]
    Instances,
    #[sea_orm(has_many = "super::subscription::Entity")]
    Subscriptions,
    #[sea_orm(has_many = "super::invoice::Entity")]
    Invoices,
    #[sea_orm(has_many = "super::transaction::Entity", via_rel = "Relation::User")]
    Transactions,
    #[sea_orm(has_many = "super::support_ticket::Entity", via_rel = "Relation::User")]
    SupportTickets,
    #[sea_orm(
        has_many = "super::support_ticket::Entity",
        via_rel = "Relation::Assignee"
    )]
    AssignedTickets,
    #[sea_orm(has_many = "super::notification::Entity")]
    Notifications,
}

impl Related<super::refresh_token::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::RefreshTokens.def()
    }
}

impl Related<super::api_token::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiTokens.def()
    }
}

impl Related<super::ssh_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SshKeys.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscriptions.def()
    }
}

impl Related<super::invoice::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Invoices.def()
    }
}

impl Related<super::transaction::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Transactions.def()
    }
}

impl Related<super::support_ticket::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::SupportTickets.def()
    }
}

impl Related<super::notification::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Notifications.def()
    }
}

#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        if let sea_orm::ActiveValue::Set(email) = &self.email {
            let normalised = normalise_email(email);
            if normalised != *email {
                self.email = sea_orm::ActiveValue::Set(normalised);
            }
        }
        super::fill_id(insert, &mut self.id);
        super::stamp(insert, &mut self.created_at, &mut self.updated_at);
        Ok(self)
    }
}

/// The stored form of an email address: trimmed and lowercased. Look-ups by
/// email must normalise the same way.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}
