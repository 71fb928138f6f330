//! Password login with progressive lockout. Unknown emails, wrong passwords
//! and locked accounts are indistinguishable to the caller: same answer, and a
//! password hash is verified either way so the timing matches too.

use std::sync::OnceLock;
use std::time::Duration;

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _,
};
use secrecy::SecretString;

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::now;
use crate::db::entities::user::{self, UserStatus, normalise_email};
use crate::error::{Error, Result};
use crate::modules::auth::two_factor;
use crate::modules::users::{UserViews, password};

/// Failures allowed before the first lockout.
pub const FREE_FAILURES: i64 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
const MAX_LOCKOUT: Duration = Duration::from_secs(60 * 60);

#[derive(Debug)]
pub enum LoginFailure {
    /// Wrong email or password (or the account is locked): one message for all.
    Rejected {
        locked_for: Option<Duration>,
    },
    Suspended(Box<user::Model>),
    Error(Error),
}

impl From<Error> for LoginFailure {
    fn from(err: Error) -> Self {
        Self::Error(err)
    }
}

impl From<sea_orm::DbErr> for LoginFailure {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Error(err.into())
    }
}

impl From<anyhow::Error> for LoginFailure {
    fn from(err: anyhow::Error) -> Self {
        Self::Error(err.into())
    }
}

fn failures_key(email: &str) -> String {
    format!("auth:login-failures:{email}")
}

fn lockout_key(email: &str) -> String {
    format!("auth:lockout:{email}")
}

/// A hash of a random password, verified when the email is unknown so that
/// answering takes as long as for a real account.
async fn decoy_hash() -> Result<String> {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return Ok(hash.clone());
    }
    let hash = password::hash(SecretString::from(uuid::Uuid::new_v4().to_string())).await?;
    Ok(DECOY.get_or_init(|| hash).clone())
}

/// Lockout doubles with each failure past the free ones: 1 min, 2, 4 … 1 h.
fn lockout_for(failures: i64) -> Option<Duration> {
    let past = failures - FREE_FAILURES;
    (past >= 0).then(|| {
        let doublings = u32::try_from(past.min(10)).unwrap_or(10);
        FIRST_LOCKOUT
            .saturating_mul(1 << doublings)
            .min(MAX_LOCKOUT)
    })
}

/// Checks the email and password. The caller still has to check the second
/// factor, then call [`record_success`].
pub async fn check_password(
    db: &Database,
    cache: &Cache,
    email: &str,
    presented: SecretString,
) -> std::result::Result<user::Model, LoginFailure> {
    let email = normalise_email(email);
    if let Some(left) = cache.ttl(&lockout_key(&email)).await? {
        // Still locked: verify nothing, but take as long as a check would.
        password::verify(presented, decoy_hash().await?).await?;
        return Err(LoginFailure::Rejected {
            locked_for: Some(left),
        });
    }
    let account = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .filter(user::Column::Status.ne(UserStatus::Deleted))
        .one(db.writer())
        .await?;
    let hash = match &account {
        Some(account) => account.password_hash.clone(),
        None => decoy_hash().await?,
    };
    let matches = password::verify(presented, hash).await?;
    match account {
        Some(account) if matches => {
            if account.status == UserStatus::Suspended {
                return Err(LoginFailure::Suspended(Box::new(account)));
            }
            Ok(account)
        }
        account => {
            let locked_for = record_failure(db, cache, &email, account).await?;
            Err(LoginFailure::Rejected { locked_for })
        }
    }
}

/// Counts a failed sign-in (a wrong password, or a wrong second factor after
/// a right one) towards the lockout; returns the lockout it triggered.
pub async fn record_failure(
    db: &Database,
    cache: &Cache,
    email: &str,
    account: Option<user::Model>,
) -> Result<Option<Duration>> {
    let failures = cache.incr(&failures_key(email), 1, FAILURE_WINDOW).await?;
    let locked_for = lockout_for(failures);
    if let Some(lock) = locked_for {
        cache.set(&lockout_key(email), b"1", Some(lock)).await?;
    }
    if let Some(account) = account {
        let count = account.failed_login_count.saturating_add(1);
        let mut active = account.into_active_model();
        active.failed_login_count = Set(count);
        active.locked_until =
            Set(locked_for.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| now() + d)));
        active.update(db.writer()).await?;
    }
    Ok(locked_for)
}

/// Refuses re-authentication while the account is locked out by failures.
async fn refuse_while_locked(cache: &Cache, email: &str) -> Result<()> {
    match cache.ttl(&lockout_key(email)).await? {
        Some(left) => Err(too_many_attempts(left)),
        None => Ok(()),
    }
}

fn too_many_attempts(left: Duration) -> Error {
    Error::RateLimited {
        message: "Too many wrong attempts: try again later.".to_owned(),
        retry_after_secs: left.as_secs().max(1),
    }
}

/// A wrong password or code typed to confirm a sensitive change: counted
/// like a failed sign-in, and 429 once it locks the account.
async fn refuse_wrong(
    db: &Database,
    cache: &Cache,
    account: &user::Model,
    field: &'static str,
    message: &'static str,
) -> Error {
    match record_failure(db, cache, &account.email, Some(account.clone())).await {
        Ok(Some(locked_for)) => too_many_attempts(locked_for),
        Ok(None) => Error::invalid_field(field, message),
        Err(err) => err,
    }
}

/// Checks the password a signed-in account holder typed to confirm a
/// sensitive change (password, deletion, second factor). Wrong ones count
/// towards the sign-in lockout, so a stolen access token cannot guess the
/// password without end; a right one forgives nothing, only a full sign-in
/// does.
pub async fn confirm_password(
    db: &Database,
    cache: &Cache,
    account: &user::Model,
    presented: SecretString,
    field: &'static str,
) -> Result<()> {
    refuse_while_locked(cache, &account.email).await?;
    if password::verify(presented, account.password_hash.clone()).await? {
        Ok(())
    } else {
        Err(refuse_wrong(db, cache, account, field, "is not your current password").await)
    }
}

/// Checks a second factor typed to confirm a change, counted like
/// [`confirm_password`].
pub async fn confirm_second_factor(
    services: &two_factor::Services,
    account: &user::Model,
    code: &str,
) -> Result<()> {
    let two_factor::Services {
        db, cache, sealer, ..
    } = services;
    refuse_while_locked(cache, &account.email).await?;
    if two_factor::verify(db, sealer, account, code)
        .await?
        .is_some()
    {
        Ok(())
    } else {
        Err(refuse_wrong(
            db,
            cache,
            account,
            "code",
            "is not a valid code from your authenticator app",
        )
        .await)
    }
}

/// Records a completed login (after any second factor). Failures are only
/// forgiven here: a right password alone must not reset the count, or the
/// second factor could be guessed without end.
pub async fn record_success(
    db: &Database,
    cache: &Cache,
    views: &UserViews,
    account: user::Model,
) -> Result<user::Model> {
    cache.delete(&failures_key(&account.email)).await?;
    let mut active = account.into_active_model();
    active.failed_login_count = Set(0);
    active.locked_until = Set(None);
    active.last_login_at = Set(Some(now()));
    crate::modules::users::save(db, views, active).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_grows_and_is_capped() {
        assert_eq!(lockout_for(FREE_FAILURES - 1), None);
        assert_eq!(lockout_for(FREE_FAILURES), Some(FIRST_LOCKOUT));
        assert_eq!(lockout_for(FREE_FAILURES + 1), Some(FIRST_LOCKOUT * 2));
        assert_eq!(lockout_for(FREE_FAILURES + 30), Some(MAX_LOCKOUT));
    }
}
