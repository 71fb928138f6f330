//! Notifications over HTTP: the in-app list, its unread count and marking
//! read; the email preferences and their mandatory kinds; and, on the real
//! local QEMU node, the notice of an instance ready (with its email, which
//! an opt-out then suppresses) and of one that failed, each told once.

use crate::common;

use common::cloud::{Cloud, SLOW, guest_image, order};
use common::{Session, TestApp, eventually, eventually_within, problem};
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::ids::{InvoiceId, TicketId, UserId};
use vmcloud_server::modules::events::Envelope;
use vmcloud_server::modules::notifications::{self, Notice};

const PASSWORD: &str = "correct horse battery staple";

/// Tells `user` something, as the platform's modules do.
async fn notify(app: &TestApp, user: &str, notice: Notice) -> Option<String> {
    let user: UserId = user.parse().expect("user id");
    let state = &app.state;
    notifications::notify(&state.db, &state.cache, &state.jobs, user, notice)
        .await
        .expect("notified")
        .map(|view| view.id.to_string())
}

fn reply(subject: &str) -> Notice {
    Notice::TicketReply {
        ticket_id: TicketId::new(),
        subject: subject.to_owned(),
        author_name: "Support".to_owned(),
        reply: "Hello.".to_owned(),
        url: "https://cloud.example/tickets/1".to_owned(),
    }
}

async fn list(app: &TestApp, session: &Session, query: &str) -> Value {
    app.fetch_json(
        Method::GET,
        &format!("/api/v1/notifications{query}"),
        session,
    )
    .await
}

fn titles(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["title"].as_str().expect("title"))
        .collect()
}

