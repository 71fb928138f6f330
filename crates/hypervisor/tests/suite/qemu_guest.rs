//! The QEMU driver with a real guest OS: the project's test guest
//! (`guest/build.sh --out DIR` makes `DIR/disk.qcow2`). It reads the cidata
//! seed, prints `VMCLOUD-GUEST-READY hostname=<name>` on ttyS0 once SSH is up,
//! and powers off on the ACPI power button.
//!
//! Run with:
//!   VMCLOUD_TEST_GUEST_IMAGE=/abs/path/disk.qcow2 cargo test -p vmcloud-hypervisor --test suite qemu_guest::
//! Without the variable every test here is skipped (and says so).

use crate::common;

use std::time::Duration;

use common::{
    BOOT_TIMEOUT, TestNode, guest_image, key_pair, ssh, test_bridge, wait_for_serial,
    wait_for_serial_times,
};
use vmcloud_hypervisor::{Driver, Network, StopOutcome, VmStatus};

#[tokio::test]
async fn a_guest_boots_from_its_seed_takes_ssh_and_powers_off_on_request() {
    let Some(image) = guest_image() else {
        return;
    };
    let node = TestNode::new().await;
    let driver: &dyn Driver = node.driver.as_ref();
    let (platform_key, platform_public) = key_pair(node.data_dir(), "platform").await;
    let (customer_key, customer_public) = key_pair(node.data_dir(), "customer").await;

    let mut spec = common::spec("guest-one", image, 1);
    spec.memory_mib = 256;
    spec.cloud_init.ssh_authorized_keys = vec![platform_public.clone()];
    // The customer's own cloud-config adds a key: both must work.
    spec.cloud_init.user_data = Some(format!(
        "#cloud-config\nssh_authorized_keys:\n  - {customer_public}\n"
    ));
    let Network::User { ssh_host_port, .. } = spec.network else {
        unreachable!("test specs use user networking");
    };
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");

    let ready = "VMCLOUD-GUEST-READY hostname=guest-one";
    wait_for_serial(driver, spec.id, ready, BOOT_TIMEOUT).await;
    let answer = ssh(
        &platform_key,
        ssh_host_port,
        "hostname; cat /root/.ssh/authorized_keys",
    )
    .await;
    assert!(answer.starts_with("guest-one\n"), "{answer}");
    assert!(answer.contains(&platform_public), "{answer}");
    assert!(answer.contains(&customer_public), "{answer}");
    assert_eq!(
        ssh(&customer_key, ssh_host_port, "hostname").await.trim(),
        "guest-one"
    );

    let stats = driver.stats(spec.id).await.expect("stats");
    assert!(stats.disk_read_bytes > 1024 * 1024, "{stats:?}");

    let outcome = driver
        .stop(spec.id, Duration::from_secs(120))
        .await
        .expect("stop");
    assert_eq!(
        outcome,
        StopOutcome::Graceful,
        "the guest ignored the power button"
    );
    assert_eq!(
        driver.status(spec.id).await.expect("status"),
        VmStatus::Stopped
    );

    // Second boot from the same disk and seed.
    driver.start(spec.id).await.expect("second start");
    wait_for_serial_times(driver, spec.id, ready, 2, BOOT_TIMEOUT).await;
    assert_eq!(
        ssh(&platform_key, ssh_host_port, "hostname").await.trim(),
        "guest-one"
    );
    driver.destroy(spec.id).await.expect("destroy");
}

#[tokio::test]
async fn a_bridged_guest_takes_its_static_address_on_the_bridge() {
    let (Some(image), Some(bridge)) = (guest_image(), test_bridge()) else {
        return;
    };
    let node = TestNode::new().await;
    common::bridged_life(node.driver.as_ref(), node.data_dir(), image, &bridge).await;
}
