//! Cutting off access tokens before they expire. Tokens are self-contained,
//! so revocation lives in the cache (shared by every replica through Redis)
//! for as long as a revoked token could still be presented.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::Result;
use crate::ids::ApiTokenId;
use crate::modules::auth::Credential;
use crate::modules::auth::access::{ACCESS_TOKEN_TTL, Claims};

/// Where revocations are announced, so that every replica closes the live
/// connections that hold a revoked credential (checked only at connect
/// otherwise).
pub const CHANNEL: &str = "auth:revoked";

/// A revocation, as announced on [`CHANNEL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// One access token (its `jti`): a logout.
    AccessToken(uuid::Uuid),
    /// Every access token of these sessions.
    Sessions(Vec<uuid::Uuid>),
    ApiToken(ApiTokenId),
}

impl Revoked {
    /// Whether `credential` is one of those revoked.
    pub fn covers(&self, credential: &Credential) -> bool {
        match (self, credential) {
            (Self::AccessToken(revoked), Credential::Session { jti, .. }) => revoked == jti,
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

fn jti_key(jti: uuid::Uuid) -> String {
    format!("auth:revoked:jti:{jti}")
}

fn session_key(session_id: uuid::Uuid) -> String {
    format!("auth:revoked:sid:{session_id}")
}

fn ttl_until(expires_at: chrono::DateTime<Utc>) -> Option<std::time::Duration> {
    (expires_at - Utc::now())
        .to_std()
        .ok()
        .filter(|ttl| !ttl.is_zero())
}

/// Blacklists one access token until it expires (logout).
pub async fn revoke_access_token(
    cache: &Cache,
    jti: uuid::Uuid,
    expires_at: chrono::DateTime<Utc>,
) -> Result<()> {
    if let Some(ttl) = ttl_until(expires_at) {
        cache.set(&jti_key(jti), b"1", Some(ttl)).await?;
    }
    announce(cache, &Revoked::AccessToken(jti)).await;
    Ok(())
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

/// Whether the token or its session was revoked, in one cache round trip.
pub async fn is_revoked(cache: &Cache, claims: &Claims) -> Result<bool> {
    let keys = [jti_key(claims.jti), session_key(claims.sid)];
    Ok(cache.any_exists(&[&keys[0], &keys[1]]).await?)
}