#[tokio::test]
async fn notifications_are_listed_newest_first_counted_and_marked_read() {
    let app = TestApp::spawn().await;
    let (ada_id, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let mut live = app
        .state
        .cache
        .subscribe("events:notifications")
        .await
        .expect("subscribed");

    let first = notify(&app, &ada_id, reply("Disk full"))
        .await
        .expect("new");
    let envelope: Envelope =
        serde_json::from_slice(&live.next().await.expect("a live event")).expect("envelope");
    assert_eq!(envelope.audience.len(), 1);
    assert_eq!(
        envelope.audience[0].room(),
        format!("user:{ada_id}"),
        "only the account's own room hears it"
    );
    let event = serde_json::to_value(&envelope.event).expect("json");
    assert_eq!(event["type"], "notification");
    assert_eq!(event["id"], first.as_str());
    assert_eq!(event["title"], "New reply: Disk full");

    let invoice = Notice::InvoiceIssued {
        invoice_id: InvoiceId::new(),
        number: "2026-000042".to_owned(),
        total_minor: 1250,
        currency: "EUR".to_owned(),
    };
    notify(&app, &ada_id, invoice.clone()).await.expect("new");
    assert_eq!(
        notify(&app, &ada_id, invoice).await,
        None,
        "an invoice is told once"
    );
    notify(&app, &ada_id, reply("Billing question"))
        .await
        .expect("new");

    let all = list(&app, &ada, "").await;
    assert_eq!(
        titles(&all),
        [
            "New reply: Billing question",
            "Invoice 2026-000042",
            "New reply: Disk full"
        ]
    );
    assert_eq!(all["unread_count"], 3);
    assert_eq!(all["items"][1]["kind"], "invoice.issued");
    assert_eq!(
        all["items"][1]["body"],
        "Your invoice 2026-000042 for 12.50 EUR is available."
    );
    assert!(
        all["items"][1]["link"]
            .as_str()
            .expect("link")
            .starts_with("/billing/invoices/")
    );

    let page = list(&app, &ada, "?limit=2").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("another page");
    let rest = list(&app, &ada, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(titles(&rest), ["New reply: Disk full"]);
    assert!(rest["next_cursor"].is_null());

    let path = format!("/api/v1/notifications/{first}/read");
    let read = app.send_json(Method::POST, &path, &ada, &json!({})).await;
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.expect("json");
    assert!(read["read_at"].is_string(), "{read}");
    let again: Value = app
        .send_json(Method::POST, &path, &ada, &json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        again["read_at"], read["read_at"],
        "reading twice changes nothing"
    );

    let count = app
        .fetch_json(Method::GET, "/api/v1/notifications/unread-count", &ada)
        .await;
    assert_eq!(count, json!({"unread_count": 2}));
    let unread = list(&app, &ada, "?unread=true").await;
    assert_eq!(
        titles(&unread),
        ["New reply: Billing question", "Invoice 2026-000042"]
    );
    assert_eq!(unread["unread_count"], 2);
    assert_eq!(
        titles(&list(&app, &ada, "?unread=false").await),
        ["New reply: Disk full"]
    );

    let all_read: Value = app
        .send_json(
            Method::POST,
            "/api/v1/notifications/read-all",
            &ada,
            &json!({}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all_read, json!({"marked": 2}));
    let after = list(&app, &ada, "").await;
    assert_eq!(after["unread_count"], 0);
    assert!(
        after["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|n| n["read_at"].is_string())
    );
    assert!(
        list(&app, &ada, "?unread=true").await["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn texts_follow_the_account_language() {
    let app = TestApp::spawn().await;
    let (ada_id, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let changed = app
        .send_json(
            Method::PATCH,
            "/api/v1/users/me",
            &ada,
            &json!({"locale": "fr"}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    notify(
        &app,
        &ada_id,
        Notice::PaymentFailed {
            event: "evt_1".to_owned(),
            invoice_id: None,
            invoice_number: None,
            amount_minor: 999,
            currency: "EUR".to_owned(),
            reason: Some("carte refusée".to_owned()),
        },
    )
    .await
    .expect("new");
    let all = list(&app, &ada, "").await;
    assert_eq!(all["items"][0]["title"], "Votre paiement a échoué");
    assert!(
        all["items"][0]["body"]
            .as_str()
            .expect("body")
            .contains("9.99 EUR"),
        "{all}"
    );
    app.stop().await;
}

#[tokio::test]
async fn mandatory_emails_cannot_be_turned_off() {
    let app = TestApp::spawn().await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let path = "/api/v1/users/me/notification-preferences";
    let initial = app.fetch_json(Method::GET, path, &ada).await;
    assert!(
        initial["email"]
            .as_object()
            .expect("email")
            .values()
            .all(|on| on == true),
        "{initial}"
    );
    assert_eq!(
        initial["mandatory"],
        json!([
            "payment_failed",
            "suspension_warning",
            "suspension",
            "termination_warning",
            "security"
        ])
    );

    let refused = app
        .send_json(
            Method::PUT,
            path,
            &ada,
            &json!({"email": {"instance_ready": false, "payment_failed": false}}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let body = problem(refused).await;
    assert_eq!(body["errors"][0]["field"], "email.payment_failed", "{body}");
    assert_eq!(
        app.fetch_json(Method::GET, path, &ada).await,
        initial,
        "a refused change changes nothing"
    );

    let unknown = app
        .send_json(
            Method::PUT,
            path,
            &ada,
            &json!({"email": {"newsletter": false}}),
        )
        .await;
    assert_eq!(unknown.status(), 422);

    let changed = app
        .send_json(
            Method::PUT,
            path,
            &ada,
            &json!({"email": {"instance_ready": false, "ticket_reply": false, "suspension": true}}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.expect("json");
    assert_eq!(changed["email"]["instance_ready"], false);
    assert_eq!(changed["email"]["ticket_reply"], false);
    assert_eq!(changed["email"]["invoice_issued"], true);
    assert_eq!(changed["email"]["suspension"], true);
    assert_eq!(app.fetch_json(Method::GET, path, &ada).await, changed);

    let back: Value = app
        .send_json(
            Method::PUT,
            path,
            &ada,
            &json!({"email": {"ticket_reply": true}}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(back["email"]["ticket_reply"], true);
    assert_eq!(back["email"]["instance_ready"], false);
    app.stop().await;
}

/// The account's emails of `kind` in the outbox, as the admin reads it.
async fn emails(app: &TestApp, admin: &Session, to: &str, kind: &str) -> Vec<Value> {
    let outbox = app
        .fetch_json(Method::GET, &format!("/api/v1/admin/outbox?to={to}"), admin)
        .await;
    outbox["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|email| email["kind"] == kind)
        .cloned()
        .collect()
}

async fn notices_of(app: &TestApp, session: &Session, kind: &str) -> Vec<Value> {
    list(app, session, "?limit=100").await["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_instance_ready_is_told_once_in_app_and_by_email_unless_opted_out() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let ada = cloud.customer("ada@example.org").await;
    let app = &cloud.app;

    let first = cloud.running_instance(&ada, "web1").await;
    let ready = eventually("the ready notification", || async {
        let found = notices_of(app, &ada, "instance.ready").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["title"], "web1 is ready");
    assert_eq!(ready[0]["link"], format!("/instances/{first}"));
    let ssh = cloud.instance(&ada, &first).await["ssh"]["command"]
        .as_str()
        .expect("ssh command")
        .to_owned();
    assert!(ready[0]["body"].as_str().expect("body").contains(&ssh));
    let sent = eventually("the ready email", || async {
        let found = emails(app, &cloud.admin, "ada@example.org", "instance_ready").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["subject"], "web1 is ready");
    assert!(sent[0]["body_text"].as_str().expect("body").contains(&ssh));

    let opted_out = app
        .send_json(
            Method::PUT,
            "/api/v1/users/me/notification-preferences",
            &ada,
            &json!({"email": {"instance_ready": false}}),
        )
        .await;
    assert_eq!(opted_out.status(), 200);
    cloud.running_instance(&ada, "web2").await;
    let ready = eventually("the second ready notification", || async {
        let found = notices_of(app, &ada, "instance.ready").await;
        (found.len() == 2).then_some(found)
    })
    .await;
    assert_eq!(ready[0]["title"], "web2 is ready");
    // The notification is written before the email is queued, in the same
    // call: with it in place, an email would already be in the outbox.
    assert_eq!(
        emails(app, &cloud.admin, "ada@example.org", "instance_ready")
            .await
            .len(),
        1,
        "no email after the opt-out"
    );
    cloud.app.stop().await;
}

/// Waits until the instance is in `error` after `attempts` failed
/// provisionings; returns it.
async fn failed(cloud: &Cloud, session: &Session, id: &str, attempts: usize) -> Value {
    eventually_within("provisioning to fail", SLOW, || async {
        let instance = cloud.instance(session, id).await;
        let actions = cloud
            .app
            .fetch_json(
                Method::GET,
                &format!("/api/v1/instances/{id}/actions"),
                session,
            )
            .await;
        let failures = actions["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|a| a["status"] == "failed")
            .count();
        (instance["status"] == "error" && failures == attempts).then_some(instance)
    })
    .await
}

#[tokio::test]
async fn a_failed_provisioning_is_told_once_across_retries() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    let image = cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let ada = cloud.customer("ada@example.org").await;
    let app = &cloud.app;
    // The imported base disk vanishes: every provisioning fails creating
    // the instance's disk on it.
    let base = app
        .config
        .data_dir
        .join("images")
        .join(format!("{}.qcow2", image["id"].as_str().expect("id")));
    std::fs::remove_file(&base).expect("the imported image is removed");

    let created = order(app, &ada, "doomed").await;
    let id = created["id"].as_str().expect("id").to_owned();
    let instance = failed(&cloud, &ada, &id, 1).await;
    let told = eventually("the failure notification", || async {
        let found = notices_of(app, &ada, "instance.failed").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(told[0]["title"], "doomed could not be created");
    assert!(
        told[0]["body"]
            .as_str()
            .expect("body")
            .contains("could not be created"),
        "{told:?}"
    );
    assert!(instance["status_reason"].is_string());

    let retry = app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{id}/actions"),
            &ada,
            &json!({"type": "retry"}),
        )
        .await;
    assert_eq!(retry.status(), 202);
    failed(&cloud, &ada, &id, 2).await;
    assert_eq!(notices_of(app, &ada, "instance.failed").await.len(), 1);
    assert_eq!(
        emails(app, &cloud.admin, "ada@example.org", "instance_failed")
            .await
            .len(),
        1
    );
    cloud.app.stop().await;
}

#[tokio::test]
async fn each_account_sees_and_touches_only_its_own_notifications() {
    let app = TestApp::spawn().await;
    let (ada_id, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, bob) = app
        .signed_in("bob@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    notify(&app, &ada_id, reply("Private")).await.expect("new");
    for other in [&bob, &admin] {
        let theirs = list(&app, other, "").await;
        assert_eq!(theirs["items"], json!([]));
        assert_eq!(theirs["unread_count"], 0);
        let marked: Value = app
            .send_json(
                Method::POST,
                "/api/v1/notifications/read-all",
                other,
                &json!({}),
            )
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(marked["marked"], 0, "nobody else's are marked");
    }
    assert_eq!(
        list(&app, &ada, "").await["unread_count"],
        1,
        "still unread"
    );
    app.stop().await;
}
