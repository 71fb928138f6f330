//! Dunning over HTTP on simulated time, with real VMs: an account whose
//! invoice stays unpaid is marked past due, its instances are really
//! stopped and kept from starting, then deleted after a warning; paying
//! restores a suspended account by itself. Passes that overlap take each
//! step, and send each email, once. Without VMs: each step is a
//! notification of the customer's, given once.

use crate::common;

use chrono::{DateTime, TimeZone as _, Utc};
use common::billing::{customer, invoice_march};
use common::cloud::{Cloud, SLOW, guest_image, qemu_running};
use common::{Session, TestApp, eventually_within, problem};
use reqwest::Method;
use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::email::{self, EmailKind};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::billing;

fn at(month: u32, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, hour, 0, 0).unwrap()
}

/// Two billing passes at once, as two processes would run them.
async fn passes(app: &TestApp) {
    let services = app.state.billing();
    let (first, second) = tokio::join!(billing::pass(&services), billing::pass(&services));
    first.expect("first pass");
    second.expect("second pass");
}

async fn emails(app: &TestApp, user: UserId, kind: EmailKind) -> u64 {
    email::Entity::find()
        .filter(email::Column::UserId.eq(user))
        .filter(email::Column::Kind.eq(kind))
        .count(app.state.db.writer())
        .await
        .expect("count emails")
}

/// The status of the account's only subscription, as its usage shows it.
async fn subscription_status(app: &TestApp, session: &Session) -> Value {
    let usage = app
        .fetch_json(Method::GET, "/api/v1/billing/usage", session)
        .await;
    usage["instances"][0]["status"].clone()
}

async fn wait_for_status(cloud: &Cloud, session: &Session, id: &str, status: &str) -> Value {
    eventually_within(&format!("the instance to be {status}"), SLOW, || async {
        let row = cloud.instance(session, id).await;
        (row["status"] == status).then_some(row)
    })
    .await
}

#[tokio::test]
async fn unpaid_accounts_are_suspended_then_deleted_and_paying_restores_them() {
    let Some(guest) = guest_image() else { return };
    let clock = ManualClock::new(at(3, 31, 20));
    let cloud = Cloud::start_at(clock.clone(), |_| {}).await;
    let app = &cloud.app;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let payer = cloud.customer("payer@example.com").await;
    let debtor = cloud.customer("debtor@example.com").await;
    let payer_id: UserId = payer.user_id.parse().expect("id");
    let debtor_id: UserId = debtor.user_id.parse().expect("id");
    let (payer_vm, debtor_vm) = tokio::join!(
        cloud.running_instance(&payer, "payer"),
        cloud.running_instance(&debtor, "debtor")
    );

    // March is invoiced on April 1st, due two weeks later (the default
    // payment terms), and neither account has credit to pay it.
    clock.set(at(4, 1, 1));
    passes(app).await;
    let invoices = app
        .fetch_json(Method::GET, "/api/v1/billing/invoices", &payer)
        .await;
    assert_eq!(invoices["items"][0]["status"], "open", "{invoices}");

    // Past the due date: past due, and one reminder each.
    clock.set(at(4, 15, 2));
    passes(app).await;
    assert_eq!(subscription_status(app, &payer).await, "past_due");
    assert_eq!(emails(app, payer_id, EmailKind::InvoiceOverdue).await, 1);
    assert_eq!(cloud.instance(&payer, &payer_vm).await["status"], "running");

    // After the three days of grace the VMs are really stopped and kept
    // from starting.
    clock.set(at(4, 18, 2));
    passes(app).await;
    for (session, vm) in [(&payer, &payer_vm), (&debtor, &debtor_vm)] {
        let row = wait_for_status(&cloud, session, vm, "suspended").await;
        assert!(
            row["status_reason"]
                .as_str()
                .is_some_and(|r| r.contains("overdue")),
            "{row}"
        );
        assert!(!qemu_running(vm), "the VM is stopped");
        assert_eq!(subscription_status(app, session).await, "suspended");
    }
    let start = app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{payer_vm}/actions"),
            &payer,
            &json!({"type": "start"}),
        )
        .await;
    assert_eq!(start.status(), 409);
    let start = problem(start).await;
    assert_eq!(start["state"], "suspended", "{start}");
    assert!(
        start["detail"]
            .as_str()
            .is_some_and(|d| d.contains("suspended")),
        "{start}"
    );
    assert_eq!(emails(app, payer_id, EmailKind::ServicesSuspended).await, 1);

    // Paying what is owed (the invoice and April's usage since) restores
    // the account at once: its VM runs again.
    let balance = app
        .fetch_json(Method::GET, "/api/v1/billing/balance", &payer)
        .await;
    let owed = -balance[0]["amount_minor"].as_i64().expect("balance");
    assert!(owed > 0, "{balance}");
    let credit = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/billing/users/{payer_id}/adjustments"),
            &cloud.admin,
            &json!({"amount_minor": owed, "currency": "EUR", "reason": "Bank transfer"}),
        )
        .await;
    assert_eq!(credit.status(), 201);
    let invoices = app
        .fetch_json(Method::GET, "/api/v1/billing/invoices", &payer)
        .await;
    assert_eq!(invoices["items"][0]["status"], "paid", "{invoices}");
    wait_for_status(&cloud, &payer, &payer_vm, "running").await;
    assert!(qemu_running(&payer_vm), "the VM runs again");
    assert_eq!(subscription_status(app, &payer).await, "active");
    assert_eq!(emails(app, payer_id, EmailKind::ServicesRestored).await, 1);

    // The warning comes three days before the deletion, once.
    clock.set(at(4, 26, 2));
    passes(app).await;
    passes(app).await;
    assert_eq!(
        emails(app, debtor_id, EmailKind::TerminationWarning).await,
        1
    );
    assert_eq!(
        emails(app, payer_id, EmailKind::TerminationWarning).await,
        0
    );

    // Fourteen days after the due date the debtor's VM is deleted through
    // the normal deletion, and its subscription cancelled.
    clock.set(at(4, 29, 2));
    passes(app).await;
    eventually_within("the deletion", SLOW, || async {
        let status = app
            .status_of(
                Method::GET,
                &format!("/api/v1/instances/{debtor_vm}"),
                &debtor,
            )
            .await;
        (status == 404).then_some(())
    })
    .await;
    assert!(!qemu_running(&debtor_vm));
    assert_eq!(subscription_status(app, &debtor).await, "cancelled");
    assert_eq!(cloud.instance(&payer, &payer_vm).await["status"], "running");
    for kind in [
        EmailKind::InvoiceOverdue,
        EmailKind::ServicesSuspended,
        EmailKind::TerminationWarning,
        EmailKind::ServicesTerminated,
    ] {
        assert_eq!(emails(app, debtor_id, kind).await, 1, "{kind:?}");
    }
    let audited = common::audit_actions(app).await;
    for step in [
        "billing.dunning.past_due",
        "billing.dunning.suspended",
        "billing.dunning.resolved",
        "billing.dunning.termination_warned",
        "billing.dunning.terminated",
    ] {
        assert!(audited.iter().any(|a| a == step), "{step} in {audited:?}");
    }
    cloud.delete_instance(&payer, &payer_vm).await;
}

