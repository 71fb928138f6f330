//! Billing over HTTP, on simulated time: usage accrues per started hour into
//! the ledger (with the monthly cap, stops, a resize and a deletion), runs
//! are idempotent and may overlap, balances add up, admins adjust credit
//! with a reason, and a customer sees only their own account.

use crate::common;

use chrono::{DateTime, TimeZone as _, Utc};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _,
};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::instance::{self, InstanceStatus};
use vmcloud_server::db::entities::subscription::{self, SubscriptionStatus};
use vmcloud_server::db::entities::transaction::{self, TransactionKind};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::db::entities::{product_region, usage_segment};
use vmcloud_server::modules::billing::{subscriptions, usage};

use common::billing::{customer, customer_with_vat_id, instance_of, plan};
use common::{TestApp, problem, rows};

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
}

/// Changes the instance as its lifecycle would, and lets billing follow.
async fn change(
    app: &TestApp,
    clock: &ManualClock,
    row: instance::Model,
    edit: impl FnOnce(&mut instance::ActiveModel),
) -> instance::Model {
    let mut active = row.into_active_model();
    edit(&mut active);
    let row = active.update(app.state.db.writer()).await.expect("update");
    subscriptions::track(
        &app.state.db,
        &row,
        vmcloud_server::clock::Clock::now(clock),
    )
    .await
    .expect("track");
    row
}

async fn accrue(app: &TestApp) -> u64 {
    usage::accrue_all(&app.state.billing())
        .await
        .expect("accrual")
        .charges
}

/// The usage charged to an instance, as a positive amount.
async fn charged(app: &TestApp, instance: &instance::Model) -> i64 {
    -transaction::Entity::find()
        .filter(transaction::Column::InstanceId.eq(instance.id))
        .filter(transaction::Column::Kind.eq(TransactionKind::Usage))
        .all(app.state.db.writer())
        .await
        .expect("ledger")
        .iter()
        .map(|t| t.amount_minor)
        .sum::<i64>()
}

