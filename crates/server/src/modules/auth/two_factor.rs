//! TOTP two-factor authentication (RFC 6238) with single-use recovery codes.
//!
//! Enrolment is two steps: a secret is stored pending, and only a correct
//! code from the authenticator turns it on, so nobody is locked out by a
//! mistyped QR scan. Every accepted code moves the account's last accepted
//! time step forward in one conditional update, so a code (even one observed
//! over a shoulder) is accepted once, also by two replicas racing.

use rand::Rng as _;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _,
    QueryFilter as _,
};
use secrecy::SecretString;
use serde::Serialize;
use totp_rs::{Secret, Totp};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::{now, recovery_code, user};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::modules::auth::login;
use crate::modules::auth::sessions::hash_token;
use crate::modules::users::{self, UserViews};

/// How many recovery codes an account gets.
pub const RECOVERY_CODES: usize = 10;
/// Shown by authenticator apps above the account name.
const ISSUER: &str = "VMCloud";
/// No look-alikes (0/o, 1/l/i), so a code read off paper types right.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TwoFactorStatus {
    pub enabled: bool,
    pub enabled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// An enrolment was started and awaits its first code.
    pub pending: bool,
    pub recovery_codes_left: u64,
}

/// What the account holder needs to add the account to an authenticator.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// Base32, for typing in by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

fn totp(secret: &str, account_name: &str) -> Result<Totp> {
    let secret = Secret::try_from_base32(secret)
        .map_err(|err| anyhow::anyhow!("stored TOTP secret is not base32: {err}"))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_issuer(Some(ISSUER))
        .with_account_name(account_name.replace(':', ""))
        .build()
        .map_err(|err| anyhow::anyhow!("TOTP parameters: {err}").into())
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

fn is_totp_code(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// Codes are compared without case, spaces or dashes.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn new_recovery_code() -> String {
    let mut rng = rand::rng();
    let mut pick = || char::from(RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())]);
    let first: String = (0..5).map(|_| pick()).collect();
    let second: String = (0..5).map(|_| pick()).collect();
    format!("{first}-{second}")
}

pub async fn status(db: &Database, user_id: UserId) -> Result<TwoFactorStatus> {
    let account = users::find(db, user_id).await?;
    let recovery_codes_left = recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::UsedAt.is_null())
        .count(db.reader())
        .await?;
    Ok(TwoFactorStatus {
        enabled: account.totp_enabled_at.is_some(),
        enabled_at: account.totp_enabled_at,
        pending: account.totp_enabled_at.is_none() && account.totp_secret.is_some(),
        recovery_codes_left,
    })
}

/// Starts (or restarts) enrolment with a fresh secret, after checking the
/// password so a stolen access token cannot lock the owner out.
pub async fn begin_enrolment(
    db: &Database,
    cache: &Cache,
    views: &UserViews,
    user_id: UserId,
    password: SecretString,
) -> Result<Enrolment> {
    let account = users::find(db, user_id).await?;
    login::confirm_password(db, cache, &account, password, "password").await?;
    if account.totp_enabled_at.is_some() {
        return Err(Error::Conflict(
            "Two-factor authentication is already on; turn it off first to change the device."
                .to_owned(),
        ));
    }
    let secret = Secret::generate().to_base32();
    let otpauth_uri = totp(&secret, &account.email)?
        .to_url()
        .map_err(|err| anyhow::anyhow!("otpauth URI: {err}"))?;
    let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
        .map_err(|err| anyhow::anyhow!("QR code: {err}"))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    let mut active = account.into_active_model();
    active.totp_secret = Set(Some(secret.clone()));
    active.totp_last_step = Set(None);
    users::save(db, views, active).await?;
    Ok(Enrolment {
        secret,
        otpauth_uri,
        qr_svg,
    })
}

/// Accepts a current TOTP code once: the time step it matched must be newer
/// than the last one accepted for the account.
async fn accept_totp(db: &Database, account: &user::Model, code: &str) -> Result<bool> {
    let Some(secret) = &account.totp_secret else {
        return Ok(false);
    };
    let Some(step) = totp(secret, &account.email)?.check(code, unix_now()) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(anyhow::Error::from)?;
    let claimed = user::Entity::update_many()
        .col_expr(user::Column::TotpLastStep, Expr::value(step))
        .filter(user::Column::Id.eq(account.id))
        .filter(
            Condition::any()
                .add(user::Column::TotpLastStep.is_null())
                .add(user::Column::TotpLastStep.lt(step)),
        )
        .exec(db.writer())
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// Uses up one recovery code.
async fn accept_recovery_code(db: &Database, user_id: UserId, code: &str) -> Result<bool> {
    let used = recovery_code::Entity::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(now()))
        .col_expr(recovery_code::Column::UpdatedAt, Expr::value(now()))
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::CodeHash.eq(hash_token(&normalise_code(code))))
        .filter(recovery_code::Column::UsedAt.is_null())
        .exec(db.writer())
        .await?;
    Ok(used.rows_affected == 1)
}

/// How a second factor was proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

