//! TOTP two-factor authentication (RFC 6238) with single-use recovery codes.
//!
//! Enrolment is two steps: a secret is stored pending, and only a correct
//! code from the authenticator turns it on, so nobody is locked out by a
//! mistyped QR scan. Every accepted code moves the account's last accepted
//! time step forward in one conditional update, so a code (even one observed
//! over a shoulder) is accepted once, also by two replicas racing.
//!
//! Recovery codes are stored as salted argon2id hashes (light parameters:
//! a code has about 50 bits and up to ten are checked per sign-in), so a
//! copy of the database does not give them away; codes hashed with the
//! earlier unsalted SHA-256 still work until used or replaced.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
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
use crate::modules::auth::sealing::Sealer;
use crate::modules::auth::sessions::hash_token;
use crate::modules::users::{self, UserViews};

/// What the second-factor rules work with.
#[derive(Clone, Debug)]
pub struct Services {
    pub db: Database,
    pub cache: Cache,
    pub views: UserViews,
    /// Opens and seals the stored TOTP secrets.
    pub sealer: std::sync::Arc<Sealer>,
}

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
    services: &Services,
    user_id: UserId,
    password: SecretString,
) -> Result<Enrolment> {
    let Services {
        db, cache, views, ..
    } = services;
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
    let sealed = services.sealer.seal(&secret, account.id)?;
    let mut active = account.into_active_model();
    active.totp_secret = Set(Some(sealed));
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
async fn accept_totp(
    db: &Database,
    sealer: &Sealer,
    account: &user::Model,
    code: &str,
) -> Result<bool> {
    let Some(stored) = &account.totp_secret else {
        return Ok(false);
    };
    let secret = sealer.open(stored, account.id)?;
    let Some(step) = totp(&secret, &account.email)?.check(code, unix_now()) else {
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

/// argon2id at 8 MiB, one pass: a few milliseconds per code.
fn recovery_hasher() -> Argon2<'static> {
    let params = Params::new(8 * 1024, 1, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A salted hash of a (normalised) recovery code, as a PHC string.
fn hash_recovery_code(normalised: &str) -> Result<String> {
    recovery_hasher()
        .hash_password(normalised.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("hashing a recovery code: {err}").into())
}

/// Whether a normalised code matches a stored hash: argon2id, or the
/// unsalted SHA-256 of codes issued before.
fn recovery_code_matches(stored: &str, normalised: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => recovery_hasher()
            .verify_password(normalised.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => stored == hash_token(normalised),
    }
}

/// Uses up one recovery code. The account's unused codes are checked off
/// the async runtime; the one that matches is claimed with a conditional
/// update, so two replicas racing with the same code accept it once.
async fn accept_recovery_code(db: &Database, user_id: UserId, code: &str) -> Result<bool> {
    let unused = recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::UsedAt.is_null())
        .all(db.writer())
        .await?;
    let normalised = normalise_code(code);
    let matching = tokio::task::spawn_blocking(move || {
        unused
            .into_iter()
            .find(|row| recovery_code_matches(&row.code_hash, &normalised))
            .map(|row| row.id)
    })
    .await
    .map_err(anyhow::Error::from)?;
    let Some(id) = matching else {
        return Ok(false);
    };
    let used = recovery_code::Entity::update_many()
        .col_expr(recovery_code::Column::UsedAt, Expr::value(now()))
        .col_expr(recovery_code::Column::UpdatedAt, Expr::value(now()))
        .filter(recovery_code::Column::Id.eq(id))
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
    sealer: &Sealer,
    account: &user::Model,
    code: &str,
) -> Result<Option<SecondFactor>> {
    if account.totp_enabled_at.is_none() {
        return Ok(None);
    }
    let code = code.trim();
    if is_totp_code(code) {
        Ok(accept_totp(db, sealer, account, code)
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
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let hashes = tokio::task::spawn_blocking({
        let codes = codes.clone();
        move || {
            codes
                .iter()
                .map(|code| hash_recovery_code(&normalise_code(code)))
                .collect::<Result<Vec<_>>>()
        }
    })
    .await
    .map_err(anyhow::Error::from)??;
    recovery_code::Entity::delete_many()
        .filter(recovery_code::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let at = now();
    recovery_code::Entity::insert_many(hashes.into_iter().map(|code_hash| {
        recovery_code::ActiveModel {
            id: Set(crate::ids::RecoveryCodeId::new()),
            user_id: Set(user_id),
            code_hash: Set(code_hash),
            used_at: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        }
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
    services: &Services,
    user_id: UserId,
    code: &str,
) -> Result<Vec<String>> {
    let Services {
        db, views, sealer, ..
    } = services;
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
    if !is_totp_code(code.trim()) || !accept_totp(db, sealer, &account, code.trim()).await? {
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
    services: &Services,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<user::Model> {
    let Services { db, cache, .. } = services;
    let account = users::find(db, user_id).await?;
    if account.totp_enabled_at.is_none() {
        return Err(Error::Conflict(
            "Two-factor authentication is not on.".to_owned(),
        ));
    }
    login::confirm_password(db, cache, &account, password, "password").await?;
    login::confirm_second_factor(services, &account, code).await?;
    Ok(account)
}

/// Turns two-factor authentication off, after the password and a code.
pub async fn disable(
    services: &Services,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<()> {
    let account = reauthenticate(services, user_id, password, code).await?;
    clear(&services.db, &services.views, account).await?;
    Ok(())
}

/// Issues a new set of recovery codes; the old ones stop working.
pub async fn regenerate_recovery_codes(
    services: &Services,
    user_id: UserId,
    password: SecretString,
    code: &str,
) -> Result<Vec<String>> {
    reauthenticate(services, user_id, password, code).await?;
    let txn = services.db.begin_write().await?;
    let codes = replace_recovery_codes(&txn, user_id).await?;
    txn.commit().await?;
    Ok(codes)
}

/// Seals every stored TOTP secret that is in clear (stored before sealing)
/// or sealed under an older key, so a rotation or an upgrade leaves none
/// behind; returns how many were sealed. Run at start.
pub async fn reseal_secrets(db: &Database, sealer: &Sealer) -> Result<usize> {
    let stale: Vec<(UserId, String)> = user::Entity::find()
        .filter(user::Column::TotpSecret.is_not_null())
        .all(db.writer())
        .await?
        .into_iter()
        .filter_map(|account| Some((account.id, account.totp_secret?)))
        .filter(|(_, stored)| !sealer.is_current(stored))
        .collect();
    for (user_id, stored) in &stale {
        let sealed = sealer.seal(&sealer.open(stored, *user_id)?, *user_id)?;
        // Only if unchanged meanwhile: a new enrolment is sealed already.
        user::Entity::update_many()
            .col_expr(user::Column::TotpSecret, Expr::value(sealed))
            .filter(user::Column::Id.eq(*user_id))
            .filter(user::Column::TotpSecret.eq(stored.as_str()))
            .exec(db.writer())
            .await?;
    }
    Ok(stale.len())
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
    fn recovery_codes_are_stored_salted_and_codes_of_the_old_scheme_still_match() {
        let code = normalise_code(&new_recovery_code());
        let first = hash_recovery_code(&code).expect("hash");
        let second = hash_recovery_code(&code).expect("hash");
        assert!(
            first.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each code has its own salt");
        assert!(recovery_code_matches(&first, &code));
        assert!(!recovery_code_matches(&first, "abcdefghjk"));
        let legacy = hash_token(&code);
        assert!(recovery_code_matches(&legacy, &code));
        assert!(!recovery_code_matches(&legacy, "abcdefghjk"));
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
