//! The account policy, set by admins: whether anyone may sign up.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::modules::settings;

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct AccountPolicy {
    /// Whether visitors may create customer accounts; when closed, only
    /// admins create them.
    #[garde(skip)]
    pub registration_open: bool,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            registration_open: true,
        }
    }
}

impl settings::Setting for AccountPolicy {
    const KEY: &'static str = "accounts";
    const DESCRIPTION: &'static str = "Whether visitors may sign up for a customer account.";
}

/// A 403 while registration is closed.
pub async fn require_open_registration(db: &Database, cache: &Cache) -> Result<()> {
    if settings::load::<AccountPolicy>(db, cache)
        .await?
        .registration_open
    {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "Registration is closed on this platform; ask the provider for an account.".to_owned(),
        ))
    }
}
