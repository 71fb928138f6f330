//! Card payments over HTTP against a fake Stripe (a local server that
//! records the form requests it receives and answers like Stripe's Checkout
//! Sessions and Refunds endpoints): top-ups and invoice payments booked once
//! however often Stripe replays its webhook, refunds never beyond what was
//! paid, voided invoices, failed payments counted and emailed, and invoice
//! PDFs read back as text.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use chrono::{DateTime, TimeZone as _, Utc};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _,
};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::email::{self, EmailKind};
use vmcloud_server::db::entities::invoice::{self, InvoiceStatus};
use vmcloud_server::db::entities::user::{self, UserRole};

use common::billing::{assert_ledger_adds_up, customer_with_vat_id, invoice_march};
use common::{Session, TestApp, problem};

const SECRET_KEY: &str = "sk_test_secret_never_shown";
const WEBHOOK_SECRET: &str = "whsec_test";
/// A top-up of this amount is refused by the fake Stripe, as Stripe refuses
/// a bad request.
const REFUSED_AMOUNT: i64 = 666;

/// One request the fake Stripe received.
#[derive(Clone, Debug)]
struct Received {
    path: &'static str,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    form: Vec<(String, String)>,
}

impl Received {
    fn get(&self, key: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct FakeStripe {
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeStripe {
    fn record(
        &self,
        path: &'static str,
        headers: &HeaderMap,
        form: Vec<(String, String)>,
    ) -> usize {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut received = self.received.lock().expect("lock");
        received.push(Received {
            path,
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
            form,
        });
        received.len()
    }

    fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Serves on 127.0.0.1 and returns the base URL.
    async fn start(&self) -> String {
        async fn sessions(
            State(fake): State<FakeStripe>,
            headers: HeaderMap,
            Form(form): Form<Vec<(String, String)>>,
        ) -> (StatusCode, Json<Value>) {
            let refused = form.iter().any(|(k, v)| {
                k == "line_items[0][price_data][unit_amount]" && *v == REFUSED_AMOUNT.to_string()
            });
            let n = fake.record("/v1/checkout/sessions", &headers, form);
            if refused {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": {
                        "type": "invalid_request_error",
                        "code": "amount_too_small",
                        "message": "The Checkout Session's total amount due must add up to at least €0.50 eur",
                        "param": "line_items[0][price_data][unit_amount]",
                    }})),
                );
            }
            (
                StatusCode::OK,
                Json(json!({
                    "id": format!("cs_test_{n}"),
                    "object": "checkout.session",
                    "mode": "payment",
                    "status": "open",
                    "payment_status": "unpaid",
                    "url": format!("https://checkout.stripe.test/c/pay/cs_test_{n}"),
                })),
            )
        }
        async fn refunds(
            State(fake): State<FakeStripe>,
            headers: HeaderMap,
            Form(form): Form<Vec<(String, String)>>,
        ) -> Json<Value> {
            let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            let (intent, amount) = (get("payment_intent"), get("amount"));
            let n = fake.record("/v1/refunds", &headers, form);
            Json(json!({
                "id": format!("re_test_{n}"),
                "object": "refund",
                "amount": amount.and_then(|a| a.parse::<i64>().ok()),
                "payment_intent": intent,
                "status": "succeeded",
            }))
        }
        let router = Router::new()
            .route("/v1/checkout/sessions", post(sessions))
            .route("/v1/refunds", post(refunds))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }
}

fn at(month: u32, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, hour, 0, 0).unwrap()
}

/// The platform at `clock`, with Stripe configured against `stripe` when
/// given.
async fn platform(clock: &ManualClock, stripe: Option<String>) -> TestApp {
    TestApp::spawn_with_clock(
        move |config| {
            config.billing_accrual_interval_secs = 3600;
            config.public_url = Some("https://cloud.example.test".to_owned());
            config.stripe_webhook_secret = Some(WEBHOOK_SECRET.to_owned().into());
            if let Some(base) = stripe {
                config.stripe_api_base = base;
                config.stripe_secret_key = Some(SECRET_KEY.to_owned().into());
            }
        },
        Arc::new(clock.clone()),
    )
    .await
}

