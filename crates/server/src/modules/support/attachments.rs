//! Files attached to tickets. An upload is read up to the size limit of the
//! support settings (413 beyond), its type told by its magic bytes and
//! checked against the allow-list and against what the uploader declared
//! (415 otherwise), then written under the data dir as
//! `attachments/{ticket}/{attachment}`. Only those who may see the ticket
//! may read it back.

use std::path::PathBuf;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{Services, access, policy, rules};
use crate::db::entities::ticket_attachment;
use crate::error::{Error, Result};
use crate::ids::{TicketAttachmentId, TicketId, UserId};
use crate::modules::auth::Actor;

/// Types a browser would run script from; never accepted, whatever the
/// allow-list says.
const ACTIVE_CONTENT: [&str; 5] = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
];

const PLAIN_TEXT: &str = "text/plain";

/// Whether an allow-list may name `mime`: a type recognised by its content
/// and that cannot carry script.
pub fn recognisable(mime: &str) -> bool {
    !ACTIVE_CONTENT.contains(&mime) && (mime == PLAIN_TEXT || infer::is_mime_supported(mime))
}

/// The type `content` is, by its magic bytes; UTF-8 text without control
/// characters (other than tabs and line breaks) is `text/plain`.
pub fn sniff(content: &[u8]) -> Option<&'static str> {
    if let Some(kind) = infer::get(content) {
        return Some(kind.mime_type());
    }
    let text = std::str::from_utf8(content).ok()?;
    (!text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')))
    .then_some(PLAIN_TEXT)
}

/// An attachment as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    pub id: TicketAttachmentId,
    pub ticket_id: TicketId,
    pub uploaded_by: UserId,
    pub file_name: String,
    /// As its content proved it.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

impl From<ticket_attachment::Model> for AttachmentView {
    fn from(row: ticket_attachment::Model) -> Self {
        Self {
            id: row.id,
            ticket_id: row.ticket_id,
            uploaded_by: row.uploaded_by,
            file_name: row.file_name,
            content_type: row.content_type,
            size_bytes: row.size_bytes,
            sha256: row.sha256,
            created_at: row.created_at,
        }
    }
}

/// An upload as the client sent it.
#[derive(Debug)]
pub struct Upload<S> {
    pub file_name: Option<String>,
    /// The `Content-Type` of the part, if any; checked against the content.
    pub declared_type: Option<String>,
    pub content: S,
}

/// The last component of an uploaded name, without control characters, at
/// most 255 characters; `attachment` when nothing is left.
fn clean_file_name(name: Option<&str>) -> String {
    let base = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "attachment".to_owned()
    } else {
        cleaned.to_owned()
    }
}

fn file_path(services: &Services, ticket: TicketId, id: TicketAttachmentId) -> PathBuf {
    services
        .attachments_dir
        .join(ticket.to_string())
        .join(id.to_string())
}

/// Reads the upload, stopping as soon as it passes `limit` bytes.
async fn read_limited<S, E>(mut content: S, limit: u64) -> Result<Vec<u8>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buffer = Vec::new();
    while let Some(chunk) = content.next().await {
        let chunk = chunk
            .map_err(|err| Error::BadRequest(format!("The upload could not be read: {err}.")))?;
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(Error::PayloadTooLarge(format!(
                "Attachments may be at most {limit} bytes."
            )));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer)
}

/// Checks what the content is against the allow-list and the declared type.
fn check_type(content: &[u8], declared: Option<&str>, allowed: &[String]) -> Result<&'static str> {
    let detected = sniff(content);
    let Some(detected) = detected.filter(|mime| allowed.iter().any(|a| a == mime)) else {
        return Err(Error::UnsupportedMediaType(format!(
            "Attachments may be {}; this file's content is {}.",
            allowed.join(", "),
            detected.unwrap_or("of an unknown type")
        )));
    };
    let declared = declared
        .and_then(|d| d.split(';').next())
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    if let Some(declared) = declared
        && declared != detected
    {
        return Err(Error::UnsupportedMediaType(format!(
            "The file was sent as {declared} but its content is {detected}."
        )));
    }
    Ok(detected)
}

