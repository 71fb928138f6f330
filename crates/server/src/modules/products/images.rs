//! OS images. An admin registers one from a URL or a file in the import
//! directory; an `import_image` job fetches it (see [`image_source`] for what
//! it may read), checks its checksum, refuses anything but a standalone qcow2
//! or raw image (see [`image_file`]), and converts it to a qcow2 under
//! `data_dir/images`, which instance disks then use as their base. A new
//! image is unlisted until an admin publishes it (`active`): what an import
//! produced is looked at before customers can boot it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::StreamExt as _;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::db::Database;
use crate::db::entities::image::{self, ImageStatus};
use crate::error::{Error, FieldError, Result};
use crate::ids::ImageId;
use crate::jobs::{JobQueue, NewJob};
use crate::modules::auth::Actor;
use crate::modules::products::image_file::{ImageTool, Inspected};
use crate::modules::products::image_source::{ImageSource, SourcePolicy};
use crate::validation::{check_name, check_slug};

pub const IMPORT_JOB: &str = "import_image";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImageView {
    pub id: ImageId,
    pub slug: String,
    pub name: String,
    pub os_family: String,
    pub os_version: String,
    /// The account to SSH in as.
    pub default_user: String,
    pub min_disk_gib: i32,
    pub status: ImageStatus,
    /// Why an import failed.
    pub status_reason: Option<String>,
    pub active: bool,
    pub size_bytes: Option<i64>,
}

/// What admins see on top: where the image came from and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AdminImageView {
    #[serde(flatten)]
    pub image: ImageView,
    pub source: Option<String>,
    pub checksum: Option<String>,
    pub file_path: Option<String>,
}

impl From<image::Model> for ImageView {
    fn from(row: image::Model) -> Self {
        Self {
            id: row.id,
            slug: row.slug,
            name: row.name,
            os_family: row.os_family,
            os_version: row.os_version,
            default_user: row.default_user,
            min_disk_gib: row.min_disk_gib,
            status: row.status,
            status_reason: row.status_reason,
            active: row.active,
            size_bytes: row.size_bytes,
        }
    }
}

impl From<image::Model> for AdminImageView {
    fn from(row: image::Model) -> Self {
        Self {
            source: row.source_url.clone(),
            checksum: row.checksum.clone(),
            file_path: row.file_path.clone(),
            image: row.into(),
        }
    }
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    #[garde(skip)]
    pub slug: String,
    #[garde(skip)]
    pub name: String,
    /// e.g. `debian`, `ubuntu`.
    #[garde(length(min = 1, max = 32), pattern(r"^[a-z0-9-]+$"))]
    pub os_family: String,
    #[garde(length(min = 1, max = 32))]
    pub os_version: String,
    #[garde(length(min = 1, max = 32), pattern(r"^[a-z_][a-z0-9_-]*$"))]
    pub default_user: String,
    #[garde(range(min = 1, max = 65_536))]
    pub min_disk_gib: i32,
    /// An `http(s)://` URL, or a file in the image import directory: a
    /// path relative to it, an absolute path or a `file://` URL inside it.
    #[garde(length(min = 1, max = 2000))]
    pub source: String,
    /// `sha256:<hex>`; checked when given.
    #[garde(skip)]
    pub checksum: Option<String>,
}

#[derive(Debug, Default, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageChanges {
    #[garde(skip)]
    pub name: Option<String>,
    /// Publishes (`true`) or hides the image; only an imported one can be
    /// published.
    #[garde(skip)]
    pub active: Option<bool>,
    #[garde(range(min = 1, max = 65_536))]
    pub min_disk_gib: Option<i32>,
}

fn check_checksum(checksum: Option<&str>) -> Option<FieldError> {
    let hex = checksum?.strip_prefix("sha256:");
    let ok = hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    (!ok).then(|| FieldError::new("checksum", "must be sha256: and 64 hex digits"))
}

/// Registers an image, unlisted, and starts its import.
pub async fn create(
    db: &Database,
    jobs: &JobQueue,
    actor: &Actor,
    sources: &SourcePolicy,
    new: NewImage,
) -> Result<AdminImageView> {
    register(db, jobs, actor, sources, new, false).await
}

