//! The binary as an operator runs it: start-up errors, migrations, and a
//! graceful stop on SIGTERM.

use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use common::{Running, create_user, vmcloud, with_password};

use crate::common;

/// Asserts a start-up failure: non-zero exit, one line on stderr that
/// contains `needle`, and no panic.
fn assert_fails_with(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should fail: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn version_is_printed() {
    let dir = TempDir::new().expect("dir");
    let output = vmcloud(&dir).arg("--version").output().expect("runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        format!("vmcloud {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    let dir = TempDir::new().expect("dir");
    let output = vmcloud(&dir)
        .args(["serve"])
        .env("VMCLOUD_LOG_FORMAT", "xml")
        .output()
        .expect("runs");
    assert_fails_with(&output, "invalid configuration");
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = TempDir::new().expect("dir");
    let output = vmcloud(&dir)
        .args(["--config", "absent.toml", "migrate"])
        .output()
        .expect("runs");
    assert_fails_with(&output, "absent.toml");
}

#[test]
fn an_unreadable_config_file_is_reported() {
    let dir = TempDir::new().expect("dir");
    std::fs::write(dir.path().join("vmcloud.toml"), "bind = [").expect("write");
    let output = vmcloud(&dir).arg("migrate").output().expect("runs");
    assert_fails_with(&output, "invalid configuration");
}

#[test]
fn an_unreachable_database_is_reported_without_its_password() {
    let dir = TempDir::new().expect("dir");
    let output = vmcloud(&dir)
        .arg("migrate")
        .env(
            "DATABASE_URL",
            "postgres://vmcloud:pa55word@127.0.0.1:1/vmcloud",
        )
        .output()
        .expect("runs");
    assert_fails_with(&output, "cannot connect to the database");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("pa55word"));
}

#[test]
fn migrate_creates_the_embedded_database_and_reruns_cleanly() {
    let dir = TempDir::new().expect("dir");
    for _ in 0..2 {
        let output = vmcloud(&dir).arg("migrate").output().expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(dir.path().join("data/vmcloud.db").exists());
}

#[test]
fn a_failed_migration_stops_start_up_with_one_line() {
    let dir = TempDir::new().expect("dir");
    let db = dir.path().join("broken.db");
    // A table the migrations want to create, but made by someone else.
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let url = format!("sqlite:{}?mode=rwc", db.display());
            let conn = sea_orm::Database::connect(url.as_str())
                .await
                .expect("open");
            sea_orm::ConnectionTrait::execute_unprepared(&conn, "create table jobs (x int)")
                .await
                .expect("create");
            conn.close().await.expect("close");
        });
    let output = vmcloud(&dir)
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .output()
        .expect("runs");
    assert_fails_with(&output, "migration failed");
}

/// Starts `serve` with `args`.
fn serve(dir: &TempDir, args: &[&str]) -> Running {
    let mut command = vmcloud(dir);
    command.arg("serve").args(args);
    Running::start(command)
}

/// A plain HTTP/1.1 GET; the whole response, head and body.
fn http_get(address: &str, path: &str) -> String {
    http(address, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// Sends one HTTP/1.1 request (`request_line` and any headers, then `body`)
/// and reads the whole response, head and body.
fn http(address: &str, head: &str, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut stream,
        format!(
            "{head}Host: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("writes");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("reads");
    response
}

/// The status code and JSON body of a response `http` read.
fn status_and_json(response: &str) -> (u16, serde_json::Value) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn serve_answers_then_stops_gracefully_on_sigterm() {
    let dir = TempDir::new().expect("dir");
    let server = serve(&dir, &[]);
    let response = http_get(&server.address, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let rest = server.terminate();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn serve_demo_offers_the_test_guest_and_small_plans() {
    let dir = TempDir::new().expect("dir");
    let image = dir.path().join("guest.qcow2");
    let created = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("64M")
        .status()
        .expect("qemu-img");
    assert!(created.success());
    let image = image.to_string_lossy().into_owned();
    let server = serve(&dir, &["--demo", "--demo-image", &image]);
    let plans = http_get(&server.address, "/api/v1/products");
    assert!(
        plans.contains("demo-nano") && plans.contains("demo-micro"),
        "{plans}"
    );
    let offered = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http_get(&server.address, "/api/v1/images").contains("vmcloud-test-guest")
    });
    assert!(offered, "the demo image is imported and offered");
    server.terminate();
    // A second start keeps what the first seeded.
    let again = serve(&dir, &["--demo", "--demo-image", &image]);
    assert!(http_get(&again.address, "/api/v1/products").contains("demo-nano"));
    again.terminate();
}

#[test]
fn admin_create_user_reads_the_password_from_stdin() {
    let dir = TempDir::new().expect("dir");
    let create = |email: &str, password: &str| create_user(vmcloud(&dir), email, "admin", password);
    let created = create(" Root@Example.ORG ", "a long enough passphrase");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // Its result, on one line, and no log: the migrations it ran are not
    // the operator's business unless asked for.
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("Admin account root@example.org"),
        "{stdout}"
    );
    assert_eq!(String::from_utf8_lossy(&created.stderr), "");
    let mut verbose = vmcloud(&dir);
    verbose.args(["--log-level", "info"]);
    let logged = create_user(
        verbose,
        "ops@example.org",
        "support",
        "a long enough passphrase",
    );
    assert!(logged.status.success());
    assert!(
        !String::from_utf8_lossy(&logged.stderr).is_empty(),
        "--log-level info shows the start-up log"
    );

    assert_fails_with(
        &create("root@example.org", "another long passphrase"),
        "already exists",
    );
    assert_fails_with(
        &create("second@example.org", "short"),
        "password must be at least 10",
    );
    assert_fails_with(
        &create("not-an-email", "a long enough passphrase"),
        "email is not a valid",
    );
}

#[test]
fn json_logs_carry_the_request_id() {
    let dir = TempDir::new().expect("dir");
    let mut command = vmcloud(&dir);
    command.arg("serve").env("VMCLOUD_LOG_FORMAT", "json");
    let server = Running::start(command);
    let mut stream = std::net::TcpStream::connect(&server.address).expect("connects");
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
    )
    .expect("writes");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("reads");
    let entries: Vec<serde_json::Value> = server
        .terminate()
        .iter()
        .map(|line| serde_json::from_str(line).expect("every line is JSON"))
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e["span"]["request_id"] == "trace-42"),
        "no log entry with the request id: {entries:?}"
    );
}

