//! Account administration over HTTP: who may do it, and what it does.

use crate::common;

use common::{TestApp, problem};
use reqwest::Method;
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

async fn audit_rows(app: &TestApp) -> Vec<vmcloud_server::db::entities::audit_log::Model> {
    use sea_orm::EntityTrait as _;
    vmcloud_server::db::entities::audit_log::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("audit rows")
}

#[tokio::test]
async fn staff_search_and_page_through_accounts_customers_may_not() {
    let app = TestApp::spawn().await;
    app.create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    app.create_user("helpdesk@example.org", PASSWORD, UserRole::Support)
        .await;
    for name in ["alice", "bob", "carol"] {
        app.register(&format!("{name}@example.org"), PASSWORD).await;
    }
    let support = app.login("helpdesk@example.org", PASSWORD).await;
    let customer = app.login("alice@example.org", PASSWORD).await;

    let page: serde_json::Value = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/users?role=customer&limit=2",
            &support,
        )
        .await;
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("more").to_owned();
    let rest: serde_json::Value = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/admin/users?role=customer&limit=2&cursor={cursor}"),
            &support,
        )
        .await;
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);
    assert!(rest["next_cursor"].is_null());

    let found: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/admin/users?q=BOB", &support)
        .await;
    assert_eq!(found["items"][0]["email"], "bob@example.org");

    let denied = app
        .authed(Method::GET, "/api/v1/admin/users", &customer)
        .send()
        .await
        .expect("sent");
    assert_eq!(denied.status(), 403);
    assert_eq!(app.get("/api/v1/admin/users").await.status(), 401);
    let bad_limit = app
        .authed(Method::GET, "/api/v1/admin/users?limit=0", &support)
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_limit.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn role_changes_apply_at_once_and_protect_the_last_admin() {
    let app = TestApp::spawn().await;
    let root_id = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada_id = app.register("ada@example.org", PASSWORD).await;
    let root = app.login("root@example.org", PASSWORD).await;
    let ada = app.login("ada@example.org", PASSWORD).await;

    let promoted = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/admin/users/{ada_id}/role"),
            &root,
        )
        .json(&json!({"role": "support"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(promoted.status(), 200);
    let old_token = app
        .authed(Method::GET, "/api/v1/users/me", &ada)
        .send()
        .await
        .expect("sent");
    assert_eq!(old_token.status(), 401, "the old role's token is cut off");
    let ada = app.login("ada@example.org", PASSWORD).await;
    let me: serde_json::Value = app.fetch_json(Method::GET, "/api/v1/users/me", &ada).await;
    assert_eq!(me["role"], "support");
    let as_support = app
        .authed(Method::GET, "/api/v1/admin/users", &ada)
        .send()
        .await
        .expect("sent");
    assert_eq!(as_support.status(), 200);
    let support_cannot = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/admin/users/{root_id}/role"),
            &ada,
        )
        .json(&json!({"role": "customer"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(support_cannot.status(), 403);

    let own = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/admin/users/{root_id}/role"),
            &root,
        )
        .json(&json!({"role": "customer"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(own.status(), 409);
    let unknown_role = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/admin/users/{ada_id}/role"),
            &root,
        )
        .json(&json!({"role": "superuser"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown_role.status(), 422);
    let changes: Vec<_> = audit_rows(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "user.role_changed")
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].details["to"], "support");
    app.stop().await;
}

#[tokio::test]
async fn suspension_ends_sessions_and_blocks_sign_in_until_lifted() {
    let app = TestApp::spawn().await;
    app.create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada_id = app.register("ada@example.org", PASSWORD).await;
    let root = app.login("root@example.org", PASSWORD).await;
    let ada = app.login("ada@example.org", PASSWORD).await;

    let suspended = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{ada_id}/suspend"),
            &root,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(suspended.status(), 200);
    assert_eq!(
        suspended.json::<serde_json::Value>().await.expect("json")["status"],
        "suspended"
    );
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &ada).await,
        401
    );
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 403);
    assert!(
        problem(login).await["detail"]
            .as_str()
            .expect("detail")
            .contains("suspended")
    );

    let lifted = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{ada_id}/unsuspend"),
            &root,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(lifted.status(), 200);
    app.login("ada@example.org", PASSWORD).await;
    let actions: Vec<String> = audit_rows(&app)
        .await
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(actions.contains(&"user.suspended".to_owned()));
    assert!(actions.contains(&"user.unsuspended".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn impersonation_acts_as_the_user_and_audits_both_ids() {
    let app = TestApp::spawn().await;
    let root_id = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let other_admin = app
        .create_user("second@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada_id = app.register("ada@example.org", PASSWORD).await;
    let root = app.login("root@example.org", PASSWORD).await;

    let started = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{ada_id}/impersonate"),
            &root,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(started.status(), 200);
    assert!(
        common::refresh_cookie(&started).is_none(),
        "the admin's own session is untouched"
    );
    let body: serde_json::Value = started.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    let me: serde_json::Value = app
        .client
        .get(app.url("/api/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(me["email"], "ada@example.org");

    let rows = audit_rows(&app).await;
    let request = rows
        .iter()
        .find(|r| r.action == "impersonation.request")
        .expect("audited");
    assert_eq!(
        request.actor_id.map(|id| id.to_string()),
        Some(ada_id.clone())
    );
    assert_eq!(
        request.impersonator_id.map(|id| id.to_string()),
        Some(root_id.clone())
    );

    let admin_target = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{other_admin}/impersonate"),
            &root,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(admin_target.status(), 403);
    let missing = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{}/impersonate", uuid::Uuid::now_v7()),
            &root,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    app.stop().await;
}
