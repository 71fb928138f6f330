//! Turning a fetched image file into the standalone qcow2 instance disks are
//! overlaid on, without letting the file make qemu-img read anything else.
//!
//! Only qcow2 and raw are accepted, and the format is always told to
//! qemu-img, never probed from the content: a probe lets a VMDK descriptor
//! with a FLAT extent, or a qcow2 with an external data file, pull a host
//! file's bytes into the image. The format comes from the file's magic; a
//! file that carries another format's magic is refused rather than copied as
//! raw bytes, so an admin who meant to import a VMDK learns it. qemu-img runs
//! under a wall-clock timeout and address-space and CPU limits, since crafted
//! headers can keep it busy for minutes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::AsyncReadExt as _;

/// The formats an import accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

/// Header bytes read to tell the format.
const HEADER_BYTES: usize = 4096;

/// Magic numbers of the other formats qemu-img would probe, at their offsets.
const FOREIGN_MAGIC: [(&str, usize, &[u8]); 12] = [
    ("VMDK", 0, b"KDMV"),
    ("VMDK", 0, b"COWD"),
    ("VMDK descriptor", 0, b"# Disk DescriptorFile"),
    ("VDI", 0x40, &[0x7f, 0x10, 0xda, 0xbe]),
    ("VHDX", 0, b"vhdxfile"),
    ("VHD", 0, b"conectix"),
    ("QED", 0, b"QED\0"),
    ("Parallels", 0, b"WithoutFreeSpace"),
    ("Parallels", 0, b"WithouFreSpacExt"),
    ("Bochs", 0, b"Bochs Virtual HD Image"),
    ("cloop", 0, b"#!/bin/sh\n#V2.0 Format"),
    ("LUKS", 0, b"LUKS\xba\xbe"),
];

/// Tells qcow2 from raw by the first bytes; refuses other image formats.
pub fn detect_format(header: &[u8]) -> anyhow::Result<ImageFormat> {
    if header.starts_with(b"QFI\xfb") {
        return Ok(ImageFormat::Qcow2);
    }
    let found = FOREIGN_MAGIC
        .iter()
        .find(|(_, offset, magic)| header.get(*offset..).is_some_and(|h| h.starts_with(magic)))
        .map(|(name, _, _)| *name)
        // A VMDK descriptor need not start with its comment line.
        .or_else(|| is_vmdk_descriptor(header).then_some("VMDK descriptor"));
    match found {
        Some(name) => bail!(
            "the file is a {name} image; only qcow2 and raw images are imported \
             (convert it with qemu-img first)"
        ),
        None => Ok(ImageFormat::Raw),
    }
}

fn is_vmdk_descriptor(header: &[u8]) -> bool {
    let text = String::from_utf8_lossy(header);
    let has_line = |key: &str| text.lines().any(|line| line.trim_start().starts_with(key));
    has_line("createType") && (has_line("RW ") || has_line("RDONLY ") || has_line("version="))
}

/// What the import learned about a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub format: ImageFormat,
    pub virtual_size_bytes: u64,
}

/// Runs qemu-img for imports, bounded.
#[derive(Clone, Debug)]
pub struct ImageTool {
    pub program: PathBuf,
    pub timeout: Duration,
    pub memory_bytes: u64,
}

impl ImageTool {
    /// Inspects `source` and refuses anything that refers to another file.
    pub async fn inspect(&self, source: &Path) -> anyhow::Result<Inspected> {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        tokio::fs::File::open(source)
            .await
            .with_context(|| format!("opening {}", source.display()))?
            .take(HEADER_BYTES as u64)
            .read_to_end(&mut header)
            .await?;
        let format = detect_format(&header)?;
        let json = self
            .run([
                OsStr::new("info"),
                OsStr::new("-f"),
                OsStr::new(format.name()),
                OsStr::new("--output=json"),
                source.as_os_str(),
            ])
            .await?;
        let info: serde_json::Value =
            serde_json::from_slice(&json).context("qemu-img info gave unreadable output")?;
        check_standalone(&info)?;
        let virtual_size_bytes = info["virtual-size"]
            .as_u64()
            .context("qemu-img info gave no virtual size")?;
        Ok(Inspected {
            format,
            virtual_size_bytes,
        })
    }

    /// Converts an inspected `source` to qcow2 at `target`, which appears
    /// only once complete.
    pub async fn convert(
        &self,
        source: &Path,
        format: ImageFormat,
        target: &Path,
    ) -> anyhow::Result<()> {
        let partial = target.with_extension("part");
        self.run([
            OsStr::new("convert"),
            OsStr::new("-q"),
            OsStr::new("-f"),
            OsStr::new(format.name()),
            OsStr::new("-O"),
            OsStr::new("qcow2"),
            source.as_os_str(),
            partial.as_os_str(),
        ])
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
        tokio::fs::rename(&partial, target)
            .await
            .with_context(|| format!("moving {} into place", partial.display()))
    }

