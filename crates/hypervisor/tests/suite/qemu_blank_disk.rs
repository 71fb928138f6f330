//! The QEMU driver against real QEMU processes, with no guest OS: the base
//! image is a blank disk, so SeaBIOS runs and finds nothing to boot. That is
//! enough to exercise every host-side path of the driver.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{TestNode, wait_for_event, wait_for_serial};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use uuid::Uuid;
use vmcloud_hypervisor::qemu::qmp::QmpClient;
use vmcloud_hypervisor::{
    AccelChoice, Driver, Error, QemuConfig, QemuDriver, StopOutcome, VmStatus, VncEndpoint,
};

const GIB: u64 = 1024 * 1024 * 1024;

async fn qmp_query(node: &TestNode, id: Uuid, command: &str) -> serde_json::Value {
    let client = QmpClient::connect(&node.qmp_socket(id))
        .await
        .expect("QMP connect");
    client.execute(command, None).await.expect("QMP command")
}

#[tokio::test]
async fn a_vm_goes_through_its_whole_lifecycle() {
    let node = TestNode::new().await;
    let driver: &dyn Driver = node.driver.as_ref();
    let spec = node.blank_spec("lifecycle");
    let id = spec.id;

    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Missing);
    driver.define(&spec).await.expect("define");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Stopped);
    assert_eq!(driver.spec(id).await.expect("spec"), spec);

    driver.start(id).await.expect("start");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Running);
    driver
        .start(id)
        .await
        .expect("starting a running VM is a no-op");

    driver.pause(id).await.expect("pause");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Paused);
    driver
        .pause(id)
        .await
        .expect("pausing a paused VM is a no-op");
    let error = driver.reboot(id).await.expect_err("reboot while paused");
    assert!(
        matches!(
            error,
            Error::InvalidState {
                state: VmStatus::Paused,
                ..
            }
        ),
        "{error}"
    );
    driver.resume(id).await.expect("resume");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Running);
    driver.reboot(id).await.expect("reboot");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Running);

    // SeaBIOS ignores the ACPI power button: the stop must fall back to force.
    let started = Instant::now();
    let outcome = driver.stop(id, Duration::from_secs(1)).await.expect("stop");
    assert_eq!(outcome, StopOutcome::Forced);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Stopped);
    let again = driver
        .stop(id, Duration::from_secs(1))
        .await
        .expect("stop again");
    assert_eq!(again, StopOutcome::AlreadyStopped);
    let error = driver.pause(id).await.expect_err("pause while stopped");
    assert!(
        matches!(
            error,
            Error::InvalidState {
                state: VmStatus::Stopped,
                ..
            }
        ),
        "{error}"
    );

    driver.start(id).await.expect("start after stop");
    driver.force_stop(id).await.expect("force stop");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Stopped);

    driver.destroy(id).await.expect("destroy");
    assert!(!node.vm_dir(id).exists(), "destroy leaves files behind");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Missing);
    driver.destroy(id).await.expect("destroying twice is fine");
}

#[tokio::test]
async fn define_is_idempotent_and_checks_the_base_image() {
    let node = TestNode::new().await;
    let driver = &node.driver;
    let spec = node.blank_spec("define");

    driver.define(&spec).await.expect("define");
    driver.define(&spec).await.expect("same spec again");
    let mut changed = spec.clone();
    changed.vcpus = 2;
    let error = driver.define(&changed).await.expect_err("different spec");
    assert!(
        matches!(error, Error::AlreadyExists(id) if id == spec.id),
        "{error}"
    );

    let mode = std::fs::metadata(node.vm_dir(spec.id))
        .expect("VM dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the VM dir holds customer user-data");
    let overlay = node.vm_dir(spec.id).join("disk.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&overlay)
        .output()
        .expect("qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON");
    assert_eq!(info["virtual-size"], 2 * GIB);
    assert_eq!(
        info["backing-filename"],
        node.blank_base_image().to_str().expect("UTF-8")
    );

    let big_base = node.data_dir().join("big.qcow2");
    let created = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&big_base)
        .arg("3G")
        .status()
        .expect("qemu-img create");
    assert!(created.success());
    let too_small = common::spec("too-small", big_base, 2);
    let error = driver
        .define(&too_small)
        .await
        .expect_err("disk smaller than its base");
    assert!(
        error.to_string().contains("smaller than the base image"),
        "{error}"
    );

    let raw_base = node.data_dir().join("raw.img");
    std::fs::write(&raw_base, vec![0; 1024 * 1024]).expect("raw image");
    let raw = common::spec("raw", raw_base, 2);
    let error = driver.define(&raw).await.expect_err("raw base image");
    assert!(error.to_string().contains("not qcow2"), "{error}");
    for failed in [too_small.id, raw.id] {
        assert!(
            !node.vm_dir(failed).exists(),
            "a failed define leaves files behind"
        );
    }

    let list = driver.list().await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id, list[0].name.as_str(), list[0].status),
        (spec.id, "define", VmStatus::Stopped)
    );
}

