//! Sessions: one per login, carried by an opaque refresh token that is
//! rotated on every use. The tokens of one login form a family; presenting a
//! token that was already used means it was stolen (or replayed), so the whole
//! family is revoked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore as _;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use sha2::{Digest as _, Sha256};

use crate::db::Database;
use crate::db::entities::{now, refresh_token};
use crate::error::{Error, Result};
use crate::ids::{RefreshTokenId, UserId};

pub const REFRESH_TOKEN_TTL: Duration = Duration::days(7);
/// An impersonation session ends after this, whatever its refreshes.
pub const IMPERSONATION_TTL: Duration = Duration::minutes(30);

/// Where a session was opened from, for the session list and the audit log.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug)]
pub struct IssuedRefresh {
    pub session_id: uuid::Uuid,
    pub user_id: UserId,
    pub impersonator: Option<UserId>,
    /// The opaque token, for the cookie; only its hash is stored.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum RefreshError {
    /// Unknown, expired or revoked.
    Invalid,
    /// An already-rotated token came back: the family is now revoked.
    Reused {
        user_id: UserId,
        session_id: uuid::Uuid,
    },
    Internal(Error),
}

impl From<sea_orm::DbErr> for RefreshError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<Error> for RefreshError {
    fn from(err: Error) -> Self {
        Self::Internal(err)
    }
}

/// One signed-in device, as its owner sees it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: uuid::Uuid,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When the session last refreshed its access token.
    pub last_active_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Whether this is the session making the request.
    pub current: bool,
}

pub(crate) fn new_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Refresh tokens are 256 random bits, so a plain SHA-256 is enough to keep a
/// database leak from yielding usable tokens.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Opens a session for a login (or an impersonation).
pub async fn open(
    db: &Database,
    user_id: UserId,
    impersonator: Option<UserId>,
    origin: &Origin,
) -> Result<IssuedRefresh> {
    let ttl = if impersonator.is_some() {
        IMPERSONATION_TTL
    } else {
        REFRESH_TOKEN_TTL
    };
    let session_id = uuid::Uuid::now_v7();
    let token = new_token();
    let expires_at = now() + ttl;
    refresh_token::ActiveModel {
        user_id: Set(user_id),
        family_id: Set(session_id),
        token_hash: Set(hash_token(&token)),
        user_agent: Set(origin.user_agent.clone()),
        ip: Set(origin.ip.clone()),
        expires_at: Set(expires_at),
        impersonator_id: Set(impersonator),
        ..Default::default()
    }
    .insert(db.writer())
    .await?;
    Ok(IssuedRefresh {
        session_id,
        user_id,
        impersonator,
        token,
        expires_at,
    })
}

