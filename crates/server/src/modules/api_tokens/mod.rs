//! Personal API tokens: long-lived bearer secrets a user makes for scripts
//! and the CLI.
//!
//! A token is `vmc_` and 40 random base62 characters. Only its SHA-256 is
//! stored, plus the first characters after `vmc_` so a user can tell tokens
//! apart in a list. Every owner-facing function filters on the owner's id, so
//! another user's token is indistinguishable from one that does not exist.

use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, ExprTrait as _, QueryFilter as _,
};
use sha2::{Digest as _, Sha256};

use crate::db::Database;
use crate::db::entities::api_token::{self, TokenScope};
use crate::db::entities::now;
use crate::error::{Error, FieldError, Result};
use crate::ids::{ApiTokenId, UserId};
use crate::pagination::{Page, PageRequest, fetch_page};

/// Marks our tokens, so secret scanners and humans recognise a leaked one.
pub const TOKEN_PREFIX: &str = "vmc_";
/// 40 base62 characters carry 40 × log2(62) ≈ 238 bits of entropy.
pub const TOKEN_RANDOM_CHARS: usize = 40;
/// How many random characters are kept in clear for display.
pub const DISPLAY_PREFIX_CHARS: usize = 8;
pub const MAX_NAME_CHARS: usize = 100;
/// The longest lifetime a token may be given: a year, leap day included.
pub const MAX_LIFETIME_DAYS: i64 = 366;
/// `last_used_at` is coarse on purpose: writing it on every request would
/// turn each authenticated read into a write.
pub const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// What a user submits to make a token.
/// Checked field by field by the service, which reports every problem at
/// once.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewApiToken {
    pub name: String,
    pub scope: TokenScope,
    /// When the token stops working; at most a year ahead. Absent: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token as the API lists it: never the secret, nor its hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiTokenView {
    pub id: ApiTokenId,
    pub name: String,
    pub scope: TokenScope,
    /// The first characters after `vmc_`, to recognise the token.
    pub token_prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<api_token::Model> for ApiTokenView {
    fn from(row: api_token::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scope: row.scope,
            token_prefix: row.token_prefix,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            created_at: row.created_at,
        }
    }
}

/// A freshly made token. `token` is the only copy of the secret: show it
/// once, it cannot be recovered.
#[derive(Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedApiToken {
    pub token: String,
    #[serde(flatten)]
    pub view: ApiTokenView,
}

impl std::fmt::Debug for CreatedApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiToken")
            .field("token", &"[redacted]")
            .field("view", &self.view)
            .finish()
    }
}

/// Who a valid presented token acts for, and with what rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatedToken {
    pub token_id: ApiTokenId,
    pub user_id: UserId,
    pub scope: TokenScope,
    /// When it stops working, if ever: long connections end then.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Makes a token for `owner`. The secret is returned here and never again.
pub async fn create(db: &Database, owner: UserId, new: NewApiToken) -> Result<CreatedApiToken> {
    let created_at = now();
    let mut fields = Vec::new();
    let name = validate_name(&new.name)
        .map_err(|err| fields.push(err))
        .ok();
    let expires_at = new.expires_at.map(|at| at.trunc_subsecs(6));
    if let Err(err) = validate_expiry(expires_at, created_at) {
        fields.push(err);
    }
    let Some(name) = name.filter(|_| fields.is_empty()) else {
        return Err(Error::invalid(fields));
    };
    let token = generate();
    let row = api_token::ActiveModel {
        user_id: Set(owner),
        name: Set(name),
        token_hash: Set(hash(&token)),
        token_prefix: Set(token[TOKEN_PREFIX.len()..][..DISPLAY_PREFIX_CHARS].to_owned()),
        scope: Set(new.scope),
        expires_at: Set(expires_at),
        created_at: Set(created_at),
        ..Default::default()
    }
    .insert(db.writer())
    .await?;
    Ok(CreatedApiToken {
        token,
        view: row.into(),
    })
}

/// `owner`'s tokens, newest first, revoked and expired ones included.
pub async fn list(db: &Database, owner: UserId, page: PageRequest) -> Result<Page<ApiTokenView>> {
    let select = api_token::Entity::find().filter(api_token::Column::UserId.eq(owner));
    let rows = fetch_page(db.reader(), select, api_token::Column::Id, page, |row| {
        row.id.0
    })
    .await?;
    Ok(rows.map(ApiTokenView::from))
}

