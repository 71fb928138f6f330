//! Account flows driven by emailed links: email verification, password
//! reset, and the setup of the first admin.

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _, QueryFilter as _,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::db::entities::email::EmailKind;
use crate::db::entities::now;
use crate::db::entities::one_time_token::TokenPurpose;
use crate::db::entities::user::{self, UserRole, UserStatus};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::jobs::{JobQueue, NewJob};
use crate::mail::outbox;
use crate::mail::templates::{self, SecurityChange};
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
    store_new_password(db, views, account, new_password).await?;
    Ok(user_id)
}

/// Sets the password of the account with `email`, for the operator at the
/// shell (`vmcloud admin set-password`), who vouches for its address; the
/// caller ends the account's sessions.
pub async fn set_password(
    db: &Database,
    views: &UserViews,
    email: &str,
    new_password: SecretString,
) -> Result<user::Model> {
    if let Some(problem) = check_password_policy("password", &new_password) {
        return Err(Error::invalid(vec![problem]));
    }
    let account = user::Entity::find()
        .filter(user::Column::Email.eq(user::normalise_email(email)))
        .filter(user::Column::Status.ne(UserStatus::Deleted))
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    store_new_password(db, views, account, new_password).await
}

/// Stores a new password hash, lifts any sign-in lockout, and counts the
/// address as verified: both callers proved it.
async fn store_new_password(
    db: &Database,
    views: &UserViews,
    account: user::Model,
    new_password: SecretString,
) -> Result<user::Model> {
    let hash = password::hash(new_password).await?;
    let mut active = account.into_active_model();
    active.password_hash = Set(hash);
    if active.email_verified_at.as_ref().is_none() {
        active.email_verified_at = Set(Some(now()));
    }
    active.failed_login_count = Set(0);
    active.locked_until = Set(None);
    save(db, views, active).await
}

pub async fn admin_exists(db: &Database) -> Result<bool> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(UserRole::Admin))
        .filter(user::Column::Status.ne(UserStatus::Deleted))
        .count(db.writer())
        .await?
        > 0)
}

/// The file under the data directory that holds the first admin's setup
/// token: readable by the platform's account only, and never logged, since
/// whoever holds the token becomes admin.
pub const SETUP_TOKEN_FILE: &str = "first-admin-setup.token";

/// With no admin yet, writes a fresh one-hour setup token to
/// [`SETUP_TOKEN_FILE`] (0600) and returns the file's path; once an admin
/// exists, removes a file left over and returns `None`.
pub async fn write_setup_token(
    db: &Database,
    data_dir: &std::path::Path,
) -> Result<Option<std::path::PathBuf>> {
    let path = data_dir.join(SETUP_TOKEN_FILE);
    let Some(token) = first_admin_setup_token(db).await? else {
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::from(err)
                    .context(format!("removing {}", path.display()))
                    .into());
            }
            _ => return Ok(None),
        }
    };
    crate::private_files::write_new(&path, format!("{token}\n").as_bytes())
        .map_err(|err| anyhow::Error::from(err).context(format!("writing {}", path.display())))?;
    Ok(Some(path))
}

/// When no admin exists, a one-hour token that creates one; `None` otherwise.
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

/// Emails a fresh verification link; earlier links stop working.
pub async fn send_verification(
    db: &Database,
    jobs: &JobQueue,
    public_url: &str,
    account: &user::Model,
) -> Result<()> {
    if account.email_verified_at.is_some() {
        return Err(Error::Conflict(
            "This email address is verified already.".to_owned(),
        ));
    }
    let token = one_time::issue(db, TokenPurpose::VerifyEmail, Some(account.id)).await?;
    let link = format!("{public_url}/verify-email?token={token}");
    let email = templates::verify_email(&account.email, &account.name, &account.locale, &link);
    outbox::queue(db, jobs, Some(account.id), EmailKind::VerifyEmail, email).await?;
    Ok(())
}

/// Tells the account holder that how they sign in changed, so that a change
/// they did not make does not go unnoticed.
pub async fn send_security_alert(
    db: &Database,
    jobs: &JobQueue,
    user_id: UserId,
    change: SecurityChange,
) -> Result<()> {
    let account = find(db, user_id).await?;
    let email = templates::security_alert(&account.email, &account.name, &account.locale, change);
    outbox::queue(db, jobs, Some(account.id), EmailKind::SecurityAlert, email).await?;
    Ok(())
}

/// The job that answers a forgot-password request.
pub const PASSWORD_RESET_JOB: &str = "password_reset_request";

#[derive(Debug, Serialize, Deserialize)]
struct ResetRequest {
    email: String,
}

/// Accepts a forgot-password request. The account look-up and the email
/// happen in a job, so the answer, and the time it takes, are the same
/// whether or not the address has an account.
pub async fn request_password_reset(jobs: &JobQueue, email: &str) -> Result<()> {
    let payload = serde_json::to_value(ResetRequest {
        email: user::normalise_email(email),
    })
    .map_err(anyhow::Error::from)?;
    jobs.enqueue(NewJob::new(PASSWORD_RESET_JOB, payload))
        .await?;
    Ok(())
}

/// The [`PASSWORD_RESET_JOB`]: emails a reset link to an active account with
/// that address, and does nothing for any other address.
pub async fn run_password_reset_request(
    db: &Database,
    jobs: &JobQueue,
    public_url: &str,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
    let ResetRequest { email } = serde_json::from_value(payload)?;
    let Some(account) = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .filter(user::Column::Status.eq(UserStatus::Active))
        .one(db.writer())
        .await?
    else {
        tracing::debug!("password reset asked for an address without an active account");
        return Ok(());
    };
    let token = one_time::issue(db, TokenPurpose::ResetPassword, Some(account.id)).await?;
    let link = format!("{public_url}/reset-password?token={token}");
    let message = templates::reset_password(&account.email, &account.name, &account.locale, &link);
    outbox::queue(
        db,
        jobs,
        Some(account.id),
        EmailKind::ResetPassword,
        message,
    )
    .await?;
    Ok(())
}
