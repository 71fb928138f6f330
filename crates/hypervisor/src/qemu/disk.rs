//! Disk images through `qemu-img`: copy-on-write overlays, growth and qcow2
//! internal snapshots.

use std::path::Path;

use serde::Deserialize;

use super::command::{command, run};
use crate::driver::{Error, Result, SnapshotInfo};

pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ImageInfo {
    pub virtual_size: u64,
    #[serde(default)]
    snapshots: Vec<RawSnapshot>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawSnapshot {
    name: String,
    date_sec: i64,
    vm_state_size: u64,
}

impl ImageInfo {
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.snapshots
            .iter()
            .map(|raw| SnapshotInfo {
                name: raw.name.clone(),
                created_at_unix_secs: raw.date_sec,
                vm_state_bytes: raw.vm_state_size,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotOp {
    Create,
    Revert,
    Delete,
}

impl SnapshotOp {
    /// Fits "cannot {verb} a VM that is running".
    pub fn verb(self) -> &'static str {
        match self {
            Self::Create => "snapshot",
            Self::Revert => "restore a snapshot of",
            Self::Delete => "delete a snapshot of",
        }
    }
}

#[derive(Debug)]
pub(crate) struct QemuImg<'a>(pub &'a Path);

impl QemuImg<'_> {
    /// Reads a qcow2's header. `-U` lets it read an image a running VM holds;
    /// the format is given, never probed from the content, as everywhere
    /// here (every disk and base image this driver handles is qcow2).
    pub async fn info(&self, image: &Path) -> Result<ImageInfo> {
        let json = run(command(self.0)
            .args(["info", "-U", "-f", "qcow2", "--output=json"])
            .arg(image))
        .await?;
        serde_json::from_slice(&json).map_err(|error| {
            Error::InvalidArgument(format!(
                "qemu-img info {} gave unreadable output: {error}",
                image.display()
            ))
        })
    }

    /// A new qcow2 of `size_gib` whose unwritten blocks read from `base`.
    pub async fn create_overlay(&self, base: &Path, overlay: &Path, size_gib: u64) -> Result<()> {
        run(command(self.0)
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(overlay)
            .arg(format!("{size_gib}G")))
        .await
        .map(drop)
    }

    pub async fn resize(&self, image: &Path, size_gib: u64) -> Result<()> {
        run(command(self.0)
            .args(["resize", "-q", "-f", "qcow2"])
            .arg(image)
            .arg(format!("{size_gib}G")))
        .await
        .map(drop)
    }

    pub async fn snapshot(&self, image: &Path, op: SnapshotOp, name: &str) -> Result<()> {
        let flag = match op {
            SnapshotOp::Create => "-c",
            SnapshotOp::Revert => "-a",
            SnapshotOp::Delete => "-d",
        };
        // `snapshot` has no `-f`; the format goes in the image options
        // (commas doubled, as the option syntax escapes them).
        let options = format!(
            "driver=qcow2,file.filename={}",
            image.to_string_lossy().replace(',', ",,")
        );
        run(command(self.0)
            .args(["snapshot", "--image-opts", flag, name])
            .arg(options))
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img() -> QemuImg<'static> {
        QemuImg(Path::new("qemu-img"))
    }

    async fn blank_image(path: &Path) {
        run(command(qemu_img().0)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg("1G"))
        .await
        .expect("run");
    }

    #[tokio::test]
    async fn overlay_reads_through_to_its_base_and_can_grow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base.qcow2");
        let overlay = dir.path().join("disk.qcow2");
        blank_image(&base).await;

        qemu_img()
            .create_overlay(&base, &overlay, 2)
            .await
            .expect("create overlay");
        let info = qemu_img().info(&overlay).await.expect("info");
        assert_eq!(info.virtual_size, 2 * GIB);

        qemu_img().resize(&overlay, 3).await.expect("resize");
        assert_eq!(
            qemu_img().info(&overlay).await.expect("info").virtual_size,
            3 * GIB
        );
    }

    #[tokio::test]
    async fn internal_snapshots_are_created_listed_and_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("disk.qcow2");
        blank_image(&image).await;

        qemu_img()
            .snapshot(&image, SnapshotOp::Create, "before-upgrade")
            .await
            .expect("snapshot");
        let snapshots = qemu_img().info(&image).await.expect("info").snapshots();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].name, "before-upgrade");
        assert_eq!(snapshots[0].vm_state_bytes, 0);
        assert!(snapshots[0].created_at_unix_secs > 1_600_000_000);

        qemu_img()
            .snapshot(&image, SnapshotOp::Revert, "before-upgrade")
            .await
            .expect("snapshot");
        qemu_img()
            .snapshot(&image, SnapshotOp::Delete, "before-upgrade")
            .await
            .expect("snapshot");
        assert!(
            qemu_img()
                .info(&image)
                .await
                .expect("info")
                .snapshots()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn info_on_a_missing_image_is_a_command_error() {
        let error = qemu_img()
            .info(Path::new("/nonexistent.qcow2"))
            .await
            .expect_err("info should fail");
        assert!(matches!(error, Error::Command { .. }), "{error:?}");
    }
}