/// Delivers `event` to the webhook, signed as Stripe signs it.
async fn deliver(app: &TestApp, clock: &ManualClock, event: &Value) -> u16 {
    use hmac::Mac as _;
    let payload = event.to_string();
    let timestamp = vmcloud_server::clock::Clock::now(clock).timestamp();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{payload}").as_bytes());
    let signature = format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    );
    app.client
        .post(app.url("/api/v1/webhooks/stripe"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

fn event(id: &str, kind: &str, object: &Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "data": {"object": object}})
}

async fn balance(app: &TestApp, session: &Session) -> i64 {
    let balances = app
        .fetch_json(Method::GET, "/api/v1/billing/balance", session)
        .await;
    balances[0]["amount_minor"].as_i64().expect("amount")
}

async fn transactions(app: &TestApp, session: &Session) -> Vec<Value> {
    let page = app
        .fetch_json(
            Method::GET,
            "/api/v1/billing/transactions?limit=100",
            session,
        )
        .await;
    page["items"].as_array().expect("items").clone()
}

#[tokio::test]
async fn a_card_top_up_opens_a_checkout_and_credits_once_however_often_stripe_replays() {
    let stripe = FakeStripe::default();
    let clock = ManualClock::new(at(3, 2, 10));
    let app = platform(&clock, Some(stripe.start().await)).await;
    let (alice_id, alice) = app
        .signed_in(
            "alice@example.com",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;

    for (body, field) in [
        (
            json!({"amount_minor": 0, "currency": "EUR"}),
            "amount_minor",
        ),
        (
            json!({"amount_minor": -500, "currency": "EUR"}),
            "amount_minor",
        ),
        (
            json!({"amount_minor": 10_000_001, "currency": "EUR"}),
            "amount_minor",
        ),
        (json!({"amount_minor": 500, "currency": "USD"}), "currency"),
    ] {
        let response = app
            .send_json(Method::POST, "/api/v1/billing/top-ups", &alice, &body)
            .await;
        assert_eq!(response.status(), 422, "{body}");
        assert_eq!(
            problem(response).await["errors"][0]["field"],
            field,
            "{body}"
        );
    }
    assert!(stripe.received("/v1/checkout/sessions").is_empty());

    // Stripe's refusal is a clear 502 that quotes Stripe, never our key.
    let refused = app
        .send_json(
            Method::POST,
            "/api/v1/billing/top-ups",
            &alice,
            &json!({"amount_minor": REFUSED_AMOUNT, "currency": "EUR"}),
        )
        .await;
    assert_eq!(refused.status(), 502);
    let refused = problem(refused).await;
    assert_eq!(refused["type"], "/problems/upstream-error");
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("at least €0.50")
    );
    assert!(!refused.to_string().contains(SECRET_KEY));

    let response = app
        .send_json(
            Method::POST,
            "/api/v1/billing/top-ups",
            &alice,
            &json!({"amount_minor": 2500, "currency": "EUR"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let checkout: Value = response.json().await.expect("json");
    assert!(!checkout.to_string().contains(SECRET_KEY));
    let session_id = checkout["session_id"].as_str().expect("session").to_owned();
    assert_eq!(
        checkout["checkout_url"],
        format!("https://checkout.stripe.test/c/pay/{session_id}")
    );
    let sent = stripe
        .received("/v1/checkout/sessions")
        .pop()
        .expect("a session request");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {SECRET_KEY}").as_str())
    );
    assert_eq!(sent.get("mode"), Some("payment"));
    assert_eq!(sent.get("line_items[0][price_data][currency]"), Some("eur"));
    assert_eq!(
        sent.get("line_items[0][price_data][unit_amount]"),
        Some("2500")
    );
    assert_eq!(sent.get("line_items[0][quantity]"), Some("1"));
    assert_eq!(sent.get("client_reference_id"), Some(alice_id.as_str()));
    assert_eq!(sent.get("metadata[purpose]"), Some("top_up"));
    assert_eq!(
        sent.get("payment_intent_data[metadata][account_id]"),
        Some(alice_id.as_str())
    );
    assert!(
        sent.get("success_url")
            .expect("success_url")
            .starts_with("https://cloud.example.test/billing?checkout=success")
    );
    assert_eq!(
        sent.get("cancel_url"),
        Some("https://cloud.example.test/billing?checkout=cancelled")
    );

    // Stripe reports the payment ten times; it is credited once.
    let completed = event(
        "evt_top_up",
        "checkout.session.completed",
        &json!({
            "id": session_id, "object": "checkout.session", "client_reference_id": alice_id,
            "amount_total": 2500, "currency": "eur", "payment_status": "paid",
            "payment_intent": "pi_top_up", "metadata": {"account_id": alice_id, "purpose": "top_up"},
        }),
    );
    for _ in 0..10 {
        assert_eq!(deliver(&app, &clock, &completed).await, 200);
    }
    assert_eq!(balance(&app, &alice).await, 2500);
    let booked = transactions(&app, &alice).await;
    assert_eq!(booked.len(), 1);
    assert_eq!(booked[0]["kind"], "top_up");
}

#[tokio::test]
async fn without_a_secret_key_card_payments_are_unavailable_and_manual_ones_still_work() {
    let clock = ManualClock::new(at(3, 2, 10));
    let app = platform(&clock, None).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let (alice_id, alice) = customer_with_vat_id(&app, "alice@example.com", "FR", None).await;
    let response = app
        .send_json(
            Method::POST,
            "/api/v1/billing/top-ups",
            &alice,
            &json!({"amount_minor": 2500, "currency": "EUR"}),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let unavailable = problem(response).await;
    assert_eq!(unavailable["type"], "/problems/unavailable");
    assert!(
        unavailable["detail"]
            .as_str()
            .expect("detail")
            .contains("not configured")
    );

    let invoices = invoice_march(&app, &clock, &[alice_id]).await;
    let id = invoices[0]["id"].as_str().expect("id");
    let pay = app
        .send_json(
            Method::POST,
            &format!("/api/v1/billing/invoices/{id}/pay"),
            &alice,
            &json!({}),
        )
        .await;
    assert_eq!(pay.status(), 503);
    let paid = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/invoices/{id}/payments"),
            &admin,
            &json!({"reference": "SEPA 1"}),
        )
        .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(balance(&app, &alice).await, 0);
}

#[tokio::test]
async fn an_invoice_paid_by_card_is_paid_once_and_refunds_never_exceed_the_payment() {
    let stripe = FakeStripe::default();
    let clock = ManualClock::new(at(3, 2, 10));
    let app = platform(&clock, Some(stripe.start().await)).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let (alice_id, alice) = customer_with_vat_id(&app, "alice@example.com", "FR", None).await;
    let (bob_id, bob) = customer_with_vat_id(&app, "bob@example.com", "US", None).await;
    let invoices = invoice_march(&app, &clock, &[alice_id, bob_id]).await;
    let (alices, bobs) = (&invoices[0], &invoices[1]);
    let (alices_id, bobs_id) = (
        alices["id"].as_str().expect("id"),
        bobs["id"].as_str().expect("id"),
    );
    let total = alices["total_minor"].as_i64().expect("total");
    assert_eq!(total, 1200, "4 hours of 250 and 20 % VAT");
    assert_eq!(balance(&app, &alice).await, -total);

    // Another customer's invoice is not found.
    let pay = |id: &str, session: &Session| {
        let path = format!("/api/v1/billing/invoices/{id}/pay");
        let session = session.clone();
        let app = &app;
        async move {
            app.send_json(Method::POST, &path, &session, &json!({}))
                .await
        }
    };
    assert_eq!(pay(bobs_id, &alice).await.status(), 404);
    let response = pay(alices_id, &alice).await;
    assert_eq!(response.status(), 201);
    let checkout: Value = response.json().await.expect("json");
    let sent = stripe
        .received("/v1/checkout/sessions")
        .pop()
        .expect("sent");
    assert_eq!(
        sent.get("line_items[0][price_data][unit_amount]"),
        Some("1200")
    );
    assert_eq!(sent.get("metadata[invoice_id]"), Some(alices_id));
    assert_eq!(
        sent.get("payment_intent_data[metadata][invoice_id]"),
        Some(alices_id)
    );
    assert_eq!(sent.get("metadata[purpose]"), Some("invoice"));

    let completed = |id: &str| {
        event(
            id,
            "checkout.session.completed",
            &json!({
                "id": checkout["session_id"], "object": "checkout.session",
                "client_reference_id": alice_id, "amount_total": total, "currency": "eur",
                "payment_status": "paid", "payment_intent": "pi_invoice",
                "metadata": {"account_id": alice_id, "purpose": "invoice", "invoice_id": alices_id},
            }),
        )
    };
    for _ in 0..5 {
        assert_eq!(deliver(&app, &clock, &completed("evt_paid")).await, 200);
    }
    // Stripe may also send a second event for the same payment.
    assert_eq!(
        deliver(&app, &clock, &completed("evt_paid_again")).await,
        200
    );
    let detail = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/billing/invoices/{alices_id}"),
            &alice,
        )
        .await;
    assert_eq!(detail["status"], "paid");
    assert_eq!(
        balance(&app, &alice).await,
        0,
        "the payment settles the invoice"
    );
    let payments: Vec<Value> = transactions(&app, &alice)
        .await
        .into_iter()
        .filter(|t| t["kind"] == "payment")
        .collect();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["amount_minor"], total);
    assert_eq!(payments[0]["invoice_id"], alices_id);
    let paid_again = pay(alices_id, &alice).await;
    assert_eq!(paid_again.status(), 409);
    assert_eq!(problem(paid_again).await["state"], "paid");

    // An admin refunds part of it through Stripe.
    let payment_id = payments[0]["id"].as_str().expect("id").to_owned();
    let refund = |transaction: &str, amount: i64| {
        let body = json!({"transaction_id": transaction, "amount_minor": amount, "reason": "Outage credit"});
        let app = &app;
        let admin = admin.clone();
        async move {
            app.send_json(Method::POST, "/api/v1/admin/billing/refunds", &admin, &body)
                .await
        }
    };
    let response = refund(&payment_id, 500).await;
    assert_eq!(response.status(), 201);
    let refunded: Value = response.json().await.expect("json");
    assert_eq!(
        (&refunded["kind"], &refunded["amount_minor"]),
        (&json!("refund"), &json!(-500))
    );
    let sent = stripe.received("/v1/refunds");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].get("payment_intent"), Some("pi_invoice"));
    assert_eq!(sent[0].get("amount"), Some("500"));
    assert!(sent[0].idempotency_key.is_some());
    assert_eq!(balance(&app, &alice).await, -500);
    // Never more than is left of the payment.
    let too_much = refund(&payment_id, total - 500 + 1).await;
    assert_eq!(too_much.status(), 422);
    assert_eq!(
        problem(too_much).await["errors"][0]["field"],
        "amount_minor"
    );
    for bad in [0, -1] {
        assert_eq!(refund(&payment_id, bad).await.status(), 422);
    }
    assert_eq!(stripe.received("/v1/refunds").len(), 1);
    // A usage charge is not a payment.
    let usage = transactions(&app, &alice)
        .await
        .into_iter()
        .find(|t| t["kind"] == "usage")
        .expect("a usage row");
    let not_payment = refund(usage["id"].as_str().expect("id"), 1).await;
    assert_eq!(not_payment.status(), 422);
    assert_eq!(
        problem(not_payment).await["errors"][0]["field"],
        "transaction_id"
    );

    // Stripe reports the refund we made: nothing more is booked. Then the
    // rest is refunded from Stripe's dashboard: booked once.
    let refunded_charge = |id: &str, amount: i64| {
        event(
            id,
            "charge.refunded",
            &json!({"id": "ch_1", "object": "charge", "amount": total, "amount_refunded": amount,
                   "currency": "eur", "payment_intent": "pi_invoice", "refunded": amount == total}),
        )
    };
    assert_eq!(
        deliver(&app, &clock, &refunded_charge("evt_refund_1", 500)).await,
        200
    );
    assert_eq!(balance(&app, &alice).await, -500);
    for _ in 0..3 {
        assert_eq!(
            deliver(&app, &clock, &refunded_charge("evt_refund_2", total)).await,
            200
        );
    }
    assert_eq!(balance(&app, &alice).await, -total);
    let refunds = transactions(&app, &alice)
        .await
        .into_iter()
        .filter(|t| t["kind"] == "refund")
        .count();
    assert_eq!(refunds, 2);
    assert_eq!(refund(&payment_id, 1).await.status(), 422, "fully refunded");

    // A manual payment is refunded without Stripe.
    let paid = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/invoices/{bobs_id}/payments"),
            &admin,
            &json!({"reference": "SEPA 7"}),
        )
        .await;
    assert_eq!(paid.status(), 200);
    let bobs_payment = transactions(&app, &bob)
        .await
        .into_iter()
        .find(|t| t["kind"] == "payment")
        .expect("bob's payment");
    let response = refund(bobs_payment["id"].as_str().expect("id"), 300).await;
    assert_eq!(response.status(), 201);
    assert_eq!(stripe.received("/v1/refunds").len(), 1, "no Stripe call");
    assert_eq!(balance(&app, &bob).await, -300);
    let actions = common::audit_actions(&app).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "billing.refunded").count(),
        2
    );
    assert_ledger_adds_up(&app, alice_id, &alice).await;
    assert_ledger_adds_up(&app, bob_id, &bob).await;
}