/// Checks an authenticator code or a recovery code for an account with
/// two-factor authentication on. `None` when it is wrong or already used.
pub async fn verify(
    db: &Database,
    account: &user::Model,
    code: &str,
) -> Result<Option<SecondFactor>> {
    if account.totp_enabled_at.is_none() {
        return Ok(None);
    }
    let code = code.trim();
    if is_totp_code(code) {
        Ok(accept_totp(db, account, code)
            .await?
            .then_some(SecondFactor::Totp))
    } else {
        Ok(accept_recovery_code(db, account.id, code)
            .await?
            .then_some(SecondFactor::RecoveryCode))
    }
}

/// Replaces every recovery code of the account; returns the new ones, the
/// only time they are seen in clear.
async fn replace_recovery_codes<C: sea_orm::ConnectionTrait>(
    conn: &C,
    user_id: UserId,
) -> Result<Vec<String>> {
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let at = now();
    recovery_code::Entity::insert_many(codes.iter().map(|code| recovery_code::ActiveModel {
        id: Set(crate::ids::RecoveryCodeId::new()),
        user_id: Set(user_id),
        code_hash: Set(hash_token(&normalise_code(code))),
        used_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }))
    .exec(conn)
    .await?;
    Ok(codes)
}

fn wrong_code() -> Error {
    Error::invalid_field("code", "is not a valid code from your authenticator app")
}

/// Turns two-factor authentication on with the first code from the
/// authenticator; returns the recovery codes.
pub async fn confirm_enrolment(
    db: &Database,
    views: &UserViews,
    user_id: UserId,
    code: &str,
) -> Result<Vec<String>> {
    let account = users::find(db, user_id).await?;
    if account.totp_enabled_at.is_some() {
        return Err(Error::Conflict(
            "Two-factor authentication is already on.".to_owned(),
        ));
    }
    if account.totp_secret.is_none() {
        return Err(Error::Conflict(
            "Start enrolment first: no authenticator secret is pending.".to_owned(),
        ));
    }
    if !is_totp_code(code.trim()) || !accept_totp(db, &account, code.trim()).await? {
        return Err(wrong_code());
    }
    let txn = db.begin_write().await?;
    let codes = replace_recovery_codes(&txn, user_id).await?;
    // Only the changed column is written, so the step `accept_totp` just
    // stored stays.
    let mut active = account.into_active_model();
    active.totp_enabled_at = Set(Some(now()));
    sea_orm::ActiveModelTrait::update(active, &txn).await?;
    txn.commit().await?;
    views.forget(user_id).await?;
    Ok(codes)
}

/// Checks the password and a current second factor, for the changes that
/// weaken or reset the protection.
async fn reauthenticate(
    db: &Database,
    cache: &Cache,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<user::Model> {
    let account = users::find(db, user_id).await?;
    if account.totp_enabled_at.is_none() {
        return Err(Error::Conflict(
            "Two-factor authentication is not on.".to_owned(),
        ));
    }
    login::confirm_password(db, cache, &account, password, "password").await?;
    login::confirm_second_factor(db, cache, &account, code).await?;
    Ok(account)
}

/// Turns two-factor authentication off, after the password and a code.
pub async fn disable(
    db: &Database,
    cache: &Cache,
    views: &UserViews,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<()> {
    let account = reauthenticate(db, cache, user_id, password, code).await?;
    clear(db, views, account).await?;
    Ok(())
}

/// Issues a new set of recovery codes; the old ones stop working.
pub async fn regenerate_recovery_codes(
    db: &Database,
    cache: &Cache,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<Vec<String>> {
    reauthenticate(db, cache, user_id, password, code).await?;
    let txn = db.begin_write().await?;
    let codes = replace_recovery_codes(&txn, user_id).await?;
    txn.commit().await?;
    Ok(codes)
}

/// Removes the secret and every recovery code: an admin's reset for someone
/// who lost their device, or the owner's own turning off. Returns the account
/// as it is now.
pub async fn clear(db: &Database, views: &UserViews, account: user::Model) -> Result<user::Model> {
    let user_id = account.id;
    let txn = db.begin_write().await?;
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?;
    let mut active = account.into_active_model();
    active.totp_secret = Set(None);
    active.totp_enabled_at = Set(None);
    active.totp_last_step = Set(None);
    let account = sea_orm::ActiveModelTrait::update(active, &txn).await?;
    txn.commit().await?;
    views.forget(user_id).await?;
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_two_groups_from_the_unambiguous_alphabet() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(code.as_bytes()[5], b'-');
        assert!(
            normalise_code(&code)
                .bytes()
                .all(|b| RECOVERY_ALPHABET.contains(&b))
        );
        assert_ne!(code, new_recovery_code());
    }

    #[test]
    fn codes_compare_without_case_spaces_or_dashes() {
        assert_eq!(normalise_code(" AbCde-fGh2k "), "abcdefgh2k");
    }

    #[test]
    fn only_six_digits_are_authenticator_codes() {
        assert!(is_totp_code("012345"));
        assert!(!is_totp_code("01234"));
        assert!(!is_totp_code("abcde-fghjk"));
    }

    #[test]
    fn the_otpauth_uri_names_the_issuer_and_account() {
        let secret = Secret::generate().to_base32();
        let url = totp(&secret, "ada@example.com")
            .expect("valid")
            .to_url()
            .expect("url");
        assert!(url.starts_with("otpauth://totp/VMCloud:ada%40example.com?"));
        assert!(url.contains(&format!("secret={secret}")));
    }
}