#[tokio::test]
async fn usage_accrues_per_started_hour_into_the_ledger_exactly_once() {
    let clock = ManualClock::new(at(2, 10, 30));
    let app = TestApp::spawn_at(clock.clone()).await;
    let db = app.state.db.writer();
    let cat = rows::catalogue(db).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let capped = plan(&app, &cat, "capped", 7, 30).await;
    let small = plan(&app, &cat, "small", 10, 100_000).await;
    let large = plan(&app, &cat, "large", 25, 100_000).await;

    // A runs from 10:30 on a plan capped at 30 a month.
    let a = rows::new_instance(db, &cat).await;
    let a = change(&app, &clock, a, |i| i.product_id = Set(capped.id)).await;
    // B runs from 10:30, is stopped at 12:15 and started at 14:40, resized
    // at 15:10 and deleted at 16:05; stopped hours are free.
    let b = rows::new_instance(db, &cat).await;
    let b = change(&app, &clock, b, |i| i.product_id = Set(small.id)).await;
    let response = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/billing",
            &admin,
            &json!({"currencies": ["EUR"], "charge_stopped_instances": false}),
        )
        .await;
    assert_eq!(response.status(), 200);

    // Nothing is charged before an hour is over.
    assert_eq!(accrue(&app).await, 0);
    clock.set(at(2, 12, 15));
    assert_eq!(accrue(&app).await, 4, "10:00 and 11:00 of A and B");
    let b = change(&app, &clock, b, |i| i.status = Set(InstanceStatus::Stopped)).await;
    clock.set(at(2, 14, 40));
    let b = change(&app, &clock, b, |i| i.status = Set(InstanceStatus::Running)).await;
    clock.set(at(2, 15, 10));
    accrue(&app).await;
    let b = change(&app, &clock, b, |i| i.product_id = Set(large.id)).await;
    clock.set(at(2, 16, 5));
    let b = change(&app, &clock, b, |i| {
        i.status = Set(InstanceStatus::Deleted);
        i.deleted_at = Set(Some(at(2, 16, 5)));
    })
    .await;
    // Two runs at once book B's 15:00 and 16:00 once: the deleted
    // instance's last started hour is charged at once.
    let (first, second) = tokio::join!(accrue(&app), accrue(&app));
    assert_eq!(first + second, 2);
    assert_eq!(charged(&app, &b).await, 10 + 10 + 10 + 10 + 25 + 25);

    // A run that lost its cursors (as after a crash between the charges and
    // the cursor) books nothing twice.
    clock.set(at(2, 20, 0));
    accrue(&app).await;
    subscription::Entity::update_many()
        .col_expr(
            subscription::Column::AccruedUntil,
            sea_orm::sea_query::Expr::value(Option::<DateTime<Utc>>::None),
        )
        .exec(db)
        .await
        .expect("lose the cursors");
    assert_eq!(accrue(&app).await, 0);
    assert_eq!(charged(&app, &a).await, 30, "capped at the monthly price");
    assert_eq!(charged(&app, &b).await, 90, "nothing after the deletion");
    let cancelled = subscription::Entity::find()
        .filter(subscription::Column::InstanceId.eq(b.id))
        .one(db)
        .await
        .expect("select")
        .expect("subscription");
    assert_eq!(cancelled.status, SubscriptionStatus::Cancelled);
    assert_eq!(cancelled.cancelled_at, Some(at(2, 16, 5)));

    // The customer's view agrees with the ledger.
    let balance = app
        .fetch_json(Method::GET, "/api/v1/billing/balance", &owner)
        .await;
    assert_eq!(balance, json!([{"currency": "EUR", "amount_minor": -120}]));
    let report = app
        .fetch_json(Method::GET, "/api/v1/billing/usage", &owner)
        .await;
    let by_instance = |id: &instance::Model| -> Value {
        report["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .find(|u| u["instance_id"] == json!(id.id))
            .cloned()
            .expect("usage of the instance")
    };
    assert_eq!(by_instance(&a)["accrued_minor"], 30);
    assert_eq!(by_instance(&a)["forecast_minor"], 30);
    assert_eq!(by_instance(&b)["accrued_minor"], 90);
    assert_eq!(by_instance(&b)["forecast_minor"], 90);
    assert_eq!(by_instance(&b)["status"], "cancelled");
    let page = app
        .fetch_json(
            Method::GET,
            "/api/v1/billing/transactions?kind=usage&limit=100",
            &owner,
        )
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 5 + 6, "A: 4 full hours and 2; B: 6 hours");
    assert!(
        items
            .iter()
            .all(|t| t["usage_hour"].is_string() && t["amount_minor"].as_i64() < Some(0))
    );
}

