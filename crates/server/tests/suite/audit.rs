//! `/api/v1/admin/audit-logs`: search by actor, action, object and time
//! range in cursor pages, CSV export, and no way to change an entry.

use crate::common;

use chrono::{DateTime, TimeZone as _, Utc};
use common::TestApp;
use common::rows::new_user;
use reqwest::Method;
use sea_orm::ActiveModelTrait as _;
use sea_orm::ActiveValue::Set;
use serde_json::{Value, json};
use vmcloud_server::db::entities::audit_log;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::ids::UserId;

const PASSWORD: &str = "correct horse battery staple";

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0)
        .single()
        .expect("a time")
}

/// Entries are written in time order, so their v7 ids (newest-first paging)
/// follow `created_at` too.
async fn entry(
    app: &TestApp,
    actor: Option<UserId>,
    action: &str,
    object: Option<(&str, &str)>,
    created_at: DateTime<Utc>,
    user_agent: &str,
) {
    audit_log::ActiveModel {
        actor_id: Set(actor),
        action: Set(action.to_owned()),
        object_type: Set(object.map(|(kind, _)| kind.to_owned())),
        object_id: Set(object.map(|(_, id)| id.to_owned())),
        user_agent: Set(Some(user_agent.to_owned())),
        details: Set(json!({"note": action})),
        created_at: Set(created_at),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("audit entry");
}

fn actions(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect()
}

#[tokio::test]
async fn admins_search_page_and_export_the_audit_log() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada = new_user(app.state.db.writer(), "ada@example.com").await;
    let bob = new_user(app.state.db.writer(), "bob@example.com").await;
    let ada_id = ada.id.to_string();
    entry(&app, Some(ada.id), "auth.login", None, at(1, 9), "curl/8").await;
    entry(
        &app,
        Some(ada.id),
        "instance.created",
        Some(("instance", "i-1")),
        at(2, 9),
        "curl/8",
    )
    .await;
    entry(
        &app,
        Some(bob.id),
        "auth.login.failed",
        None,
        at(3, 9),
        "=HYPERLINK(\"http://evil\")",
    )
    .await;
    entry(
        &app,
        Some(ada.id),
        "instance.deleted",
        Some(("instance", "i-1")),
        at(4, 9),
        "curl/8",
    )
    .await;
    entry(&app, None, "auth.logout", None, at(5, 9), "curl/8").await;

    let search = |query: String| {
        let app = &app;
        let admin = &admin;
        async move {
            app.fetch_json(
                Method::GET,
                &format!("/api/v1/admin/audit-logs?{query}"),
                admin,
            )
            .await
        }
    };
    let by_ada = search(format!("actor_id={ada_id}")).await;
    assert_eq!(
        actions(&by_ada),
        ["instance.deleted", "instance.created", "auth.login"]
    );
    assert_eq!(
        actions(&search("action=auth.*".to_owned()).await),
        ["auth.logout", "auth.login.failed", "auth.login"]
    );
    assert_eq!(
        actions(&search("action=auth.login".to_owned()).await),
        ["auth.login"]
    );
    assert_eq!(
        actions(&search("object_type=instance&object_id=i-1".to_owned()).await),
        ["instance.deleted", "instance.created"]
    );
    assert_eq!(
        actions(
            &search(format!(
                "from={}&to={}",
                urlencode(at(2, 9)),
                urlencode(at(4, 9))
            ))
            .await
        ),
        ["auth.login.failed", "instance.created"],
        "from is inclusive, to exclusive"
    );

    // Cursor pages cover every entry once, newest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = search(format!("action=&limit=2&cursor={cursor}")).await;
        seen.extend(actions(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let own: Vec<&String> = seen
        .iter()
        .filter(|a| a.starts_with("auth.") || a.starts_with("instance."))
        .collect();
    assert_eq!(
        own,
        [
            "auth.logout",
            "instance.deleted",
            "auth.login.failed",
            "instance.created",
            "auth.login"
        ]
    );

    let bad = app
        .authed(
            Method::GET,
            &format!(
                "/api/v1/admin/audit-logs?from={}&to={}",
                urlencode(at(4, 9)),
                urlencode(at(2, 9))
            ),
            &admin,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422);
    assert_eq!(common::problem(bad).await["errors"][0]["field"], "to");

    let csv = app
        .authed(
            Method::GET,
            &format!("/api/v1/admin/audit-logs?format=csv&actor_id={}", bob.id),
            &admin,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(csv.status(), 200);
    assert_eq!(
        csv.headers()["content-type"].to_str().expect("type"),
        "text/csv; charset=utf-8"
    );
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .expect("disposition")
            .starts_with("attachment")
    );
    let text = csv.text().await.expect("text");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[4], "action");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][4], "auth.login.failed");
    assert_eq!(
        &rows[0][8], "'=HYPERLINK(\"http://evil\")",
        "a formula from a client is defused"
    );
    assert_eq!(&rows[0][10], r#"{"note":"auth.login.failed"}"#);
    app.stop().await;
}

#[tokio::test]
async fn nobody_can_change_the_audit_log() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (_, support) = app
        .signed_in("help@example.org", PASSWORD, UserRole::Support)
        .await;
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/admin/audit-logs", &support)
            .await,
        403
    );
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert_eq!(
            app.status_of(method.clone(), "/api/v1/admin/audit-logs", &admin)
                .await,
            405,
            "{method}"
        );
    }
    app.stop().await;
}

fn urlencode(at: DateTime<Utc>) -> String {
    at.to_rfc3339().replace('+', "%2B")
}