/// Stores an attachment on a ticket the actor may see and that is not
/// closed.
pub async fn upload<S, E>(
    services: &Services,
    actor: &Actor,
    ticket: TicketId,
    upload: Upload<S>,
) -> Result<AttachmentView>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let found = access::visible(&services.db, actor, ticket).await?;
    rules::check_open(found.status)?;
    let settings = policy::get(&services.db, &services.cache).await?;
    let content = read_limited(upload.content, settings.max_attachment_bytes).await?;
    if content.is_empty() {
        return Err(Error::invalid_field("file", "is empty"));
    }
    let content_type = check_type(
        &content,
        upload.declared_type.as_deref(),
        &settings.allowed_attachment_types,
    )?;
    let id = TicketAttachmentId::new();
    let path = file_path(services, ticket, id);
    write_file(&path, &content).await?;
    let now = services.clock.now();
    let row = ticket_attachment::ActiveModel {
        id: Set(id),
        ticket_id: Set(ticket),
        uploaded_by: Set(actor.user_id),
        file_name: Set(clean_file_name(upload.file_name.as_deref())),
        content_type: Set(content_type.to_owned()),
        size_bytes: Set(i64::try_from(content.len()).map_err(anyhow::Error::from)?),
        sha256: Set(hex::encode(Sha256::digest(&content))),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(services.db.writer())
    .await;
    match row {
        Ok(row) => Ok(row.into()),
        Err(err) => {
            // No row points at the file: do not leave it behind.
            if let Err(remove) = tokio::fs::remove_file(&path).await {
                tracing::warn!(path = %path.display(), error = %remove, "cannot remove an orphan attachment");
            }
            Err(err.into())
        }
    }
}

/// Writes the file completely under a temporary name, then renames it, so
/// a download never reads half a file.
async fn write_file(path: &std::path::Path, content: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("an attachment path without a directory"))?;
    let (dir, partial, content) = (
        dir.to_path_buf(),
        path.with_extension("partial"),
        content.to_vec(),
    );
    let written = partial.clone();
    tokio::task::spawn_blocking(move || {
        crate::private_files::create_dir(&dir)
            .map_err(|err| anyhow::anyhow!("creating {}: {err}", dir.display()))?;
        crate::private_files::write_new(&written, &content)
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", written.display()))
    })
    .await
    .map_err(anyhow::Error::from)??;
    tokio::fs::rename(&partial, path)
        .await
        .map_err(|err| anyhow::anyhow!("renaming {}: {err}", partial.display()))?;
    Ok(())
}

/// An attachment of a ticket the actor may see, and its open file.
pub async fn open(
    services: &Services,
    actor: &Actor,
    ticket: TicketId,
    id: TicketAttachmentId,
) -> Result<(AttachmentView, tokio::fs::File)> {
    access::visible(&services.db, actor, ticket).await?;
    let row = ticket_attachment::Entity::find_by_id(id)
        .filter(ticket_attachment::Column::TicketId.eq(ticket))
        .one(services.db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Attachment"))?;
    let path = file_path(services, ticket, id);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|err| anyhow::anyhow!("opening {}: {err}", path.display()))?;
    Ok((row.into(), file))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    fn allowed() -> Vec<String> {
        policy::SupportSettings::default().allowed_attachment_types
    }

    #[test]
    fn types_are_told_by_content_not_by_declaration() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff("bonjour\n".as_bytes()), Some("text/plain"));
        assert_eq!(sniff(b"PK\x03\x04\x14\0\0\0"), Some("application/zip"));
        assert_eq!(sniff(b"\x7fELF\x02\x01\x01\0"), None, "unknown binary");
        assert_eq!(
            check_type(PNG, Some("image/png"), &allowed()).ok(),
            Some("image/png")
        );
        assert_eq!(check_type(PNG, None, &allowed()).ok(), Some("image/png"));
        assert!(matches!(
            check_type(PNG, Some("application/pdf"), &allowed()),
            Err(Error::UnsupportedMediaType(_))
        ));
        for content in [&b"PK\x03\x04\x14\0\0\0"[..], b"\x7fELF\x02\x01\x01\0"] {
            assert!(matches!(
                check_type(content, None, &allowed()),
                Err(Error::UnsupportedMediaType(_))
            ));
        }
    }

    #[test]
    fn allow_lists_name_only_types_that_can_be_recognised_and_hold_no_script() {
        assert!(recognisable("image/png"));
        assert!(recognisable("text/plain"));
        assert!(!recognisable("text/html"));
        assert!(!recognisable("image/svg+xml"));
        assert!(!recognisable("application/x-made-up"));
    }

    #[test]
    fn uploaded_names_lose_their_path() {
        assert_eq!(clean_file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_file_name(Some("C:\\Users\\a\\log.txt")), "log.txt");
        assert_eq!(clean_file_name(Some("..")), "attachment");
        assert_eq!(clean_file_name(None), "attachment");
    }
}
