//! The support settings, set by admins: what may be attached to a ticket and
//! how long a resolved ticket waits for the customer before it closes.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::{Error, FieldError, Result};
use crate::modules::settings;

/// The largest attachment limit admins may set.
pub const MAX_ATTACHMENT_BYTES: u64 = 100 * 1024 * 1024;

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct SupportSettings {
    /// The largest attachment accepted, in bytes (at most 100 MiB).
    pub max_attachment_bytes: u64,
    /// The media types an attachment may be, as its content proves it (its
    /// magic bytes), not as the uploader declares it. `text/plain` is UTF-8
    /// text without control characters.
    pub allowed_attachment_types: Vec<String>,
    /// A resolved ticket nobody writes to for this many days closes itself.
    pub auto_close_days: u32,
}

impl Default for SupportSettings {
    fn default() -> Self {
        Self {
            max_attachment_bytes: 10 * 1024 * 1024,
            allowed_attachment_types: [
                "image/png",
                "image/jpeg",
                "image/gif",
                "image/webp",
                "application/pdf",
                "text/plain",
            ]
            .map(str::to_owned)
            .to_vec(),
            auto_close_days: 7,
        }
    }
}

impl settings::Setting for SupportSettings {
    const KEY: &'static str = "support";
    const DESCRIPTION: &'static str = "What may be attached to a ticket, and after how many silent days a resolved ticket closes.";

    fn check(&self) -> Result<()> {
        let mut fields = Vec::new();
        if !(1..=MAX_ATTACHMENT_BYTES).contains(&self.max_attachment_bytes) {
            fields.push(FieldError::new(
                "max_attachment_bytes",
                format!("must be between 1 and {MAX_ATTACHMENT_BYTES}"),
            ));
        }
        if self.allowed_attachment_types.len() > 50 {
            fields.push(FieldError::new(
                "allowed_attachment_types",
                "must list at most 50 types",
            ));
        }
        for (index, mime) in self.allowed_attachment_types.iter().enumerate() {
            if !super::attachments::recognisable(mime) {
                fields.push(FieldError::new(
                    format!("allowed_attachment_types/{index}"),
                    "is not a type the server can recognise by content \
                     (e.g. image/png, application/pdf, text/plain)",
                ));
            }
        }
        if !(1..=365).contains(&self.auto_close_days) {
            fields.push(FieldError::new(
                "auto_close_days",
                "must be between 1 and 365",
            ));
        }
        Error::check_fields(fields)
    }
}

pub async fn get(db: &Database, cache: &Cache) -> Result<SupportSettings> {
    settings::load(db, cache).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::settings::Setting as _;

    #[test]
    fn defaults_pass_and_nonsense_is_refused_field_by_field() {
        assert!(SupportSettings::default().check().is_ok());
        let bad = SupportSettings {
            max_attachment_bytes: 0,
            allowed_attachment_types: vec!["text/html".to_owned(), "nonsense".to_owned()],
            auto_close_days: 0,
        };
        let Err(Error::Validation { fields, .. }) = bad.check() else {
            panic!("expected field errors");
        };
        let named: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            named,
            [
                "max_attachment_bytes",
                "allowed_attachment_types/0",
                "allowed_attachment_types/1",
                "auto_close_days"
            ]
        );
    }
}
