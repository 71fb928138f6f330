//! The transport-agnostic error every service returns. It carries a stable
//! machine-readable kind and a message meant for the caller; internal causes are
//! kept apart so they are logged, never sent.

use std::fmt;

/// One invalid input field, addressed by a JSON-pointer-like path (`/email`,
/// `/items/0/qty`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Validation {
        message: String,
        fields: Vec<FieldError>,
    },
    #[error("{0}")]
    Conflict(String),
    /// The request cannot be understood or authenticated as sent (a webhook
    /// with a bad signature, …).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    /// An upload is larger than the limit the message states.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// An upload's content is not of a type accepted here.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A service we depend on (the payment provider, …) refused or failed;
    /// the message says what it answered.
    #[error("{0}")]
    Upstream(String),
    /// The account must pay (or hold credit) first.
    #[error("{0}")]
    PaymentRequired(String),
    /// An account limit is reached; `limit` is the limit.
    #[error("{message}")]
    QuotaExceeded { message: String, limit: u64 },
    /// The object's state does not allow the request; `state` is the state.
    #[error("{message}")]
    InvalidState { message: String, state: String },
    /// No node has room; the message says why.
    #[error("{0}")]
    NoCapacity(String),
    /// The password was right; the second factor is missing or wrong.
    #[error("{0}")]
    TwoFactorRequired(String),
    /// Staff must turn on two-factor authentication before using staff routes.
    #[error("{0}")]
    TwoFactorEnrolmentRequired(String),
    /// Only a signed-in session may do this, not an API token.
    #[error("{0}")]
    SessionRequired(String),
    /// Only the account holder may do this, not an admin impersonating them.
    #[error("{0}")]
    ImpersonationRefused(String),
    /// Something that is our fault. The cause is logged; the caller only learns
    /// that it happened.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl Error {
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn invalid(fields: Vec<FieldError>) -> Self {
        Self::Validation {
            message: "The request has invalid fields.".to_owned(),
            fields,
        }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, message)])
    }

    /// Fails with every collected field error, if there is any.
    pub fn check_fields(fields: Vec<FieldError>) -> Result<()> {
        if fields.is_empty() {
            Ok(())
        } else {
            Err(Self::invalid(fields))
        }
    }

    /// A unique-constraint violation becomes a 409 saying `message`; any
    /// other database error stays ours.
    pub fn on_duplicate(err: sea_orm::DbErr, message: impl Into<String>) -> Self {
        Self::on_sql_err(err, message, |e| {
            matches!(e, sea_orm::SqlErr::UniqueConstraintViolation(_))
        })
    }

    /// A delete refused by a foreign key becomes a 409 saying `message`.
    pub fn on_still_referenced(err: sea_orm::DbErr, message: impl Into<String>) -> Self {
        Self::on_sql_err(err, message, |e| {
            matches!(e, sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
        })
    }

    fn on_sql_err(
        err: sea_orm::DbErr,
        message: impl Into<String>,
        conflicts: impl Fn(&sea_orm::SqlErr) -> bool,
    ) -> Self {
        if err.sql_err().as_ref().is_some_and(conflicts) {
            Self::Conflict(message.into())
        } else {
            err.into()
        }
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<garde::Report> for Error {
    fn from(report: garde::Report) -> Self {
        Self::invalid(
            report
                .iter()
                .map(|(path, error)| FieldError::new(path.to_string(), error.message().to_string()))
                .collect(),
        )
    }
}

impl From<anyhow::Error> for Error {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
