//! Every admin and support action writes an audit entry (issue 6). The
//! operations are read from the OpenAPI document: every mutating operation
//! under `/api/v1/admin/`, and the staff actions on tickets, is called once
//! successfully by an admin (a Support account on tickets), and a new entry
//! by that account must follow. An operation without a case here fails the
//! test, so a new admin route cannot slip by unaudited.

use crate::common;

use chrono::{TimeZone as _, Utc};
use common::billing::{customer, instance_of};
use common::{Session, TestApp, eventually, rows};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::db::entities::{image, user};
use vmcloud_server::ids::UserId;
use vmcloud_server::jobs::NewJob;

const PASSWORD: &str = "correct horse battery staple";

/// The staff actions on tickets, which live outside `/api/v1/admin/`.
const STAFF_TICKET_OPERATIONS: [&str; 3] = [
    "POST /api/v1/tickets/{id}/assign",
    "POST /api/v1/tickets/{id}/status",
    "POST /api/v1/tickets/{id}/messages",
];

/// The operations that must be audited, as `METHOD /path`.
fn audited_operations() -> Vec<String> {
    let document: Value =
        serde_json::from_str(&vmcloud_server::http::openapi::document()).expect("json");
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let key = format!("{} {path}", method.to_uppercase());
            let mutating = matches!(method.as_str(), "post" | "put" | "patch" | "delete");
            if (mutating && path.starts_with("/api/v1/admin/"))
                || STAFF_TICKET_OPERATIONS.contains(&key.as_str())
            {
                found.push(key);
            }
        }
    }
    for staff in STAFF_TICKET_OPERATIONS {
        assert!(found.iter().any(|k| k == staff), "{staff} is gone");
    }
    found
}

