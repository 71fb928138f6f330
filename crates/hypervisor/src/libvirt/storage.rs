//! VM disks through libvirt's storage API, so a remote host needs no shared
//! filesystem: one directory pool, the base images uploaded into it once,
//! and per VM a qcow2 overlay volume and a raw cloud-init seed volume.

use std::io::Read;
use std::path::Path;

use uuid::Uuid;
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::connection::{error_is, libvirt_error};
use super::domain_xml::{overlay_volume_xml, pool_xml, raw_volume_xml};
use crate::driver::{Error, Result};

const UPLOAD_CHUNK: usize = 1024 * 1024;
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

pub(crate) fn disk_volume_name(id: Uuid) -> String {
    format!("{id}-disk.qcow2")
}

pub(crate) fn seed_volume_name(id: Uuid) -> String {
    format!("{id}-seed.img")
}

/// What identifies a version of a base image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BaseFile {
    pub size: u64,
    /// Modification time, in seconds since the Unix epoch.
    pub modified: u64,
}

/// The pool volume of a base image: its file name, size and modification
/// time, so a replaced image (even one of the same size) is uploaded again
/// and an unchanged one never is.
pub(crate) fn base_volume_name(image: &Path, file: BaseFile) -> String {
    let stem = image
        .file_stem()
        .map_or_else(|| "image".into(), |stem| stem.to_string_lossy())
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)),
            "_",
        );
    format!("base-{stem}-{}-{}.qcow2", file.size, file.modified)
}

/// The virtual size of a qcow2 image, from its header.
pub(crate) fn qcow2_virtual_size(header: &[u8]) -> Option<u64> {
    if header.get(..4)? != QCOW2_MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(header.get(24..32)?.try_into().ok()?))
}

/// The pool, defined (as a directory at `path`), built and started if needed.
pub(crate) fn ensure_pool(connection: &Connect, name: &str, path: &str) -> Result<StoragePool> {
    let pool = match connection.lookup_storage_pool_by_name(name) {
        Ok(pool) => pool,
        Err(error) if error_is(&error, ErrorNumber::NoStoragePool) => {
            tracing::info!(pool = name, path, "defining the libvirt storage pool");
            match connection.define_storage_pool_xml(&pool_xml(name, path), 0) {
                Ok(pool) => {
                    pool.build(0).map_err(libvirt_error)?;
                    pool.set_autostart(true).map_err(libvirt_error)?;
                    pool
                }
                // Another connection (a second driver, another process)
                // defined it in the meantime: use theirs.
                Err(error) => connection
                    .lookup_storage_pool_by_name(name)
                    .map_err(|_| libvirt_error(error))?,
            }
        }
        Err(error) => return Err(libvirt_error(error)),
    };
    // Two connections may start it at once; only its being active matters.
    if !pool.is_active().map_err(libvirt_error)?
        && let Err(error) = pool.create(0)
        && !pool.is_active().map_err(libvirt_error)?
    {
        return Err(libvirt_error(error));
    }
    Ok(pool)
}

pub(crate) fn find_volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(volume) => Ok(Some(volume)),
        Err(error) if error_is(&error, ErrorNumber::NoStorageVolume) => Ok(None),
        Err(error) => Err(libvirt_error(error)),
    }
}

/// Deletes the volume if it is there.
pub(crate) fn delete_volume(pool: &StoragePool, name: &str) -> Result<()> {
    if let Some(volume) = find_volume(pool, name)? {
        volume.delete(0).map_err(libvirt_error)?;
    }
    Ok(())
}

/// The base image's volume, uploaded from the local file the first time.
/// Callers serialize this per driver, so two defines never upload at once.
pub(crate) fn ensure_base_volume(
    connection: &Connect,
    pool: &StoragePool,
    image: &Path,
    file: BaseFile,
) -> Result<StorageVol> {
    let name = base_volume_name(image, file);
    if let Some(volume) = find_volume(pool, &name)? {
        return Ok(volume);
    }
    tracing::info!(image = %image.display(), volume = name, "uploading the base image");
    let content =
        std::fs::File::open(image).map_err(Error::io(format!("opening {}", image.display())))?;
    let volume = create_uploaded_volume(connection, pool, &name, file.size, content)?;
    // Uploaded as raw bytes; a refresh lets libvirt see the qcow2 format.
    pool.refresh(0).map_err(libvirt_error)?;
    Ok(volume)
}

