//! SSH keys: what is accepted and refused, fingerprints identical to
//! OpenSSH's, and that a user only ever sees their own keys.

use crate::common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sea_orm::ActiveModelTrait as _;
use sea_orm::ActiveValue::Set;
use vmcloud_server::db::Database;
use vmcloud_server::db::entities::user;
use vmcloud_server::error::Error;
use vmcloud_server::ids::{SshKeyId, UserId};
use vmcloud_server::modules::ssh_keys::{self, NewSshKey, SshKeyView, public_key};
use vmcloud_server::pagination::{PageRequest, decode_cursor};

/// Keys made with `ssh-keygen` (OpenSSH 9.2) and the fingerprints
/// `ssh-keygen -lf` printed for them: (line, type, fingerprint).
const KNOWN_KEYS: &[(&str, &str, &str)] = &[
    (
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHszcN16cNibW4E8Qt68clqZXEEST0ODrpXvO2HS+tWG user@host-ed25519",
        "ssh-ed25519",
        "SHA256:WcANJIwu7bDFoWGpFesrqvP+CeW8M01DislUDIzLgEI",
    ),
    (
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBL+NO9Ikva277M70n+yt9rLBWknwoEktmNYHmoI5RcPAXIuwsjWKjF9BgkzVuenp4K8SIDlhjosZ+WUBam28YQo= user@host-ecdsa256",
        "ecdsa-sha2-nistp256",
        "SHA256:eiVAne8ElgZbJ1vEVB79UPMQOrfgU2Tc2nqwYOP163o",
    ),
    (
        "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBN1mmdzfZNaJ9skWKzvpFcOEygX4JMhicBYNJ93MF+2u/oeGyxo1S6lfUu4c5502sV2QfGRU+jwik/DZ1tnA7q8NJ/m5QmXHpZRbSPdwQmyWF+poH+p0oJlfsoqYfV9Zuw== user@host-ecdsa384",
        "ecdsa-sha2-nistp384",
        "SHA256:3jhjS6jGcqv4flYi+YJCXoE1J3ejzCWmpHYUPV+1wXs",
    ),
    (
        "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAHL/YJxmczEqoH3IVXeSsDRAx5bHs8dqXrUY6Hj6wSTCJABx8fU64UKOdioZDtFDDJfPz7GkBDMxkgU2PUuz3W4VgBvXLiZTyS9POgzXSPEoxYSEeROeRaTYtuj+vvIvx0uEGASqIjHOccXPRC8s3SNsUrRuONqgS4tu4fVr6yS8UglxQ== user@host-ecdsa521",
        "ecdsa-sha2-nistp521",
        "SHA256:4R14jF/BKV8sS7N6hH3IE+Klw3hEO+8GCrvqveUi4qs",
    ),
    (
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCrBvVvAcQRHFx5Sk3nnrJ/BCGQwy74jyOCuz9tSls44KGdf+PnEUGdDK+nKYQcheS1ax11I0qLmcw7mqZokUEL6l3uQq2qN2NnVI6IHKY07h/dBb7akaYcezgAVfFOrk1aiMeXUiBea+yoSw0q3LE4nUhMLw65I2uMLE1Bz3VqGegpR6572hfvpmWWjYg6azRleHID/PIJqJ+q1QUehbcz8qnZtJhXcgRb25I5ykad8Rgj7t6Q/E0neIJDv7z0+RGtH4CXRK/1c0HILkYmWF8trbjreV2RAE+dgFd14pP9H378AEW6076FkAcw5yCVbIvKiSo5WNl78h8U5MFs8xnr user@host-rsa2048",
        "ssh-rsa",
        "SHA256:BTE7jiT+68kTbR5MMqe1WFqxI+QYz9vFVFDPafzPtHk",
    ),
];

const ED25519: &str = KNOWN_KEYS[0].0;
const ECDSA256: &str = KNOWN_KEYS[1].0;

