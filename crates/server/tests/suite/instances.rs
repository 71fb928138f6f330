//! Instances over HTTP, on the real local QEMU node: a customer orders a VM,
//! SSHes into it with their key, reboots, stops, starts, snapshots, resizes
//! and deletes it; nothing is left behind. Bad orders are refused with the
//! right problem, and a worker stopped mid-provisioning leaves one VM.
//!
//! The booting tests need the test guest (`guest/build.sh --out guest/out`)
//! in `VMCLOUD_TEST_GUEST_IMAGE`; `scripts/test` builds and sets it. Without
//! it they are skipped, loudly.

use crate::common;

use std::path::{Path, PathBuf};

use common::cloud::{Cloud, PASSWORD, SLOW, guest_image, qemu_running};
use common::{TestApp, TestDatabase, eventually_within, problem};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;
use vmcloud_server::config::Config;

async fn key_pair(dir: &Path) -> (PathBuf, String) {
    let private = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "customer", "-f"])
        .arg(&private)
        .status()
        .await
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
    (private, public.trim().to_owned())
}

/// The command that runs `remote` in the guest over SSH.
fn ssh_command(key: &Path, ssh: &Value, remote: &str) -> Command {
    let port = ssh["port"].as_u64().expect("port").to_string();
    let target = format!(
        "{}@{}",
        ssh["user"].as_str().expect("user"),
        ssh["host"].as_str().expect("host")
    );
    let mut command = Command::new("ssh");
    command
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "LogLevel=ERROR", "-p", &port, "-i"])
        .arg(key)
        .arg(&target)
        .arg(remote);
    command
}

/// Runs a command in the guest, retrying while its SSH server comes up.
async fn ssh(key: &Path, access: &Value, remote: &str) -> String {
    eventually_within("SSH into the guest", SLOW, || async {
        let output = ssh_command(key, access, remote)
            .output()
            .await
            .expect("ssh runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    })
    .await
}

fn port_free(port: u64) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", u16::try_from(port).expect("port"))).is_ok()
}

#[tokio::test]
async fn a_customer_runs_a_vm_through_its_whole_life() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    let id = whole_life(&cloud, &guest).await;
    let vm_dir = cloud.app.config.data_dir.join("vms").join(&id);
    assert!(!vm_dir.exists(), "no disk, seed or socket is left");
    cloud.app.stop().await;
}

/// The same life on a node driven through the local libvirtd, with the
/// QEMU node out of service.
#[cfg(feature = "libvirt")]
#[tokio::test]
async fn a_vm_lives_the_same_life_on_a_libvirt_node() {
    use std::io::Write as _;
    let Some(guest) = guest_image() else { return };
    let Some(uri) = std::env::var("VMCLOUD_TEST_LIBVIRT_URI")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED libvirt instance test: set VMCLOUD_TEST_LIBVIRT_URI (qemu:///system) ***\n"
        );
        return;
    };
    let cloud = Cloud::start(|_| {}).await;
    let nodes = cloud
        .app
        .fetch_json(Method::GET, "/api/v1/admin/nodes", &cloud.admin)
        .await;
    let local = nodes[0]["id"].as_str().expect("the local node").to_owned();
    let maintenance = cloud
        .app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/admin/nodes/{local}"),
            &cloud.admin,
            &json!({"status": "maintenance"}),
        )
        .await;
    assert_eq!(maintenance.status(), 200);
    cloud
        .admin_post(
            "/api/v1/admin/nodes",
            &json!({
                "name": "libvirt-local", "region": "local", "driver": "libvirt", "uri": uri,
                "vcpus": 4, "memory_mib": 4096, "disk_gib": 50,
            }),
        )
        .await;
    let id = whole_life(&cloud, &guest).await;
    let domains = Command::new("virsh")
        .args(["-c", &uri, "list", "--all", "--uuid"])
        .output()
        .await
        .expect("virsh");
    assert!(
        !String::from_utf8_lossy(&domains.stdout).contains(&id),
        "no domain is left"
    );
    let volumes = Command::new("virsh")
        .args(["-c", &uri, "vol-list", "vmcloud"])
        .output()
        .await
        .expect("virsh");
    assert!(
        !String::from_utf8_lossy(&volumes.stdout).contains(&id),
        "no disk or seed volume is left"
    );
    cloud.app.stop().await;
}