    /// Runs the tool with `args` under `prlimit` (address space and CPU
    /// seconds), killed when the wall-clock timeout passes. Few malloc arenas
    /// keep qemu-img's threads from reserving address space they never use.
    async fn run<'a>(&self, args: impl IntoIterator<Item = &'a OsStr>) -> anyhow::Result<Vec<u8>> {
        let seconds = self.timeout.as_secs().max(1);
        let mut command = tokio::process::Command::new("prlimit");
        command
            .arg(format!("--as={}", self.memory_bytes))
            .arg(format!("--cpu={seconds}"))
            .arg("--")
            .arg(&self.program)
            .args(args)
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let program = self.program.display();
        let limits = format!(
            "limits: {} MiB of memory, {seconds} s",
            self.memory_bytes >> 20
        );
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| anyhow::anyhow!("{program} did not finish in time ({limits})"))?
            .with_context(|| format!("cannot run {program} under prlimit"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}; {limits}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(output.stdout)
    }
}

/// Refuses an image whose `qemu-img info` shows a reference to another file:
/// a backing file, a qcow2 external data file, or extents.
fn check_standalone(info: &serde_json::Value) -> anyhow::Result<()> {
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        bail!("the image refers to a backing file; upload a standalone image");
    }
    let specific = &info["format-specific"]["data"];
    if specific.get("data-file").is_some() {
        bail!("the image keeps its data in an external file; upload a standalone image");
    }
    if specific.get("extents").is_some() {
        bail!("the image is made of extents in other files; upload a standalone image");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(program: &str, timeout: Duration) -> ImageTool {
        ImageTool {
            program: program.into(),
            timeout,
            memory_bytes: 300 << 20,
        }
    }

    #[test]
    fn formats_come_from_the_magic_and_others_are_refused() {
        assert_eq!(
            detect_format(b"QFI\xfb\0\0\0\x03").expect("qcow2"),
            ImageFormat::Qcow2
        );
        assert_eq!(detect_format(&[0; 512]).expect("raw"), ImageFormat::Raw);
        assert_eq!(detect_format(b"").expect("raw"), ImageFormat::Raw);
        let descriptor = b"version=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/shadow\" 0\n";
        for foreign in [
            &b"KDMV\x01\0\0\0"[..],
            b"# Disk DescriptorFile\nversion=1\n",
            descriptor,
            b"conectix\0\0",
            b"QED\0",
        ] {
            let error = detect_format(foreign).expect_err("foreign");
            assert!(error.to_string().contains("only qcow2 and raw"), "{error}");
        }
        let mut vdi = vec![0_u8; 512];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert!(detect_format(&vdi).is_err());
    }

    #[test]
    fn references_to_other_files_are_refused() {
        let standalone = serde_json::json!({"format": "qcow2", "virtual-size": 1,
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}});
        check_standalone(&standalone).expect("standalone");
        for (info, why) in [
            (
                serde_json::json!({"backing-filename": "/etc/passwd"}),
                "backing file",
            ),
            (
                serde_json::json!({"format-specific": {"data": {"data-file": "/etc/shadow"}}}),
                "external file",
            ),
            (
                serde_json::json!({"format-specific": {"data": {"extents": []}}}),
                "extents",
            ),
        ] {
            let error = check_standalone(&info).expect_err("refused");
            assert!(error.to_string().contains(why), "{error}");
        }
    }

    #[tokio::test]
    async fn the_tool_runs_under_memory_and_cpu_limits() {
        let limits = tool("cat", Duration::from_secs(30))
            .run([OsStr::new("/proc/self/limits")])
            .await
            .expect("cat");
        let limits = String::from_utf8(limits).expect("utf-8");
        let line = |name: &str| {
            limits
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {limits}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            line("Max address space").contains(&format!("{} {}", 300 << 20, 300 << 20)),
            "{limits}"
        );
        assert!(line("Max cpu time").contains("30 30 seconds"), "{limits}");
    }

    #[tokio::test]
    async fn a_tool_that_runs_too_long_is_killed() {
        let started = std::time::Instant::now();
        let error = tool("sleep", Duration::from_millis(300))
            .run([OsStr::new("30")])
            .await
            .expect_err("timeout");
        assert!(
            error.to_string().contains("did not finish in time"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_tool_that_needs_more_memory_fails_with_the_limits() {
        // A 400 MiB allocation under the 300 MiB address-space limit.
        let error = tool("python3", Duration::from_secs(30))
            .run([OsStr::new("-c"), OsStr::new("b = bytearray(400 << 20)")])
            .await
            .expect_err("out of memory");
        assert!(error.to_string().contains("300 MiB of memory"), "{error}");
    }
}