/// Registers an image, listed once imported when `active`, and starts its
/// import.
pub(super) async fn register(
    db: &Database,
    jobs: &JobQueue,
    actor: &Actor,
    sources: &SourcePolicy,
    new: NewImage,
    active: bool,
) -> Result<AdminImageView> {
    actor.require_admin()?;
    let source =
        ImageSource::parse(&new.source, sources).map_err(|why| FieldError::new("source", why));
    Error::check_fields(
        check_slug("slug", &new.slug)
            .into_iter()
            .chain(check_name("name", &new.name))
            .chain(source.clone().err())
            .chain(check_checksum(new.checksum.as_deref()))
            .collect(),
    )?;
    let source = source.map_err(|field| Error::invalid(vec![field]))?;
    let row = image::ActiveModel {
        slug: Set(new.slug),
        name: Set(new.name.trim().to_owned()),
        os_family: Set(new.os_family),
        os_version: Set(new.os_version),
        default_user: Set(new.default_user),
        min_disk_gib: Set(new.min_disk_gib),
        source_url: Set(Some(source.stored())),
        checksum: Set(new.checksum.map(|c| c.to_lowercase())),
        status: Set(ImageStatus::Importing),
        active: Set(active),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .map_err(|err| Error::on_duplicate(err, "This slug is taken already."))?;
    enqueue_import(jobs, row.id).await?;
    Ok(row.into())
}

async fn enqueue_import(jobs: &JobQueue, id: ImageId) -> Result<()> {
    jobs.enqueue(
        NewJob::new(IMPORT_JOB, serde_json::json!({ "image_id": id }))
            .unique_key(format!("image-import:{id}"))
            .max_attempts(1),
    )
    .await?;
    Ok(())
}

async fn find(db: &Database, id: ImageId) -> Result<image::Model> {
    image::Entity::find_by_id(id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Image"))
}

/// Runs a failed import again.
pub async fn retry_import(
    db: &Database,
    jobs: &JobQueue,
    actor: &Actor,
    id: ImageId,
) -> Result<AdminImageView> {
    actor.require_admin()?;
    let row = find(db, id).await?;
    if row.status != ImageStatus::Failed {
        return Err(Error::Conflict(format!(
            "Only a failed import can be retried; this image is {:?}.",
            row.status
        )));
    }
    let mut active = row.into_active_model();
    active.status = Set(ImageStatus::Importing);
    active.status_reason = Set(None);
    let row = active.update(db.writer()).await?;
    enqueue_import(jobs, id).await?;
    Ok(row.into())
}

pub async fn update(
    db: &Database,
    actor: &Actor,
    id: ImageId,
    changes: ImageChanges,
) -> Result<AdminImageView> {
    actor.require_admin()?;
    let row = find(db, id).await?;
    if changes.active == Some(true) && row.status != ImageStatus::Available {
        return Err(Error::Conflict(format!(
            "Only an imported image can be published; this image is {:?}.",
            row.status
        )));
    }
    let mut active = row.into_active_model();
    if let Some(name) = changes.name {
        Error::check_fields(check_name("name", &name).into_iter().collect())?;
        active.name = Set(name.trim().to_owned());
    }
    if let Some(flag) = changes.active {
        active.active = Set(flag);
    }
    if let Some(min) = changes.min_disk_gib {
        active.min_disk_gib = Set(min);
    }
    Ok(active.update(db.writer()).await?.into())
}

/// Deletes an image no instance uses, and its file.
pub async fn delete(db: &Database, actor: &Actor, id: ImageId) -> Result<()> {
    actor.require_admin()?;
    let row = find(db, id).await?;
    if row.status == ImageStatus::Importing {
        return Err(Error::Conflict(
            "The image is being imported; wait for it to finish.".to_owned(),
        ));
    }
    image::Entity::delete_by_id(id)
        .exec(db.writer())
        .await
        .map_err(|err| {
            Error::on_still_referenced(err, "This image is still in use; deactivate it instead.")
        })?;
    if let Some(path) = row.file_path {
        remove_if_present(Path::new(&path)).await?;
    }
    Ok(())
}

pub async fn get_admin(db: &Database, actor: &Actor, id: ImageId) -> Result<AdminImageView> {
    actor.require_admin()?;
    Ok(find(db, id).await?.into())
}

pub async fn list_admin(db: &Database, actor: &Actor) -> Result<Vec<AdminImageView>> {
    actor.require_admin()?;
    Ok(image::Entity::find()
        .order_by_asc(image::Column::Slug)
        .all(db.reader())
        .await?
        .into_iter()
        .map(AdminImageView::from)
        .collect())
}

/// The images customers can pick: imported and active.
pub async fn list_public(db: &Database) -> Result<Vec<ImageView>> {
    Ok(image::Entity::find()
        .filter(image::Column::Status.eq(ImageStatus::Available))
        .filter(image::Column::Active.eq(true))
        .order_by_asc(image::Column::Slug)
        .all(db.reader())
        .await?
        .into_iter()
        .map(ImageView::from)
        .collect())
}

async fn remove_if_present(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(err).context(format!("removing {}", path.display())))?
        }
        _ => Ok(()),
    }
}

/// What a download failure says on the image, whatever the cause: telling
/// a refused address from a closed port or a non-HTTP service would let the
/// import probe the network. The log has the cause.
pub const DOWNLOAD_FAILED: &str =
    "the image could not be downloaded from its source (the server log says why)";

/// Why an import failed: a download failure is reported without its cause.
#[derive(Debug)]
enum ImportError {
    Download(anyhow::Error),
    Other(anyhow::Error),
}

impl ImportError {
    fn reason(&self) -> String {
        match self {
            Self::Download(_) => DOWNLOAD_FAILED.to_owned(),
            Self::Other(err) => format!("{err:#}"),
        }
    }

