//! The libvirt driver with a real guest OS (the project's test guest, see
//! qemu_guest.rs) on a real libvirt daemon, through the whole lifecycle.
//!
//! Run with (scripts/setup-libvirt.sh starts a local libvirtd):
//!   VMCLOUD_TEST_GUEST_IMAGE=/abs/path/disk.qcow2 VMCLOUD_TEST_LIBVIRT_URI=qemu:///system \
//!     cargo test -p vmcloud-hypervisor --features libvirt --test suite libvirt_guest::
//! Without both variables the test is skipped (and says so).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    BOOT_TIMEOUT, guest_image, key_pair, ssh, test_bridge, wait_for_event, wait_for_serial,
    wait_for_serial_times,
};
use tokio::io::AsyncReadExt;
use uuid::Uuid;
use vmcloud_hypervisor::{
    Accel, AccelChoice, Driver, LibvirtConfig, LibvirtDriver, Network, StopOutcome, VmStatus,
    VncEndpoint,
};

const READY: &str = "VMCLOUD-GUEST-READY hostname=libvirt-guest";

fn libvirt_uri() -> Option<String> {
    let uri = std::env::var("VMCLOUD_TEST_LIBVIRT_URI").ok();
    if uri.is_none() {
        common::skip_loudly(
            "set VMCLOUD_TEST_LIBVIRT_URI (e.g. qemu:///system after scripts/setup-libvirt.sh) \
             to run the libvirt driver against a daemon",
        );
    }
    uri
}

