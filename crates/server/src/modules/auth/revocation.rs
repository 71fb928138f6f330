//! Cutting off access tokens before they expire. Tokens are self-contained,
//! so revocation lives in the cache (shared by every replica through Redis)
//! for as long as a revoked token could still be presented.

use chrono::Utc;

use crate::cache::Cache;
use crate::error::Result;
use crate::modules::auth::access::{ACCESS_TOKEN_TTL, Claims};

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
    Ok(())
}

/// Cuts off every access token of these sessions. Access tokens live at most
/// [`ACCESS_TOKEN_TTL`], so the mark need not outlive that.
pub async fn revoke_sessions(cache: &Cache, session_ids: &[uuid::Uuid]) -> Result<()> {
    let ttl = ACCESS_TOKEN_TTL.to_std().expect("positive");
    for id in session_ids {
        cache.set(&session_key(*id), b"1", Some(ttl)).await?;
    }
    Ok(())
}

/// Whether the token or its session was revoked, in one cache round trip.
pub async fn is_revoked(cache: &Cache, claims: &Claims) -> Result<bool> {
    let keys = [jti_key(claims.jti), session_key(claims.sid)];
    Ok(cache.any_exists(&[&keys[0], &keys[1]]).await?)
}
