//! Parsing and checking the OpenSSH public key line a user pastes from
//! `~/.ssh/id_*.pub`, and the form we store it in.

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

use crate::error::FieldError;

/// Longest accepted input. An RSA-16384 key line is under 3 KiB, so anything
/// longer is not a single key; the cap also bounds the parsing work.
pub const MAX_INPUT_BYTES: usize = 16 * 1024;
/// Shorter RSA moduli are factorable with public effort (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// OpenSSH's own ceiling (`SSH_RSA_MAXIMUM_MODULUS_SIZE`): sshd refuses
/// larger keys, so accepting one would only make an instance unreachable.
pub const MAX_RSA_BITS: usize = 16384;

const FIELD: &str = "public_key";
const SUPPORTED: &str = "use ssh-ed25519 (recommended), ecdsa-sha2-nistp256/384/521, \
                         or ssh-rsa of at least 2048 bits";

/// A public key that passed every check, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPublicKey {
    /// `algorithm base64 [comment]`, single spaces, base64 re-encoded from the
    /// decoded key, ready for an `authorized_keys` file.
    pub openssh: String,
    /// The algorithm name, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `SHA256:` and the unpadded base64 SHA-256 of the key blob: what
    /// `ssh-keygen -l` and sshd's logs print.
    pub fingerprint: String,
    /// The comment, inner whitespace collapsed; empty when there is none.
    pub comment: String,
}

/// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`),
/// accepting only algorithms and sizes that are safe today.
pub fn parse(input: &str) -> Result<ParsedPublicKey, FieldError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(invalid(format!(
            "must be at most {MAX_INPUT_BYTES} bytes: paste a single public key"
        )));
    }
    if input.contains("PRIVATE KEY") {
        return Err(invalid(
            "is a private key: paste the public key (the .pub file) instead, \
             and keep the private key secret",
        ));
    }
    let line = input.trim();
    if line.is_empty() {
        return Err(invalid("is required"));
    }
    if line.contains(['\n', '\r']) {
        return Err(invalid("must be a single key on one line"));
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid("must not contain control characters"));
    }
    let mut parts = line.split_whitespace();
    let (Some(algorithm), Some(base64)) = (parts.next(), parts.next()) else {
        return Err(invalid(
            "is not an OpenSSH public key: expected `type base64-key [comment]`",
        ));
    };
    if algorithm == "ssh-dss" {
        return Err(dsa_rejected());
    }
    let comment = parts.collect::<Vec<_>>().join(" ");
    // The crate wants single spaces; tabs and runs of spaces from a copy and
    // paste were normalised above. It also checks that the algorithm named in
    // the text matches the one inside the blob, and that no bytes trail it.
    let mut key = PublicKey::from_openssh(&format!("{algorithm} {base64}"))
        .map_err(|_| invalid("is not a valid OpenSSH public key"))?;
    check_algorithm(key.key_data())?;
    let key_type = key.algorithm().as_str().to_owned();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    key.set_comment(comment.as_str());
    let openssh = key
        .to_openssh()
        .map_err(|_| invalid("is not a valid OpenSSH public key"))?;
    Ok(ParsedPublicKey {
        openssh,
        key_type,
        fingerprint,
        comment,
    })
}

fn check_algorithm(key: &KeyData) -> Result<(), FieldError> {
    match key {
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) => Ok(()),
        KeyData::Rsa(rsa) => {
            let modulus = rsa
                .n
                .as_positive_bytes()
                .ok_or_else(|| invalid("is not a valid RSA public key"))?;
            let bits = bit_length(modulus);
            if bits < MIN_RSA_BITS {
                Err(invalid(format!(
                    "is a {bits}-bit RSA key: RSA keys must be at least {MIN_RSA_BITS} bits \
                     (ssh-ed25519 is recommended)"
                )))
            } else if bits > MAX_RSA_BITS {
                Err(invalid(format!(
                    "is a {bits}-bit RSA key: OpenSSH accepts at most {MAX_RSA_BITS} bits"
                )))
            } else {
                Ok(())
            }
        }
        KeyData::Dsa(_) => Err(dsa_rejected()),
        _ => Err(invalid(format!("has an unsupported key type: {SUPPORTED}"))),
    }
}

/// The number of significant bits in a big-endian unsigned integer.
fn bit_length(big_endian: &[u8]) -> usize {
    let Some(first) = big_endian.iter().position(|&byte| byte != 0) else {
        return 0;
    };
    let top_byte_bits = 8 - big_endian[first].leading_zeros() as usize;
    (big_endian.len() - first - 1) * 8 + top_byte_bits
}

fn dsa_rejected() -> FieldError {
    invalid(format!(
        "is a DSA key, which OpenSSH no longer accepts: {SUPPORTED}"
    ))
}

fn invalid(message: impl Into<String>) -> FieldError {
    FieldError::new(FIELD, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_from_the_highest_set_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80]), 8);
        assert_eq!(bit_length(&[0, 0x7f, 0xff]), 15);
        assert_eq!(bit_length(&[0x01, 0x00, 0x00]), 17);
    }
}