/// Generated with `ssh-keygen -t rsa -b 1024`; `ssh-keygen -lf` printed
/// `1024 SHA256:rLxuenG1a0uwdZCtGRf/F2vlt60o7vyADFO45f5AgoU`.
const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDEgxZ2NXWPkfrfaGMU+MFrWD+X48tFdHSfI5hviJWkrsyOfdLY8Fkiv5b7PHlnGUn4NsCyKgicIomDEMTVT8mUUCxWBpt/HPsMlD7RD7D+XfUyVRHMCiaNy4ipCSeyXxQvcCR2+SR6c4GvYOn7reL73bMi861kFQuyB6IrRVanCQ== user@host-rsa1024";

/// Generated with `ssh-keygen -t dsa`.
const DSA_1024: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAOnIxhtQ1Io831vSt1DE2ND6e1ilKa/qC0yAHg28Q19wq1gEuEiyVOuU7fFk7OdgKR77bwDTqoU3KHb+CqZE5PDIpwurKySaSsdO0dcg9G4DR+50JYs9Zm6rcQZgsAlIAH0CPn1ljrqJNa6cpe4LJKzBtGPyx/nQ8TClBgD2tRpbAAAAFQD3RbM6iFXm3NYmAM6WBmbO5F8nTwAAAIACvA1ewDrxbEVl+FEr4fwpjuL30PjLWjkR9jq/PqVZPJSsHZ/5bIYBxClVYUNDMfaklnEOmdlgjgQihKs0vHAPh8rwtWR6ik9sT9HVqdyHv5vwV/lLYtcpWt5Gf9oVbToUjm7kO16d716+6OXtv5lMgBPiulSkAuoP4fmNSizAgwAAAIEAtESwsM6jN/A2YB8KfHRSd3l6LgHV9hQwRFPOBSiwuFkCNxTn1+Q2pFyIJ5+icPRJfgkN25r1htT4QiG2dmQspYnCTqt4U9tMnUEQroApPOeGpEtEkIQDGCCPCeMQlHEhtFV5wSqRvTyNKE8TW3KrhqtlgHGQBx76c6ztn3+JCc0= user@host-dsa1024";

async fn setup() -> (common::TestDatabase, Database) {
    let test_db = common::TestDatabase::fresh().await;
    let db = test_db.connect().await;
    (test_db, db)
}