    fn detail(&self) -> &anyhow::Error {
        match self {
            Self::Download(err) | Self::Other(err) => err,
        }
    }
}

impl From<anyhow::Error> for ImportError {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

impl From<std::io::Error> for ImportError {
    fn from(err: std::io::Error) -> Self {
        Self::Other(err.into())
    }
}

/// What the `import_image` job works with.
#[derive(Clone, Debug)]
pub struct Importer {
    pub data_dir: PathBuf,
    pub sources: SourcePolicy,
    pub tool: ImageTool,
}

/// Copies the source into `dest`, returning its SHA-256 in hex.
async fn fetch(
    sources: &SourcePolicy,
    source: &ImageSource,
    dest: &Path,
) -> Result<String, ImportError> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("creating {}", dest.display()))?;
    let mut hasher = Sha256::new();
    match source {
        ImageSource::Url(url) => {
            let download = async {
                let mut body = sources.get(url).await?.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.with_context(|| format!("downloading {url}"))?;
                    hasher.update(&chunk);
                    file.write_all(&chunk).await?;
                }
                anyhow::Ok(())
            };
            download.await.map_err(ImportError::Download)?;
        }
        ImageSource::File(path) => {
            let mut input = sources.open(path).await?;
            let mut buffer = vec![0_u8; 1 << 20];
            loop {
                let read = tokio::io::AsyncReadExt::read(&mut input, &mut buffer).await?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                file.write_all(&buffer[..read]).await?;
            }
        }
    }
    file.flush().await?;
    Ok(hex::encode(hasher.finalize()))
}

/// Where an image's files live on a node.
pub fn image_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// Creates the import directory (private: it holds what admins stage) and
/// returns it canonical, as the source checks compare against.
pub async fn prepare_import_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .with_context(|| format!("creating the image import directory {}", dir.display()))?;
    tokio::fs::canonicalize(dir)
        .await
        .with_context(|| format!("resolving the image import directory {}", dir.display()))
}

/// The `import_image` job. Failures are recorded on the image (the admin can
/// retry), so the job itself never asks to be run again.
pub async fn run_import(
    db: &Database,
    importer: &Importer,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
    let id: ImageId = serde_json::from_value(payload["image_id"].clone())?;
    let row = find(db, id).await.map_err(anyhow::Error::from)?;
    if row.status != ImageStatus::Importing {
        return Ok(());
    }
    let dir = image_dir(&importer.data_dir);
    tokio::fs::create_dir_all(&dir).await?;
    let download = dir.join(format!("{id}.download"));
    let target = dir.join(format!("{id}.qcow2"));
    let outcome = import(importer, &row, &download, &target).await;
    remove_if_present(&download)
        .await
        .map_err(anyhow::Error::from)?;
    let min_disk_gib = row.min_disk_gib;
    let mut active = row.into_active_model();
    match outcome {
        Ok((info, size)) => {
            active.status = Set(ImageStatus::Available);
            active.status_reason = Set(None);
            active.file_path = Set(Some(target.to_string_lossy().into_owned()));
            active.size_bytes = Set(Some(size));
            let virtual_gib =
                i32::try_from(info.virtual_size_bytes.div_ceil(1 << 30)).unwrap_or(i32::MAX);
            active.min_disk_gib = Set(min_disk_gib.max(virtual_gib));
            tracing::info!(image = %id, format = ?info.format, "image imported");
        }
        Err(err) => {
            tracing::warn!(image = %id, error = format!("{:#}", err.detail()), "image import failed");
            active.status = Set(ImageStatus::Failed);
            active.status_reason = Set(Some(err.reason()));
        }
    }
    active.update(db.writer()).await?;
    Ok(())
}

async fn import(
    importer: &Importer,
    row: &image::Model,
    download: &Path,
    target: &Path,
) -> Result<(Inspected, i64), ImportError> {
    let stored = row
        .source_url
        .as_deref()
        .context("the image has no source")?;
    // Checked again: the directory or the settings may have changed since.
    let source = ImageSource::parse(stored, &importer.sources)
        .map_err(|why| anyhow::anyhow!("the source {stored} {why}"))?;
    let digest = fetch(&importer.sources, &source, download).await?;
    if let Some(expected) = row
        .checksum
        .as_deref()
        .and_then(|c| c.strip_prefix("sha256:"))
        && expected != digest
    {
        return Err(anyhow::anyhow!(
            "checksum mismatch: expected sha256:{expected}, got sha256:{digest}"
        )
        .into());
    }
    let info = importer.tool.inspect(download).await?;
    importer.tool.convert(download, info.format, target).await?;
    let size = tokio::fs::metadata(target).await?.len();
    Ok((info, i64::try_from(size).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_sha256_hex() {
        assert!(check_checksum(None).is_none());
        assert!(check_checksum(Some(&format!("sha256:{}", "a".repeat(64)))).is_none());
        assert!(check_checksum(Some("md5:abc")).is_some());
        assert!(check_checksum(Some("sha256:xyz")).is_some());
    }
}
