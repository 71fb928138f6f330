//! Accounts: creation, with normalised emails and hashed passwords.

pub mod admin;
pub mod flows;
pub mod password;
pub mod policy;
pub mod views;

use sea_orm::{ActiveModelTrait as _, ActiveValue::Set};
use secrecy::{ExposeSecret as _, SecretString};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::user::{self, UserRole, UserStatus, normalise_email};
use crate::error::{Error, FieldError, Result};
use crate::modules::auth::login;
use crate::validation::check_name;
pub use views::UserViews;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The common-password list shipped with the binary, one per line.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn is_common_password(candidate: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let set = SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .collect()
    });
    set.contains(candidate.to_lowercase().as_str())
}

/// The password policy: long enough, not absurdly long (argon2 input is
/// bounded for a reason), and not one everybody uses.
pub fn check_password_policy(field: &str, candidate: &SecretString) -> Option<FieldError> {
    let password = candidate.expose_secret();
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(FieldError::new(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Some(FieldError::new(
            field,
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    is_common_password(password)
        .then(|| FieldError::new(field, "is one of the most common passwords; choose another"))
}

/// An account as its owner and staff see it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: crate::ids::UserId,
    pub email: String,
    pub name: String,
    pub role: UserRole,
    pub status: UserStatus,
    pub email_verified: bool,
    pub two_factor_enabled: bool,
    pub locale: String,
    pub country: Option<String>,
    pub company: Option<String>,
    pub vat_id: Option<String>,
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<user::Model> for UserView {
    fn from(user: user::Model) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
            status: user.status,
            email_verified: user.email_verified_at.is_some(),
            two_factor_enabled: user.totp_enabled_at.is_some(),
            locale: user.locale,
            country: user.country,
            company: user.company,
            vat_id: user.vat_id,
            last_login_at: user.last_login_at,
            created_at: user.created_at,
        }
    }
}

/// A live (not deleted) account by id.
pub async fn find(db: &Database, id: crate::ids::UserId) -> Result<user::Model> {
    use sea_orm::EntityTrait as _;
    user::Entity::find_by_id(id)
        .one(db.reader())
        .await?
        .filter(|u| u.status != UserStatus::Deleted)
        .ok_or_else(|| Error::not_found("User"))
}

#[derive(Debug)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    pub password: SecretString,
    pub role: UserRole,
    /// Accounts made by an operator need no verification email.
    pub email_verified: bool,
}

fn validate_email(email: &str) -> Option<FieldError> {
    #[derive(garde::Validate)]
    struct Email<'a>(#[garde(email)] &'a str);
    garde::Validate::validate(&Email(email))
        .err()
        .map(|_| FieldError::new("email", "is not a valid email address"))
}

/// The normalised email and name of a new account, or every field error.
pub fn validate_new_user(new: &NewUser) -> Result<(String, String)> {
    let email = normalise_email(&new.email);
    let mut fields: Vec<FieldError> = validate_email(&email).into_iter().collect();
    fields.extend(check_password_policy("password", &new.password));
    let name = match &new.name {
        Some(name) => name.trim().to_owned(),
        None => email.split('@').next().unwrap_or_default().to_owned(),
    };
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        fields.push(FieldError::new(
            "name",
            "must be 1 to 100 characters, without control characters",
        ));
    }
    Error::check_fields(fields)?;
    Ok((email, name))
}

