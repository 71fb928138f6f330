//! A guest on user-mode networking reaches the outside world and nothing of
//! its node: the finding was that QEMU's slirp maps the guest's 10.0.2.2 to
//! the host's 127.0.0.1, where the platform's API, Redis or PostgreSQL
//! listen. Checked from inside a real guest (the project's test guest).
//!
//! Needs root (it makes a network namespace as "the outside" and the driver
//! installs its nftables rules). Run with:
//!   VMCLOUD_TEST_GUEST_IMAGE=/abs/path/disk.qcow2 cargo test -p vmcloud-hypervisor --test suite qemu_guest_isolation::
//! Without the variable it is skipped (and says so).

use crate::common;

use common::{BOOT_TIMEOUT, guest_image, key_pair, wait_for_serial};
use vmcloud_hypervisor::{Driver, UserNetworking};

#[tokio::test]
async fn a_user_mode_guest_reaches_the_outside_but_not_the_host() {
    let Some(image) = guest_image() else {
        return;
    };
    let dir = tempfile::tempdir().expect("data dir");
    let mut config = common::test_config(dir.path());
    config.passt = Some("passt".into());
    let driver = vmcloud_hypervisor::QemuDriver::new(config)
        .await
        .expect("QEMU driver");
    assert_eq!(driver.user_networking(), &UserNetworking::Passt);
    let driver: &dyn Driver = &driver;
    let (key, public) = key_pair(dir.path(), "isolation").await;
    let (spec, ssh_host_port) = common::user_mode_guest("isolated", image, public);
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");
    wait_for_serial(
        driver,
        spec.id,
        "VMCLOUD-GUEST-READY hostname=isolated",
        BOOT_TIMEOUT,
    )
    .await;

    common::assert_guest_is_isolated(&key, ssh_host_port, true).await;
    driver.destroy(spec.id).await.expect("destroy");
}

/// Without passt (the default, or no firewall) the driver runs slirp with
/// restrict=on: SSH in works, the guest reaches nothing.
#[tokio::test]
async fn without_passt_a_guest_keeps_its_ssh_port_and_reaches_nothing() {
    let Some(image) = guest_image() else {
        return;
    };
    let dir = tempfile::tempdir().expect("data dir");
    let config = common::test_config(dir.path());
    let driver = vmcloud_hypervisor::QemuDriver::new(config)
        .await
        .expect("QEMU driver");
    assert!(matches!(
        driver.user_networking(),
        UserNetworking::Restricted { .. }
    ));
    let (key, public) = key_pair(dir.path(), "restricted").await;
    let (spec, ssh_host_port) = common::user_mode_guest("restricted", image, public);
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");
    let ready = "VMCLOUD-GUEST-READY hostname=restricted";
    wait_for_serial(&driver, spec.id, ready, BOOT_TIMEOUT).await;

    common::assert_guest_is_isolated(&key, ssh_host_port, false).await;
    driver.destroy(spec.id).await.expect("destroy");
}
