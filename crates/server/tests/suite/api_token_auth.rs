//! Personal API tokens as credentials on the whole API.

use crate::common;

use common::TestApp;
use reqwest::Method;
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

async fn new_token(app: &TestApp, session: &common::Session, scope: &str) -> (String, String) {
    let response = app
        .authed(Method::POST, "/api/v1/api-tokens", session)
        .json(&json!({"name": format!("{scope} token"), "scope": scope}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.expect("json");
    let token = body["token"].as_str().expect("shown once").to_owned();
    assert!(token.starts_with("vmc_"));
    (body["id"].as_str().expect("id").to_owned(), token)
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str) -> u16 {
    let mut request = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(token);
    if method != Method::GET {
        request = request.json(&json!({"name": "Renamed"}));
    }
    request.send().await.expect("sent").status().as_u16()
}

#[tokio::test]
async fn tokens_authenticate_read_scope_cannot_write_and_revocation_is_immediate() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let ada = app.login("ada@example.org", PASSWORD).await;
    let (_, read) = new_token(&app, &ada, "read").await;
    let (write_id, write) = new_token(&app, &ada, "read_write").await;

    assert_eq!(
        call(&app, Method::GET, "/api/v1/users/me", &read).await,
        200
    );
    assert_eq!(
        call(&app, Method::PATCH, "/api/v1/users/me", &read).await,
        403,
        "read-only"
    );
    assert_eq!(
        call(&app, Method::PATCH, "/api/v1/users/me", &write).await,
        200
    );

    let listed: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/api-tokens", &ada)
        .await;
    assert!(
        !listed.to_string().contains(&write),
        "the secret is never listed"
    );
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|t| t["last_used_at"].is_string())
    );

    let revoked = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/api-tokens/{write_id}"),
            &ada,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        call(&app, Method::GET, "/api/v1/users/me", &write).await,
        401
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/v1/users/me",
            "vmc_notarealtokenatallnotarealtokenatall1234"
        )
        .await,
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_accounts_tokens_stop_working() {
    let app = TestApp::spawn().await;
    app.create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada_id = app.register("ada@example.org", PASSWORD).await;
    let ada = app.login("ada@example.org", PASSWORD).await;
    let root = app.login("root@example.org", PASSWORD).await;
    let (_, token) = new_token(&app, &ada, "read_write").await;
    assert_eq!(
        call(&app, Method::GET, "/api/v1/users/me", &token).await,
        200
    );
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
        call(&app, Method::GET, "/api/v1/users/me", &token).await,
        401
    );
    app.stop().await;
}