/// Orders a VM and takes it through SSH, reboot, stop, start, snapshot,
/// resize and deletion, checking access rules on the way; returns its id.
async fn whole_life(cloud: &Cloud, guest: &Path) -> String {
    let app = &cloud.app;
    cloud.image("tiny", guest).await;
    cloud.plan("small", 1, 256, 1).await;
    cloud.plan("large", 2, 384, 2).await;
    let customer = cloud.customer("ada@example.org").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (private_key, public_key) = key_pair(dir.path()).await;
    let key = app
        .send_json(
            Method::POST,
            "/api/v1/ssh-keys",
            &customer,
            &json!({"public_key": public_key}),
        )
        .await;
    assert_eq!(key.status(), 201);
    let key: Value = key.json().await.expect("json");

    let order = json!({
        "plan": "small", "image": "tiny", "region": "local", "hostname": "ada-web-1",
        "ssh_key_ids": [key["id"]],
    });
    let create = || {
        app.authed(Method::POST, "/api/v1/instances", &customer)
            .header("Idempotency-Key", "order-1")
            .json(&order)
            .send()
    };
    let first = create().await.expect("sent");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["status"], "provisioning");
    assert!(first.get("node").is_none(), "customers do not see nodes");
    let again: Value = create().await.expect("sent").json().await.expect("json");
    assert_eq!(again["id"], first["id"], "the same key orders once");
    let id = first["id"].as_str().expect("id").to_owned();
    cloud
        .finished(&customer, &id, &first["pending_action"])
        .await;

    let running = cloud.instance(&customer, &id).await;
    assert_eq!(running["status"], "running", "{running}");
    let access = running["ssh"].clone();
    assert_eq!(access["user"], "root");
    assert_eq!(
        access["command"],
        format!("ssh -p {} root@127.0.0.1", access["port"])
    );
    assert_eq!(ssh(&private_key, &access, "hostname").await, "ada-web-1");

    // Staff see the node; another customer sees nothing.
    let staff_view = cloud.instance(&cloud.admin, &id).await;
    assert!(staff_view["node"]["name"].is_string(), "{staff_view}");
    let other = cloud.customer("eve@example.org").await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/instances/{id}")),
        (Method::GET, format!("/api/v1/instances/{id}/snapshots")),
        (Method::DELETE, format!("/api/v1/instances/{id}")),
    ] {
        assert_eq!(app.status_of(method, &path, &other).await, 404, "{path}");
    }
    let theirs = app
        .fetch_json(Method::GET, "/api/v1/instances", &other)
        .await;
    assert_eq!(theirs["items"], json!([]));

    cloud.act(&customer, &id, json!({"type": "reboot"})).await;
    assert_eq!(ssh(&private_key, &access, "hostname").await, "ada-web-1");
    cloud.act(&customer, &id, json!({"type": "stop"})).await;
    let stopped = cloud.instance(&customer, &id).await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    let refused = app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{id}/actions"),
            &customer,
            &json!({"type": "reboot"}),
        )
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(problem(refused).await["state"], "stopped");
    cloud.act(&customer, &id, json!({"type": "start"})).await;
    assert_eq!(cloud.instance(&customer, &id).await["status"], "running");

    // The guest powers itself off. The node reports it at once; the
    // reconciler's timer is an hour away in tests.
    assert_eq!(ssh(&private_key, &access, "hostname").await, "ada-web-1");
    // The session may end with the guest before ssh reports success.
    let shutdown = ssh_command(&private_key, &access, "poweroff")
        .output()
        .await
        .expect("ssh runs");
    eprintln!("poweroff over SSH: {shutdown:?}");
    let stopped = eventually_within("the instance to read as stopped", SLOW, || async {
        let instance = cloud.instance(&customer, &id).await;
        (instance["status"] == "stopped").then_some(instance)
    })
    .await;
    assert_eq!(stopped["status_reason"], "The guest powered itself off.");
    cloud.act(&customer, &id, json!({"type": "start"})).await;

    let snapshot = app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{id}/snapshots"),
            &customer,
            &json!({"name": "before-resize"}),
        )
        .await;
    assert_eq!(snapshot.status(), 202);
    let snapshot: Value = snapshot.json().await.expect("json");
    cloud.finished(&customer, &id, &snapshot).await;
    let snapshots = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/instances/{id}/snapshots"),
            &customer,
        )
        .await;
    assert_eq!(snapshots[0]["name"], "before-resize", "{snapshots}");

    cloud
        .act(&customer, &id, json!({"type": "resize", "plan": "large"}))
        .await;
    let resized = cloud.instance(&customer, &id).await;
    assert_eq!(resized["status"], "running");
    assert_eq!(resized["plan"]["slug"], "large");
    assert_eq!(resized["vcpus"], 2);
    assert_eq!(
        ssh(&private_key, &access, "grep -c ^processor /proc/cpuinfo").await,
        "2"
    );

    cloud.delete_instance(&customer, &id).await;
    assert_eq!(
        app.status_of(Method::GET, &format!("/api/v1/instances/{id}"), &customer)
            .await,
        404
    );
    assert!(!qemu_running(&id), "no QEMU process is left");
    // The QEMU node's disk, seed and sockets live in one directory per VM.
    let vm_dir = app.config.data_dir.join("vms").join(&id);
    assert!(!vm_dir.exists(), "{} is left", vm_dir.display());
    assert!(
        port_free(access["port"].as_u64().expect("port")),
        "the port is free"
    );
    let actions = audit_of(app).await;
    for expected in [
        "instance.created",
        "instance.status_changed",
        "instance.delete_requested",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected}: {actions:?}"
        );
    }
    id
}