#[tokio::test]
async fn unknown_vms_are_not_found() {
    let node = TestNode::new().await;
    let driver = &node.driver;
    let id = Uuid::new_v4();
    for result in [
        driver.start(id).await,
        driver.force_stop(id).await,
        driver.pause(id).await,
        driver.resize(id, 1, 128).await,
        driver.grow_disk(id, 10).await,
    ] {
        assert!(
            matches!(result, Err(Error::NotFound(missing)) if missing == id),
            "{result:?}"
        );
    }
    assert!(matches!(driver.stats(id).await, Err(Error::NotFound(_))));
    assert!(matches!(
        driver.snapshot_list(id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        driver.serial_log(id, 10).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_new_driver_reattaches_to_running_vms() {
    let mut node = TestNode::new().await;
    let spec = node.blank_spec("survivor");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");
    let pid = node.qemu_pid(spec.id);

    // The platform restarts: the old driver goes, a new one takes over.
    node.restart_driver().await;

    assert_eq!(
        node.driver.status(spec.id).await.expect("status"),
        VmStatus::Running
    );
    assert_eq!(
        node.qemu_pid(spec.id),
        pid,
        "the VM was restarted, not kept"
    );
    let listed = node.driver.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id, listed[0].status),
        (spec.id, VmStatus::Running)
    );
    node.driver
        .pause(spec.id)
        .await
        .expect("pause through the new driver");
    let outcome = node
        .driver
        .stop(spec.id, Duration::from_secs(1))
        .await
        .expect("stop");
    assert_eq!(
        outcome,
        StopOutcome::Forced,
        "a paused VM is cut off at once"
    );
    assert_eq!(
        node.driver.status(spec.id).await.expect("status"),
        VmStatus::Stopped
    );
}

#[tokio::test]
async fn a_killed_qemu_reads_as_crashed_and_can_be_started_again() {
    let node = TestNode::new().await;
    let spec = node.blank_spec("crashy");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");

    let pid = node.qemu_pid(spec.id);
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.driver.status(spec.id).await.expect("status") != VmStatus::Crashed {
        assert!(
            Instant::now() < deadline,
            "the dead VM never read as crashed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = node
        .driver
        .stats(spec.id)
        .await
        .expect_err("stats of a crashed VM");
    assert!(
        matches!(
            error,
            Error::InvalidState {
                state: VmStatus::Crashed,
                ..
            }
        ),
        "{error}"
    );

    node.driver
        .start(spec.id)
        .await
        .expect("restart after crash");
    assert_eq!(
        node.driver.status(spec.id).await.expect("status"),
        VmStatus::Running
    );
    node.driver.force_stop(spec.id).await.expect("force stop");
}

#[tokio::test]
async fn stats_count_cpu_memory_and_disk() {
    let node = TestNode::new().await;
    let spec = node.blank_spec("busy");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");
    // SeaBIOS reads the boot sector, so the disk counters move.
    wait_for_serial(
        node.driver.as_ref(),
        spec.id,
        "No bootable device",
        Duration::from_secs(30),
    )
    .await;

    let stats = node.driver.stats(spec.id).await.expect("stats");
    assert!(stats.cpu_time_ns > 0, "{stats:?}");
    assert!(stats.memory_rss_bytes > 1024 * 1024, "{stats:?}");
    assert!(stats.disk_read_bytes >= 512, "{stats:?}");
    assert_eq!(
        (stats.net_rx_bytes, stats.net_tx_bytes),
        (None, None),
        "user networking has no counters"
    );
    node.driver.force_stop(spec.id).await.expect("force stop");
}

#[tokio::test]
async fn serial_console_streams_the_firmware_output() {
    let node = TestNode::new().await;
    let spec = node.blank_spec("console");
    node.driver.define(&spec).await.expect("define");
    let error = node
        .driver
        .serial_console(spec.id)
        .await
        .err()
        .expect("console of a stopped VM");
    assert!(
        matches!(
            error,
            Error::InvalidState {
                state: VmStatus::Stopped,
                ..
            }
        ),
        "{error}"
    );
    node.driver.start(spec.id).await.expect("start");
    // Nobody is connected during the first boot: only the log sees it.
    let first_boot = "No bootable device";
    let log = wait_for_serial(
        node.driver.as_ref(),
        spec.id,
        first_boot,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(log.matches("SeaBIOS").count(), 1, "{log}");

    let mut console = node.driver.serial_console(spec.id).await.expect("console");
    console
        .write_all(b"\r")
        .await
        .expect("typing on the console");
    // A reset makes SeaBIOS print its banner again, now that we listen.
    node.driver.reboot(spec.id).await.expect("reboot");
    let mut seen = Vec::new();
    let read_banner = async {
        let mut buffer = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains(first_boot) {
            let read = console.read(&mut buffer).await.expect("console read");
            assert!(read > 0, "console closed");
            seen.extend_from_slice(&buffer[..read]);
        }
    };
    let banner = tokio::time::timeout(Duration::from_secs(30), read_banner).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        banner.is_ok() && seen.contains("SeaBIOS"),
        "the console showed {seen:?}"
    );
    drop(console);

    let log = node
        .driver
        .serial_log(spec.id, 64 * 1024)
        .await
        .expect("log");
    assert_eq!(String::from_utf8_lossy(&log).matches("SeaBIOS").count(), 2);
    let tail = node.driver.serial_log(spec.id, 10).await.expect("tail");
    assert_eq!(tail.len(), 10);
    node.driver.force_stop(spec.id).await.expect("force stop");
}

#[tokio::test]
async fn vnc_endpoint_speaks_rfb() {
    let node = TestNode::new().await;
    let spec = node.blank_spec("display");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");

    let VncEndpoint::UnixSocket(path) = node.driver.vnc_endpoint(spec.id).await.expect("endpoint")
    else {
        panic!("the QEMU driver serves VNC on a unix socket");
    };
    let mut vnc = UnixStream::connect(&path).await.expect("connect to VNC");
    let mut version = [0; 12];
    vnc.read_exact(&mut version).await.expect("RFB greeting");
    assert_eq!(&version, b"RFB 003.008\n");
    node.driver.force_stop(spec.id).await.expect("force stop");
}

#[tokio::test]
async fn qmp_client_sees_real_qemu_events() {
    let node = TestNode::new().await;
    let spec = node.blank_spec("events");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");

    let client = QmpClient::connect(&node.qmp_socket(spec.id))
        .await
        .expect("connect");
    let mut events = client.subscribe();
    for command in ["stop", "cont", "system_reset", "system_powerdown", "quit"] {
        client.execute(command, None).await.expect("command");
    }
    let mut names = Vec::new();
    let collect = async {
        while let Ok(event) = events.recv().await {
            names.push(event.name);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("the event stream ends when QEMU quits");
    // With no bootable disk the firmware resets the machine by itself, so
    // some QEMU versions report RESET more than once.
    names.dedup();
    assert_eq!(names, ["STOP", "RESUME", "RESET", "POWERDOWN", "SHUTDOWN"]);

    let error = client
        .execute("query-status", None)
        .await
        .expect_err("QEMU is gone");
    assert!(error.to_string().contains("closed"), "{error}");
    let error = client
        .execute("no-such-command", Some(json!({})))
        .await
        .expect_err("still gone");
    assert!(error.to_string().contains("closed"), "{error}");
    // quit through QMP is a clean exit: the VM reads as stopped, not crashed.
    assert_eq!(
        node.driver.status(spec.id).await.expect("status"),
        VmStatus::Stopped
    );
}

/// Pauses the VM through QMP until the driver reports it. A driver's
/// watcher connects to the VM's events monitor in the background (after
/// `start`, or once a previous driver's watcher let go of it), and under
/// load a first pause can come before it does.
async fn pause_until_heard(
    node: &TestNode,
    events: &mut tokio::sync::broadcast::Receiver<vmcloud_hypervisor::VmEvent>,
    id: Uuid,
) {
    for _ in 0..30 {
        qmp_query(node, id, "cont").await;
        qmp_query(node, id, "stop").await;
        let paused = wait_for_event(events, id, VmStatus::Paused);
        if tokio::time::timeout(Duration::from_secs(2), paused)
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("the driver never reported the VM paused");
}

#[tokio::test]
async fn events_report_changes_nobody_asked_the_driver_for() {
    let mut node = TestNode::new().await;
    let spec = node.blank_spec("watched");
    let id = spec.id;
    node.driver.define(&spec).await.expect("define");
    let mut events = node.driver.events();
    node.driver.start(id).await.expect("start");

    // Commands sent straight to QEMU, as an operator with a monitor would.
    pause_until_heard(&node, &mut events, id).await;
    qmp_query(&node, id, "cont").await;
    wait_for_event(&mut events, id, VmStatus::Running).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &node.qemu_pid(id).to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for_event(&mut events, id, VmStatus::Crashed).await;

    // A VM that outlived the driver is watched by the next one.
    node.driver.start(id).await.expect("start again");
    node.restart_driver().await;
    let mut events = node.driver.events();
    pause_until_heard(&node, &mut events, id).await;
    qmp_query(&node, id, "cont").await;
    wait_for_event(&mut events, id, VmStatus::Running).await;
    qmp_query(&node, id, "quit").await;
    wait_for_event(&mut events, id, VmStatus::Stopped).await;
}

#[tokio::test]
async fn resize_grow_and_snapshots() {
    let node = TestNode::new().await;
    let driver = &node.driver;
    let spec = node.blank_spec("sized");
    let id = spec.id;
    driver.define(&spec).await.expect("define");

    let error = driver.resize(id, 0, 128).await.expect_err("zero vCPUs");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    driver.resize(id, 2, 256).await.expect("resize");
    driver.start(id).await.expect("start");
    let cpus = qmp_query(&node, id, "query-cpus-fast").await;
    assert_eq!(cpus.as_array().map(Vec::len), Some(2));
    let memory = qmp_query(&node, id, "query-memory-size-summary").await;
    assert_eq!(memory["base-memory"], 256 * 1024 * 1024);

    let error = driver
        .resize(id, 1, 128)
        .await
        .expect_err("resize while running");
    assert!(
        matches!(
            error,
            Error::InvalidState {
                state: VmStatus::Running,
                ..
            }
        ),
        "{error}"
    );
    let error = driver
        .snapshot_create(id, "live")
        .await
        .expect_err("snapshot while running");
    assert!(matches!(error, Error::InvalidState { .. }), "{error}");

    // Disks grow while running, through QEMU.
    driver.grow_disk(id, 3).await.expect("grow while running");
    let blocks = qmp_query(&node, id, "query-block").await;
    let disk = blocks
        .as_array()
        .and_then(|devices| devices.iter().find(|d| d["device"] == "disk0"))
        .expect("disk0");
    assert_eq!(disk["inserted"]["image"]["virtual-size"], 3 * GIB);
    let error = driver.grow_disk(id, 2).await.expect_err("shrink");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
    driver.force_stop(id).await.expect("force stop");

    let first = driver.snapshot_create(id, "at-3g").await.expect("snapshot");
    assert_eq!(first.name, "at-3g");
    let error = driver
        .snapshot_create(id, "at-3g")
        .await
        .expect_err("duplicate");
    assert!(error.to_string().contains("already exists"), "{error}");
    // ...and offline, through qemu-img.
    driver.grow_disk(id, 4).await.expect("grow while stopped");
    assert_eq!(driver.spec(id).await.expect("spec").disk_gib, 4);
    driver
        .snapshot_create(id, "at-4g")
        .await
        .expect("second snapshot");
    let names: Vec<_> = driver
        .snapshot_list(id)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["at-3g", "at-4g"]);

    driver.snapshot_revert(id, "at-3g").await.expect("revert");
    assert_eq!(
        driver.spec(id).await.expect("spec").disk_gib,
        3,
        "revert brings back the old size"
    );
    let error = driver
        .snapshot_revert(id, "never-taken")
        .await
        .expect_err("unknown snapshot");
    assert!(matches!(error, Error::SnapshotNotFound { .. }), "{error}");
    driver.snapshot_delete(id, "at-4g").await.expect("delete");
    assert_eq!(driver.snapshot_list(id).await.expect("list").len(), 1);

    driver.start(id).await.expect("boots after a revert");
    assert_eq!(driver.status(id).await.expect("status"), VmStatus::Running);
    driver.destroy(id).await.expect("destroy");
}

#[tokio::test]
async fn a_hung_qemu_times_out_instead_of_hanging_the_caller() {
    let dir = tempfile::tempdir().expect("temporary data dir");
    let mut config = QemuConfig::new(dir.path());
    config.accel = AccelChoice::Fixed(vmcloud_hypervisor::Accel::Tcg);
    config.op_timeout = Duration::from_secs(2);
    let node = TestNode {
        driver: std::sync::Arc::new(QemuDriver::new(config).await.expect("driver")),
        dir,
    };
    let spec = node.blank_spec("frozen");
    node.driver.define(&spec).await.expect("define");
    node.driver.start(spec.id).await.expect("start");

    let pid = node.qemu_pid(spec.id).to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    let error = node
        .driver
        .status(spec.id)
        .await
        .expect_err("frozen monitor");
    assert!(
        matches!(error, Error::Timeout { op: "status", .. }),
        "{error}"
    );
    let listed = node.driver.list().await.expect("list still answers");
    assert_eq!(listed[0].status, VmStatus::Unknown);
    signal("-CONT");
    assert_eq!(
        node.driver.status(spec.id).await.expect("status"),
        VmStatus::Running
    );
    node.driver.force_stop(spec.id).await.expect("force stop");
}