/// One call to check: who makes it, and what.
struct Call {
    by: Session,
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Call {
    fn new(by: &Session, method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self {
            by: by.clone(),
            method,
            path: path.into(),
            body,
        }
    }
}

/// The accounts and rows the cases work on.
struct Fixture {
    admin: Session,
    agent: Session,
    agent_id: String,
    cat: rows::Catalogue,
    /// Customers with March usage and no invoice yet.
    billed: Vec<UserId>,
    sequence: u32,
}

impl Fixture {
    /// A name no other case uses.
    fn unique(&mut self, prefix: &str) -> String {
        self.sequence += 1;
        format!("{prefix}-{}", self.sequence)
    }
}

async fn send(
    app: &TestApp,
    by: &Session,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let request = app.authed(method.clone(), path, by);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    let response = request.send().await.expect("sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

/// Issues the March invoice of one of the billed customers; its id.
async fn march_invoice(app: &TestApp, fx: &mut Fixture) -> String {
    let user = fx.billed.pop().expect("a customer left to bill");
    let path = format!("/api/v1/admin/billing/users/{user}/invoices");
    let issued = send(
        app,
        &fx.admin,
        Method::POST,
        &path,
        Some(&json!({"year": 2026, "month": 3})),
    )
    .await;
    id_of(&issued[0])
}

async fn paid_invoice(app: &TestApp, fx: &mut Fixture) -> String {
    let invoice = march_invoice(app, fx).await;
    let path = format!("/api/v1/admin/billing/invoices/{invoice}/payments");
    let body = json!({"reference": "SEPA 1"});
    send(app, &fx.admin, Method::POST, &path, Some(&body)).await;
    invoice
}

async fn coupon(app: &TestApp, fx: &mut Fixture) -> String {
    let code = fx.unique("AUDIT").to_uppercase();
    let body = json!({"code": code, "amount_off_minor": 5, "currency": "EUR"});
    id_of(
        &send(
            app,
            &fx.admin,
            Method::POST,
            "/api/v1/admin/billing/coupons",
            Some(&body),
        )
        .await,
    )
}

async fn region(app: &TestApp, fx: &mut Fixture) -> String {
    let body = json!({"slug": fx.unique("audit"), "name": "Audit"});
    id_of(
        &send(
            app,
            &fx.admin,
            Method::POST,
            "/api/v1/admin/regions",
            Some(&body),
        )
        .await,
    )
}

fn plan(slug: &str) -> Value {
    json!({
        "slug": slug, "name": format!("Plan {slug}"), "vcpus": 1, "memory_mib": 512,
        "disk_gib": 10, "transfer_gib": 1000, "price_monthly_minor": 490,
        "price_hourly_minor": 1, "regions": ["par1"],
    })
}

fn node(name: &str) -> Value {
    json!({
        "name": name, "region": "par1", "driver": "qemu", "uri": "/var/lib/vmcloud/audit",
        "vcpus": 4, "memory_mib": 4096, "disk_gib": 50,
    })
}

/// A free address of a range no other test picks; its id.
async fn address(app: &TestApp, fx: &mut Fixture) -> String {
    fx.sequence += 1;
    let body = json!({"region": "par1", "first": format!("10.214.7.{}", fx.sequence),
                      "prefix_len": 24, "gateway": "10.214.7.254"});
    let added = send(
        app,
        &fx.admin,
        Method::POST,
        "/api/v1/admin/ip-addresses",
        Some(&body),
    )
    .await;
    id_of(&added[0])
}

/// An image row in `status`, used by nothing.
async fn image_row(app: &TestApp, fx: &mut Fixture, status: image::ImageStatus) -> String {
    let slug = fx.unique("img");
    let row = image::ActiveModel {
        name: Set(slug.clone()),
        slug: Set(slug),
        os_family: Set("debian".to_owned()),
        os_version: Set("12".to_owned()),
        default_user: Set("debian".to_owned()),
        min_disk_gib: Set(1),
        source_url: Set(Some("/nonexistent/disk.img".to_owned())),
        status: Set(status),
        active: Set(false),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert image");
    row.id.to_string()
}

/// A job that failed its only attempt; its id.
async fn dead_job(app: &TestApp, fx: &Fixture) -> String {
    let id = app
        .state
        .jobs
        .enqueue(NewJob::new("test.broken", json!({})).max_attempts(1))
        .await
        .expect("enqueued")
        .id()
        .to_string();
    let path = format!("/api/v1/admin/jobs/{id}");
    eventually("the job to die", || async {
        let job = app.fetch_json(Method::GET, &path, &fx.admin).await;
        (job["state"] == "dead").then_some(())
    })
    .await;
    id
}

async fn customer_id(app: &TestApp, fx: &mut Fixture) -> String {
    let email = format!("{}@example.com", fx.unique("someone"));
    app.create_user(&email, PASSWORD, UserRole::Customer).await
}

async fn ticket(app: &TestApp, fx: &mut Fixture) -> String {
    let (_, customer) = customer(app, &format!("{}@example.com", fx.unique("asker")), "FR").await;
    let body = json!({"subject": "Help", "category": "technical", "priority": "normal",
                      "body": "Please."});
    id_of(&send(app, &customer, Method::POST, "/api/v1/tickets", Some(&body)).await)
}

/// The calls that exercise `operation`, after whatever they need is set up;
/// `None` when this test has no case for it.
async fn calls(app: &TestApp, fx: &mut Fixture, operation: &str) -> Option<Vec<Call>> {
    let admin = fx.admin.clone();
    let one = |method: Method, path: String, body: Option<Value>| {
        Some(vec![Call::new(&admin, method, path, body)])
    };
    let instance = || async {
        rows::new_instance(app.state.db.writer(), &fx.cat)
            .await
            .id
            .to_string()
    };
    match operation {
        "POST /api/v1/admin/billing/coupons" => {
            let code = fx.unique("NEW").to_uppercase();
            one(
                Method::POST,
                "/api/v1/admin/billing/coupons".to_owned(),
                Some(json!({"code": code, "percent_basis_points": 1000})),
            )
        }
        "PUT /api/v1/admin/billing/coupons/{id}" => {
            let id = coupon(app, fx).await;
            let code = fx.unique("CHANGED").to_uppercase();
            one(
                Method::PUT,
                format!("/api/v1/admin/billing/coupons/{id}"),
                Some(json!({"code": code, "amount_off_minor": 7, "currency": "EUR"})),
            )
        }
        "DELETE /api/v1/admin/billing/coupons/{id}" => {
            let id = coupon(app, fx).await;
            one(
                Method::DELETE,
                format!("/api/v1/admin/billing/coupons/{id}"),
                None,
            )
        }
        "POST /api/v1/admin/billing/invoices/{id}/payments" => {
            let id = march_invoice(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/billing/invoices/{id}/payments"),
                Some(json!({"reference": "SEPA 2"})),
            )
        }
        "POST /api/v1/admin/billing/invoices/{id}/void" => {
            let id = march_invoice(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/billing/invoices/{id}/void"),
                Some(json!({})),
            )
        }
        "POST /api/v1/admin/billing/refunds" => {
            let invoice = paid_invoice(app, fx).await;
            let ledger = app
                .fetch_json(
                    Method::GET,
                    "/api/v1/admin/billing/transactions?limit=100",
                    &admin,
                )
                .await;
            let payment = ledger["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|t| t["kind"] == "payment" && t["invoice_id"] == invoice.as_str())
                .map(id_of)
                .expect("the payment");
            one(
                Method::POST,
                "/api/v1/admin/billing/refunds".to_owned(),
                Some(json!({"transaction_id": payment, "amount_minor": 1, "reason": "Goodwill"})),
            )
        }
        "POST /api/v1/admin/billing/users/{id}/adjustments" => {
            let user = customer_id(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/billing/users/{user}/adjustments"),
                Some(json!({"amount_minor": 500, "currency": "EUR", "reason": "Goodwill"})),
            )
        }
        "POST /api/v1/admin/billing/users/{id}/invoices" => {
            let user = fx.billed.pop().expect("a customer left to bill");
            one(
                Method::POST,
                format!("/api/v1/admin/billing/users/{user}/invoices"),
                Some(json!({"year": 2026, "month": 3})),
            )
        }
        "POST /api/v1/admin/images" => {
            let slug = fx.unique("new-image");
            one(
                Method::POST,
                "/api/v1/admin/images".to_owned(),
                Some(json!({
                    "slug": slug, "name": "New image", "os_family": "debian",
                    "os_version": "12", "default_user": "debian", "min_disk_gib": 1,
                    "source": "https://images.example.org/disk.img",
                })),
            )
        }
        "PATCH /api/v1/admin/images/{id}" => one(
            Method::PATCH,
            format!("/api/v1/admin/images/{}", fx.cat.image.id),
            Some(json!({"name": "Debian 12 (bookworm)"})),
        ),
        "DELETE /api/v1/admin/images/{id}" => {
            let id = image_row(app, fx, image::ImageStatus::Available).await;
            one(Method::DELETE, format!("/api/v1/admin/images/{id}"), None)
        }
        "POST /api/v1/admin/images/{id}/import" => {
            let id = image_row(app, fx, image::ImageStatus::Failed).await;
            one(
                Method::POST,
                format!("/api/v1/admin/images/{id}/import"),
                None,
            )
        }
        "DELETE /api/v1/admin/instances/{id}" => {
            let id = instance().await;
            one(
                Method::DELETE,
                format!("/api/v1/admin/instances/{id}"),
                None,
            )
        }
        "POST /api/v1/admin/instances/{id}/actions" => {
            let id = instance().await;
            one(
                Method::POST,
                format!("/api/v1/admin/instances/{id}/actions"),
                Some(json!({"type": "reboot"})),
            )
        }
        "POST /api/v1/admin/ip-addresses" => one(
            Method::POST,
            "/api/v1/admin/ip-addresses".to_owned(),
            Some(
                json!({"region": "par1", "first": "10.214.8.1", "last": "10.214.8.2",
                        "prefix_len": 24, "gateway": "10.214.8.254"}),
            ),
        ),
        "DELETE /api/v1/admin/ip-addresses/{id}" => {
            let id = address(app, fx).await;
            one(
                Method::DELETE,
                format!("/api/v1/admin/ip-addresses/{id}"),
                None,
            )
        }
        "DELETE /api/v1/admin/jobs/{id}" => {
            let id = dead_job(app, fx).await;
            one(Method::DELETE, format!("/api/v1/admin/jobs/{id}"), None)
        }
        "POST /api/v1/admin/jobs/{id}/retry" => {
            let id = dead_job(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/jobs/{id}/retry"),
                Some(json!({})),
            )
        }
        "POST /api/v1/admin/nodes" => {
            let name = fx.unique("node");
            one(
                Method::POST,
                "/api/v1/admin/nodes".to_owned(),
                Some(node(&name)),
            )
        }
        "PATCH /api/v1/admin/nodes/{id}" => one(
            Method::PATCH,
            format!("/api/v1/admin/nodes/{}", fx.cat.node.id),
            Some(json!({"status": "maintenance"})),
        ),
        "DELETE /api/v1/admin/nodes/{id}" => {
            let body = node(&fx.unique("node"));
            let made = send(
                app,
                &admin,
                Method::POST,
                "/api/v1/admin/nodes",
                Some(&body),
            )
            .await;
            one(
                Method::DELETE,
                format!("/api/v1/admin/nodes/{}", id_of(&made)),
                None,
            )
        }
        "POST /api/v1/admin/products" => {
            let slug = fx.unique("plan");
            one(
                Method::POST,
                "/api/v1/admin/products".to_owned(),
                Some(plan(&slug)),
            )
        }
        "PATCH /api/v1/admin/products/{id}" => one(
            Method::PATCH,
            format!("/api/v1/admin/products/{}", fx.cat.product.id),
            Some(json!({"name": "Small (2026)"})),
        ),
        "DELETE /api/v1/admin/products/{id}" => {
            let body = plan(&fx.unique("plan"));
            let made = send(
                app,
                &admin,
                Method::POST,
                "/api/v1/admin/products",
                Some(&body),
            )
            .await;
            one(
                Method::DELETE,
                format!("/api/v1/admin/products/{}", id_of(&made)),
                None,
            )
        }
        "POST /api/v1/admin/regions" => {
            let slug = fx.unique("region");
            one(
                Method::POST,
                "/api/v1/admin/regions".to_owned(),
                Some(json!({"slug": slug, "name": "Somewhere"})),
            )
        }
        "PATCH /api/v1/admin/regions/{id}" => one(
            Method::PATCH,
            format!("/api/v1/admin/regions/{}", fx.cat.region.id),
            Some(json!({"name": "Paris (1)"})),
        ),
        "DELETE /api/v1/admin/regions/{id}" => {
            let id = region(app, fx).await;
            one(Method::DELETE, format!("/api/v1/admin/regions/{id}"), None)
        }
        "PUT /api/v1/admin/settings/{key}" => one(
            Method::PUT,
            "/api/v1/admin/settings/dunning".to_owned(),
            Some(json!({"grace_days": 4, "termination_days": 14,
                        "warning_days_before_termination": 3})),
        ),
        "POST /api/v1/admin/users/{id}/impersonate" => {
            let user = customer_id(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/users/{user}/impersonate"),
                None,
            )
        }
        "POST /api/v1/admin/users/{id}/reset-2fa" => {
            let user = customer_id(app, fx).await;
            let row = user::Entity::find_by_id(user.parse::<UserId>().expect("id"))
                .one(app.state.db.writer())
                .await
                .expect("select")
                .expect("user");
            let mut enrolled = row.into_active_model();
            // Enrolled as far as a reset is concerned: the reset only clears.
            enrolled.totp_secret = Set(Some("sealed secret".to_owned()));
            enrolled.totp_enabled_at = Set(Some(vmcloud_server::db::entities::now()));
            enrolled.update(app.state.db.writer()).await.expect("enrol");
            one(
                Method::POST,
                format!("/api/v1/admin/users/{user}/reset-2fa"),
                None,
            )
        }
        "PATCH /api/v1/admin/users/{id}/role" => {
            let user = customer_id(app, fx).await;
            one(
                Method::PATCH,
                format!("/api/v1/admin/users/{user}/role"),
                Some(json!({"role": "support"})),
            )
        }
        "POST /api/v1/admin/users/{id}/suspend" => {
            let user = customer_id(app, fx).await;
            one(
                Method::POST,
                format!("/api/v1/admin/users/{user}/suspend"),
                None,
            )
        }
        "POST /api/v1/admin/users/{id}/unsuspend" => {
            let user = customer_id(app, fx).await;
            let path = format!("/api/v1/admin/users/{user}/suspend");
            send(app, &admin, Method::POST, &path, None).await;
            one(
                Method::POST,
                format!("/api/v1/admin/users/{user}/unsuspend"),
                None,
            )
        }
        "POST /api/v1/tickets/{id}/assign" => {
            let id = ticket(app, fx).await;
            Some(vec![Call::new(
                &fx.agent,
                Method::POST,
                format!("/api/v1/tickets/{id}/assign"),
                Some(json!({"assignee_id": fx.agent_id})),
            )])
        }
        "POST /api/v1/tickets/{id}/status" => {
            let id = ticket(app, fx).await;
            Some(vec![Call::new(
                &fx.agent,
                Method::POST,
                format!("/api/v1/tickets/{id}/status"),
                Some(json!({"status": "resolved"})),
            )])
        }
        // A staff reply, then an internal note.
        "POST /api/v1/tickets/{id}/messages" => {
            let id = ticket(app, fx).await;
            let path = format!("/api/v1/tickets/{id}/messages");
            Some(vec![
                Call::new(
                    &fx.agent,
                    Method::POST,
                    &path,
                    Some(json!({"body": "On it."})),
                ),
                Call::new(
                    &fx.agent,
                    Method::POST,
                    &path,
                    Some(json!({"body": "Seen before.", "internal": true})),
                ),
            ])
        }
        _ => None,
    }
}

/// The newest audit entry written by `session`'s account.
async fn newest_entry(app: &TestApp, admin: &Session, session: &Session) -> Option<Value> {
    let path = format!(
        "/api/v1/admin/audit-logs?actor_id={}&limit=1",
        session.user_id
    );
    let page = app.fetch_json(Method::GET, &path, admin).await;
    page["items"].as_array().expect("items").first().cloned()
}

#[tokio::test]
async fn every_admin_and_staff_action_writes_an_audit_entry() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 31, 20, 0, 0).unwrap());
    let app = TestApp::spawn_at(clock.clone()).await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (agent_id, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    // Customers with four hours of March usage, left uninvoiced for the
    // billing cases to invoice on demand.
    let mut billed = Vec::new();
    for n in 0..4 {
        let (id, _) = customer(&app, &format!("billed{n}@example.com"), "FR").await;
        instance_of(&app, &clock, &cat, id, &cat.product).await;
        billed.push(id);
    }
    clock.set(Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 0).unwrap());
    vmcloud_server::modules::billing::pass(&app.state.billing())
        .await
        .expect("accrue March");
    clock.set(Utc.with_ymd_and_hms(2026, 4, 1, 0, 30, 0).unwrap());
    let mut fx = Fixture {
        admin: admin.clone(),
        agent,
        agent_id,
        cat,
        billed,
        sequence: 0,
    };

    let mut missing = Vec::new();
    let mut unaudited = Vec::new();
    for operation in audited_operations() {
        let Some(calls) = calls(&app, &mut fx, &operation).await else {
            missing.push(operation);
            continue;
        };
        for call in calls {
            let before = newest_entry(&app, &admin, &call.by).await;
            send(
                &app,
                &call.by,
                call.method.clone(),
                &call.path,
                call.body.as_ref(),
            )
            .await;
            let after = newest_entry(&app, &admin, &call.by).await;
            if after.is_none() || after == before {
                unaudited.push(format!("{} {} ({operation})", call.method, call.path));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "admin or staff operations without a case in this test: {missing:?}"
    );
    assert!(
        unaudited.is_empty(),
        "calls that wrote no audit entry: {unaudited:?}"
    );
    app.stop().await;
}