async fn audit_of(app: &TestApp) -> Vec<String> {
    common::audit_actions(app).await
}

#[tokio::test]
async fn bad_orders_are_refused_with_the_right_problem() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    let app = &cloud.app;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    cloud.plan("huge", 256, 4_000_000, 60_000).await;
    let customer = cloud.customer("ada@example.org").await;
    let order = |changes: Value| {
        let mut order = json!({
            "plan": "small", "image": "tiny", "region": "local", "hostname": "web",
        });
        for (key, value) in changes.as_object().expect("object") {
            order[key] = value.clone();
        }
        order
    };
    let customer = &customer;
    let post = |body: Value| async move {
        app.send_json(Method::POST, "/api/v1/instances", customer, &body)
            .await
    };

    let unknown = post(order(json!({
        "plan": "nope", "image": "nope", "region": "nowhere", "hostname": "-bad_",
        "ssh_key_ids": [uuid::Uuid::now_v7()],
    })))
    .await;
    assert_eq!(unknown.status(), 422);
    let body = problem(unknown).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for field in ["plan", "image", "region", "hostname", "ssh_key_ids/0"] {
        assert!(fields.contains(&field), "{field} in {body}");
    }

    let no_room = post(order(json!({"plan": "huge"}))).await;
    assert_eq!(no_room.status(), 409);
    let body = problem(no_room).await;
    assert_eq!(body["type"], "/problems/no-capacity");
    assert!(
        body["reason"].as_str().expect("reason").contains("room"),
        "{body}"
    );

    let policy = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/instances",
            &cloud.admin,
            &json!({"max_instances_per_user": 0, "placement_strategy": "pack", "restart_crashed": true}),
        )
        .await;
    assert_eq!(policy.status(), 200);
    let over = post(order(json!({}))).await;
    assert_eq!(over.status(), 403);
    let body = problem(over).await;
    assert_eq!(body["type"], "/problems/quota-exceeded");
    assert_eq!(body["limit"], 0);

    let unverified = app.register("new@example.org", PASSWORD).await;
    let unverified = app.session_for(&unverified).await;
    let refused = app
        .send_json(
            Method::POST,
            "/api/v1/instances",
            &unverified,
            &order(json!({})),
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert!(
        problem(refused).await["detail"]
            .as_str()
            .expect("detail")
            .contains("Verify")
    );
    cloud.app.stop().await;
}

