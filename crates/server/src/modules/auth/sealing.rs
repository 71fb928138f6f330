//! Secrets the platform must read back (TOTP seeds) are sealed before they
//! are stored: XChaCha20-Poly1305 under a key kept outside the database, in
//! `data_dir/secrets.key` (0600, created on first start), and bound to their
//! account (the user id is the associated data), so a sealed value copied
//! onto another account does not open.
//!
//! The key file holds one `KID:SECRET` line per key: the first seals, every
//! one opens. To rotate, put a new key on the first line; the next start
//! re-seals every stored secret with it, after which the old lines can go.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore as _;

use crate::ids::UserId;
use crate::modules::auth::keys::{parse_key, read_or_create_key_file};

/// The key file under the data directory.
pub const KEY_FILE: &str = "secrets.key";
/// Marks a sealed value: `sealed:v1:<kid>:<base64url(nonce ‖ ciphertext)>`.
const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 24;

/// The sealing key and every key that still opens.
#[derive(Clone)]
pub struct Sealer {
    current_kid: String,
    ciphers: HashMap<String, XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current_kid", &self.current_kid)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// From the key file under `data_dir`, created with one key if missing.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let text = read_or_create_key_file(data_dir, KEY_FILE)?;
        Self::from_lines(&text).with_context(|| format!("{}", data_dir.join(KEY_FILE).display()))
    }

    fn from_lines(text: &str) -> anyhow::Result<Self> {
        let mut current_kid = None;
        let mut ciphers = HashMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = parse_key(line)?;
            anyhow::ensure!(key.secret.len() == 32, "a sealing key is 32 bytes");
            let cipher = XChaCha20Poly1305::new(&Key::try_from(key.secret.as_slice())?);
            current_kid.get_or_insert_with(|| key.kid.clone());
            ciphers.insert(key.kid, cipher);
        }
        Ok(Self {
            current_kid: current_kid.context("no key in the file")?,
            ciphers,
        })
    }

    /// Seals `secret` for `owner` under the current key.
    pub fn seal(&self, secret: &str, owner: UserId) -> anyhow::Result<String> {
        let mut nonce = [0_u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self.ciphers[&self.current_kid]
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: owner.to_string().as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            self.current_kid,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// The secret `stored` holds for `owner`. A value stored before sealing
    /// existed is the secret itself.
    pub fn open(&self, stored: &str, owner: UserId) -> anyhow::Result<String> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (kid, blob) = sealed
            .split_once(':')
            .context("a sealed value names its key")?;
        let cipher = self
            .ciphers
            .get(kid)
            .with_context(|| format!("no key {kid:?} in {KEY_FILE} to open a stored secret"))?;
        let blob = URL_SAFE_NO_PAD
            .decode(blob)
            .context("a sealed value is base64url")?;
        anyhow::ensure!(blob.len() > NONCE_BYTES, "a sealed value is too short");
        let (nonce, ciphertext) = blob.split_at(NONCE_BYTES);
        let opened = cipher
            .decrypt(
                &XNonce::try_from(nonce)?,
                Payload {
                    msg: ciphertext,
                    aad: owner.to_string().as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("a stored secret does not open (wrong key or account)"))?;
        String::from_utf8(opened).context("a sealed secret is text")
    }

    /// Whether `stored` is sealed under the current key already.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|sealed| sealed.split_once(':'))
            .is_some_and(|(kid, _)| kid == self.current_kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::auth::keys::generate_key;

    #[test]
    fn sealed_secrets_open_for_their_owner_only() {
        let sealer = Sealer::from_lines(&generate_key()).expect("sealer");
        let ada = UserId::new();
        let sealed = sealer.seal("JBSWY3DPEHPK3PXP", ada).expect("seal");
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(
            sealed,
            sealer.seal("JBSWY3DPEHPK3PXP", ada).expect("seal"),
            "fresh nonce"
        );
        assert_eq!(sealer.open(&sealed, ada).expect("open"), "JBSWY3DPEHPK3PXP");
        assert!(
            sealer.open(&sealed, UserId::new()).is_err(),
            "another account"
        );
        let other = Sealer::from_lines(&generate_key()).expect("sealer");
        assert!(other.open(&sealed, ada).is_err(), "another key");
        assert_eq!(
            sealer.open("JBSWY3DPEHPK3PXP", ada).expect("legacy"),
            "JBSWY3DPEHPK3PXP",
            "a secret stored before sealing reads as itself"
        );
    }

    #[test]
    fn a_rotation_keeps_old_values_open_and_seals_with_the_first_key() {
        let old_key = generate_key();
        let old = Sealer::from_lines(&old_key).expect("sealer");
        let owner = UserId::new();
        let sealed = old.seal("SECRET", owner).expect("seal");
        let rotated = Sealer::from_lines(&format!("{}\n{old_key}\n", generate_key())).expect("two");
        assert!(old.is_current(&sealed));
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open(&sealed, owner).expect("open"), "SECRET");
        assert!(rotated.is_current(&rotated.seal("SECRET", owner).expect("seal")));
        assert!(
            !rotated.is_current("SECRET"),
            "a legacy value is not sealed"
        );
    }
}