#[tokio::test]
async fn admins_adjust_credit_with_a_reason_and_customers_see_only_their_own_account() {
    let clock = ManualClock::new(at(2, 10, 30));
    let app = TestApp::spawn_at(clock.clone()).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let (alice_id, alice) = app
        .signed_in(
            "alice@example.com",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;
    let (_, bob) = app
        .signed_in(
            "bob@example.com",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;
    let path = format!("/api/v1/admin/billing/users/{alice_id}/adjustments");

    for (body, field) in [
        (
            json!({"amount_minor": 500, "currency": "EUR", "reason": "  "}),
            "reason",
        ),
        (
            json!({"amount_minor": 0, "currency": "EUR", "reason": "Goodwill"}),
            "amount_minor",
        ),
        (
            json!({"amount_minor": 500, "currency": "XYZ", "reason": "Goodwill"}),
            "currency",
        ),
    ] {
        let response = app.send_json(Method::POST, &path, &admin, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem = problem(response).await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let response = app
        .send_json(
            Method::POST,
            &path,
            &admin,
            &json!({"amount_minor": 2500, "currency": "EUR", "reason": "Welcome credit"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let booked: Value = response.json().await.expect("json");
    assert_eq!(booked["kind"], "credit_adjustment");
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"billing.credit_adjusted".to_owned())
    );
    let response = app
        .send_json(
            Method::POST,
            &format!(
                "/api/v1/admin/billing/users/{}/adjustments",
                uuid::Uuid::now_v7()
            ),
            &admin,
            &json!({"amount_minor": 1, "currency": "EUR", "reason": "Nobody"}),
        )
        .await;
    assert_eq!(response.status(), 404);

    let balance = |session| app.fetch_json(Method::GET, "/api/v1/billing/balance", session);
    assert_eq!(
        balance(&alice).await,
        json!([{"currency": "EUR", "amount_minor": 2500}])
    );
    assert_eq!(
        balance(&bob).await,
        json!([{"currency": "EUR", "amount_minor": 0}])
    );
    let bobs = app
        .fetch_json(Method::GET, "/api/v1/billing/transactions", &bob)
        .await;
    assert_eq!(bobs["items"], json!([]));
    let bobs_usage = app
        .fetch_json(Method::GET, "/api/v1/billing/usage", &bob)
        .await;
    assert_eq!(bobs_usage["instances"], json!([]));
    // Staff see it in the ledger of the account, with the reason.
    let alices = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/admin/billing/transactions?user_id={alice_id}"),
            &admin,
        )
        .await;
    assert_eq!(alices["items"][0]["description"], "Welcome credit");
    // An admin's own ledger is theirs alone, even on the customer route.
    let own = app
        .fetch_json(Method::GET, "/api/v1/billing/transactions", &admin)
        .await;
    assert_eq!(own["items"], json!([]));
}

#[tokio::test]
async fn an_order_opens_its_subscription_with_the_plans_prices() {
    let clock = ManualClock::new(at(2, 10, 30));
    let app = TestApp::spawn_at(clock.clone()).await;
    let db = app.state.db.writer();
    let cat = rows::catalogue(db).await;
    product_region::ActiveModel {
        product_id: Set(cat.product.id),
        region_id: Set(cat.region.id),
        created_at: Set(at(1, 0, 0)),
    }
    .insert(db)
    .await
    .expect("offer the plan");
    let mut verified = cat.user.clone().into_active_model();
    verified.email_verified_at = Set(Some(at(1, 0, 0)));
    verified.update(db).await.expect("verify");
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let response = app
        .send_json(
            Method::POST,
            "/api/v1/instances",
            &owner,
            &json!({"plan": "s-1", "image": "debian-12", "region": "par1", "hostname": "web"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let ordered: Value = response.json().await.expect("json");
    let subscription = subscription::Entity::find()
        .filter(
            subscription::Column::InstanceId.eq(ordered["id"]
                .as_str()
                .map(|id| id.parse::<vmcloud_server::ids::InstanceId>().expect("id"))),
        )
        .one(db)
        .await
        .expect("select")
        .expect("the order's subscription");
    assert_eq!(subscription.status, SubscriptionStatus::Active);
    assert_eq!(subscription.product_id, cat.product.id);
    assert_eq!(subscription.current_period_start, at(2, 10, 30));
    assert_eq!(
        subscription.current_period_end,
        Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap()
    );
    let segments = usage_segment::Entity::find()
        .filter(usage_segment::Column::SubscriptionId.eq(subscription.id))
        .all(db)
        .await
        .expect("segments");
    let first = segments.first().expect("the first usage segment");
    assert_eq!(first.started_at, at(2, 10, 30));
    assert_eq!(
        (
            first.hourly_minor,
            first.monthly_minor,
            first.currency.as_str()
        ),
        (
            cat.product.price_hourly_minor,
            cat.product.price_monthly_minor,
            "EUR"
        )
    );
}

#[tokio::test]
async fn monthly_invoices_are_numbered_without_gaps_with_vat_and_reverse_charge() {
    let clock = ManualClock::new(at(31, 20, 0));
    let app = TestApp::spawn_at(clock.clone()).await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let hourly = plan(&app, &cat, "hourly", 10, 100_000).await;
    let (alice_id, alice) = customer(&app, "alice@example.com", "FR").await;
    let (bob_id, bob) =
        customer_with_vat_id(&app, "bob@example.com", "DE", Some("DE 123456789")).await;
    let (carol_id, _carol) = customer(&app, "carol@example.com", "US").await;
    for owner in [alice_id, bob_id, carol_id] {
        instance_of(&app, &clock, &cat, owner, &hourly).await;
    }
    let response = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/users/{alice_id}/adjustments"),
            &admin,
            &json!({"amount_minor": 10_000, "currency": "EUR", "reason": "Prepaid"}),
        )
        .await;
    assert_eq!(response.status(), 201);

    // March's last four hours are charged just after midnight; two passes
    // at once issue each invoice once, numbered 1 to 3 whatever the order.
    clock.set(Utc.with_ymd_and_hms(2026, 4, 1, 0, 30, 0).unwrap());
    let billing = app.state.billing();
    let (first, second) = tokio::join!(
        vmcloud_server::modules::billing::pass(&billing),
        vmcloud_server::modules::billing::pass(&billing)
    );
    first.expect("first pass");
    second.expect("second pass");
    vmcloud_server::modules::billing::pass(&billing)
        .await
        .expect("a later pass");
    let all = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/billing/invoices?limit=100",
            &admin,
        )
        .await;
    let invoices = all["items"].as_array().expect("items");
    let mut numbers: Vec<&str> = invoices
        .iter()
        .map(|i| i["number"].as_str().expect("number"))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, ["2026-000001", "2026-000002", "2026-000003"]);
    let of = |user: vmcloud_server::ids::UserId| -> Value {
        invoices
            .iter()
            .find(|i| i["user_id"] == json!(user))
            .cloned()
            .expect("the account's invoice")
    };

    // Alice (France, no VAT id) pays French VAT, from her credit.
    let alices = of(alice_id);
    assert_eq!(
        (&alices["subtotal_minor"], &alices["tax_rate_basis_points"]),
        (&json!(40), &json!(2000))
    );
    assert_eq!(
        (&alices["tax_minor"], &alices["total_minor"]),
        (&json!(8), &json!(48))
    );
    assert_eq!(alices["status"], "paid");
    assert_eq!(alices["period_start"], json!(at(1, 0, 0)));
    // Bob (a German business) is reverse-charged and owes the invoice.
    let bobs = of(bob_id);
    assert_eq!(bobs["reverse_charge"], true);
    assert_eq!(
        (&bobs["tax_minor"], &bobs["total_minor"]),
        (&json!(0), &json!(40))
    );
    assert!(
        bobs["legal_mention"]
            .as_str()
            .expect("mention")
            .contains("Reverse charge")
    );
    assert_eq!(bobs["status"], "open");
    // Carol, outside the EU, pays no VAT.
    let carols = of(carol_id);
    assert_eq!(
        (&carols["tax_minor"], &carols["status"]),
        (&json!(0), &json!("open"))
    );

    // The ledger adds up: each balance is the credit minus the invoices.
    for (user, session, credit) in [(alice_id, &alice, 10_000), (bob_id, &bob, 0)] {
        let balance = app
            .fetch_json(Method::GET, "/api/v1/billing/balance", session)
            .await;
        let total = of(user)["total_minor"].as_i64().expect("total");
        assert_eq!(balance[0]["amount_minor"], json!(credit - total));
    }

    // The customer reads their own invoice with its lines, and not Bob's.
    let id = alices["id"].as_str().expect("id");
    let detail = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/billing/invoices/{id}"),
            &alice,
        )
        .await;
    assert_eq!(detail["number"], alices["number"]);
    assert_eq!(detail["lines"][0]["amount_minor"], 40);
    assert!(
        detail["lines"][0]["description"]
            .as_str()
            .expect("description")
            .contains("4 hours, March 2026")
    );
    assert_eq!(detail["parties"]["customer"]["country"], "FR");
    let bobs_id = bobs["id"].as_str().expect("id");
    assert_eq!(
        app.status_of(
            Method::GET,
            &format!("/api/v1/billing/invoices/{bobs_id}"),
            &alice
        )
        .await,
        404
    );
    let own = app
        .fetch_json(Method::GET, "/api/v1/billing/invoices", &alice)
        .await;
    assert_eq!(own["items"].as_array().expect("items").len(), 1);
    // Each account is told of its invoice once, in the app and by email.
    let told = app
        .fetch_json(Method::GET, "/api/v1/notifications", &alice)
        .await;
    let kinds: Vec<&str> = told["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["invoice.issued"]);

    // Bob pays by bank transfer; an admin records it once.
    let pay = format!("/api/v1/admin/billing/invoices/{bobs_id}/payments");
    let paid = app
        .send_json(Method::POST, &pay, &admin, &json!({"reference": "SEPA 42"}))
        .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.json::<Value>().await.expect("json")["status"], "paid");
    let again = app
        .send_json(Method::POST, &pay, &admin, &json!({"reference": "SEPA 42"}))
        .await;
    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["state"], "paid");
    let bobs_balance = app
        .fetch_json(Method::GET, "/api/v1/billing/balance", &bob)
        .await;
    assert_eq!(
        bobs_balance[0]["amount_minor"], 0,
        "the payment settles the debt"
    );

    // On demand: March is invoiced already, April is not over.
    let path = format!("/api/v1/admin/billing/users/{alice_id}/invoices");
    let again = app
        .send_json(
            Method::POST,
            &path,
            &admin,
            &json!({"year": 2026, "month": 3}),
        )
        .await;
    assert_eq!(again.status(), 409);
    let early = app
        .send_json(
            Method::POST,
            &path,
            &admin,
            &json!({"year": 2026, "month": 4}),
        )
        .await;
    assert_eq!(early.status(), 422);
}

fn stripe_signature(secret: &str, timestamp: i64, payload: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn a_signed_stripe_top_up_credits_once_and_bad_signatures_change_nothing() {
    let clock = ManualClock::new(at(2, 10, 30));
    let app = TestApp::spawn_with_clock(
        |config| {
            config.billing_accrual_interval_secs = 3600;
            config.stripe_webhook_secret = Some("whsec_test".to_owned().into());
        },
        std::sync::Arc::new(clock.clone()),
    )
    .await;
    let (alice_id, alice) = app
        .signed_in(
            "alice@example.com",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;
    let payload = json!({
        "id": "evt_1", "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_1", "client_reference_id": alice_id, "amount_total": 2000,
            "currency": "eur", "payment_status": "paid",
        }},
    })
    .to_string();
    let deliver = |signature: String, body: String| {
        app.client
            .post(app.url("/api/v1/webhooks/stripe"))
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let now = at(2, 10, 30).timestamp();
    let balance = || app.fetch_json(Method::GET, "/api/v1/billing/balance", &alice);

    for signature in [
        stripe_signature("whsec_other", now, &payload),
        stripe_signature("whsec_test", now - 301, &payload),
        "t=1,v1=zz".to_owned(),
    ] {
        let response = deliver(signature, payload.clone()).await.expect("sent");
        assert_eq!(response.status(), 400);
        assert_eq!(
            problem(response).await["type"],
            "/problems/malformed-request"
        );
    }
    let tampered = payload.replace("2000", "200000");
    let response = deliver(stripe_signature("whsec_test", now, &payload), tampered)
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert_eq!(
        balance().await,
        json!([{"currency": "EUR", "amount_minor": 0}])
    );

    // Delivered ten times (Stripe retries), credited once.
    for _ in 0..10 {
        let response = deliver(
            stripe_signature("whsec_test", now, &payload),
            payload.clone(),
        )
        .await
        .expect("sent");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        balance().await,
        json!([{"currency": "EUR", "amount_minor": 2000}])
    );
    let page = app
        .fetch_json(Method::GET, "/api/v1/billing/transactions", &alice)
        .await;
    assert_eq!(page["items"][0]["kind"], "top_up");
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
}

#[tokio::test]
async fn without_a_webhook_secret_stripe_webhooks_are_unavailable() {
    let app = TestApp::spawn_at(ManualClock::new(at(2, 10, 30))).await;
    let response = app
        .client
        .post(app.url("/api/v1/webhooks/stripe"))
        .header("stripe-signature", "t=1,v1=00")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 503);
    assert_eq!(problem(response).await["type"], "/problems/unavailable");
}
