//! Access tokens: short-lived JWTs (HS256) naming the user, their role, the
//! session they belong to and, under impersonation, the admin behind it.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::db::entities::user::UserRole;
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::modules::auth::keys::KeyRing;

pub const ACCESS_TOKEN_TTL: Duration = Duration::minutes(15);
const ISSUER: &str = "vmcloud";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub role: UserRole,
    /// The session (refresh-token family) this token was issued for.
    pub sid: uuid::Uuid,
    pub jti: uuid::Uuid,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// The admin acting as `sub`, when impersonating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imp: Option<UserId>,
    /// Whether the account signs in with a second factor.
    #[serde(default)]
    pub mfa: bool,
}

impl Claims {
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or_else(Utc::now)
    }
}

/// What a fresh access token is issued for.
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    pub user_id: UserId,
    pub role: UserRole,
    pub session_id: uuid::Uuid,
    pub impersonator: Option<UserId>,
    pub two_factor: bool,
}

#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: String,
    pub claims: Claims,
}

pub fn issue(keys: &KeyRing, grant: Grant) -> Result<AccessToken> {
    let now = Utc::now();
    let claims = Claims {
        sub: grant.user_id,
        role: grant.role,
        sid: grant.session_id,
        jti: uuid::Uuid::new_v4(),
        iat: now.timestamp(),
        exp: (now + ACCESS_TOKEN_TTL).timestamp(),
        iss: ISSUER.to_owned(),
        imp: grant.impersonator,
        mfa: grant.two_factor,
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(keys.signing_kid().to_owned());
    let token = jsonwebtoken::encode(&header, &claims, keys.signing_key())
        .map_err(|err| Error::Internal(anyhow::anyhow!("signing an access token: {err}")))?;
    Ok(AccessToken { token, claims })
}

/// Checks signature, key id, issuer and expiry. Every failure is the same
/// 401 to the caller; revocation is checked separately, against the cache.
pub fn verify(keys: &KeyRing, token: &str) -> Result<Claims> {
    let rejected = || Error::Unauthorized("The access token is invalid or expired.".to_owned());
    let header = jsonwebtoken::decode_header(token).map_err(|_| rejected())?;
    if header.alg != Algorithm::HS256 {
        return Err(rejected());
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.verifying_key(kid))
        .ok_or_else(rejected)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|_| rejected())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use secrecy::SecretString;

    use super::*;
    use crate::modules::auth::keys::generate_key;

    fn ring(signing: &str, previous: &[&str]) -> KeyRing {
        let dir = tempfile::tempdir().expect("dir");
        let previous: Vec<SecretString> = previous.iter().map(|k| (*k).into()).collect();
        KeyRing::load(Some(&signing.into()), &previous, dir.path()).expect("ring")
    }

    fn grant() -> Grant {
        Grant {
            user_id: UserId::new(),
            role: UserRole::Customer,
            session_id: uuid::Uuid::now_v7(),
            impersonator: None,
            two_factor: false,
        }
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let keys = ring(&generate_key(), &[]);
        let grant = grant();
        let issued = issue(&keys, grant).expect("issue");
        let claims = verify(&keys, &issued.token).expect("verify");
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.sub, grant.user_id);
        assert_eq!(claims.exp - claims.iat, ACCESS_TOKEN_TTL.num_seconds());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_unknown_kids_fail() {
        let old_key = generate_key();
        let old = ring(&old_key, &[]);
        let token = issue(&old, grant()).expect("issue").token;
        let rotated = ring(&generate_key(), &[&old_key]);
        assert!(
            verify(&rotated, &token).is_ok(),
            "previous key still verifies"
        );
        let forgotten = ring(&generate_key(), &[]);
        assert!(verify(&forgotten, &token).is_err(), "unknown kid");
    }

    #[test]
    fn tampered_expired_and_foreign_tokens_fail() {
        let keys = ring(&generate_key(), &[]);
        let token = issue(&keys, grant()).expect("issue").token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).expect("b64")).expect("json");
        payload["role"] = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(verify(&keys, &parts.join(".")).is_err(), "bad signature");

        let mut claims = verify(&keys, &token).expect("valid");
        claims.exp = Utc::now().timestamp() - 60;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.signing_kid().to_owned());
        let expired = jsonwebtoken::encode(&header, &claims, keys.signing_key()).expect("encode");
        assert!(verify(&keys, &expired).is_err(), "expired");

        assert!(verify(&keys, "not.a.jwt").is_err());
        assert!(verify(&keys, "").is_err());
    }
}
