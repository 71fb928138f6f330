//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1
//! lane), computed off the async runtime because a hash takes tens of
//! milliseconds of CPU.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes to a PHC string (`$argon2id$v=19$…`) with a random salt.
pub async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.expose_secret().as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|err| anyhow::anyhow!("hashing a password failed: {err}"))
    })
    .await?
}

/// Whether `password` matches `phc`; a malformed hash never matches.
pub async fn verify(password: SecretString, phc: String) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|parsed| {
            hasher()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let first = hash("correct horse battery".into()).await.expect("hash");
        let second = hash("correct horse battery".into()).await.expect("hash");
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(
            verify("correct horse battery".into(), first.clone())
                .await
                .expect("verify")
        );
        assert!(
            !verify("wrong horse battery".into(), first)
                .await
                .expect("verify")
        );
        assert!(
            !verify("x".into(), "not a hash".into())
                .await
                .expect("verify")
        );
    }
}
