//! The platform with its local QEMU node booting the real test guest, for
//! the tests of instances, their consoles and their metrics.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng as _;
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::config::{Config, QemuAccel};
use vmcloud_server::db::entities::user::UserRole;

use super::{Session, TestApp, eventually, eventually_within};

pub const PASSWORD: &str = "correct horse battery staple";
/// Bound on waits for VMs booting, stopping or being snapshotted under TCG.
pub const SLOW: Duration = Duration::from_secs(300);

pub fn guest_image() -> Option<PathBuf> {
    let image = std::env::var_os("VMCLOUD_TEST_GUEST_IMAGE").map(PathBuf::from);
    if image.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED guest boot test: set VMCLOUD_TEST_GUEST_IMAGE to the test guest's \
             disk.qcow2 (guest/build.sh --out DIR) to run it ***\n"
        );
    }
    image
}

/// The platform with its local QEMU node, SSH ports on loopback from a
/// range no concurrent test uses.
pub fn with_local_node(config: &mut Config) {
    config.local_node = true;
    config.qemu_accel = QemuAccel::Tcg;
    config.ssh_bind = "127.0.0.1".parse().expect("ip");
    let base = rand::rng().random_range(200..600_u16) * 100;
    config.ssh_port_min = base;
    config.ssh_port_max = base + 99;
    config.guest_boot_timeout_secs = 300;
    config.guest_stop_timeout_secs = 30;
}

pub struct Cloud {
    pub app: TestApp,
    pub admin: Session,
}

/// Whether a QEMU process of this VM is alive on the host.
pub fn qemu_running(vm: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .any(|cmdline| {
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("qemu-system") && cmdline.contains(vm)
        })
}

impl Cloud {
    pub async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let app = TestApp::spawn_with(|config| {
            with_local_node(config);
            configure(config);
        })
        .await;
        Self::with_admin(app).await
    }

    /// Like [`Cloud::start`], on simulated time: billing's own timer runs
    /// once at start, so the test runs the billing passes.
    pub async fn start_at(clock: ManualClock, configure: impl FnOnce(&mut Config)) -> Self {
        let app = TestApp::spawn_with_clock(
            |config| {
                with_local_node(config);
                config.billing_accrual_interval_secs = 3600;
                configure(config);
            },
            std::sync::Arc::new(clock),
        )
        .await;
        Self::with_admin(app).await
    }

    async fn with_admin(app: TestApp) -> Self {
        let admin_id = app
            .create_user("root@example.org", PASSWORD, UserRole::Admin)
            .await;
        let admin = app.session_for(&admin_id).await;
        Self { app, admin }
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Value {
        let response = self
            .app
            .send_json(Method::POST, path, &self.admin, body)
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        assert!(status == 201 || status == 202, "{path}: {status} {body}");
        body
    }

    /// Registers an image from a local qcow2, staged in the import directory
    /// as an operator would, waits until it is imported and publishes it.
    pub async fn image(&self, slug: &str, file: &Path) -> Value {
        let staged = format!("{slug}.qcow2");
        std::fs::copy(file, self.app.state.config.image_import_dir().join(&staged))
            .expect("stage the image");
        let image = self
            .admin_post(
                "/api/v1/admin/images",
                &json!({
                    "slug": slug, "name": format!("Image {slug}"), "os_family": "linux",
                    "os_version": "1", "default_user": "root",
                    "source": staged, "min_disk_gib": 1,
                }),
            )
            .await;
        let id = image["id"].as_str().expect("id").to_owned();
        let image = eventually("the image import", || async {
            let image = self
                .app
                .fetch_json(
                    Method::GET,
                    &format!("/api/v1/admin/images/{id}"),
                    &self.admin,
                )
                .await;
            (image["status"] != "importing").then_some(image)
        })
        .await;
        assert_eq!(image["status"], "available", "{image}");
        let published = self
            .app
            .send_json(
                Method::PATCH,
                &format!("/api/v1/admin/images/{id}"),
                &self.admin,
                &json!({"active": true}),
            )
            .await;
        assert_eq!(published.status(), 200, "publishing {slug}");
        published.json().await.expect("json")
    }

    pub async fn plan(&self, slug: &str, vcpus: u32, memory_mib: u32, disk_gib: u32) {
        self.admin_post(
            "/api/v1/admin/products",
            &json!({
                "slug": slug, "name": format!("Plan {slug}"), "vcpus": vcpus,
                "memory_mib": memory_mib, "disk_gib": disk_gib, "transfer_gib": 100,
                "price_monthly_minor": 500, "price_hourly_minor": 1, "regions": ["local"],
            }),
        )
        .await;
    }

    pub async fn customer(&self, email: &str) -> Session {
        let id = self
            .app
            .create_user(email, PASSWORD, UserRole::Customer)
            .await;
        self.app.session_for(&id).await
    }

    pub async fn instance(&self, session: &Session, id: &str) -> Value {
        self.app
            .fetch_json(Method::GET, &format!("/api/v1/instances/{id}"), session)
            .await
    }

    /// Waits for an action to finish and returns it; panics if it failed.
    pub async fn finished(&self, session: &Session, instance: &str, action: &Value) -> Value {
        finished(&self.app, session, instance, action).await
    }

    pub async fn act(&self, session: &Session, instance: &str, body: Value) -> Value {
        let response = self
            .app
            .send_json(
                Method::POST,
                &format!("/api/v1/instances/{instance}/actions"),
                session,
                &body,
            )
            .await;
        assert_eq!(response.status(), 202, "{body}");
        let action: Value = response.json().await.expect("json");
        self.finished(session, instance, &action).await
    }
}

impl Cloud {
    /// Orders an instance on the `small` plan of the `tiny` image and waits
    /// until it runs; returns its id.
    pub async fn running_instance(&self, session: &Session, hostname: &str) -> String {
        let created = order(&self.app, session, hostname).await;
        let id = created["id"].as_str().expect("id").to_owned();
        self.finished(session, &id, &created["pending_action"])
            .await;
        id
    }

    /// Deletes an instance and waits until it is gone.
    pub async fn delete_instance(&self, session: &Session, id: &str) {
        delete_instance(&self.app, session, id).await;
    }
}

/// Waits for an action to finish and returns it; panics if it failed.
pub async fn finished(app: &TestApp, session: &Session, instance: &str, action: &Value) -> Value {
    let path = format!(
        "/api/v1/instances/{instance}/actions/{}",
        action["id"].as_str().expect("action id")
    );
    let done = eventually_within("the action to finish", SLOW, || async {
        let action = app.fetch_json(Method::GET, &path, session).await;
        matches!(action["status"].as_str(), Some("succeeded" | "failed")).then_some(action)
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["step"], done["total_steps"], "{done}");
    done
}

/// Orders a `small` `tiny` instance in `local`; returns the 202's body.
pub async fn order(app: &TestApp, session: &Session, hostname: &str) -> Value {
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/instances",
            session,
            &json!({"plan": "small", "image": "tiny", "region": "local", "hostname": hostname}),
        )
        .await;
    assert_eq!(created.status(), 202);
    created.json().await.expect("json")
}

/// Deletes an instance and waits until it is gone.
pub async fn delete_instance(app: &TestApp, session: &Session, id: &str) {
    let deletion = app
        .authed(Method::DELETE, &format!("/api/v1/instances/{id}"), session)
        .send()
        .await
        .expect("sent");
    assert_eq!(deletion.status(), 202);
    let deletion: Value = deletion.json().await.expect("json");
    finished(app, session, id, &deletion).await;
}