pub async fn create_user(db: &Database, new: NewUser) -> Result<user::Model> {
    let (email, name) = validate_new_user(&new)?;
    let password_hash = password::hash(new.password).await?;
    let account = user::ActiveModel {
        email: Set(email),
        name: Set(name),
        password_hash: Set(password_hash),
        role: Set(new.role),
        status: Set(UserStatus::Active),
        email_verified_at: Set(new.email_verified.then(crate::db::entities::now)),
        failed_login_count: Set(0),
        locale: Set("en".to_owned()),
        ..Default::default()
    };
    account
        .insert(db.writer())
        .await
        .map_err(|err| Error::on_duplicate(err, "An account with this email already exists."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_rejects_short_long_and_common_passwords() {
        let check = |p: &str| check_password_policy("password", &SecretString::from(p.to_owned()));
        assert!(check("short").is_some());
        assert!(check(&"x".repeat(MAX_PASSWORD_CHARS + 1)).is_some());
        assert!(check("1234567890").is_some(), "common");
        assert!(check("Qwertyuiop").is_some(), "common, whatever the case");
        assert!(check("maple syrup on tuesdays").is_none());
    }
}

/// What an account holder may change about themselves; `None` leaves a
/// field as it is, an empty string clears an optional one.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    pub name: Option<String>,
    pub locale: Option<String>,
    pub country: Option<String>,
    pub company: Option<String>,
    pub vat_id: Option<String>,
}

pub const LOCALES: [&str; 2] = ["en", "fr"];

fn optional(value: &str) -> Option<String> {
    let value = value.trim().to_owned();
    (!value.is_empty()).then_some(value)
}

pub async fn update_profile(
    db: &Database,
    views: &UserViews,
    id: crate::ids::UserId,
    changes: ProfileChanges,
) -> Result<user::Model> {
    use sea_orm::IntoActiveModel as _;
    let mut fields = Vec::new();
    let account = find(db, id).await?;
    let mut active = account.into_active_model();
    if let Some(name) = changes.name {
        fields.extend(check_name("name", &name));
        active.name = Set(name.trim().to_owned());
    }
    if let Some(locale) = changes.locale {
        if !LOCALES.contains(&locale.as_str()) {
            fields.push(FieldError::new("locale", "must be one of: en, fr"));
        }
        active.locale = Set(locale);
    }
    if let Some(country) = changes.country {
        let country = optional(&country).map(|c| c.to_uppercase());
        if country
            .as_ref()
            .is_some_and(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            fields.push(FieldError::new(
                "country",
                "must be a two-letter ISO 3166 code",
            ));
        }
        active.country = Set(country);
    }
    if let Some(company) = changes.company {
        let company = optional(&company);
        if company.as_ref().is_some_and(|c| c.chars().count() > 200) {
            fields.push(FieldError::new("company", "must be at most 200 characters"));
        }
        active.company = Set(company);
    }
    if let Some(vat_id) = changes.vat_id {
        let vat_id = optional(&vat_id).map(|v| v.replace([' ', '.', '-'], "").to_uppercase());
        if vat_id.as_ref().is_some_and(|v| {
            v.len() < 4 || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_alphanumeric())
        }) {
            fields.push(FieldError::new(
                "vat_id",
                "is not a VAT identification number",
            ));
        }
        active.vat_id = Set(vat_id);
    }
    Error::check_fields(fields)?;
    save(db, views, active).await
}

/// Writes an account change and drops its cached view, so no writer can
/// forget to.
pub async fn save(
    db: &Database,
    views: &UserViews,
    active: user::ActiveModel,
) -> Result<user::Model> {
    let account = active.update(db.writer()).await?;
    views.forget(account.id).await?;
    Ok(account)
}

/// Changes a password after checking the current one.
pub async fn change_password(
    db: &Database,
    cache: &Cache,
    id: crate::ids::UserId,
    current: SecretString,
    new: SecretString,
) -> Result<()> {
    use sea_orm::IntoActiveModel as _;
    let account = find(db, id).await?;
    if let Some(problem) = check_password_policy("new_password", &new) {
        return Err(Error::invalid(vec![problem]));
    }
    login::confirm_password(db, cache, &account, current, "current_password").await?;
    let hash = password::hash(new).await?;
    let mut active = account.into_active_model();
    active.password_hash = Set(hash);
    active.update(db.writer()).await?;
    Ok(())
}

/// Closes an account at its owner's request, after checking the password.
/// The row stays (status `deleted`) so invoices and the ledger keep pointing
/// at it; the email is released so the address can sign up again.
pub async fn delete_account(
    db: &Database,
    cache: &Cache,
    views: &UserViews,
    id: crate::ids::UserId,
    password_check: SecretString,
) -> Result<user::Model> {
    use sea_orm::IntoActiveModel as _;
    let account = find(db, id).await?;
    login::confirm_password(db, cache, &account, password_check, "password").await?;
    let released = format!("deleted+{}@invalid", account.id);
    let mut active = account.into_active_model();
    active.status = Set(UserStatus::Deleted);
    active.deleted_at = Set(Some(crate::db::entities::now()));
    active.email = Set(released);
    active.totp_secret = Set(None);
    active.totp_enabled_at = Set(None);
    save(db, views, active).await
}
