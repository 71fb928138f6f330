//! The security policy, set by admins.

use serde::{Deserialize, Serialize};

use crate::modules::settings;

#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicy {
    /// Support and admin accounts must turn on two-factor authentication
    /// before they can use staff routes.
    #[garde(skip)]
    pub require_2fa_for_staff: bool,
}

impl settings::Setting for SecurityPolicy {
    const KEY: &'static str = "security";
    const DESCRIPTION: &'static str =
        "Whether Support and Admin accounts must use two-factor authentication.";
}
