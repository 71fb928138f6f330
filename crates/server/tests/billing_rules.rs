//! Billing rules over HTTP on simulated time: credit settles open invoices
//! oldest first, and the ledger adds up.

mod common;

use chrono::{DateTime, TimeZone as _, Utc};
use common::billing::{customer, instance_of, plan};
use common::{Session, TestApp, rows};
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::billing;

fn at(month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, hour, minute, 0)
        .unwrap()
}

async fn admin(app: &TestApp) -> Session {
    app.signed_in(
        "admin@example.com",
        "correct horse battery",
        UserRole::Admin,
    )
    .await
    .1
}

async fn pass(app: &TestApp) {
    billing::pass(&app.state.billing()).await.expect("pass");
}

async fn credit(app: &TestApp, admin: &Session, user: UserId, amount: i64) {
    let response = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/users/{user}/adjustments"),
            admin,
            &json!({"amount_minor": amount, "currency": "EUR", "reason": "Bank transfer"}),
        )
        .await;
    assert_eq!(response.status(), 201);
}

/// The account's invoices, oldest first.
async fn invoices(app: &TestApp, session: &Session) -> Vec<Value> {
    let page = app
        .fetch_json(Method::GET, "/api/v1/billing/invoices?limit=100", session)
        .await;
    let mut items = page["items"].as_array().expect("items").clone();
    items.sort_by_key(|i| i["number"].as_str().map(str::to_owned));
    items
}

async fn balance(app: &TestApp, session: &Session) -> i64 {
    app.fetch_json(Method::GET, "/api/v1/billing/balance", session)
        .await[0]["amount_minor"]
        .as_i64()
        .expect("balance")
}

#[tokio::test]
async fn credit_settles_open_invoices_oldest_first_once_it_covers_them() {
    let clock = ManualClock::new(at(3, 31, 20, 0));
    let app = TestApp::spawn_at(clock.clone()).await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let admin = admin(&app).await;
    let hourly = plan(&app, &cat, "hourly", 10, 100_000).await;
    let (user, session) = customer(&app, "ada@example.com", "US").await;
    instance_of(&app, &clock, &cat, user, &hourly).await;

    // March (4 hours) and April (720 hours) are invoiced unpaid.
    clock.set(at(4, 1, 0, 30));
    pass(&app).await;
    clock.set(at(5, 1, 0, 30));
    pass(&app).await;
    let issued = invoices(&app, &session).await;
    let totals: Vec<i64> = issued
        .iter()
        .map(|i| i["total_minor"].as_i64().expect("total"))
        .collect();
    assert_eq!(totals, [40, 7200], "no VAT outside the EU");
    assert!(issued.iter().all(|i| i["status"] == "open"));
    assert_eq!(balance(&app, &session).await, -7240);

    // Enough for March only: March is paid, April stays open, and paying
    // from credit moves no money (the totals were debited at issue).
    credit(&app, &admin, user, 5000).await;
    let after = invoices(&app, &session).await;
    assert_eq!(after[0]["status"], "paid");
    assert_eq!(after[0]["paid_at"], json!(at(5, 1, 0, 30)));
    assert_eq!(after[1]["status"], "open");
    assert_eq!(balance(&app, &session).await, -2240);

    // Short by one cent: still open. Then covered: paid.
    credit(&app, &admin, user, 2239).await;
    assert_eq!(invoices(&app, &session).await[1]["status"], "open");
    credit(&app, &admin, user, 1).await;
    assert_eq!(invoices(&app, &session).await[1]["status"], "paid");
    assert_eq!(balance(&app, &session).await, 0);

    // Credit ahead of an invoice pays it at issue.
    credit(&app, &admin, user, 10_000).await;
    clock.set(at(6, 1, 0, 30));
    pass(&app).await;
    let june = invoices(&app, &session).await;
    assert_eq!(june[2]["status"], "paid", "{june:?}");
    assert_eq!(balance(&app, &session).await, 10_000 - 7440);
}