#[tokio::test]
async fn a_worker_stopped_mid_provisioning_leaves_exactly_one_vm() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|config| {
        // Cut the provisioning job off at once on shutdown, and hand it to
        // the next process quickly.
        config.shutdown_timeout_secs = 1;
        config.job_visibility_timeout_secs = 5;
    })
    .await;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let customer = cloud.customer("ada@example.org").await;
    let created = common::cloud::order(&cloud.app, &customer, "phoenix").await;
    let id = created["id"].as_str().expect("id").to_owned();
    let action_path = format!(
        "/api/v1/instances/{id}/actions/{}",
        created["pending_action"]["id"].as_str().expect("action")
    );
    // Wait until the VM is started and the guest is booting.
    eventually_within("provisioning to wait for the guest", SLOW, || async {
        let action = cloud
            .app
            .fetch_json(Method::GET, &action_path, &customer)
            .await;
        (action["step"].as_i64() >= Some(5)).then_some(())
    })
    .await;
    let Cloud { app, admin: _ } = cloud;
    let (database, config): (TestDatabase, Config) = app.stop_keeping_data().await;
    assert!(qemu_running(&id), "the VM outlives the platform");

    let app = TestApp::spawn_on(database, config).await;
    let customer = app.session_for(&customer.user_id).await;
    let action = eventually_within("provisioning to finish after the restart", SLOW, || async {
        let action = app.fetch_json(Method::GET, &action_path, &customer).await;
        matches!(action["status"].as_str(), Some("succeeded" | "failed")).then_some(action)
    })
    .await;
    assert_eq!(action["status"], "succeeded", "{action}");
    let instance = app
        .fetch_json(Method::GET, &format!("/api/v1/instances/{id}"), &customer)
        .await;
    assert_eq!(instance["status"], "running");
    let list = app
        .fetch_json(Method::GET, "/api/v1/instances", &customer)
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
    let processes = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let cmdline = String::from_utf8_lossy(cmdline);
            cmdline.contains("qemu-system") && cmdline.contains(&id)
        })
        .count();
    assert_eq!(processes, 1, "exactly one VM");

    common::cloud::delete_instance(&app, &customer, &id).await;
    assert!(!qemu_running(&id));
    app.stop().await;
}

/// The pid of the VM's QEMU process.
fn qemu_pid(vm: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("qemu-system") && cmdline.contains(vm))
                .then(|| entry.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

#[tokio::test]
async fn the_reconciler_notices_a_killed_qemu_and_starts_it_again() {
    let Some(guest) = guest_image() else { return };
    // No timer pass: the node's event alone has the instance checked.
    let cloud = Cloud::start(|_| {}).await;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let customer = cloud.customer("ada@example.org").await;
    let id = cloud.running_instance(&customer, "lazarus").await;
    let before = qemu_pid(&id).expect("QEMU runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(before).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill");

    // Marked with the reason (audited), then started again by a recover action.
    eventually_within("the VM to run again", SLOW, || async {
        let instance = cloud.instance(&customer, &id).await;
        (instance["status"] == "running" && qemu_pid(&id).is_some_and(|pid| pid != before))
            .then_some(())
    })
    .await;
    let actions = cloud
        .app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/instances/{id}/actions"),
            &customer,
        )
        .await;
    assert_eq!(actions["items"][0]["type"], "recover", "{actions}");
    assert!(
        common::audit_actions(&cloud.app)
            .await
            .iter()
            .any(|a| a == "instance.drift_repaired")
    );
    cloud.delete_instance(&customer, &id).await;
    cloud.app.stop().await;
}

