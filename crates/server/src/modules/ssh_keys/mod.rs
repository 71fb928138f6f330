//! A user's SSH public keys, installed on the instances they create.
//!
//! Every function takes the owner's id and every query filters on it, so a
//! key of another user is indistinguishable from one that does not exist.

pub mod public_key;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use crate::db::Database;
use crate::db::entities::ssh_key;
use crate::error::{Error, FieldError, Result};
use crate::ids::{SshKeyId, UserId};
use crate::pagination::{Page, PageRequest, fetch_page};

pub const MAX_NAME_CHARS: usize = 100;

/// What a user submits to add a key.
/// Checked field by field by the service, which reports every problem at
/// once.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema, garde::Validate)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewSshKey {
    /// A label; defaults to the key's comment, or its type when it has none.
    pub name: Option<String>,
    /// One line of an OpenSSH `.pub` file: `ssh-ed25519 AAAA… comment`.
    pub public_key: String,
}

/// An SSH key as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SshKeyView {
    pub id: SshKeyId,
    pub name: String,
    /// Normalised `authorized_keys` line: `type base64 [comment]`.
    pub public_key: String,
    /// e.g. `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub key_type: String,
    /// As `ssh-keygen -l` prints it: `SHA256:…`.
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
}

impl From<ssh_key::Model> for SshKeyView {
    fn from(row: ssh_key::Model) -> Self {
        Self {
            id: row.id,
            name: row.name,
            public_key: row.public_key,
            key_type: row.key_type,
            fingerprint: row.fingerprint,
            created_at: row.created_at,
        }
    }
}

/// Adds a key to `owner`'s account. The same key twice on one account is a
/// conflict; different accounts may hold the same key.
pub async fn create(db: &Database, owner: UserId, new: NewSshKey) -> Result<SshKeyView> {
    let (parsed, name) = match (
        public_key::parse(&new.public_key),
        validate_given_name(new.name.as_deref()),
    ) {
        (Ok(parsed), Ok(name)) => {
            let name = name.unwrap_or_else(|| default_name(&parsed));
            (parsed, name)
        }
        (parsed, name) => {
            let fields = parsed.err().into_iter().chain(name.err()).collect();
            return Err(Error::invalid(fields));
        }
    };
    let row = ssh_key::ActiveModel {
        user_id: Set(owner),
        name: Set(name),
        public_key: Set(parsed.openssh),
        key_type: Set(parsed.key_type),
        fingerprint: Set(parsed.fingerprint),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .map_err(|err| Error::on_duplicate(err, "This SSH key is already on your account."))?;
    Ok(row.into())
}

/// `owner`'s keys, newest first.
pub async fn list(db: &Database, owner: UserId, page: PageRequest) -> Result<Page<SshKeyView>> {
    let select = ssh_key::Entity::find().filter(ssh_key::Column::UserId.eq(owner));
    let rows = fetch_page(db.reader(), select, ssh_key::Column::Id, page, |row| {
        row.id.0
    })
    .await?;
    Ok(rows.map(SshKeyView::from))
}

/// One of `owner`'s keys.
pub async fn get(db: &Database, owner: UserId, id: SshKeyId) -> Result<SshKeyView> {
    ssh_key::Entity::find_by_id(id)
        .filter(ssh_key::Column::UserId.eq(owner))
        .one(db.reader())
        .await?
        .map(SshKeyView::from)
        .ok_or_else(|| Error::not_found("SSH key"))
}

/// Removes one of `owner`'s keys. Instances already built keep it in their
/// `authorized_keys`; it is only no longer offered for new ones.
pub async fn delete(db: &Database, owner: UserId, id: SshKeyId) -> Result<()> {
    let deleted = ssh_key::Entity::delete_many()
        .filter(ssh_key::Column::Id.eq(id))
        .filter(ssh_key::Column::UserId.eq(owner))
        .exec(db.writer())
        .await?;
    if deleted.rows_affected == 0 {
        return Err(Error::not_found("SSH key"));
    }
    Ok(())
}

/// The keys chosen for a new instance, in the order given (duplicates
/// dropped). Every id must be one of `owner`'s keys, else `NotFound`.
pub async fn keys_for_instance(
    db: &Database,
    owner: UserId,
    ids: &[SshKeyId],
) -> Result<Vec<SshKeyView>> {
    let mut seen = HashSet::new();
    let wanted: Vec<SshKeyId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    // The primary, not the replica: a key added a moment ago must be usable
    // for the instance created right after it.
    let mut rows = ssh_key::Entity::find()
        .filter(ssh_key::Column::UserId.eq(owner))
        .filter(ssh_key::Column::Id.is_in(wanted.iter().copied()))
        .all(db.writer())
        .await?;
    wanted
        .iter()
        .map(|id| {
            rows.iter()
                .position(|row| row.id == *id)
                .map(|at| SshKeyView::from(rows.swap_remove(at)))
                .ok_or_else(|| Error::NotFound(format!("SSH key {id} not found")))
        })
        .collect()
}

/// The name of a key added without one: its comment, else its type.
fn default_name(parsed: &public_key::ParsedPublicKey) -> String {
    let fallback = if parsed.comment.is_empty() {
        &parsed.key_type
    } else {
        &parsed.comment
    };
    // A long comment is not the user's fault: shorten it rather than refuse.
    fallback.chars().take(MAX_NAME_CHARS).collect()
}

/// A name the user typed, trimmed; `None` when absent or blank.
fn validate_given_name(given: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(name) = given.map(str::trim).filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(Some(name.to_owned()))
}
