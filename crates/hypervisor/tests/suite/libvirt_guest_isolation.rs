//! The libvirt driver's user-mode guests (QEMU's slirp, run by libvirt as
//! `libvirt-qemu`) reach the outside but nothing of their node, as on QEMU
//! nodes (see qemu_guest_isolation.rs): on a local URI the driver installs
//! the guest firewall for libvirt's QEMU account.
//!
//! Needs root. Run with (scripts/setup-libvirt.sh starts a local libvirtd):
//!   VMCLOUD_TEST_GUEST_IMAGE=/abs/path/disk.qcow2 VMCLOUD_TEST_LIBVIRT_URI=qemu:///system \
//!     cargo test -p vmcloud-hypervisor --features libvirt --test suite libvirt_guest_isolation::
//! Without both variables the test is skipped (and says so).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{BOOT_TIMEOUT, guest_image, key_pair, wait_for_serial};
use vmcloud_hypervisor::{Accel, AccelChoice, Driver, LibvirtConfig, LibvirtDriver};

#[tokio::test(flavor = "multi_thread")]
async fn a_user_mode_libvirt_guest_reaches_the_outside_but_not_the_host() {
    let (Some(image), Ok(uri)) = (guest_image(), std::env::var("VMCLOUD_TEST_LIBVIRT_URI")) else {
        common::skip_loudly("set VMCLOUD_TEST_LIBVIRT_URI (e.g. qemu:///system) to run it");
        return;
    };
    let mut config = LibvirtConfig::new(uri);
    config.accel = AccelChoice::Fixed(Accel::Tcg);
    config.op_timeout = Duration::from_secs(90);
    let driver = Arc::new(LibvirtDriver::connect(config).await.expect("connect"));
    let keys = tempfile::tempdir().expect("key dir");
    let (key, public) = key_pair(keys.path(), "isolation").await;
    let (spec, ssh_host_port) = common::user_mode_guest("libvirt-isolated", image, public);
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");
    let ready = "VMCLOUD-GUEST-READY hostname=libvirt-isolated";
    let (booted, id) = (Arc::clone(&driver), spec.id);
    let checked = async move {
        wait_for_serial(booted.as_ref(), id, ready, BOOT_TIMEOUT).await;
        common::assert_guest_is_isolated(&key, ssh_host_port, true).await;
    };
    // Destroyed whatever the outcome: a libvirt domain outlives the test.
    let outcome = tokio::spawn(checked).await;
    driver.destroy(spec.id).await.expect("destroy");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