/// Revokes one of `owner`'s tokens for good. Revoking a revoked token
/// succeeds and keeps the first revocation time.
pub async fn revoke(db: &Database, owner: UserId, id: ApiTokenId) -> Result<ApiTokenView> {
    let revoked_at = now();
    api_token::Entity::update_many()
        .set(api_token::ActiveModel {
            revoked_at: Set(Some(revoked_at)),
            updated_at: Set(revoked_at),
            ..Default::default()
        })
        .filter(api_token::Column::Id.eq(id))
        .filter(api_token::Column::UserId.eq(owner))
        .filter(api_token::Column::RevokedAt.is_null())
        .exec(db.writer())
        .await?;
    api_token::Entity::find_by_id(id)
        .filter(api_token::Column::UserId.eq(owner))
        .one(db.writer())
        .await?
        .map(ApiTokenView::from)
        .ok_or_else(|| Error::not_found("API token"))
}

/// Resolves a presented bearer token. `None` for anything that is not a
/// live token of ours: malformed, unknown, revoked or expired. In the common
/// case this is one lookup on the unique hash index; `last_used_at` is
/// written only when the stored value is over a minute old.
///
/// Errors only when the database fails, so the caller can answer 503
/// rather than reject a valid token as 401.
pub async fn authenticate(db: &Database, presented: &str) -> Result<Option<AuthenticatedToken>> {
    if !is_well_formed(presented) {
        return Ok(None);
    }
    // The primary, not a replica: a revocation must take effect at once.
    // Looking up by hash needs no constant-time comparison: timing can at
    // most reveal a prefix of a SHA-256 digest, which says nothing about a
    // 238-bit secret.
    let Some(row) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(hash(presented)))
        .one(db.writer())
        .await?
    else {
        return Ok(None);
    };
    let at = now();
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|expiry| expiry <= at) {
        return Ok(None);
    }
    let stale_before = at - Duration::seconds(LAST_USED_GRANULARITY_SECS);
    if row.last_used_at.is_none_or(|used| used < stale_before) {
        // Conditional, so concurrent requests write it once. `updated_at` is
        // left alone: using a token does not change it. A failure here must
        // not turn a valid request away.
        let touched = api_token::Entity::update_many()
            .set(api_token::ActiveModel {
                last_used_at: Set(Some(at)),
                ..Default::default()
            })
            .filter(api_token::Column::Id.eq(row.id))
            .filter(
                api_token::Column::LastUsedAt
                    .is_null()
                    .or(api_token::Column::LastUsedAt.lt(stale_before)),
            )
            .exec(db.writer())
            .await;
        if let Err(err) = touched {
            tracing::warn!(token_id = %row.id, error = %err, "cannot record API token use");
        }
    }
    Ok(Some(AuthenticatedToken {
        token_id: row.id,
        user_id: row.user_id,
        scope: row.scope,
        expires_at: row.expires_at,
    }))
}

/// A fresh token from the thread-local CSPRNG (ChaCha, seeded and
/// periodically reseeded from the OS).
fn generate() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(TOKEN_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{random}")
}

/// SHA-256, hex. A slow password hash (argon2) defends guessable secrets;
/// these carry ~238 random bits, beyond any brute force, so a fast hash is
/// as safe and keeps the per-request lookup cheap and indexable.
fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Rejects what cannot be a token before touching the database.
fn is_well_formed(presented: &str) -> bool {
    presented.strip_prefix(TOKEN_PREFIX).is_some_and(|random| {
        random.len() == TOKEN_RANDOM_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn validate_name(name: &str) -> Result<String, FieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FieldError::new("name", "is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

fn validate_expiry(expires_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Result<(), FieldError> {
    match expires_at {
        Some(expiry) if expiry <= at => Err(FieldError::new("expires_at", "must be in the future")),
        Some(expiry) if expiry > at + Duration::days(MAX_LIFETIME_DAYS) => Err(FieldError::new(
            "expires_at",
            "must be at most one year from now",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let first = generate();
        let second = generate();
        assert!(is_well_formed(&first), "{first}");
        assert_eq!(first.len(), TOKEN_PREFIX.len() + TOKEN_RANDOM_CHARS);
        assert_ne!(first, second);
        assert_eq!(hash(&first).len(), 64);
        assert_ne!(hash(&first), hash(&second));
    }

    #[test]
    fn malformed_tokens_are_rejected_without_a_lookup() {
        let valid = generate();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&valid[..valid.len() - 1]));
        assert!(!is_well_formed(&format!("{valid}A")));
        assert!(!is_well_formed(&valid.replacen("vmc_", "vmx_", 1)));
        assert!(!is_well_formed(&format!("vmc_{}-", &valid[4..43])));
        assert!(!is_well_formed(&format!("vmc_{}é", &valid[4..42])));
    }
}