async fn failures_counted(app: &TestApp) -> u64 {
    let text = app.scrape().await.text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with("vmcloud_payment_failures_total{currency=\"EUR\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().expect("a whole number"))
}

#[tokio::test]
async fn open_invoices_are_voided_and_failed_payments_are_counted_audited_and_notified() {
    let stripe = FakeStripe::default();
    let clock = ManualClock::new(at(3, 2, 10));
    let app = platform(&clock, Some(stripe.start().await)).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let (alice_id, alice) = customer_with_vat_id(&app, "alice@example.com", "FR", None).await;
    let (bob_id, bob) = customer_with_vat_id(&app, "bob@example.com", "FR", None).await;
    let invoices = invoice_march(&app, &clock, &[alice_id, bob_id]).await;
    let (alices_id, bobs_id) = (
        invoices[0]["id"].as_str().expect("id"),
        invoices[1]["id"].as_str().expect("id"),
    );
    let void = |id: &str| {
        let path = format!("/api/v1/admin/billing/invoices/{id}/void");
        let app = &app;
        let admin = admin.clone();
        async move { app.send_json(Method::POST, &path, &admin, &json!({})).await }
    };
    let response = void(alices_id).await;
    assert_eq!(response.status(), 200);
    let voided: Value = response.json().await.expect("json");
    assert_eq!(voided["status"], "void");
    assert!(voided["voided_at"].is_string());
    assert_eq!(
        balance(&app, &alice).await,
        0,
        "the invoice's debits reversed"
    );
    let again = void(alices_id).await;
    assert_eq!(again.status(), 409);
    assert_eq!(problem(again).await["state"], "void");
    let paid = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/invoices/{bobs_id}/payments"),
            &admin,
            &json!({"reference": "SEPA 9"}),
        )
        .await;
    assert_eq!(paid.status(), 200);
    let refused = void(bobs_id).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(problem(refused).await["state"], "paid");
    assert_eq!(void(&uuid::Uuid::now_v7().to_string()).await.status(), 404);
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"billing.invoice_voided".to_owned())
    );
    assert_ledger_adds_up(&app, alice_id, &alice).await;
    assert_ledger_adds_up(&app, bob_id, &bob).await;

    // A declined card, reported three times: counted, audited, notified and
    // emailed once, in the customer's language.
    let mut french = user::Entity::find_by_id(alice_id)
        .one(app.state.db.writer())
        .await
        .expect("select")
        .expect("alice")
        .into_active_model();
    french.locale = Set("fr".to_owned());
    french.update(app.state.db.writer()).await.expect("update");
    let before = failures_counted(&app).await;
    let failed = event(
        "evt_failed",
        "payment_intent.payment_failed",
        &json!({
            "id": "pi_failed", "object": "payment_intent", "amount": 1234, "currency": "eur",
            "metadata": {"account_id": alice_id, "purpose": "top_up"},
            "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
        }),
    );
    for _ in 0..3 {
        assert_eq!(deliver(&app, &clock, &failed).await, 200);
    }
    assert_eq!(failures_counted(&app).await - before, 1);
    let actions = common::audit_actions(&app).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "billing.payment_failed")
            .count(),
        1
    );
    let emails = email::Entity::find()
        .filter(email::Column::UserId.eq(alice_id))
        .filter(email::Column::Kind.eq(EmailKind::PaymentFailed))
        .all(app.state.db.writer())
        .await
        .expect("outbox");
    assert_eq!(emails.len(), 1);
    assert_eq!(emails[0].subject, "Votre paiement a échoué");
    assert_eq!(emails[0].to_address, "alice@example.com");
    // And told once in the app.
    let told = app
        .fetch_json(Method::GET, "/api/v1/notifications", &alice)
        .await;
    let failures: Vec<&Value> = told["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["kind"] == "payment.failed")
        .collect();
    assert_eq!(failures.len(), 1, "{told}");
    assert_eq!(failures[0]["title"], "Votre paiement a échoué");
    assert!(
        failures[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("12.34 EUR") && b.contains("Your card was declined.")),
        "{told}"
    );
}

