//! The catalog: regions, OS images and plans (the seed's `products`). Admins
//! manage it; the public part is what the pricing page and the order form
//! show.

pub mod images;
pub mod plans;
pub mod regions;

use sea_orm::{DbErr, SqlErr};

use crate::error::{Error, FieldError};

/// Slugs appear in URLs and the CLI: lower-case letters, digits and inner
/// dashes, 1 to 64 characters.
pub fn check_slug(field: &str, slug: &str) -> Option<FieldError> {
    let bytes = slug.as_bytes();
    let valid = (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-');
    (!valid).then(|| {
        FieldError::new(
            field,
            "must be 1 to 64 lower-case letters, digits and inner dashes",
        )
    })
}

/// A display name: 1 to 100 characters without control characters.
pub fn check_name(field: &str, name: &str) -> Option<FieldError> {
    let trimmed = name.trim();
    (trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control))
        .then(|| FieldError::new(field, "must be 1 to 100 characters"))
}

/// Turns a unique-constraint violation on insert or update into a 409 that
/// names what collided.
pub fn conflict_on_duplicate(err: DbErr, what: &str) -> Error {
    if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        Error::Conflict(format!("{what} is taken already."))
    } else {
        err.into()
    }
}

/// Fails with every collected field error, if any.
pub fn reject(fields: Vec<FieldError>) -> crate::error::Result<()> {
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lower_case_words_joined_by_dashes() {
        for good in ["eu-west", "a", "s-1vcpu-1gb", "debian-12"] {
            assert!(check_slug("slug", good).is_none(), "{good}");
        }
        for bad in ["", "-eu", "eu-", "EU", "eu west", "é", &"a".repeat(65)] {
            assert!(check_slug("slug", bad).is_some(), "{bad}");
        }
    }
}
