//! Which accelerator QEMU should use on this node.
//!
//! `/dev/kvm` opening is not enough: under some nested or sandboxed setups a
//! KVM guest starts and then hangs forever. So the probe boots the real
//! firmware under KVM and waits, bounded, for SeaBIOS to reach its boot step,
//! which it reports on QEMU's debug console (port 0x402). That path runs the
//! real-mode/protected-mode switches that hang on such hosts, and takes well
//! under a second where KVM works.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Lines SeaBIOS prints once POST is over and it looks for something to boot.
const BOOT_STEP_MARKERS: [&str; 2] = ["Booting from", "No bootable device"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation: slow, works everywhere.
    Tcg,
}

impl Accel {
    pub(crate) fn qemu_name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// `host` passes the real CPU through; under TCG `max` emulates every
    /// feature QEMU can, which modern distributions (x86-64-v2 and up) need.
    pub(crate) fn cpu_model(self) -> &'static str {
        match self {
            Self::Kvm => "host",
            Self::Tcg => "max",
        }
    }
}

/// The probe's verdict, with the reason to show in the node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelProbe {
    pub accel: Accel,
    pub reason: String,
}

/// Picks KVM when it actually runs guests here, TCG otherwise.
pub async fn probe(qemu: &Path) -> AccelProbe {
    let tcg = |reason: String| AccelProbe {
        accel: Accel::Tcg,
        reason,
    };
    if let Err(error) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return tcg(format!("/dev/kvm cannot be opened: {error}"));
    }
    match boots_firmware(qemu, Accel::Kvm, PROBE_TIMEOUT).await {
        Ok(took) => AccelProbe {
            accel: Accel::Kvm,
            reason: format!("a KVM guest reached its boot loader in {took:?}"),
        },
        Err(why) => tcg(format!("/dev/kvm opens but {why}")),
    }
}

/// Boots SeaBIOS with no disk under `accel` and waits for its boot step.
pub(crate) async fn boots_firmware(
    qemu: &Path,
    accel: Accel,
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-accel", accel.qemu_name(), "-machine", "q35", "-m", "16"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-chardev", "stdio,id=firmware-log"])
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=firmware-log"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("{} cannot be run: {error}", qemu.display()))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("both were asked to be piped");
    };

    let reached_boot_step = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if BOOT_STEP_MARKERS.iter().any(|marker| line.contains(marker)) {
                return true;
            }
        }
        false
    };
    let outcome = tokio::time::timeout(limit, reached_boot_step).await;
    // Whatever happened, the probe VM has served its purpose.
    let _ = child.kill().await;
    match outcome {
        Ok(true) => Ok(started.elapsed()),
        Ok(false) => {
            let mut errors = String::new();
            let _ = stderr.read_to_string(&mut errors).await;
            Err(format!(
                "QEMU exited before the firmware booted: {}",
                errors.trim()
            ))
        }
        Err(_) => Err(format!(
            "a guest did not get through its firmware within {limit:?} (it hangs)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = "qemu-system-x86_64";

    #[tokio::test]
    async fn tcg_boots_the_firmware_so_the_probe_can_see_a_working_accelerator() {
        let took = boots_firmware(Path::new(QEMU), Accel::Tcg, Duration::from_secs(10))
            .await
            .expect("boots firmware");
        assert!(took < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn probe_explains_its_choice() {
        let verdict = probe(Path::new(QEMU)).await;
        // Where /dev/kvm opens but guests hang (this project's machines), this
        // prints Tcg with "it hangs".
        eprintln!("accelerator probe: {verdict:?}");
        let expected_words: &[&str] = match verdict.accel {
            Accel::Kvm => &["reached its boot loader"],
            Accel::Tcg => &["cannot be opened", "it hangs", "exited"],
        };
        assert!(
            expected_words
                .iter()
                .any(|words| verdict.reason.contains(words)),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_qemu_is_reported_not_hung_on() {
        let error = boots_firmware(Path::new("/nonexistent/qemu"), Accel::Tcg, PROBE_TIMEOUT)
            .await
            .expect_err("boots firmware should fail");
        assert!(error.contains("cannot be run"), "{error}");
    }
}