/// `POST` of a JSON body; the status and the body.
fn post_json(server: &Running, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    status_and_json(&http(
        &server.address,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\n"),
        &body.to_string(),
    ))
}

#[test]
fn the_setup_token_is_in_a_private_file_never_in_the_log() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().expect("dir");
    let server = serve(&dir, &[]);
    let token_file = dir.path().join("data/first-admin-setup.token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let token = token.trim();
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let log = server.start_log.join("\n");
    assert!(log.contains("first-admin-setup.token"), "{log}");
    assert!(!log.contains(token), "the token is never logged: {log}");

    let (status, _) = post_json(
        &server,
        "/api/v1/auth/setup",
        &serde_json::json!({"token": token, "email": "root@example.org",
            "password": "a long enough passphrase", "name": "Root"}),
    );
    assert_eq!(status, 201);
    server.terminate();
    let again = serve(&dir, &[]);
    assert!(!token_file.exists(), "gone once an admin exists");
    again.terminate();
}

#[test]
fn admin_set_password_resets_a_password_and_signs_the_account_out() {
    let dir = TempDir::new().expect("dir");
    let old = "a long enough passphrase";
    let new = "another long passphrase";
    assert!(
        create_user(vmcloud(&dir), "root@example.org", "admin", old)
            .status
            .success()
    );
    let server = serve(&dir, &[]);
    let login = |password: &str| {
        post_json(
            &server,
            "/api/v1/auth/login",
            &serde_json::json!({"email": "root@example.org", "password": password}),
        )
    };
    let (status, session) = login(old);
    assert_eq!(status, 200);
    let token = session["access_token"].as_str().expect("token").to_owned();
    let me = || {
        let response = http(
            &server.address,
            &format!("GET /api/v1/users/me HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"),
            "",
        );
        status_and_json(&response).0
    };
    // The server now holds the session as standing for a moment.
    assert_eq!(me(), 200);

    let mut command = vmcloud(&dir);
    command.args(["admin", "set-password", "--email", "Root@Example.org"]);
    let set = with_password(command, new);
    let stdout = String::from_utf8_lossy(&set.stdout);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        stdout.contains("password set for root@example.org"),
        "{stdout}"
    );
    assert!(stdout.contains("1 session(s) signed out"), "{stdout}");

    assert_eq!(login(old).0, 401);
    assert_eq!(login(new).0, 200);
    // Another process ended the session: the running server sees it once
    // its memo of the session standing lapses (STANDING_TTL, 2 s).
    let ended_within = std::time::Instant::now() + Duration::from_secs(10);
    while me() != 401 {
        assert!(
            std::time::Instant::now() < ended_within,
            "the old session ended in the running server"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut command = vmcloud(&dir);
    command.args(["admin", "set-password", "--email", "nobody@example.org"]);
    assert_fails_with(&with_password(command, new), "User not found");
    let mut command = vmcloud(&dir);
    command.args(["admin", "set-password", "--email", "root@example.org"]);
    assert_fails_with(
        &with_password(command, "short"),
        "password must be at least 10",
    );
    server.terminate();
}
