//! Email over a real SMTP server started by the test: the verification and
//! password-reset messages arrive with working links; without SMTP they land
//! in the outbox that admins read; a dead server loses nothing.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestApp, eventually, problem};
use mailin_embedded::response::{self, Response};
use reqwest::Method;
use serde_json::json;
use vmcloud_server::config::SmtpTls;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Debug)]
struct Received {
    from: String,
    to: Vec<String>,
    data: String,
}

/// An SMTP server on a random port that keeps what it receives.
#[derive(Clone, Default)]
struct Inbox {
    messages: Arc<Mutex<Vec<Received>>>,
    current: Option<Received>,
}

impl mailin_embedded::Handler for Inbox {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received {
            from: from.to_owned(),
            to: to.to_vec(),
            data: String::new(),
        });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(current) = &mut self.current {
            current.data.push_str(&String::from_utf8_lossy(buf));
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some(done) = self.current.take() {
            self.messages.lock().expect("inbox").push(done);
        }
        response::OK
    }
}

impl Inbox {
    fn start() -> (Self, u16) {
        let inbox = Self::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut server = mailin_embedded::Server::new(inbox.clone());
        server
            .with_name("smtp.test")
            .with_ssl(mailin_embedded::SslConfig::None)
            .expect("no TLS")
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            // Runs until the test process exits; its error type is not Send.
            let _ = server.serve().map_err(|err| err.to_string());
        });
        (inbox, port)
    }

    /// Waits for the first message to `to`.
    async fn wait_for(&self, to: &str) -> Received {
        eventually(&format!("an email to {to}"), || async {
            self.messages
                .lock()
                .expect("inbox")
                .iter()
                .find(|m| m.to.iter().any(|t| t == to))
                .cloned()
        })
        .await
    }

    fn count(&self) -> usize {
        self.messages.lock().expect("inbox").len()
    }
}

async fn spawn_with_smtp(port: u16) -> TestApp {
    TestApp::spawn_with(|config| {
        config.smtp_host = Some("127.0.0.1".to_owned());
        config.smtp_port = port;
        config.smtp_tls = SmtpTls::None;
        "VMCloud <noreply@vmcloud.test>".clone_into(&mut config.mail_from);
        config.public_url = Some("https://cloud.example.test".to_owned());
    })
    .await
}

