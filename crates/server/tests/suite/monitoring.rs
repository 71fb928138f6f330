//! Monitoring: the business and infrastructure figures on `/metrics`, checked
//! against seeded rows and by `promtool check metrics` (Debian's
//! `prometheus` package, which `scripts/test` installs), and `/readyz`
//! naming an unreachable node without failing.

use crate::common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::Utc;
use common::TestApp;
use common::rows::{catalogue, new_instance, new_node, new_user};
use reqwest::Method;
use sea_orm::ActiveModelTrait as _;
use sea_orm::ActiveValue::Set;
use serde_json::{Value, json};
use vmcloud_server::db::entities::instance::InstanceStatus;
use vmcloud_server::db::entities::node::{NodeDriver, NodeStatus};
use vmcloud_server::db::entities::subscription::SubscriptionStatus;
use vmcloud_server::db::entities::support_ticket::{TicketCategory, TicketPriority, TicketStatus};
use vmcloud_server::db::entities::transaction::TransactionKind;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::db::entities::{
    audit_log, instance, node, subscription, support_ticket, transaction, user,
};
use vmcloud_server::modules::monitoring::PAYMENT_FAILED;

async fn seed(app: &TestApp) {
    let conn = app.state.db.writer();
    let cat = catalogue(conn).await;
    let running = new_instance(conn, &cat).await;
    let stopped = new_instance(conn, &cat).await;
    let mut stopped: instance::ActiveModel = stopped.into();
    stopped.status = Set(InstanceStatus::Stopped);
    stopped.update(conn).await.expect("stopped");
    assert_eq!(running.status, InstanceStatus::Running);

    let down = new_node(
        conn,
        &cat.region,
        "hv-down",
        NodeDriver::Libvirt,
        "qemu+ssh://down/system",
    )
    .await;
    let mut down: node::ActiveModel = down.into();
    down.status = Set(NodeStatus::Offline);
    down.update(conn).await.expect("offline");

    let active = new_user(conn, "active@example.com").await;
    let mut active: user::ActiveModel = active.into();
    active.last_login_at = Set(Some(Utc::now()));
    active.update(conn).await.expect("signed in");

    for (priority, status) in [
        (TicketPriority::Urgent, TicketStatus::AwaitingSupport),
        (TicketPriority::Low, TicketStatus::Closed),
    ] {
        support_ticket::ActiveModel {
            user_id: Set(cat.user.id),
            subject: Set("Disk full".to_owned()),
            category: Set(TicketCategory::Technical),
            priority: Set(priority),
            status: Set(status),
            last_message_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(conn)
        .await
        .expect("ticket");
    }

    subscription::ActiveModel {
        user_id: Set(cat.user.id),
        instance_id: Set(Some(running.id)),
        product_id: Set(cat.product.id),
        status: Set(SubscriptionStatus::Active),
        current_period_start: Set(Utc::now()),
        current_period_end: Set(Utc::now() + chrono::Duration::days(30)),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("subscription");

    transaction::ActiveModel {
        user_id: Set(cat.user.id),
        kind: Set(TransactionKind::TopUp),
        amount_minor: Set(1500),
        currency: Set("EUR".to_owned()),
        description: Set("Top-up by card".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("top-up");
    audit_log::ActiveModel {
        action: Set(PAYMENT_FAILED.to_owned()),
        details: Set(json!({})),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("audit");
}

/// The value of the sample written exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a number"))
    })
}

#[tokio::test]
async fn metrics_report_the_platform_and_pass_promtool() {
    let app = TestApp::spawn().await;
    seed(&app).await;

    let response = app.scrape().await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    for (series, value) in [
        ("vmcloud_users", 2.0),
        ("vmcloud_users_active", 1.0),
        ("vmcloud_instances{status=\"running\"}", 1.0),
        ("vmcloud_instances{status=\"stopped\"}", 1.0),
        ("vmcloud_instances{status=\"error\"}", 0.0),
        ("vmcloud_node_up{node=\"hv-down\"}", 0.0),
        (
            "vmcloud_node_capacity{node=\"hv-down\",resource=\"vcpus\",kind=\"total\"}",
            8.0,
        ),
        ("vmcloud_tickets_open{priority=\"urgent\"}", 1.0),
        ("vmcloud_tickets_open{priority=\"low\"}", 0.0),
        ("vmcloud_revenue_minor_total{currency=\"EUR\"}", 1500.0),
        ("vmcloud_payment_failures_7d", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    let used = sample(
        &text,
        "vmcloud_node_capacity{node=\"node-1\",resource=\"vcpus\",kind=\"used\"}",
    );
    assert_eq!(
        used,
        Some(2.0),
        "two one-vCPU instances on the catalogue's node"
    );
    assert!(sample(&text, "vmcloud_data_dir_size_bytes").is_some_and(|size| size > 0.0));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus; scripts/test installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("scrape written");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn readiness_names_unreachable_nodes_without_failing() {
    let app = TestApp::spawn().await;
    let ready: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["degraded_nodes"], json!([]));

    seed(&app).await;
    let response = app.get("/readyz").await;
    assert_eq!(
        response.status(),
        200,
        "a node down does not take the API out"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["degraded_nodes"], json!(["hv-down"]));
    app.stop().await;
}

#[tokio::test]
async fn the_admin_dashboard_adds_up_the_seeded_platform() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (_, admin) = app
        .signed_in(
            "root@example.org",
            "correct horse battery staple",
            UserRole::Admin,
        )
        .await;
    let board = app
        .fetch_json(Method::GET, "/api/v1/admin/dashboard", &admin)
        .await;
    // The owner, the active user and the admin (whose test session is made
    // without a sign-in, so only the active user counts as active).
    assert_eq!(
        board["users"],
        json!({"total": 3, "active_30d": 1, "new_30d": 3})
    );
    assert_eq!(board["instances_by_status"]["running"], 1);
    assert_eq!(board["instances_by_status"]["stopped"], 1);
    assert_eq!(board["capacity"]["total"]["vcpus"], 16);
    assert_eq!(board["capacity"]["used"]["vcpus"], 2);
    assert_eq!(board["capacity"]["free"]["vcpus"], 14);
    assert_eq!(board["open_tickets_by_priority"]["urgent"], 1);
    assert_eq!(board["open_tickets_by_priority"]["low"], 0);
    assert_eq!(board["payment_failures_7d"], 1);
    assert_eq!(board["dead_jobs"], 0);
    let revenue = &board["revenue"];
    assert_eq!(revenue["mrr_minor"], json!({"EUR": 500}));
    assert_eq!(revenue["arpu_minor"], json!({"EUR": 500}));
    assert_eq!(revenue["received_this_month_minor"], json!({"EUR": 1500}));
    assert_eq!(revenue["churn_rate_basis_points"], 0);
    assert_eq!(
        app.fetch_json(Method::GET, "/api/v1/admin/billing/revenue", &admin)
            .await,
        *revenue
    );
    app.stop().await;
}
