//! A deployment as operators run it: two `vmcloud serve` processes and a
//! `vmcloud worker`, each its own OS process with its own data directory,
//! sharing PostgreSQL and Redis. A Socket.IO client connected to replica A
//! hears a ticket opened through replica B, and a node that the worker (the
//! only one of the three that keeps reconciling) finds unreachable.
//!
//! Needs `VMCLOUD_TEST_DATABASE_URL` and `VMCLOUD_TEST_REDIS_URL`, which
//! replicas share; skipped without them.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use common::{Running, create_user, vmcloud};
use live::connect_with;

use crate::common;
use crate::live;

const PASSWORD: &str = "a long enough passphrase";
/// The deployment's token signing key (`kid:secret`), which every process
/// must share.
const SIGNING_KEY: &str = "replicas:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

/// What every process of the deployment is configured with.
struct Deployment {
    database_url: String,
    redis_url: String,
    redis_prefix: String,
}

impl Deployment {
    /// A `vmcloud` command of the deployment, with its own data directory.
    fn command(&self, dir: &TempDir) -> Command {
        let mut command = vmcloud(dir);
        command
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("VMCLOUD_REDIS_PREFIX", &self.redis_prefix)
            .env("VMCLOUD_JWT_SIGNING_KEY", SIGNING_KEY)
            .env("VMCLOUD_DATA_DIR", dir.path())
            .env("VMCLOUD_LOCAL_NODE", "false");
        command
    }

    /// Starts `vmcloud serve` or `vmcloud worker`, reconciling every
    /// `reconcile_secs`.
    fn start(&self, dir: &TempDir, role: &str, reconcile_secs: u32) -> Running {
        let mut command = self.command(dir);
        command.arg(role).env(
            "VMCLOUD_RECONCILE_INTERVAL_SECS",
            reconcile_secs.to_string(),
        );
        Running::start(command)
    }
}

/// A fresh PostgreSQL database on the test server, named like the server
/// crate's test databases so the test script drops it before the next run.
async fn fresh_database(base: &str) -> String {
    let name = format!("vmcloud_t_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(base)
        .await
        .expect("VMCLOUD_TEST_DATABASE_URL must be reachable");
    sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}"))
        .await
        .expect("create the database");
    admin.close().await.ok();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{name}")
}

async fn call(
    client: &reqwest::Client,
    server: &Running,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Value {
    let mut request = client.request(method, server.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn login(client: &reqwest::Client, server: &Running, email: &str) -> String {
    let session = call(
        client,
        server,
        Method::POST,
        "/api/v1/auth/login",
        None,
        &json!({"email": email, "password": PASSWORD}),
    )
    .await;
    session["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_replica_hears_what_another_replica_and_the_worker_do() {
    let (Ok(database), Ok(redis)) = (
        std::env::var("VMCLOUD_TEST_DATABASE_URL"),
        std::env::var("VMCLOUD_TEST_REDIS_URL"),
    ) else {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED replica test: it needs VMCLOUD_TEST_DATABASE_URL and \
             VMCLOUD_TEST_REDIS_URL, which replicas share ***\n"
        );
        return;
    };
    let deployment = Deployment {
        database_url: fresh_database(&database).await,
        redis_url: redis,
        redis_prefix: format!("vmcloud-t-{}:", uuid::Uuid::new_v4().simple()),
    };
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().expect("dir")).collect();
    let migrated = deployment
        .command(&dirs[3])
        .arg("migrate")
        .output()
        .expect("migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    for (email, role) in [
        ("admin@example.org", "admin"),
        ("agent@example.org", "support"),
        ("ada@example.org", "customer"),
    ] {
        let created = create_user(deployment.command(&dirs[3]), email, role, PASSWORD);
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
    // The replicas reconcile once as they start; only the worker goes on.
    let a = deployment.start(&dirs[0], "serve", 3600);
    let b = deployment.start(&dirs[1], "serve", 3600);
    let worker = deployment.start(&dirs[2], "worker", 1);

    let client = reqwest::Client::new();
    let agent = login(&client, &a, "agent@example.org").await;
    let mut staff = connect_with(&a.url("/"), &agent).await;

    // Ada opens a ticket through replica B; staff on replica A hear it.
    let ada = login(&client, &b, "ada@example.org").await;
    let ticket = call(
        &client,
        &b,
        Method::POST,
        "/api/v1/tickets",
        Some(&ada),
        &json!({"subject": "Across replicas", "category": "technical",
                "priority": "normal", "body": "Hello from B."}),
    )
    .await;
    let heard = staff.next("ticket.message").await;
    assert_eq!(heard["id"], ticket["id"]);
    assert_eq!(heard["message"]["body"], "Hello from B.");

    // An admin adds, through replica B, a node nobody can reach; the worker
    // finds it down, and staff on replica A hear of it.
    let admin = login(&client, &b, "admin@example.org").await;
    call(
        &client,
        &b,
        Method::POST,
        "/api/v1/admin/regions",
        Some(&admin),
        &json!({"slug": "far-1", "name": "Far away"}),
    )
    .await;
    let node = call(
        &client,
        &b,
        Method::POST,
        "/api/v1/admin/nodes",
        Some(&admin),
        &json!({"name": "gone", "region": "far-1", "driver": "libvirt",
                "uri": "qemu+tcp://127.0.0.1:1/system", "vcpus": 4,
                "memory_mib": 4096, "disk_gib": 100}),
    )
    .await;
    let offline = loop {
        let event = staff
            .next_within("node.status", Duration::from_secs(30))
            .await;
        if event["id"] == node["id"] {
            break event;
        }
    };
    assert_eq!(
        (&offline["from"], &offline["to"]),
        (&json!("online"), &json!("offline"))
    );

    worker.terminate();
    b.terminate();
    a.terminate();
}