fn virsh(uri: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("virsh")
        .args(["-c", uri, "-q"])
        .args(args)
        .output()
        .expect("virsh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Removes what a failed test left in libvirt, as the driver's destroy would.
struct Cleanup {
    uri: String,
    id: Uuid,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let domain = format!("vmcloud-{}", self.id);
        virsh(&self.uri, &["destroy", &domain]);
        virsh(&self.uri, &["undefine", "--snapshots-metadata", &domain]);
        for volume in [
            format!("{}-disk.qcow2", self.id),
            format!("{}-seed.img", self.id),
        ] {
            virsh(&self.uri, &["vol-delete", "--pool", "vmcloud", &volume]);
        }
    }
}

/// Reads the console stream until `needle` went by.
async fn read_console_until(console: &mut vmcloud_hypervisor::ConsoleStream, needle: &str) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buffer = [0; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "no {needle:?} on the console; it showed:\n{}",
            String::from_utf8_lossy(&seen)
        );
        let read = tokio::time::timeout(Duration::from_secs(5), console.read(&mut buffer)).await;
        if let Ok(read) = read {
            let read = read.expect("console read");
            assert!(read > 0, "console closed");
            seen.extend_from_slice(&buffer[..read]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_lives_through_its_whole_lifecycle_under_libvirt() {
    let Some(image) = guest_image() else {
        return;
    };
    let Some(uri) = libvirt_uri() else {
        return;
    };
    let mut config = LibvirtConfig::new(uri.clone());
    // KVM guests hang on this project's machines.
    config.accel = AccelChoice::Fixed(Accel::Tcg);
    config.op_timeout = Duration::from_secs(90);
    let driver = LibvirtDriver::connect(config).await.expect("connect");
    let mut events = driver.events();
    let keys = tempfile::tempdir().expect("key dir");
    let (key, public) = key_pair(keys.path(), "platform").await;

    let mut spec = common::spec("libvirt-guest", image, 1);
    spec.memory_mib = 256;
    spec.cloud_init.ssh_authorized_keys = vec![public];
    let Network::User { ssh_host_port, .. } = spec.network else {
        unreachable!("test specs use user networking");
    };
    let id = spec.id;
    let _cleanup = Cleanup {
        uri: uri.clone(),
        id,
    };

    driver.define(&spec).await.expect("define");
    driver.define(&spec).await.expect("define again is a no-op");
    assert_eq!(driver.spec(id).await.expect("spec"), spec);
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Stopped);
    let listed = driver.list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|vm| vm.id == id && vm.name == "libvirt-guest"),
        "{listed:?}"
    );

    driver.start(id).await.expect("start");
    wait_for_event(&mut events, id, VmStatus::Running).await;
    wait_for_serial(&driver, id, READY, BOOT_TIMEOUT).await;
    assert_eq!(
        ssh(&key, ssh_host_port, "hostname").await.trim(),
        "libvirt-guest"
    );

    let stats = driver.stats(id).await.expect("stats");
    assert!(stats.cpu_time_ns > 0, "{stats:?}");
    assert!(stats.memory_rss_bytes > 0, "{stats:?}");
    assert!(stats.disk_read_bytes > 1024 * 1024, "{stats:?}");
    let VncEndpoint::UnixSocket(vnc) = driver.vnc_endpoint(id).await.expect("vnc endpoint") else {
        unreachable!("VNC is a unix socket");
    };
    assert!(vnc.exists(), "{}", vnc.display());

    // The console sees the second boot live; the log has both.
    let mut console = driver.serial_console(id).await.expect("console");
    driver.reboot(id).await.expect("reboot");
    read_console_until(&mut console, READY).await;
    drop(console);
    wait_for_serial_times(&driver, id, READY, 2, BOOT_TIMEOUT).await;
    assert_eq!(
        ssh(&key, ssh_host_port, "hostname").await.trim(),
        "libvirt-guest"
    );

    driver.pause(id).await.expect("pause");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Paused);
    driver.resume(id).await.expect("resume");

    let outcome = driver
        .stop(id, Duration::from_secs(120))
        .await
        .expect("stop");
    assert_eq!(
        outcome,
        StopOutcome::Graceful,
        "the guest ignored the power button"
    );
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Stopped);
    wait_for_event(&mut events, id, VmStatus::Stopped).await;

    driver.resize(id, 2, 384).await.expect("resize");
    driver.grow_disk(id, 2).await.expect("grow disk");
    let resized = driver.spec(id).await.expect("spec");
    assert_eq!(
        (resized.vcpus, resized.memory_mib, resized.disk_gib),
        (2, 384, 2)
    );
    driver.start(id).await.expect("start resized");
    wait_for_serial_times(&driver, id, READY, 3, BOOT_TIMEOUT).await;
    let sizes = ssh(
        &key,
        ssh_host_port,
        "grep -c ^processor /proc/cpuinfo; cat /sys/block/vda/size",
    )
    .await;
    assert_eq!(
        sizes.split_whitespace().collect::<Vec<_>>(),
        ["2", "4194304"]
    );

    // QEMU dying without being asked is a crash, not a stop.
    let pid_file = format!("/run/libvirt/qemu/vmcloud-{id}.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("QEMU pidfile of a local libvirtd");
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill failed");
    wait_for_event(&mut events, id, VmStatus::Crashed).await;
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Crashed);
    assert_eq!(
        driver.stop(id, Duration::from_secs(5)).await.expect("stop"),
        StopOutcome::AlreadyStopped
    );

    let snapshot = driver
        .snapshot_create(id, "before")
        .await
        .expect("snapshot");
    assert_eq!(snapshot.name, "before");
    let names: Vec<_> = driver
        .snapshot_list(id)
        .await
        .expect("snapshot list")
        .into_iter()
        .map(|snapshot| snapshot.name)
        .collect();
    assert_eq!(names, ["before"]);
    driver.snapshot_revert(id, "before").await.expect("revert");
    driver
        .snapshot_delete(id, "before")
        .await
        .expect("delete snapshot");
    assert!(
        driver
            .snapshot_list(id)
            .await
            .expect("snapshot list")
            .is_empty()
    );

    driver.destroy(id).await.expect("destroy");
    driver.destroy(id).await.expect("destroy again is a no-op");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Missing);
    wait_for_event(&mut events, id, VmStatus::Missing).await;
    let domain = format!("vmcloud-{id}");
    assert!(
        !virsh(&uri, &["dominfo", &domain]).0,
        "domain {domain} remains"
    );
    let (listed, volumes) = virsh(&uri, &["vol-list", "vmcloud"]);
    assert!(listed, "vol-list failed");
    assert!(
        !volumes.contains(&id.to_string()),
        "volumes remain:\n{volumes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridged_guest_takes_its_static_address_under_libvirt() {
    let (Some(image), Some(uri), Some(bridge)) = (guest_image(), libvirt_uri(), test_bridge())
    else {
        return;
    };
    let mut config = LibvirtConfig::new(uri);
    config.accel = AccelChoice::Fixed(Accel::Tcg);
    config.op_timeout = Duration::from_secs(90);
    let driver = LibvirtDriver::connect(config).await.expect("connect");
    let keys = tempfile::tempdir().expect("key dir");
    common::bridged_life(&driver, keys.path(), image, &bridge).await;
}
