//! Authentication: who is calling, with what credential, and whether that
//! credential still holds.

pub mod access;
pub mod keys;
pub mod login;
pub mod one_time;
pub mod policy;
pub mod rate_limit;
pub mod revocation;
pub mod sealing;
pub mod sessions;
pub mod two_factor;

use chrono::{DateTime, Utc};

use crate::db::entities::api_token::TokenScope;
use crate::db::entities::user::UserRole;
use crate::error::{Error, Result};
use crate::ids::{ApiTokenId, UserId};

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An access token of a signed-in session.
    Session {
        session_id: uuid::Uuid,
        jti: uuid::Uuid,
        expires_at: DateTime<Utc>,
    },
    /// A personal API token.
    ApiToken {
        token_id: ApiTokenId,
        scope: TokenScope,
        expires_at: Option<DateTime<Utc>>,
    },
    /// The platform itself, at start-up (seeding the demo catalog).
    Platform,
}

/// The authenticated caller, as services see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub role: UserRole,
    pub credential: Credential,
    /// The admin acting as this user, when impersonating.
    pub impersonator: Option<UserId>,
    /// Whether the account signs in with a second factor.
    pub two_factor: bool,
    /// A staff account without a second factor while the security policy
    /// requires one of staff: it keeps its own account and objects (so it
    /// can enrol), but its staff powers are refused until it does.
    pub staff_held_back: bool,
}

impl Actor {
    /// The platform acting for itself with an admin's rights; it has no
    /// account, so it never writes rows that point at one.
    pub fn platform() -> Self {
        Self {
            user_id: UserId::from(uuid::Uuid::nil()),
            role: UserRole::Admin,
            credential: Credential::Platform,
            impersonator: None,
            two_factor: false,
            staff_held_back: false,
        }
    }

    /// Whether the caller uses staff powers; `false` for a customer. A
    /// staff account held back by the second-factor policy is refused (403)
    /// rather than answered as a customer, so it learns why.
    pub fn is_staff(&self) -> Result<bool> {
        if !matches!(self.role, UserRole::Support | UserRole::Admin) {
            return Ok(false);
        }
        self.require_second_factor()?;
        Ok(true)
    }

    /// As [`Self::is_staff`], for admin powers.
    pub fn is_admin(&self) -> Result<bool> {
        if self.role != UserRole::Admin {
            return Ok(false);
        }
        self.require_second_factor()?;
        Ok(true)
    }

    /// Whether the caller may reach an object of `owner`: its own, or
    /// anyone's with staff powers.
    pub fn reaches(&self, owner: UserId) -> Result<bool> {
        Ok(owner == self.user_id || self.is_staff()?)
    }

    /// Whether staff extras (internal notes, nodes) are shown on what the
    /// caller reaches: a held-back staff account sees its own objects as a
    /// customer does.
    pub fn sees_staff_details(&self) -> bool {
        matches!(self.is_staff(), Ok(true))
    }

    fn require_second_factor(&self) -> Result<()> {
        if self.staff_held_back {
            return Err(Error::TwoFactorEnrolmentRequired(
                "Turn on two-factor authentication for this account to use staff tools.".to_owned(),
            ));
        }
        Ok(())
    }

    /// The session id, when the caller is a signed-in session.
    pub fn session_id(&self) -> Option<uuid::Uuid> {
        match self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::ApiToken { .. } | Credential::Platform => None,
        }
    }

    /// When the credential stops working, if ever.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self.credential {
            Credential::Session { expires_at, .. } => Some(expires_at),
            Credential::ApiToken { expires_at, .. } => expires_at,
            Credential::Platform => None,
        }
    }

    /// Services check again what the route's extractor checked, so a handler
    /// wired with the wrong extractor still cannot reach staff-only rules.
    pub fn require_staff(&self) -> Result<()> {
        if self.is_staff()? {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "This needs a support or admin account.".to_owned(),
            ))
        }
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin()? {
            Ok(())
        } else {
            Err(Error::Forbidden("This needs an admin account.".to_owned()))
        }
    }

    /// The account's credentials (password, second factor, sessions, API
    /// tokens) and the account itself are managed by its holder in person:
    /// from a signed-in session, so a leaked API token cannot take the account
    /// over or mint a credential that outlives it, and never under
    /// impersonation, so an admin cannot leave a credential behind.
    pub fn require_account_holder(&self) -> Result<()> {
        if !matches!(self.credential, Credential::Session { .. }) {
            return Err(Error::SessionRequired(
                "Sign in to change this; API tokens cannot.".to_owned(),
            ));
        }
        if self.impersonator.is_some() {
            return Err(Error::ImpersonationRefused(
                "Only the account holder can change this, not an admin acting as them.".to_owned(),
            ));
        }
        Ok(())
    }

    /// Read-only API tokens may not change anything.
    pub fn require_write(&self) -> Result<()> {
        match self.credential {
            Credential::ApiToken {
                scope: TokenScope::Read,
                ..
            } => Err(Error::Forbidden("This API token is read-only.".to_owned())),
            _ => Ok(()),
        }
    }
}