async fn new_user(db: &Database, email: &str) -> UserId {
    user::ActiveModel {
        email: Set(email.to_owned()),
        name: Set("Test User".to_owned()),
        password_hash: Set("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        role: Set(user::UserRole::Customer),
        status: Set(user::UserStatus::Active),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .expect("insert user")
    .id
}

fn new_key(public_key: &str) -> NewSshKey {
    NewSshKey {
        name: None,
        public_key: public_key.to_owned(),
    }
}

async fn add(db: &Database, owner: UserId, public_key: &str) -> SshKeyView {
    ssh_keys::create(db, owner, new_key(public_key))
        .await
        .expect("key accepted")
}

/// The messages of a validation error, per field, in order.
fn field_errors(result: Result<SshKeyView, Error>) -> Vec<(String, String)> {
    match result {
        Err(Error::Validation { fields, .. }) => fields
            .into_iter()
            .map(|field| (field.field, field.message))
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// The one `public_key` error for `input`, checked to mention `expected`.
async fn assert_key_rejected(db: &Database, owner: UserId, input: &str, expected: &str) {
    let errors = field_errors(ssh_keys::create(db, owner, new_key(input)).await);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let (field, message) = &errors[0];
    assert_eq!(field, "public_key");
    assert!(
        message.contains(expected),
        "for {:?}: {message:?} does not mention {expected:?}",
        input.get(..60).unwrap_or(input)
    );
}

/// `bytes` as an SSH wire-format string (u32 length, then the bytes).
fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("short").to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An `ssh-rsa` line whose modulus has exactly `bits` significant bits.
fn rsa_line_with_modulus_bits(bits: usize) -> String {
    let len = bits.div_ceil(8);
    let mut modulus = vec![0x5a_u8; len];
    modulus[0] = 1 << (bits - (len - 1) * 8 - 1);
    modulus[len - 1] |= 1;
    // A positive mpint whose top bit is set needs a leading zero byte.
    if modulus[0] & 0x80 != 0 {
        modulus.insert(0, 0);
    }
    let mut blob = Vec::new();
    ssh_string(&mut blob, b"ssh-rsa");
    ssh_string(&mut blob, &[0x01, 0x00, 0x01]);
    ssh_string(&mut blob, &modulus);
    format!("ssh-rsa {} built-{bits}", STANDARD.encode(blob))
}

#[tokio::test]
async fn accepts_ed25519_ecdsa_and_rsa_with_openssh_fingerprints() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    for (line, key_type, fingerprint) in KNOWN_KEYS {
        let key = add(&db, owner, line).await;
        assert_eq!(key.key_type, *key_type);
        assert_eq!(key.fingerprint, *fingerprint, "{key_type}");
        assert_eq!(key.public_key, *line, "already normalised input is kept");
        assert_eq!(
            key.name,
            line.rsplit(' ').next().expect("comment"),
            "the name defaults to the comment"
        );
        assert_eq!(ssh_keys::get(&db, owner, key.id).await.expect("get"), key);
    }
}

#[tokio::test]
async fn rsa_size_is_counted_exactly_from_the_modulus() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    assert_key_rejected(&db, owner, RSA_1024, "1024-bit").await;
    assert_key_rejected(&db, owner, &rsa_line_with_modulus_bits(2047), "2047-bit").await;
    assert_key_rejected(&db, owner, &rsa_line_with_modulus_bits(16385), "16385-bit").await;
    for bits in [2048, 3071, 16384] {
        let key = add(&db, owner, &rsa_line_with_modulus_bits(bits)).await;
        assert_eq!(key.key_type, "ssh-rsa");
        assert_eq!(key.name, format!("built-{bits}"));
    }
}

#[tokio::test]
async fn refuses_what_is_not_one_safe_public_key() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let ed25519_blob = ED25519.split(' ').nth(1).expect("blob");
    let private_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
        b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
        -----END OPENSSH PRIVATE KEY-----\n";
    let cases: Vec<(String, &str)> = vec![
        (DSA_1024.to_owned(), "DSA"),
        // DSA named as something else is still found inside the blob.
        (DSA_1024.replacen("ssh-dss", "ssh-rsa", 1), "not a valid"),
        (String::new(), "is required"),
        ("   \n ".to_owned(), "is required"),
        ("hello world".to_owned(), "not a valid"),
        ("ssh-ed25519".to_owned(), "expected `type base64-key"),
        (
            format!("ssh-ed25519 {}", &ed25519_blob[..40]),
            "not a valid",
        ),
        (format!("ssh-ed25519 {ed25519_blob}AAAA"), "not a valid"),
        (format!("ssh-rsa {ed25519_blob} mismatch"), "not a valid"),
        (format!("ssh-ed25519 !{ed25519_blob}"), "not a valid"),
        (format!("no-pty {ED25519}"), "not a valid"),
        (format!("ssh-foo {ed25519_blob}"), "not a valid"),
        (private_key.to_owned(), "private key"),
        (
            private_key.replace('\n', " "),
            "private key", // flattened onto one line, still refused
        ),
        (format!("{ED25519}\n{ECDSA256}"), "single key on one line"),
        (
            format!("{ED25519}\r\n{ECDSA256}\r\n"),
            "single key on one line",
        ),
        (format!("{ED25519} bell\u{7}"), "control characters"),
        (
            format!("ssh-ed25519 {}", "A".repeat(public_key::MAX_INPUT_BYTES)),
            "at most 16384 bytes",
        ),
    ];
    for (input, expected) in &cases {
        assert_key_rejected(&db, owner, input, expected).await;
    }
    let listed = ssh_keys::list(&db, owner, PageRequest::default())
        .await
        .expect("list");
    assert!(listed.items.is_empty(), "nothing refused was stored");
}

#[tokio::test]
async fn pasted_whitespace_is_normalised_and_names_default_sensibly() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let (algorithm, blob) = ED25519
        .split_once(' ')
        .map(|(a, rest)| (a, rest.split(' ').next().expect("blob")))
        .expect("line");

    let messy = format!("  {algorithm}\t {blob}   my   laptop key \n");
    let key = add(&db, owner, &messy).await;
    assert_eq!(key.public_key, format!("{algorithm} {blob} my laptop key"));
    assert_eq!(key.name, "my laptop key");
    ssh_keys::delete(&db, owner, key.id).await.expect("delete");

    let key = add(&db, owner, &format!("{algorithm} {blob}")).await;
    assert_eq!(key.public_key, format!("{algorithm} {blob}"));
    assert_eq!(key.name, "ssh-ed25519", "no comment: the type names it");
    ssh_keys::delete(&db, owner, key.id).await.expect("delete");

    let long_comment = "c".repeat(150);
    let key = add(&db, owner, &format!("{algorithm} {blob} {long_comment}")).await;
    assert_eq!(key.name, "c".repeat(ssh_keys::MAX_NAME_CHARS));
    assert!(
        key.public_key.ends_with(&long_comment),
        "the key keeps it all"
    );
    ssh_keys::delete(&db, owner, key.id).await.expect("delete");

    let named = |name: &str| NewSshKey {
        name: Some(name.to_owned()),
        public_key: ED25519.to_owned(),
    };
    let key = ssh_keys::create(&db, owner, named("  Work  "))
        .await
        .expect("named");
    assert_eq!(key.name, "Work");
    ssh_keys::delete(&db, owner, key.id).await.expect("delete");
    let key = ssh_keys::create(&db, owner, named("   "))
        .await
        .expect("blank name");
    assert_eq!(key.name, "user@host-ed25519", "a blank name is no name");
    ssh_keys::delete(&db, owner, key.id).await.expect("delete");

    let errors = field_errors(ssh_keys::create(&db, owner, named(&"n".repeat(101))).await);
    assert_eq!(
        errors,
        vec![(
            "name".to_owned(),
            "must be at most 100 characters".to_owned()
        )]
    );
    let errors = field_errors(ssh_keys::create(&db, owner, named("tab\there")).await);
    assert_eq!(errors[0].0, "name");
    // Both fields are reported at once.
    let errors = field_errors(
        ssh_keys::create(
            &db,
            owner,
            NewSshKey {
                name: Some("n".repeat(101)),
                public_key: "garbage".to_owned(),
            },
        )
        .await,
    );
    let fields: Vec<&str> = errors.iter().map(|(field, _)| field.as_str()).collect();
    assert_eq!(fields, ["public_key", "name"]);
}

