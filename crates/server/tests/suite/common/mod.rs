//! Shared test support: a fresh database per test and an isolated Redis key
//! space, chosen by the environment.
//!
//! - `VMCLOUD_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`):
//!   each test gets a freshly created PostgreSQL database; otherwise a temp
//!   SQLite file.
//! - `VMCLOUD_TEST_REDIS_URL`: tests that take a Redis backend get their own key
//!   prefix on that server; otherwise they use the in-process backend only.
#![allow(unreachable_pub)]

pub mod billing;
pub mod cloud;
pub mod images;
pub mod rows;

use std::time::Duration;

use sea_orm::ConnectionTrait as _;
use secrecy::SecretString;
use tempfile::TempDir;
use vmcloud_server::db::{Database, DatabaseSettings};

/// The bearer token test servers serve `/metrics` with.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789";

/// A database that exists for one test. SQLite files vanish with the temp
/// directory; PostgreSQL databases are named `vmcloud_t_*` and dropped by the
/// test script before each run.
#[derive(Debug)]
pub struct TestDatabase {
    pub settings: DatabaseSettings,
    pub dir: TempDir,
    /// The PostgreSQL database name, when on PostgreSQL.
    pub pg_name: Option<String>,
}

/// VMs outlive the server that started them, as they must in production;
/// a test's VMs end with its data directory, so that none keeps running
/// (and taking CPU from later tests) after the test.
impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.dir.path().join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            if let Ok(pid) = std::fs::read_to_string(vm.path().join("qemu.pid")) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status();
            }
        }
    }
}

impl TestDatabase {
    pub async fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg_name) = match std::env::var("VMCLOUD_TEST_DATABASE_URL") {
            Ok(base) if !base.is_empty() => {
                let name = format!("vmcloud_t_{}", uuid::Uuid::new_v4().simple());
                let admin = sea_orm::Database::connect(base.as_str())
                    .await
                    .expect("VMCLOUD_TEST_DATABASE_URL must be reachable");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                (
                    Some(SecretString::from(with_database(&base, &name))),
                    Some(name),
                )
            }
            _ => (None, None),
        };
        let settings = DatabaseSettings {
            url,
            read_url: None,
            data_dir: dir.path().to_path_buf(),
            max_connections: 5,
            connect_timeout: Duration::from_secs(5),
        };
        Self {
            settings,
            dir,
            pg_name,
        }
    }

    /// Connects and migrates.
    pub async fn connect(&self) -> Database {
        let db = Database::connect(&self.settings).await.expect("connect");
        db.migrate().await.expect("migrate");
        db
    }

    /// Makes the database unreachable: drops the PostgreSQL database, forcing
    /// its connections closed, or deletes the SQLite file.
    pub async fn destroy(&self) {
        match &self.pg_name {
            Some(name) => {
                let base = std::env::var("VMCLOUD_TEST_DATABASE_URL").expect("set");
                let admin = sea_orm::Database::connect(base.as_str())
                    .await
                    .expect("admin");
                admin
                    .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
                    .await
                    .expect("drop test database");
                admin.close().await.ok();
            }
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ =
                        std::fs::remove_file(self.dir.path().join(format!("vmcloud.db{suffix}")));
                }
            }
        }
    }
}