/// A node on a host bridge: each instance gets an address of its own from
/// the pool, is reached on it directly, and gives it back when deleted.
#[tokio::test]
async fn a_bridged_node_gives_each_instance_an_address_of_its_own() {
    use std::io::Write as _;
    let Some(guest) = guest_image() else { return };
    let Ok(bridge) = std::env::var("VMCLOUD_TEST_BRIDGE") else {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED bridged instance test: set VMCLOUD_TEST_BRIDGE to a bridge with \
             10.213.0.1/16 (scripts/setup-bridge.sh makes vmcbr0) ***\n"
        );
        return;
    };
    let cloud = Cloud::start(|_| {}).await;
    let app = &cloud.app;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let nodes = app
        .fetch_json(Method::GET, "/api/v1/admin/nodes", &cloud.admin)
        .await;
    let node = format!(
        "/api/v1/admin/nodes/{}",
        nodes[0]["id"].as_str().expect("the local node")
    );
    let (node, admin) = (&node, &cloud.admin);
    let set_network = |network: Value| async move {
        app.send_json(Method::PATCH, node, admin, &json!({ "network": network }))
            .await
    };
    let bad = set_network(json!({"mode": "bridge", "bridge": "no spaces allowed"})).await;
    assert_eq!(bad.status(), 422);
    assert_eq!(problem(bad).await["errors"][0]["field"], "network.bridge");
    let bridged = set_network(json!({"mode": "bridge", "bridge": bridge})).await;
    assert_eq!(bridged.status(), 200);
    let bridged: Value = bridged.json().await.expect("json");
    assert_eq!(
        bridged["network"],
        json!({"mode": "bridge", "bridge": bridge})
    );

    // One address in a /16 no other test picks.
    let [a, b, ..] = uuid::Uuid::new_v4().into_bytes();
    let address = format!("10.213.{}.{}", a.clamp(1, 254), b.clamp(1, 254));
    let bad_range = app
        .send_json(
            Method::POST,
            "/api/v1/admin/ip-addresses",
            &cloud.admin,
            &json!({"region": "local", "first": address, "prefix_len": 16, "gateway": address}),
        )
        .await;
    assert_eq!(bad_range.status(), 422);
    assert_eq!(problem(bad_range).await["errors"][0]["field"], "gateway");
    let pool = cloud
        .admin_post(
            "/api/v1/admin/ip-addresses",
            &json!({
                "region": "local", "first": address, "prefix_len": 16,
                "gateway": "10.213.0.1", "nameservers": ["10.213.0.1"],
            }),
        )
        .await;
    let pool_entry = format!(
        "/api/v1/admin/ip-addresses/{}",
        pool[0]["id"].as_str().expect("id")
    );

    let customer = cloud.customer("ada@example.org").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (private_key, public_key) = key_pair(dir.path()).await;
    let key: Value = app
        .send_json(
            Method::POST,
            "/api/v1/ssh-keys",
            &customer,
            &json!({"public_key": public_key}),
        )
        .await
        .json()
        .await
        .expect("json");
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/instances",
            &customer,
            &json!({
                "plan": "small", "image": "tiny", "region": "local", "hostname": "bridged",
                "ssh_key_ids": [key["id"]],
            }),
        )
        .await;
    assert_eq!(created.status(), 202);
    let created: Value = created.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    cloud
        .finished(&customer, &id, &created["pending_action"])
        .await;
    let running = cloud.instance(&customer, &id).await;
    assert_eq!(running["ips"], json!([address]), "{running}");
    assert_eq!(running["ssh"]["port"], 22);
    assert_eq!(running["ssh"]["command"], format!("ssh root@{address}"));
    // Straight to the guest's own address: nothing is forwarded.
    let answer = ssh(
        &private_key,
        &running["ssh"],
        "hostname; ip -4 -o addr show dev eth0",
    )
    .await;
    assert!(answer.starts_with("bridged\n"), "{answer}");
    assert!(answer.contains(&format!("inet {address}/16")), "{answer}");

    let held = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/ip-addresses?assigned=true",
            &cloud.admin,
        )
        .await;
    assert_eq!(held["items"][0]["instance"], id.as_str(), "{held}");
    assert_eq!(
        app.status_of(Method::DELETE, &pool_entry, &cloud.admin)
            .await,
        409,
        "a held address stays in the pool"
    );
    let change = set_network(json!({"mode": "user"})).await;
    assert_eq!(change.status(), 409, "the node's network is in use");

    cloud.delete_instance(&customer, &id).await;
    let tap = vmcloud_hypervisor::tap_name(id.parse().expect("uuid"));
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "the tap went with the VM"
    );
    let free = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/ip-addresses?assigned=false",
            &cloud.admin,
        )
        .await;
    assert_eq!(free["items"][0]["address"], address.as_str(), "{free}");
    assert_eq!(
        app.status_of(Method::DELETE, &pool_entry, &cloud.admin)
            .await,
        204
    );
    assert_eq!(set_network(json!({"mode": "user"})).await.status(), 200);
    cloud.app.stop().await;
}
