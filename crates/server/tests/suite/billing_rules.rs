//! Billing rules over HTTP on simulated time: credit settles open invoices
//! oldest first, and the ledger adds up.

use crate::common;

use chrono::{DateTime, TimeZone as _, Utc};
use common::billing::{assert_ledger_adds_up, customer, instance_of, plan};
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

async fn redeem(app: &TestApp, session: &Session, code: &str) -> (u16, Value) {
    let response = app
        .send_json(
            Method::POST,
            "/api/v1/billing/coupons/redeem",
            session,
            &json!({ "code": code }),
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn coupons_are_redeemed_once_per_account_and_come_off_invoices_before_vat() {
    let clock = ManualClock::new(at(3, 31, 20, 0));
    let app = TestApp::spawn_at(clock.clone()).await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let admin = admin(&app).await;
    let hourly = plan(&app, &cat, "hourly", 10, 100_000).await;
    let other = plan(&app, &cat, "other", 10, 100_000).await;
    let (ada, ada_session) = customer(&app, "ada@example.com", "US").await;
    let (_, bob) = customer(&app, "bob@example.com", "US").await;
    let (_, eve) = customer(&app, "eve@example.com", "US").await;
    let make = |body: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            app.send_json(Method::POST, "/api/v1/admin/billing/coupons", admin, &body)
                .await
        }
    };
    let spring = make(json!({"code": "Spring26", "percent_basis_points": 1000,
        "plan_ids": [hourly.id], "invoice_limit": 1}))
    .await;
    assert_eq!(spring.status(), 201);
    assert_eq!(
        make(json!({"code": "SPRING26", "amount_off_minor": 5, "currency": "EUR"}))
            .await
            .status(),
        409,
        "codes are unique whatever their case"
    );
    let invalid =
        make(json!({"code": "x", "percent_basis_points": 1000, "amount_off_minor": 5})).await;
    assert_eq!(invalid.status(), 422);
    assert_eq!(
        make(
            json!({"code": "LAST", "amount_off_minor": 5, "currency": "EUR", "max_redemptions": 1})
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        make(json!({"code": "OLD", "percent_basis_points": 500, "expires_at": at(3, 31, 19, 0)}))
            .await
            .status(),
        201
    );

    // Unknown, expired, already redeemed: 422 on the code.
    for code in ["NOPE", "old"] {
        let (status, body) = redeem(&app, &ada_session, code).await;
        assert_eq!(status, 422, "{code}: {body}");
        assert_eq!(body["errors"][0]["field"], "code");
    }
    let (status, body) = redeem(&app, &ada_session, "spring26").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["coupon"]["code"], "SPRING26");
    let (status, body) = redeem(&app, &ada_session, "SPRING26").await;
    assert_eq!(status, 422);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already"))
    );

    // Two accounts race for the last redemption: one gets it.
    let (first, second) = tokio::join!(redeem(&app, &bob, "LAST"), redeem(&app, &eve, "LAST"));
    let mut statuses = [first.0, second.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 422], "{first:?} {second:?}");
    let coupons = app
        .fetch_json(Method::GET, "/api/v1/admin/billing/coupons", &admin)
        .await;
    let last = coupons["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["code"] == "LAST")
        .cloned()
        .expect("LAST");
    assert_eq!(last["redemptions"], 1);

    // Ada's March invoice: 10 % off the lines of the coupon's plan only.
    instance_of(&app, &clock, &cat, ada, &hourly).await;
    instance_of(&app, &clock, &cat, ada, &other).await;
    clock.set(at(4, 1, 0, 30));
    pass(&app).await;
    let march = &invoices(&app, &ada_session).await[0];
    assert_eq!(march["subtotal_minor"], 80 - 4, "{march}");
    assert_eq!(march["total_minor"], 76);
    let detail = app
        .fetch_json(
            Method::GET,
            &format!(
                "/api/v1/billing/invoices/{}",
                march["id"].as_str().expect("id")
            ),
            &ada_session,
        )
        .await;
    let coupon_line = detail["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["description"] == "Coupon SPRING26")
        .cloned()
        .expect("the discount line");
    assert_eq!(coupon_line["amount_minor"], -4);
    let credits = app
        .fetch_json(
            Method::GET,
            "/api/v1/billing/transactions?kind=coupon",
            &ada_session,
        )
        .await;
    assert_eq!(credits["items"][0]["amount_minor"], 4);
    assert_eq!(balance(&app, &ada_session).await, -76);

    // The coupon applied to one invoice: April's is full price.
    clock.set(at(5, 1, 0, 30));
    pass(&app).await;
    let april = &invoices(&app, &ada_session).await[1];
    assert_eq!(april["subtotal_minor"], 2 * 7200, "{april}");
    assert_ledger_adds_up(&app, ada, &ada_session).await;
}

#[tokio::test]
async fn orders_need_credit_when_the_policy_says_so_and_pay_the_setup_fee_once() {
    use sea_orm::{ActiveModelTrait as _, IntoActiveModel as _};

    let clock = ManualClock::new(at(3, 31, 20, 0));
    let app = TestApp::spawn_at(clock.clone()).await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let admin = admin(&app).await;
    let mut fee = plan(&app, &cat, "with-fee", 10, 100_000)
        .await
        .into_active_model();
    fee.setup_fee_minor = sea_orm::ActiveValue::Set(1500);
    fee.update(app.state.db.writer()).await.expect("setup fee");
    let (ada, session) = customer(&app, "ada@example.com", "US").await;
    let policy = json!({"currencies": ["EUR"], "charge_stopped_instances": true,
        "require_positive_balance_to_order": true});
    let response = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/billing",
            &admin,
            &policy,
        )
        .await;
    assert_eq!(response.status(), 200);
    let order =
        json!({"plan": "with-fee", "image": "debian-12", "region": "par1", "hostname": "web"});

    let refused = app
        .send_json(Method::POST, "/api/v1/instances", &session, &order)
        .await;
    assert_eq!(refused.status(), 402);
    let refused = common::problem(refused).await;
    assert_eq!(refused["type"], "/problems/payment-required", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("0.00 EUR")),
        "{refused}"
    );

    credit(&app, &admin, ada, 2000).await;
    let ordered = app
        .send_json(Method::POST, "/api/v1/instances", &session, &order)
        .await;
    assert_eq!(ordered.status(), 202);
    let fees = app
        .fetch_json(
            Method::GET,
            "/api/v1/billing/transactions?kind=setup_fee",
            &session,
        )
        .await;
    let fees = fees["items"].as_array().expect("items");
    assert_eq!(fees.len(), 1);
    assert_eq!(fees[0]["amount_minor"], -1500);
    assert_eq!(balance(&app, &session).await, 500);

    // The month's invoice carries the fee as its own line, paid from credit.
    clock.set(at(4, 1, 0, 30));
    pass(&app).await;
    let march = &invoices(&app, &session).await[0];
    assert_eq!(march["subtotal_minor"], 1500 + 4 * 10, "{march}");
    assert_eq!(march["status"], "paid");
    let detail = app
        .fetch_json(
            Method::GET,
            &format!(
                "/api/v1/billing/invoices/{}",
                march["id"].as_str().expect("id")
            ),
            &session,
        )
        .await;
    assert!(
        detail["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .any(|l| l["description"] == "web: setup fee" && l["amount_minor"] == 1500),
        "{detail}"
    );
}
