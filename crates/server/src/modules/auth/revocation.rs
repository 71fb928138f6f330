//! Cutting off access tokens before they expire. Tokens are self-contained,
//! so revocation lives in the cache (shared by every replica through Redis)
//! for as long as a revoked token could still be presented. An in-process
//! cache forgets on restart, so without Redis the database says whether a
//! session still stands, asked at most every [`STANDING_TTL`] per session.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::Result;
use crate::ids::{ApiTokenId, UserId};
use crate::modules::auth::access::{ACCESS_TOKEN_TTL, Claims};
use crate::modules::auth::{Credential, sessions};

/// Where revocations are announced, so that every replica closes the live
/// connections that hold a revoked credential (checked only at connect
/// otherwise).
pub const CHANNEL: &str = "auth:revoked";

/// A revocation, as announced on [`CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// Every access token of these sessions.
    Sessions(Vec<uuid::Uuid>),
    ApiToken(ApiTokenId),
}

impl Revoked {
    /// Whether `credential` is one of those revoked.
    pub fn covers(&self, credential: &Credential) -> bool {
        match (self, credential) {
            (Self::Sessions(revoked), Credential::Session { session_id, .. }) => {
                revoked.contains(session_id)
            }
            (Self::ApiToken(revoked), Credential::ApiToken { token_id, .. }) => revoked == token_id,
            _ => false,
        }
    }
}

/// Tells every replica of a revocation. Requests are refused by the cache
/// mark or the database already; a lost announcement only leaves live
/// connections open until their credential expires, so it is logged, not
/// failed.
pub async fn announce(cache: &Cache, revoked: &Revoked) {
    let payload = serde_json::to_vec(revoked).expect("a revocation serialises");
    if let Err(err) = cache.publish(CHANNEL, &payload).await {
        tracing::warn!(error = format!("{err:#}"), "cannot announce a revocation");
    }
}

fn session_key(session_id: uuid::Uuid) -> String {
    format!("auth:revoked:sid:{session_id}")
}

/// Cuts off every access token of these sessions. Access tokens live at most
/// [`ACCESS_TOKEN_TTL`], so the mark need not outlive that.
pub async fn revoke_sessions(cache: &Cache, session_ids: &[uuid::Uuid]) -> Result<()> {
    let ttl = ACCESS_TOKEN_TTL.to_std().expect("positive");
    for id in session_ids {
        cache.set(&session_key(*id), b"1", Some(ttl)).await?;
    }
    if !session_ids.is_empty() {
        announce(cache, &Revoked::Sessions(session_ids.to_vec())).await;
    }
    Ok(())
}

/// Ends one session for good: its refresh tokens are revoked and every
/// access token it was issued stops working.
pub async fn end_session(db: &Database, cache: &Cache, session_id: uuid::Uuid) -> Result<()> {
    sessions::revoke_session(db, session_id).await?;
    revoke_sessions(cache, &[session_id]).await
}

/// Ends every session of `user_id` but `keep`; returns how many ended.
pub async fn end_sessions_of(
    db: &Database,
    cache: &Cache,
    user_id: UserId,
    keep: Option<uuid::Uuid>,
) -> Result<usize> {
    let ended = sessions::revoke_all(db, user_id, keep).await?;
    revoke_sessions(cache, &ended).await?;
    Ok(ended.len())
}

/// How long, without Redis, a session the database found standing is taken
/// as standing without asking again. Revocations made by this process take
/// effect at once (their cache mark is checked first); those made by another
/// process on the same database (`vmcloud admin set-password`) within this.
pub const STANDING_TTL: Duration = Duration::from_secs(2);

fn standing_key(session_id: uuid::Uuid) -> String {
    format!("auth:standing:sid:{session_id}")
}

/// Whether the token's session was ended.
pub async fn is_revoked(db: &Database, cache: &Cache, claims: &Claims) -> Result<bool> {
    if cache.any_exists(&[&session_key(claims.sid)]).await? {
        return Ok(true);
    }
    if cache.survives_restart() {
        return Ok(false);
    }
    let standing_mark = standing_key(claims.sid);
    if cache.any_exists(&[&standing_mark]).await? {
        return Ok(false);
    }
    let ended = sessions::is_ended(db, claims.sid).await?;
    if !ended {
        cache.set(&standing_mark, b"1", Some(STANDING_TTL)).await?;
    }
    Ok(ended)
}