#[tokio::test]
async fn a_key_is_held_once_per_user_but_users_may_share_it() {
    let (_guard, db) = setup().await;
    let alice = new_user(&db, "alice@example.com").await;
    let bob = new_user(&db, "bob@example.com").await;
    let first = add(&db, alice, ED25519).await;

    // Same key, other comment and name: still the same key.
    let (algorithm, rest) = ED25519.split_once(' ').expect("line");
    let blob = rest.split(' ').next().expect("blob");
    let again = ssh_keys::create(
        &db,
        alice,
        NewSshKey {
            name: Some("again".to_owned()),
            public_key: format!("{algorithm} {blob} other-comment"),
        },
    )
    .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");

    let bobs = add(&db, bob, ED25519).await;
    assert_eq!(bobs.fingerprint, first.fingerprint);
    assert_ne!(bobs.id, first.id);
}

#[tokio::test]
async fn lists_page_by_cursor_newest_first() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let other = new_user(&db, "bob@example.com").await;
    add(&db, other, KNOWN_KEYS[3].0).await;
    let mut created = Vec::new();
    for (line, _, _) in &KNOWN_KEYS[..3] {
        created.push(add(&db, owner, line).await);
    }

    let first = ssh_keys::list(
        &db,
        owner,
        PageRequest {
            limit: 2,
            after: None,
        },
    )
    .await
    .expect("first page");
    assert_eq!(first.items, vec![created[2].clone(), created[1].clone()]);
    let cursor = first.next_cursor.expect("a second page");

    let second = ssh_keys::list(
        &db,
        owner,
        PageRequest {
            limit: 2,
            after: Some(decode_cursor(&cursor).expect("our cursor")),
        },
    )
    .await
    .expect("second page");
    assert_eq!(second.items, vec![created[0].clone()]);
    assert_eq!(second.next_cursor, None);
}

