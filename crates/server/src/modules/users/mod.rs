//! Accounts: creation, with normalised emails and hashed passwords.

pub mod password;

use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, SqlErr};
use secrecy::{ExposeSecret as _, SecretString};

use crate::db::Database;
use crate::db::entities::user::{self, UserRole, UserStatus, normalise_email};
use crate::error::{Error, FieldError, Result};

pub const MIN_PASSWORD_CHARS: usize = 10;

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

pub async fn create_user(db: &Database, new: NewUser) -> Result<user::Model> {
    let email = normalise_email(&new.email);
    let mut fields: Vec<FieldError> = validate_email(&email).into_iter().collect();
    if new.password.expose_secret().chars().count() < MIN_PASSWORD_CHARS {
        fields.push(FieldError::new(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    let name = new
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    if name.chars().count() > 100 {
        fields.push(FieldError::new("name", "must be at most 100 characters"));
    }
    if !fields.is_empty() {
        return Err(Error::invalid(fields));
    }
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
    account.insert(db.writer()).await.map_err(|err| {
        if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            Error::Conflict("An account with this email already exists.".to_owned())
        } else {
            err.into()
        }
    })
}