/// The token of the first link to `path` in a message body (quoted-printable
/// soft line breaks undone).
fn token_in(body: &str, path: &str) -> String {
    let body = body.replace("=\r\n", "").replace("=3D", "=");
    let start = body
        .find(&format!("{path}?token="))
        .unwrap_or_else(|| panic!("no {path} link in {body}"))
        + path.len()
        + "?token=".len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn registration_sends_a_verification_link_that_works() {
    let (inbox, port) = Inbox::start();
    let app = spawn_with_smtp(port).await;
    let id = app.register("ada@example.org", PASSWORD).await;

    let message = inbox.wait_for("ada@example.org").await;
    assert_eq!(message.from, "noreply@vmcloud.test");
    assert!(message.data.contains("Subject: Confirm your email address"));
    assert!(
        message
            .data
            .contains("From: VMCloud <noreply@vmcloud.test>")
    );
    let token = token_in(&message.data, "https://cloud.example.test/verify-email");

    let verified = app
        .post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(verified.status(), 200);
    let body: serde_json::Value = verified.json().await.expect("json");
    assert_eq!(body["email_verified"], true);

    let session = app.session_for(&id).await;
    let again = app
        .authed(
            Method::POST,
            "/api/v1/users/me/email-verification",
            &session,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 409, "nothing to verify any more");

    // Delivered over SMTP: the outbox keeps the record, not the link.
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let admin = app.session_for(&admin).await;
    let outbox = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/outbox?to=ada@example.org",
            &admin,
        )
        .await;
    assert_eq!(outbox["items"][0]["status"], "sent");
    assert_eq!(outbox["items"][0]["kind"], "verify_email");
    assert!(outbox["items"][0]["body_text"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn a_resent_verification_link_replaces_the_first() {
    let (inbox, port) = Inbox::start();
    let app = spawn_with_smtp(port).await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let first = inbox.wait_for("ada@example.org").await;
    let session = app.session_for(&id).await;
    let resent = app
        .authed(
            Method::POST,
            "/api/v1/users/me/email-verification",
            &session,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(resent.status(), 202);
    let second = eventually("a second email", || async {
        inbox.messages.lock().expect("inbox").get(1).cloned()
    })
    .await;
    assert_eq!(inbox.count(), 2);
    let old = token_in(&first.data, "/verify-email");
    let new = token_in(&second.data, "/verify-email");
    let refused = app
        .post_json("/api/v1/auth/verify-email", &json!({"token": old}))
        .await;
    assert_eq!(refused.status(), 422);
    let accepted = app
        .post_json("/api/v1/auth/verify-email", &json!({"token": new}))
        .await;
    assert_eq!(accepted.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn forgot_password_emails_a_single_use_link_and_says_the_same_for_unknown_addresses() {
    let (inbox, port) = Inbox::start();
    let app = spawn_with_smtp(port).await;
    app.create_user("ada@example.org", PASSWORD, UserRole::Customer)
        .await;

    let known = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({"email": " ADA@example.org"}),
        )
        .await;
    assert_eq!(known.status(), 202);
    let known: serde_json::Value = known.json().await.expect("json");
    let unknown = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({"email": "nobody@example.org"}),
        )
        .await;
    assert_eq!(unknown.status(), 202);
    let unknown: serde_json::Value = unknown.json().await.expect("json");
    assert_eq!(
        known, unknown,
        "the answer does not tell who has an account"
    );

    let message = inbox.wait_for("ada@example.org").await;
    assert!(message.data.contains("Subject: Reset your password"));
    let token = token_in(&message.data, "/reset-password");
    let new_password = "a brand new passphrase";
    let reset = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": new_password}),
        )
        .await;
    assert_eq!(reset.status(), 204);
    let reused = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": "yet another passphrase"}),
        )
        .await;
    assert_eq!(reused.status(), 422, "the link works once");
    app.login("ada@example.org", new_password).await;

    // Give the unknown address's job time to run: it must send nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        inbox
            .messages
            .lock()
            .expect("inbox")
            .iter()
            .all(|m| m.to.iter().all(|t| t != "nobody@example.org"))
    );
    app.stop().await;
}

#[tokio::test]
async fn forgot_password_is_rate_limited_per_address() {
    let app = TestApp::spawn().await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = app
            .post_json(
                "/api/v1/auth/forgot-password",
                &json!({"email": "ada@example.org"}),
            )
            .await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429]);
    let invalid = app
        .post_json("/api/v1/auth/forgot-password", &json!({"email": ""}))
        .await;
    assert_eq!(invalid.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn without_smtp_the_admin_reads_messages_in_the_outbox_with_links_masked() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let admin = app.session_for(&admin).await;
    let item = eventually("a logged email", || async {
        let outbox = app
            .fetch_json(
                Method::GET,
                "/api/v1/admin/outbox?to=ada@example.org&status=logged",
                &admin,
            )
            .await;
        outbox["items"].get(0).cloned()
    })
    .await;
    assert_eq!(item["status"], "logged", "{item}");
    let body = item["body_text"].as_str().expect("body");
    assert!(
        body.contains("/verify-email?token=[redacted]") && body.contains("Confirm your address"),
        "{body}"
    );

    let bad_filter = app
        .authed(Method::GET, "/api/v1/admin/outbox?status=lost", &admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_filter.status(), 400);
    assert_eq!(
        problem(bad_filter).await["status"],
        400,
        "a clear problem for a bad filter"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dead_smtp_server_keeps_the_message_pending_with_the_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let app = spawn_with_smtp(port).await;
    app.register("ada@example.org", PASSWORD).await;
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let admin = app.session_for(&admin).await;
    let item = eventually("a delivery attempt", || async {
        let outbox = app
            .fetch_json(
                Method::GET,
                "/api/v1/admin/outbox?to=ada@example.org",
                &admin,
            )
            .await;
        let item = outbox["items"][0].clone();
        (item["attempts"].as_i64().unwrap_or_default() >= 1).then_some(item)
    })
    .await;
    assert_eq!(item["status"], "pending", "{item}");
    assert!(item["last_error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(
        item["body_text"].as_str().is_some(),
        "kept for the next attempt"
    );
    app.stop().await;
}