/// Replaces the database name (the URL path) in a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The Redis server to test against, if any, with a key prefix no other test
/// uses.
pub fn test_redis() -> Option<(SecretString, String)> {
    let url = std::env::var("VMCLOUD_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let prefix = format!("vmcloud-test:{}:", uuid::Uuid::new_v4().simple());
    Some((SecretString::from(url), prefix))
}

/// A running server on a random port, backed by a fresh database (and Redis,
/// when `VMCLOUD_TEST_REDIS_URL` is set), talked to over real HTTP.
#[derive(Debug)]
pub struct TestApp {
    pub address: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub state: vmcloud_server::http::AppState,
    pub database: TestDatabase,
    /// The configuration it runs with, to start it again.
    pub config: vmcloud_server::config::Config,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with the test configuration adjusted by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut vmcloud_server::config::Config)) -> Self {
        Self::spawn_with_clock(
            configure,
            std::sync::Arc::new(vmcloud_server::clock::SystemClock),
        )
        .await
    }

    /// Spawns with the platform's time read from `clock` (a
    /// [`ManualClock`](vmcloud_server::clock::ManualClock) to simulate hours).
    /// The server's own accrual runs once at start only, so the test runs
    /// it when it wants.
    pub async fn spawn_at(clock: vmcloud_server::clock::ManualClock) -> Self {
        Self::spawn_with_clock(
            |config| config.billing_accrual_interval_secs = 3600,
            std::sync::Arc::new(clock),
        )
        .await
    }

    pub async fn spawn_with_clock(
        configure: impl FnOnce(&mut vmcloud_server::config::Config),
        clock: vmcloud_server::clock::SharedClock,
    ) -> Self {
        let database = TestDatabase::fresh().await;
        let mut config = vmcloud_server::config::Config::defaults();
        config.bind = "127.0.0.1:0".parse().expect("addr");
        config.data_dir = database.dir.path().to_path_buf();
        config.database_url = database.settings.url.clone();
        config.database_max_connections = 5;
        // Tests that want the local hypervisor node turn it on.
        config.local_node = false;
        // Background jobs (emails) should not keep a test waiting.
        config.worker_poll_interval_ms = 50;
        // One reconciliation at start; tests of the reconciler shorten this.
        config.reconcile_interval_secs = 3600;
        config.metrics_token = Some(SecretString::from(METRICS_TOKEN));
        if let Some((url, prefix)) = test_redis() {
            config.redis_url = Some(url);
            config.redis_prefix = prefix;
        }
        configure(&mut config);
        Self::spawn_as(
            database,
            config,
            vmcloud_server::startup::Role::Serve,
            clock,
        )
        .await
    }

    /// Starts a server on an existing database with a given configuration.
    pub async fn spawn_on(database: TestDatabase, config: vmcloud_server::config::Config) -> Self {
        Self::spawn_as(
            database,
            config,
            vmcloud_server::startup::Role::Serve,
            std::sync::Arc::new(vmcloud_server::clock::SystemClock),
        )
        .await
    }

    /// Another process of the same deployment: a `serve` replica or a
    /// `worker` on this app's database and Redis key space, with its
    /// configuration adjusted by `configure`. Its own data directory keeps
    /// nothing shared but the database and the cache.
    pub async fn spawn_replica(
        &self,
        role: vmcloud_server::startup::Role,
        configure: impl FnOnce(&mut vmcloud_server::config::Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = self.config.clone();
        config.bind = "127.0.0.1:0".parse().expect("addr");
        config.data_dir = dir.path().to_path_buf();
        // Replicas share their signing key, here the generated one.
        let key_file = vmcloud_server::modules::auth::keys::GENERATED_KEY_FILE;
        std::fs::copy(
            self.config.data_dir.join(key_file),
            dir.path().join(key_file),
        )
        .expect("the signing key is shared");
        configure(&mut config);
        let database = TestDatabase {
            settings: DatabaseSettings {
                data_dir: dir.path().to_path_buf(),
                ..self.database.settings.clone()
            },
            dir,
            // Dropped with the first app's.
            pg_name: None,
        };
        // Replicas share the deployment's clock.
        let clock = self.state.clock.clone();
        Self::spawn_as(database, config, role, clock).await
    }

    async fn spawn_as(
        database: TestDatabase,
        config: vmcloud_server::config::Config,
        role: vmcloud_server::startup::Role,
        clock: vmcloud_server::clock::SharedClock,
    ) -> Self {
        let app =
            vmcloud_server::startup::Application::build_with_clock(config.clone(), role, clock)
                .await
                .expect("the application builds");
        let address = app.local_addr();
        let state = app.state().clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            address,
            client,
            state,
            database,
            config,
            shutdown,
            server,
        }
    }

    /// Stops the server like [`Self::stop`] (jobs still running after the
    /// configured shutdown bound are cut off where they are) and returns
    /// what starting it again needs.
    pub async fn stop_keeping_data(self) -> (TestDatabase, vmcloud_server::config::Config) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
        (self.database, self.config)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET /metrics` as Prometheus scrapes it, with the metrics token.
    pub async fn scrape(&self) -> reqwest::Response {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("request sent")
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

/// Reads a problem+json body, checking the content type.
pub async fn problem(response: reqwest::Response) -> serde_json::Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    response.json().await.expect("problem body is JSON")
}

/// A signed-in test account: its access token and refresh cookie.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub refresh_cookie: String,
}

impl TestApp {
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Registers a customer and returns its id.
    pub async fn register(&self, email: &str, password: &str) -> String {
        let response = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({ "email": email, "password": password, "name": "Test User" }),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let body: serde_json::Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates an account with a role directly, as `vmcloud admin create-user` does.
    /// Creates an account (already email-verified) and signs it in.
    pub async fn signed_in(
        &self,
        email: &str,
        password: &str,
        role: vmcloud_server::db::entities::user::UserRole,
    ) -> (String, Session) {
        let id = self.create_user(email, password, role).await;
        let session = self.session_for(&id).await;
        (id, session)
    }

    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: vmcloud_server::db::entities::user::UserRole,
    ) -> String {
        let user = vmcloud_server::modules::users::create_user(
            &self.state.db,
            vmcloud_server::modules::users::NewUser {
                email: email.to_owned(),
                name: None,
                password: SecretString::from(password.to_owned()),
                role,
                email_verified: true,
            },
        )
        .await
        .expect("user created");
        user.id.to_string()
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let response = self
            .post_json(
                "/api/v1/auth/login",
                &serde_json::json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        session_from(response).await
    }

    /// Sends `request` with the session's bearer token.
    pub fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        session: &Session,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&session.access_token)
    }
}

/// The refresh cookie's value from a response's `Set-Cookie`.
pub fn refresh_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("vmcloud_refresh="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .filter(|v| !v.is_empty())
}

/// Reads a token response into a session.
pub async fn session_from(response: reqwest::Response) -> Session {
    let refresh_cookie = refresh_cookie(&response).expect("refresh cookie set");
    let body: serde_json::Value = response.json().await.expect("json");
    Session {
        user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
        access_token: body["access_token"].as_str().expect("token").to_owned(),
        refresh_cookie,
    }
}

impl TestApp {
    /// A fresh session for an account, opened the way login opens one, without
    /// spending a login (and its rate limit).
    pub async fn session_for(&self, user_id: &str) -> Session {
        use vmcloud_server::modules::auth::{access, sessions};
        let id: vmcloud_server::ids::UserId = user_id.parse().expect("uuid");
        let account = vmcloud_server::modules::users::find(&self.state.db, id)
            .await
            .expect("user");
        let refresh = sessions::open(&self.state.db, id, None, &sessions::Origin::default())
            .await
            .expect("session");
        let token = access::issue(
            &self.state.keys,
            access::Grant {
                user_id: id,
                role: account.role,
                session_id: refresh.session_id,
                impersonator: None,
                two_factor: account.totp_enabled_at.is_some(),
            },
        )
        .expect("token");
        Session {
            user_id: user_id.to_owned(),
            access_token: token.token,
            refresh_cookie: refresh.token,
        }
    }
}

impl TestApp {
    /// Sends an authenticated request without a body and reads a JSON answer.
    pub async fn fetch_json(
        &self,
        method: reqwest::Method,
        path: &str,
        session: &Session,
    ) -> serde_json::Value {
        self.authed(method, path, session)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json")
    }

    /// Sends an authenticated request without a body and returns the status.
    pub async fn status_of(&self, method: reqwest::Method, path: &str, session: &Session) -> u16 {
        self.authed(method, path, session)
            .send()
            .await
            .expect("sent")
            .status()
            .as_u16()
    }
}

/// The actions of every audit entry written so far.
pub async fn audit_actions(app: &TestApp) -> Vec<String> {
    use sea_orm::EntityTrait as _;
    vmcloud_server::db::entities::audit_log::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("audit rows")
        .into_iter()
        .map(|row| row.action)
        .collect()
}

/// Polls `probe` every 50 ms until it gives a value; fails the test after
/// 10 s, naming what never happened. For work done by background jobs.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(10), probe).await
}

/// [`eventually`] with a bound of its own, for slow real work (a VM booting
/// under software emulation).
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {limit:?}");
}

impl TestApp {
    /// Sends a JSON body with the session's bearer token.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        session: &Session,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.authed(method, path, session)
            .json(body)
            .send()
            .await
            .expect("sent")
    }
}
