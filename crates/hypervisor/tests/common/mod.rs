//! A throwaway node for tests: a QEMU driver on a temporary data directory
//! (TCG, since KVM guests hang on this project's machines) and a guard that
//! kills whatever QEMU a failed test left running.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::broadcast;
use uuid::Uuid;
use vmcloud_hypervisor::{
    Accel, AccelChoice, CloudInit, Driver, MacAddress, Network, QemuConfig, QemuDriver, StaticIpv4,
    VmEvent, VmSpec, VmStatus, tap_name,
};

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub driver: Arc<QemuDriver>,
}

impl TestNode {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary data dir");
        let driver = driver_on(dir.path()).await;
        Self { dir, driver }
    }

    /// What a platform restart does: the old driver goes, a new one takes
    /// over the same data directory.
    pub async fn restart_driver(&mut self) {
        let old = std::mem::replace(&mut self.driver, driver_on(self.dir.path()).await);
        assert_eq!(Arc::strong_count(&old), 1, "the old driver is still in use");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The VM's runtime directory, whose layout the QEMU driver documents.
    pub fn vm_dir(&self, id: Uuid) -> PathBuf {
        self.dir.path().join("vms").join(id.to_string())
    }

    pub fn qmp_socket(&self, id: Uuid) -> PathBuf {
        self.vm_dir(id).join("qmp.sock")
    }

    pub fn qemu_pid(&self, id: Uuid) -> i32 {
        std::fs::read_to_string(self.vm_dir(id).join("qemu.pid"))
            .expect("pidfile of a running VM")
            .trim()
            .parse()
            .expect("pid")
    }

    /// A blank qcow2: SeaBIOS finds nothing to boot and keeps retrying,
    /// which is a real, running VM for every test that needs no OS.
    pub fn blank_base_image(&self) -> PathBuf {
        let path = self.dir.path().join("blank.qcow2");
        if !path.exists() {
            let status = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&path)
                .arg("1G")
                .status()
                .expect("qemu-img");
            assert!(status.success(), "qemu-img create failed");
        }
        path
    }

    pub fn blank_spec(&self, name: &str) -> VmSpec {
        spec(name, self.blank_base_image(), 2)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.dir.path().join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            let Ok(pid) = std::fs::read_to_string(vm.path().join("qemu.pid")) else {
                continue;
            };
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

pub async fn driver_on(data_dir: &Path) -> Arc<QemuDriver> {
    let mut config = QemuConfig::new(data_dir);
    config.accel = AccelChoice::Fixed(Accel::Tcg);
    Arc::new(QemuDriver::new(config).await.expect("QEMU driver"))
}

pub fn spec(name: &str, base_image: PathBuf, disk_gib: u64) -> VmSpec {
    let id = Uuid::new_v4();
    VmSpec {
        id,
        name: name.into(),
        vcpus: 1,
        memory_mib: 128,
        disk_gib,
        base_image,
        cloud_init: CloudInit {
            instance_id: id.to_string(),
            hostname: name.into(),
            ssh_authorized_keys: Vec::new(),
            user_data: None,
            network_config: None,
        },
        network: Network::User {
            mac: MacAddress::for_vm(id),
            bind: Ipv4Addr::LOCALHOST.into(),
            ssh_host_port: free_port(),
        },
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls the VM's serial log until it contains `needle`.
pub async fn wait_for_serial(
    driver: &dyn Driver,
    id: Uuid,
    needle: &str,
    limit: Duration,
) -> String {
    wait_for_serial_times(driver, id, needle, 1, limit).await
}

/// Polls the VM's serial log until `needle` appears `times` times (the log
/// spans boots).
pub async fn wait_for_serial_times(
    driver: &dyn Driver,
    id: Uuid,
    needle: &str,
    times: usize,
    limit: Duration,
) -> String {
    let started = Instant::now();
    loop {
        let log = driver.serial_log(id, 256 * 1024).await.expect("serial log");
        let log = String::from_utf8_lossy(&log).into_owned();
        if log.matches(needle).count() >= times {
            return log;
        }
        assert!(
            started.elapsed() < limit,
            "no {needle:?} ({times} times) on the serial console within {limit:?}; it shows:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Boots under TCG take tens of seconds on a loaded 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn guest_image() -> Option<PathBuf> {
    let image = std::env::var_os("VMCLOUD_TEST_GUEST_IMAGE").map(PathBuf::from);
    if image.is_none() {
        skip_loudly(
            "set VMCLOUD_TEST_GUEST_IMAGE to the test guest's disk.qcow2 \
             (guest/build.sh --out DIR makes DIR/disk.qcow2) to run it",
        );
    }
    image
}

/// Says on stderr that a test did not run, and how to run it.
pub fn skip_loudly(how_to_run: &str) {
    // Straight to stderr, not eprintln!: the test harness would swallow
    // that for a passing test, and a skip must not go unnoticed.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED guest lifecycle test: {how_to_run} ***\n"
    );
}

pub async fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .await
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
    (private, public.trim().to_owned())
}

pub async fn ssh(key: &Path, port: u16, remote_command: &str) -> String {
    ssh_to(key, "127.0.0.1", port, remote_command).await
}

pub async fn ssh_to(key: &Path, host: &str, port: u16, remote_command: &str) -> String {
    let output = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(["-o", "LogLevel=ERROR", "-i"])
        .arg(key)
        .args([
            "-p",
            &port.to_string(),
            &format!("root@{host}"),
            remote_command,
        ])
        .output()
        .await
        .expect("ssh");
    assert!(
        output.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the driver reports `wanted` for `id` among its events.
pub async fn wait_for_event(events: &mut broadcast::Receiver<VmEvent>, id: Uuid, wanted: VmStatus) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(event) if event == (VmEvent { id, status: wanted }) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "no {wanted} event for {id}");
}

/// The host bridge for bridged guests (`scripts/setup-bridge.sh` makes it,
/// with 10.213.0.1/16), or `None` after saying how to run the test.
pub fn test_bridge() -> Option<String> {
    let bridge = std::env::var("VMCLOUD_TEST_BRIDGE").ok();
    if bridge.is_none() {
        skip_loudly(
            "set VMCLOUD_TEST_BRIDGE to a bridge with 10.213.0.1/16 \
             (scripts/setup-bridge.sh makes vmcbr0) to run it",
        );
    }
    bridge
}

/// An address on the test bridge's /16 that no other test picks, with
/// overwhelming likelihood.
fn bridge_address() -> Ipv4Addr {
    let [a, b, ..] = Uuid::new_v4().into_bytes();
    Ipv4Addr::new(10, 213, a.clamp(1, 254), b.clamp(1, 254))
}

/// Boots a guest on `bridge` with a static address, SSHes straight to that
/// address, reads its network counters and destroys it, tap included.
pub async fn bridged_life(driver: &dyn Driver, dir: &Path, image: PathBuf, bridge: &str) {
    let (key, public) = key_pair(dir, "bridged").await;
    let mut spec = spec("bridged", image, 1);
    spec.memory_mib = 256;
    spec.cloud_init.ssh_authorized_keys = vec![public];
    let address = bridge_address();
    spec.network = Network::Bridge {
        mac: MacAddress::for_vm(spec.id),
        bridge: bridge.to_owned(),
        ipv4: Some(StaticIpv4 {
            address,
            prefix_len: 16,
            gateway: Some(Ipv4Addr::new(10, 213, 0, 1)),
            nameservers: Vec::new(),
        }),
    };
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");
    let tap = tap_name(spec.id);
    let master =
        std::fs::read_link(format!("/sys/class/net/{tap}/master")).expect("tap on a bridge");
    assert!(master.ends_with(bridge), "{}", master.display());

    wait_for_serial(
        driver,
        spec.id,
        "VMCLOUD-GUEST-READY hostname=bridged",
        BOOT_TIMEOUT,
    )
    .await;
    // Straight to the guest's own address on port 22: no forwarding.
    let answer = ssh_to(
        &key,
        &address.to_string(),
        22,
        "hostname; ip -4 -o addr show dev eth0",
    )
    .await;
    assert!(answer.starts_with("bridged\n"), "{answer}");
    assert!(answer.contains(&format!("inet {address}/16")), "{answer}");
    let stats = driver.stats(spec.id).await.expect("stats");
    assert!(
        stats.net_rx_bytes.is_some_and(|bytes| bytes > 0),
        "{stats:?}"
    );
    assert!(
        stats.net_tx_bytes.is_some_and(|bytes| bytes > 0),
        "{stats:?}"
    );

    driver.destroy(spec.id).await.expect("destroy");
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "the tap went with the VM"
    );
}