/// Exchanges a refresh token for its successor. The old token is marked used
/// with a conditional update, so of two concurrent refreshes with the same
/// token exactly one wins and the other counts as reuse.
pub async fn rotate(
    db: &Database,
    presented: &str,
    origin: &Origin,
) -> std::result::Result<IssuedRefresh, RefreshError> {
    let current = refresh_token::Entity::find()
        .filter(refresh_token::Column::TokenHash.eq(hash_token(presented)))
        .one(db.writer())
        .await?
        .ok_or(RefreshError::Invalid)?;
    if current.used_at.is_some() {
        revoke_session(db, current.family_id).await?;
        return Err(RefreshError::Reused {
            user_id: current.user_id,
            session_id: current.family_id,
        });
    }
    let at = now();
    if current.revoked_at.is_some() || current.expires_at <= at {
        return Err(RefreshError::Invalid);
    }
    let txn = db.begin_write().await?;
    let marked = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::UsedAt, at.into())
        .col_expr(refresh_token::Column::UpdatedAt, at.into())
        .filter(refresh_token::Column::Id.eq(current.id))
        .filter(refresh_token::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    if marked.rows_affected != 1 {
        txn.rollback().await?;
        revoke_session(db, current.family_id).await?;
        return Err(RefreshError::Reused {
            user_id: current.user_id,
            session_id: current.family_id,
        });
    }
    // Impersonation sessions keep their original end; others slide.
    let expires_at = if current.impersonator_id.is_some() {
        current.expires_at
    } else {
        at + REFRESH_TOKEN_TTL
    };
    let token = new_token();
    refresh_token::ActiveModel {
        user_id: Set(current.user_id),
        family_id: Set(current.family_id),
        token_hash: Set(hash_token(&token)),
        user_agent: Set(origin.user_agent.clone().or(current.user_agent)),
        ip: Set(origin.ip.clone().or(current.ip)),
        expires_at: Set(expires_at),
        impersonator_id: Set(current.impersonator_id),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(IssuedRefresh {
        session_id: current.family_id,
        user_id: current.user_id,
        impersonator: current.impersonator_id,
        token,
        expires_at,
    })
}

/// Revokes every token of a session.
pub async fn revoke_session(db: &Database, session_id: uuid::Uuid) -> Result<()> {
    let at = now();
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, at.into())
        .col_expr(refresh_token::Column::UpdatedAt, at.into())
        .filter(refresh_token::Column::FamilyId.eq(session_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db.writer())
        .await?;
    Ok(())
}

/// Whether a session was ended (signed out, revoked, its refresh token
/// reused) or never existed: none of its refresh tokens is left unrevoked.
/// One indexed look-up by family.
pub async fn is_ended(db: &Database, session_id: uuid::Uuid) -> Result<bool> {
    let standing: Option<RefreshTokenId> = refresh_token::Entity::find()
        .select_only()
        .column(refresh_token::Column::Id)
        .filter(refresh_token::Column::FamilyId.eq(session_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .into_tuple()
        .one(db.writer())
        .await?;
    Ok(standing.is_none())
}

/// Revokes one of `owner`'s sessions; another user's session is not found.
pub async fn revoke_own_session(
    db: &Database,
    owner: UserId,
    session_id: uuid::Uuid,
) -> Result<()> {
    let exists = refresh_token::Entity::find()
        .filter(refresh_token::Column::FamilyId.eq(session_id))
        .filter(refresh_token::Column::UserId.eq(owner))
        .one(db.writer())
        .await?
        .is_some();
    if !exists {
        return Err(Error::not_found("Session"));
    }
    revoke_session(db, session_id).await
}

/// Revokes every session of a user but `keep` and returns their ids, so
/// their access tokens can be cut off too.
pub async fn revoke_all(
    db: &Database,
    user_id: UserId,
    keep: Option<uuid::Uuid>,
) -> Result<Vec<uuid::Uuid>> {
    let revoked: Vec<uuid::Uuid> = active_tokens(db, user_id)
        .await?
        .into_iter()
        .map(|t| t.family_id)
        .filter(|id| Some(*id) != keep)
        .collect();
    let at = now();
    let mut update = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, at.into())
        .col_expr(refresh_token::Column::UpdatedAt, at.into())
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(refresh_token::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(refresh_token::Column::FamilyId.ne(keep));
    }
    update.exec(db.writer()).await?;
    Ok(revoked)
}

async fn active_tokens(db: &Database, user_id: UserId) -> Result<Vec<refresh_token::Model>> {
    Ok(refresh_token::Entity::find()
        .filter(refresh_token::Column::UserId.eq(user_id))
        .filter(
            Condition::all()
                .add(refresh_token::Column::RevokedAt.is_null())
                .add(refresh_token::Column::UsedAt.is_null())
                .add(refresh_token::Column::ExpiresAt.gt(now())),
        )
        .order_by_desc(refresh_token::Column::CreatedAt)
        .all(db.writer())
        .await?)
}

/// The user's live sessions, most recently active first.
pub async fn list(
    db: &Database,
    user_id: UserId,
    current: Option<uuid::Uuid>,
) -> Result<Vec<SessionView>> {
    Ok(active_tokens(db, user_id)
        .await?
        .into_iter()
        .map(|token| SessionView {
            id: token.family_id,
            ip: token.ip,
            user_agent: token.user_agent,
            last_active_at: token.created_at,
            expires_at: token.expires_at,
            current: Some(token.family_id) == current,
        })
        .collect())
}