#[tokio::test]
async fn another_users_key_does_not_exist_for_them() {
    let (_guard, db) = setup().await;
    let alice = new_user(&db, "alice@example.com").await;
    let bob = new_user(&db, "bob@example.com").await;
    let key = add(&db, alice, ED25519).await;

    assert!(matches!(
        ssh_keys::get(&db, bob, key.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ssh_keys::delete(&db, bob, key.id).await,
        Err(Error::NotFound(_))
    ));
    let bobs = ssh_keys::list(&db, bob, PageRequest::default())
        .await
        .expect("list");
    assert!(bobs.items.is_empty());
    assert_eq!(
        ssh_keys::get(&db, alice, key.id)
            .await
            .expect("still there"),
        key
    );

    ssh_keys::delete(&db, alice, key.id)
        .await
        .expect("owner deletes");
    assert!(matches!(
        ssh_keys::get(&db, alice, key.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ssh_keys::delete(&db, alice, key.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        ssh_keys::get(&db, alice, SshKeyId::new()).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn instance_keys_must_all_belong_to_the_user() {
    let (_guard, db) = setup().await;
    let alice = new_user(&db, "alice@example.com").await;
    let bob = new_user(&db, "bob@example.com").await;
    let a1 = add(&db, alice, ED25519).await;
    let a2 = add(&db, alice, ECDSA256).await;
    let b1 = add(&db, bob, ED25519).await;

    let chosen = ssh_keys::keys_for_instance(&db, alice, &[a2.id, a1.id, a2.id])
        .await
        .expect("own keys");
    assert_eq!(
        chosen,
        vec![a2.clone(), a1.clone()],
        "given order, once each"
    );
    assert_eq!(
        ssh_keys::keys_for_instance(&db, alice, &[])
            .await
            .expect("none"),
        Vec::new()
    );
    for ids in [vec![a1.id, b1.id], vec![SshKeyId::new()]] {
        let result = ssh_keys::keys_for_instance(&db, alice, &ids).await;
        assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
    }
}

/// Whatever `ssh-keygen` on this machine generates, we fingerprint exactly
/// as it does; the private half of each pair is refused. Skipped where
/// OpenSSH is not installed: `KNOWN_KEYS` cover the same ground from
/// recorded output.
#[test]
fn fingerprints_match_ssh_keygen_on_freshly_generated_keys() {
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!("ssh-keygen not installed: relying on the recorded KNOWN_KEYS");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let specs: &[(&str, Option<&str>, &str)] = &[
        ("ed25519", None, "ssh-ed25519"),
        ("ecdsa", Some("256"), "ecdsa-sha2-nistp256"),
        ("ecdsa", Some("384"), "ecdsa-sha2-nistp384"),
        ("ecdsa", Some("521"), "ecdsa-sha2-nistp521"),
        ("rsa", Some("2048"), "ssh-rsa"),
        ("rsa", Some("3072"), "ssh-rsa"),
    ];
    for (kind, bits, key_type) in specs {
        let path = dir.path().join(format!("{kind}{}", bits.unwrap_or("")));
        let mut generate = Command::new("ssh-keygen");
        generate.args(["-q", "-t", kind, "-N", "", "-C", "generated@test", "-f"]);
        generate.arg(&path);
        if let Some(bits) = bits {
            generate.args(["-b", bits]);
        }
        let status = generate.status().expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen -t {kind} failed");

        let public_path = path.with_extension("pub");
        let line = std::fs::read_to_string(&public_path).expect("public key");
        let parsed = public_key::parse(&line).expect("generated key accepted");
        assert_eq!(parsed.key_type, *key_type);
        assert_eq!(parsed.openssh, line.trim());
        assert_eq!(
            parsed.fingerprint,
            keygen_fingerprint(&public_path),
            "{kind}"
        );

        let private = std::fs::read_to_string(&path).expect("private key");
        let refused = public_key::parse(&private).expect_err("private key refused");
        assert!(refused.message.contains("private key"), "{refused:?}");
    }
}

/// The `SHA256:…` field of `ssh-keygen -lf path`.
fn keygen_fingerprint(path: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .args(["-E", "sha256", "-lf"])
        .arg(path)
        .output()
        .expect("run ssh-keygen -l");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}
