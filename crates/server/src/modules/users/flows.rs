//! Account flows driven by emailed links: email verification, password
//! reset, and the setup of the first admin.

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _, QueryFilter as _,
};
use secrecy::SecretString;

use crate::db::Database;
use crate::db::entities::now;
use crate::db::entities::one_time_token::TokenPurpose;
use crate::db::entities::user::{self, UserRole, UserStatus};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::modules::auth::one_time;
use crate::modules::users::UserViews;
use crate::modules::users::{
    NewUser, check_password_policy, create_user, find, password, save, validate_new_user,
};

fn invalid_link() -> Error {
    Error::invalid_field("token", "is invalid or has expired; ask for a new link")
}

/// Marks the email of the token's account verified.
pub async fn verify_email(db: &Database, views: &UserViews, token: &str) -> Result<user::Model> {
    let user_id = one_time::consume(db, TokenPurpose::VerifyEmail, token)
        .await?
        .flatten()
        .ok_or_else(invalid_link)?;
    let account = find(db, user_id).await?;
    if account.email_verified_at.is_some() {
        return Ok(account);
    }
    let mut active = account.into_active_model();
    active.email_verified_at = Set(Some(now()));
    save(db, views, active).await
}

/// Sets a new password from a reset link; the caller ends the account's
/// sessions.
pub async fn reset_password(
    db: &Database,
    views: &UserViews,
    token: &str,
    new_password: SecretString,
) -> Result<UserId> {
    if let Some(problem) = check_password_policy("new_password", &new_password) {
        return Err(Error::invalid(vec![problem]));
    }
    let user_id = one_time::consume(db, TokenPurpose::ResetPassword, token)
        .await?
        .flatten()
        .ok_or_else(invalid_link)?;
    let account = find(db, user_id).await?;
    let hash = password::hash(new_password).await?;
    let mut active = account.into_active_model();
    active.password_hash = Set(hash);
    // Proving control of the mailbox is as good as the verification link.
    if active.email_verified_at.as_ref().is_none() {
        active.email_verified_at = Set(Some(now()));
    }
    active.failed_login_count = Set(0);
    active.locked_until = Set(None);
    save(db, views, active).await?;
    Ok(user_id)
}

pub async fn admin_exists(db: &Database) -> Result<bool> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(UserRole::Admin))
        .filter(user::Column::Status.ne(UserStatus::Deleted))
        .count(db.writer())
        .await?
        > 0)
}

/// When no admin exists, a one-hour link that creates one; `None` otherwise.
pub async fn first_admin_setup_token(db: &Database) -> Result<Option<String>> {
    if admin_exists(db).await? {
        return Ok(None);
    }
    Ok(Some(
        one_time::issue(db, TokenPurpose::AdminSetup, None).await?,
    ))
}

/// Creates the first admin from a setup link. The link is spent only when no
/// admin exists, so it cannot make a second one.
pub async fn complete_setup(db: &Database, token: &str, mut admin: NewUser) -> Result<user::Model> {
    if admin_exists(db).await? {
        return Err(Error::Conflict(
            "The platform already has an admin.".to_owned(),
        ));
    }
    validate_new_user(&admin)?;
    one_time::consume(db, TokenPurpose::AdminSetup, token)
        .await?
        .ok_or_else(invalid_link)?;
    admin.role = UserRole::Admin;
    admin.email_verified = true;
    create_user(db, admin).await
}
