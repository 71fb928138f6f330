//! A customer never sees or touches another customer's objects: for every
//! customer-owned resource, user B gets 404 (never 403) on user A's object,
//! so B cannot even learn that it exists.

use crate::common;

use common::{Session, TestApp};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2N1Xk3ztLEJ0PyP2Z0sE3gQvKkH0fBlK8m4d3OQ1jF ada@laptop";

async fn two_customers(app: &TestApp) -> (Session, Session) {
    app.register("ada@example.org", PASSWORD).await;
    app.register("bob@example.org", PASSWORD).await;
    (
        app.login("ada@example.org", PASSWORD).await,
        app.login("bob@example.org", PASSWORD).await,
    )
}

async fn created_id(response: reqwest::Response) -> String {
    assert_eq!(
        response.status(),
        201,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let body: serde_json::Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn status(app: &TestApp, method: Method, path: &str, session: &Session) -> u16 {
    app.authed(method, path, session)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn ssh_keys_of_another_customer_are_not_found() {
    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let id = created_id(
        app.authed(Method::POST, "/api/v1/ssh-keys", &ada)
            .json(&json!({"public_key": ED25519}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let path = format!("/api/v1/ssh-keys/{id}");
    assert_eq!(app.status_of(Method::GET, &path, &bob).await, 404);
    assert_eq!(app.status_of(Method::DELETE, &path, &bob).await, 404);
    let bobs: serde_json::Value = app.fetch_json(Method::GET, "/api/v1/ssh-keys", &bob).await;
    assert_eq!(bobs["items"], json!([]));
    assert_eq!(
        app.status_of(Method::GET, &path, &ada).await,
        200,
        "the owner still has it"
    );
    app.stop().await;
}

#[tokio::test]
async fn api_tokens_of_another_customer_are_not_found() {
    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let id = created_id(
        app.authed(Method::POST, "/api/v1/api-tokens", &ada)
            .json(&json!({"name": "ci", "scope": "read"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/api/v1/api-tokens/{id}"),
            &bob
        )
        .await,
        404
    );
    let bobs: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/api-tokens", &bob)
        .await;
    assert_eq!(bobs["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn sessions_of_another_customer_are_not_found() {
    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let sessions = app
        .fetch_json(Method::GET, "/api/v1/users/me/sessions", &ada)
        .await;
    let id = sessions[0]["id"].as_str().expect("id");
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/api/v1/users/me/sessions/{id}"),
            &bob
        )
        .await,
        404
    );
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &ada).await,
        200,
        "untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn tickets_and_attachments_of_another_customer_are_not_found() {
    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let id = created_id(
        app.authed(Method::POST, "/api/v1/tickets", &ada)
            .json(
                &json!({"subject": "Mine", "category": "billing", "priority": "low",
                          "body": "Private"}),
            )
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let attachment = created_id(
        app.authed(
            Method::POST,
            &format!("/api/v1/tickets/{id}/attachments"),
            &ada,
        )
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(png.clone()).file_name("a.png"),
        ))
        .send()
        .await
        .expect("sent"),
    )
    .await;
    let path = format!("/api/v1/tickets/{id}");
    let download = format!("{path}/attachments/{attachment}");
    assert_eq!(app.status_of(Method::GET, &path, &bob).await, 404);
    assert_eq!(app.status_of(Method::GET, &download, &bob).await, 404);
    for (suffix, body) in [
        ("/messages", json!({"body": "Let me in"})),
        ("/status", json!({"status": "resolved"})),
    ] {
        let response = app
            .send_json(Method::POST, &format!("{path}{suffix}"), &bob, &body)
            .await;
        assert_eq!(response.status(), 404, "{suffix}");
    }
    let upload = app
        .authed(Method::POST, &format!("{path}/attachments"), &bob)
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(png).file_name("b.png"),
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(upload.status(), 404);
    let bobs = app.fetch_json(Method::GET, "/api/v1/tickets", &bob).await;
    assert_eq!(bobs["items"], json!([]));
    let untouched = app.fetch_json(Method::GET, &path, &ada).await;
    assert_eq!(untouched["status"], "open");
    assert_eq!(untouched["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(untouched["attachments"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn notifications_of_another_customer_are_not_found() {
    use vmcloud_server::modules::notifications::{self, Notice};
    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let notice = Notice::TicketReply {
        ticket_id: vmcloud_server::ids::TicketId::new(),
        subject: "Private".to_owned(),
        author_name: "Support".to_owned(),
        reply: "Hello.".to_owned(),
        url: "https://cloud.example/tickets/1".to_owned(),
    };
    let state = &app.state;
    let id = notifications::notify(
        &state.db,
        &state.cache,
        &state.jobs,
        ada.user_id.parse().expect("id"),
        notice,
    )
    .await
    .expect("notified")
    .expect("new")
    .id;
    let path = format!("/api/v1/notifications/{id}/read");
    assert_eq!(status(&app, Method::POST, &path, &bob).await, 404);
    let bobs = app
        .fetch_json(Method::GET, "/api/v1/notifications", &bob)
        .await;
    assert_eq!(bobs["items"], json!([]));
    assert_eq!(
        status(&app, Method::POST, &path, &ada).await,
        200,
        "the owner still has it"
    );
    app.stop().await;
}

#[tokio::test]
async fn invoices_of_another_customer_are_not_found() {
    use sea_orm::ActiveModelTrait as _;
    use sea_orm::ActiveValue::Set;
    use vmcloud_server::db::entities::invoice;

    let app = TestApp::spawn().await;
    let (ada, bob) = two_customers(&app).await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .expect("date")
        .to_utc();
    let issued = invoice::ActiveModel {
        user_id: Set(ada.user_id.parse().expect("id")),
        number: Set(Some("2026-000001".to_owned())),
        status: Set(invoice::InvoiceStatus::Open),
        currency: Set("EUR".to_owned()),
        subtotal_minor: Set(1000),
        tax_minor: Set(200),
        total_minor: Set(1200),
        tax_rate_basis_points: Set(2000),
        reverse_charge: Set(false),
        period_start: Set(start),
        period_end: Set(start + chrono::Duration::days(31)),
        issued_at: Set(Some(start + chrono::Duration::days(31))),
        billing_snapshot: Set(json!({"seller": {"name": "VMCloud"}, "customer": {"name": "Ada"}})),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("an invoice of Ada");
    let path = format!("/api/v1/billing/invoices/{}", issued.id);
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::GET, format!("{path}/pdf")),
        (Method::POST, format!("{path}/pay")),
    ] {
        assert_eq!(
            status(&app, method.clone(), &path, &bob).await,
            404,
            "{method} {path}"
        );
    }
    let bobs: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/billing/invoices", &bob)
        .await;
    assert_eq!(bobs["items"], json!([]));
    for path in [path.clone(), format!("{path}/pdf")] {
        assert_eq!(app.status_of(Method::GET, &path, &ada).await, 200, "{path}");
    }
    app.stop().await;
}