/// The text of a PDF, as `pdftotext` (poppler-utils) extracts it.
async fn pdf_text(response: reqwest::Response) -> String {
    use tokio::io::AsyncWriteExt as _;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let bytes = response.bytes().await.expect("body");
    assert!(bytes.starts_with(b"%PDF-"));
    let mut child = tokio::process::Command::new("pdftotext")
        .args(["-layout", "-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pdftotext (poppler-utils) runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&bytes).await.expect("write");
    drop(stdin);
    let output = child.wait_with_output().await.expect("pdftotext");
    assert!(output.status.success(), "pdftotext failed");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test]
async fn an_invoice_pdf_carries_its_number_parties_lines_and_totals() {
    let clock = ManualClock::new(at(3, 2, 10));
    let app = platform(&clock, None).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let (_, support) = app
        .signed_in(
            "support@example.com",
            "correct horse battery",
            UserRole::Support,
        )
        .await;
    let response = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/invoicing",
            &admin,
            &json!({
                "seller": {"name": "Nuage SAS", "address": "1 rue de la Paix\n75002 Paris",
                           "country": "FR", "vat_id": "FR12345678901", "email": "billing@nuage.test"},
                "vat_rates": {"FR": 2000, "DE": 1900},
                "payment_terms_days": 14,
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let (alice_id, alice) = customer_with_vat_id(&app, "alice@example.com", "FR", None).await;
    let (bob_id, bob) =
        customer_with_vat_id(&app, "bob@example.com", "DE", Some("DE123456789")).await;
    let invoices = invoice_march(&app, &clock, &[alice_id, bob_id]).await;
    let (alices, bobs) = (&invoices[0], &invoices[1]);
    let alices_id = alices["id"].as_str().expect("id");
    let number = alices["number"].as_str().expect("number");

    let text = pdf_text(
        app.authed(
            Method::GET,
            &format!("/api/v1/billing/invoices/{alices_id}/pdf"),
            &alice,
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    for part in [
        number,
        "Issued: 2026-04-01",
        "Due: 2026-04-15",
        "Period: 2026-03-01 to 2026-03-31",
        "Nuage SAS",
        "75002 Paris",
        "VAT: FR12345678901",
        "alice@example.com",
        "web: 4 hours, March 2026",
        "10.00 EUR",
        "VAT 20.00 %",
        "2.00 EUR",
        "12.00 EUR",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(line("Subtotal"), "Subtotal 10.00 EUR");
    assert_eq!(line("Total"), "Total 12.00 EUR");
    assert!(!text.contains("Reverse charge"));

    // Bob's reverse-charged invoice says so; staff read it on their route.
    let bobs_id = bobs["id"].as_str().expect("id");
    let text = pdf_text(
        app.authed(
            Method::GET,
            &format!("/api/v1/admin/billing/invoices/{bobs_id}/pdf"),
            &support,
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    for part in [
        "Reverse charge",
        "Beispiel GmbH",
        "VAT: DE123456789",
        "VAT 0.00 %",
        "10.00 EUR",
    ] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    // Only the owner reads it on the customer route, staff included.
    for session in [&alice, &support] {
        assert_eq!(
            app.status_of(
                Method::GET,
                &format!("/api/v1/billing/invoices/{bobs_id}/pdf"),
                session
            )
            .await,
            404
        );
    }
    assert_eq!(
        app.status_of(
            Method::GET,
            &format!("/api/v1/billing/invoices/{bobs_id}/pdf"),
            &bob
        )
        .await,
        200
    );
    // A draft has no PDF.
    let draft = invoice::ActiveModel {
        user_id: Set(alice_id),
        number: Set(None),
        status: Set(InvoiceStatus::Draft),
        currency: Set("EUR".to_owned()),
        subtotal_minor: Set(0),
        tax_minor: Set(0),
        total_minor: Set(0),
        tax_rate_basis_points: Set(0),
        reverse_charge: Set(false),
        period_start: Set(at(4, 1, 0)),
        period_end: Set(at(5, 1, 0)),
        billing_snapshot: Set(json!({})),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("a draft");
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/billing/invoices/{}/pdf", draft.id),
            &alice,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
    assert_eq!(problem(response).await["state"], "draft");
}