#[tokio::test]
async fn admins_set_the_dunning_delays_within_bounds() {
    let app = TestApp::spawn_at(ManualClock::new(at(3, 2, 10))).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let current = app
        .fetch_json(Method::GET, "/api/v1/admin/settings/dunning", &admin)
        .await;
    assert_eq!(
        current,
        json!({"grace_days": 3, "termination_days": 14, "warning_days_before_termination": 3})
    );
    let bad = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/dunning",
            &admin,
            &json!({"grace_days": 10, "termination_days": 5, "warning_days_before_termination": 0}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let bad = problem(bad).await;
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .expect("field errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["termination_days", "warning_days_before_termination"],
        "{bad}"
    );
    let good =
        json!({"grace_days": 5, "termination_days": 30, "warning_days_before_termination": 7});
    let response = app
        .send_json(Method::PUT, "/api/v1/admin/settings/dunning", &admin, &good)
        .await;
    assert_eq!(response.status(), 200);
    let current = app
        .fetch_json(Method::GET, "/api/v1/admin/settings/dunning", &admin)
        .await;
    assert_eq!(current, good);
    assert!(
        common::audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "settings.changed")
    );
}

/// The caller's notifications of `kind`.
async fn notices(app: &TestApp, session: &Session, kind: &str) -> Vec<Value> {
    let page = app
        .fetch_json(Method::GET, "/api/v1/notifications?limit=100", session)
        .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn each_dunning_step_reaches_the_customers_notifications_once() {
    let clock = ManualClock::new(at(3, 2, 10));
    let app = TestApp::spawn_at(clock.clone()).await;
    let (debtor_id, debtor) = customer(&app, "debtor@example.com", "FR").await;
    let invoices = invoice_march(&app, &clock, &[debtor_id]).await;
    let number = invoices[0]["number"].as_str().expect("number");

    // Past the due date (April 15th): the warning names the invoice and
    // the day of the suspension, however many passes run.
    clock.set(at(4, 15, 2));
    passes(&app).await;
    passes(&app).await;
    let warned = notices(&app, &debtor, "account.suspension_warning").await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    let body = warned[0]["body"].as_str().expect("body");
    assert!(
        body.contains(number) && body.contains("2026-04-18"),
        "{body}"
    );
    assert_eq!(warned[0]["link"], "/billing");
    assert_eq!(emails(&app, debtor_id, EmailKind::InvoiceOverdue).await, 1);

    clock.set(at(4, 18, 2));
    passes(&app).await;
    passes(&app).await;
    let suspended = notices(&app, &debtor, "account.suspended").await;
    assert_eq!(suspended.len(), 1, "{suspended:?}");
    assert_eq!(suspended[0]["title"], "Your servers are suspended");
    assert_eq!(
        emails(&app, debtor_id, EmailKind::ServicesSuspended).await,
        1
    );
    app.stop().await;
}
