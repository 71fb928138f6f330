//! The keys access tokens are signed with. Each has a key id (`kid`) written
//! in the token header, so a rotation keeps tokens signed by the previous key
//! verifiable until they expire.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};

/// Where a generated key is kept when none is configured, so the embedded
/// default survives restarts without logging everyone out.
pub const GENERATED_KEY_FILE: &str = "jwt-signing.key";
const MIN_SECRET_BYTES: usize = 32;

/// The signing key and every key still accepted for verification.
#[derive(Clone)]
pub struct KeyRing {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.verifying.keys().collect();
        kids.sort();
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field("verifying_kids", &kids)
            .finish_non_exhaustive()
    }
}

pub(crate) struct ParsedKey {
    pub(crate) kid: String,
    pub(crate) secret: Vec<u8>,
}

/// Parses `KID:SECRET` with SECRET in base64url (padded or not): the form
/// of every key the platform keeps (JWT signing, secret sealing).
pub(crate) fn parse_key(text: &str) -> anyhow::Result<ParsedKey> {
    let (kid, secret) = text
        .trim()
        .split_once(':')
        .context("a key must be written KID:SECRET")?;
    anyhow::ensure!(
        !kid.is_empty()
            && kid.len() <= 64
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "a key id must be 1 to 64 letters, digits, '-' or '_'"
    );
    let secret = URL_SAFE_NO_PAD
        .decode(secret.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(secret))
        .context("a key secret must be base64url")?;
    anyhow::ensure!(
        secret.len() >= MIN_SECRET_BYTES,
        "a key secret must be at least {MIN_SECRET_BYTES} bytes"
    );
    Ok(ParsedKey {
        kid: kid.to_owned(),
        secret,
    })
}

/// A fresh key in the `KID:SECRET` form.
pub fn generate_key() -> String {
    let mut secret = [0_u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut kid = [0_u8; 4];
    rand::rng().fill_bytes(&mut kid);
    format!("{}:{}", hex::encode(kid), URL_SAFE_NO_PAD.encode(secret))
}

impl KeyRing {
    /// From the configured keys, or — when none is configured — from the key
    /// file under the data directory, created on first start.
    pub fn load(
        signing: Option<&SecretString>,
        previous: &[SecretString],
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let signing = match signing {
            Some(key) => parse_key(key.expose_secret()).context("jwt_signing_key")?,
            None => parse_key(&read_or_create_key_file(data_dir, GENERATED_KEY_FILE)?)
                .context("the generated JWT key file is corrupt")?,
        };
        let mut verifying = HashMap::new();
        for key in previous {
            let key = parse_key(key.expose_secret()).context("jwt_previous_keys")?;
            verifying.insert(key.kid, DecodingKey::from_secret(&key.secret));
        }
        verifying.insert(
            signing.kid.clone(),
            DecodingKey::from_secret(&signing.secret),
        );
        Ok(Self {
            signing_kid: signing.kid,
            signing: EncodingKey::from_secret(&signing.secret),
            verifying,
        })
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    pub(super) fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    pub(super) fn verifying_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifying.get(kid)
    }
}

/// The contents of the key file `name` under the data directory, created
/// with a fresh key (0600) on first start.
pub(crate) fn read_or_create_key_file(data_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text);
    }
    crate::private_files::create_dir(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let key = generate_key();
    write_private(&path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a key");
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_and_checked() {
        let key = generate_key();
        assert!(parse_key(&key).is_ok());
        assert!(parse_key("no-separator").is_err());
        assert!(parse_key("k1:c2hvcnQ").is_err(), "too short");
        assert!(parse_key("bad kid:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_err());
        assert!(parse_key("k1:not base64!").is_err());
    }

    #[test]
    fn a_generated_key_is_kept_and_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let first = KeyRing::load(None, &[], dir.path()).expect("generated");
        let second = KeyRing::load(None, &[], dir.path()).expect("reloaded");
        assert_eq!(first.signing_kid(), second.signing_kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(GENERATED_KEY_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