/// A qcow2 overlay of `size` bytes on the base volume.
pub(crate) fn create_disk_volume(
    pool: &StoragePool,
    id: Uuid,
    size: u64,
    base: &StorageVol,
) -> Result<StorageVol> {
    let base_path = base.path().map_err(libvirt_error)?;
    let xml = overlay_volume_xml(&disk_volume_name(id), size, &base_path);
    StorageVol::create_xml(pool, &xml, 0).map_err(libvirt_error)
}

pub(crate) fn create_seed_volume(
    connection: &Connect,
    pool: &StoragePool,
    id: Uuid,
    image: &[u8],
) -> Result<StorageVol> {
    let size = u64::try_from(image.len()).unwrap_or(u64::MAX);
    create_uploaded_volume(connection, pool, &seed_volume_name(id), size, image)
}

/// A raw volume holding exactly what `content` reads (`size` bytes), sent
/// over a libvirt stream; deleted again if the upload fails.
fn create_uploaded_volume(
    connection: &Connect,
    pool: &StoragePool,
    name: &str,
    size: u64,
    content: impl Read,
) -> Result<StorageVol> {
    let volume =
        StorageVol::create_xml(pool, &raw_volume_xml(name, size), 0).map_err(libvirt_error)?;
    if let Err(error) = upload(connection, &volume, size, content) {
        let _ = volume.delete(0);
        return Err(error);
    }
    Ok(volume)
}

fn upload(
    connection: &Connect,
    volume: &StorageVol,
    size: u64,
    mut content: impl Read,
) -> Result<()> {
    let stream = Stream::new(connection, 0).map_err(libvirt_error)?;
    volume.upload(&stream, 0, size, 0).map_err(libvirt_error)?;
    let mut chunk = vec![0; UPLOAD_CHUNK];
    loop {
        let read = match content.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) => {
                let _ = stream.abort();
                return Err(Error::io("reading the upload")(error));
            }
        };
        let mut sent = 0;
        while sent < read {
            match stream.send(&chunk[sent..read]) {
                Ok(written) if written > 0 => sent += written.unsigned_abs(),
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(Error::Libvirt("upload stream closed early".into()));
                }
                Err(error) => {
                    let _ = stream.abort();
                    return Err(libvirt_error(error));
                }
            }
        }
    }
    stream.finish().map_err(libvirt_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_volumes_are_named_by_file_size_and_time() {
        let file = BaseFile {
            size: 4096,
            modified: 1_700_000_000,
        };
        assert_eq!(
            base_volume_name(Path::new("/images/debian 12.qcow2"), file),
            "base-debian_12-4096-1700000000.qcow2"
        );
        let rebuilt = BaseFile {
            modified: 1_700_000_060,
            ..file
        };
        assert_ne!(
            base_volume_name(Path::new("/images/debian 12.qcow2"), rebuilt),
            base_volume_name(Path::new("/images/debian 12.qcow2"), file),
            "a rebuilt image of the same size is a new volume"
        );
        assert_eq!(
            disk_volume_name(Uuid::nil()),
            "00000000-0000-0000-0000-000000000000-disk.qcow2"
        );
    }

    #[test]
    fn qcow2_headers_give_the_virtual_size() {
        let mut header = vec![0; 32];
        header[..4].copy_from_slice(&QCOW2_MAGIC);
        header[24..32].copy_from_slice(&(64_u64 << 20).to_be_bytes());
        assert_eq!(qcow2_virtual_size(&header), Some(64 << 20));
        assert_eq!(qcow2_virtual_size(&header[..20]), None);
        header[0] = b'X';
        assert_eq!(qcow2_virtual_size(&header), None);
    }
}
