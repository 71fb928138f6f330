//! Field rules shared by several modules.

use serde::de::DeserializeOwned;

use crate::error::{Error, FieldError, Result};

/// Reads `value` as a `T`; a value of the wrong shape is a 422 naming the
/// field (`/a/b` style path, empty for the whole value).
pub fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| shape_error(&err))
}

/// The 422 for a well-formed JSON value of the wrong shape. serde_json's
/// " at line 1 column 9" means nothing to a client that sent a field, so it
/// is cut.
pub fn shape_error<E: std::fmt::Display>(err: &serde_path_to_error::Error<E>) -> Error {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head);
    let field = if path == "." { String::new() } else { path };
    Error::invalid(vec![FieldError::new(field, message)])
}

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

/// A display name: 1 to 100 characters without control characters, once
/// trimmed.
pub fn check_name(field: &str, name: &str) -> Option<FieldError> {
    let trimmed = name.trim();
    (trimmed.is_empty() || trimmed.chars().count() > 100 || trimmed.chars().any(char::is_control))
        .then(|| FieldError::new(field, "must be 1 to 100 characters"))
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

    #[test]
    fn names_are_trimmed_short_and_printable() {
        assert!(check_name("name", " Paris ").is_none());
        assert!(check_name("name", "  ").is_some());
        assert!(check_name("name", "a\u{7}b").is_some());
        assert!(check_name("name", &"x".repeat(101)).is_some());
    }
}
