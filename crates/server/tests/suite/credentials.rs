//! Credentials that cannot be escalated: what only the account holder's
//! signed-in session may do, sessions that end for good, and one-time links
//! nobody else can read (issue 14, items 3, 4, 7, 8 and 11).

use crate::common;

use common::{Session, TestApp, eventually, problem};
use reqwest::Method;
use sea_orm::EntityTrait as _;
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

/// Suspends the account `id` as the admin `root`.
async fn suspend(app: &TestApp, root: &Session, id: &str) {
    let path = format!("/api/v1/admin/users/{id}/suspend");
    assert_eq!(app.status_of(Method::POST, &path, root).await, 200);
}

/// A read-write API token of `session`'s account.
async fn api_token(app: &TestApp, session: &Session) -> Session {
    let response = app
        .authed(Method::POST, "/api/v1/api-tokens", session)
        .json(&json!({"name": "automation", "scope": "read_write"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.expect("json");
    Session {
        access_token: body["token"].as_str().expect("token").to_owned(),
        ..session.clone()
    }
}

/// Every request that manages the account's credentials, with a body the
/// account holder would send.
fn credential_requests(session_id: &str) -> Vec<(Method, String, serde_json::Value)> {
    vec![
        (
            Method::POST,
            "/api/v1/users/me/password".to_owned(),
            json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        ),
        (
            Method::POST,
            "/api/v1/users/me/deletion".to_owned(),
            json!({"password": PASSWORD}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/me/sessions/{session_id}"),
            json!({}),
        ),
        (
            Method::POST,
            "/api/v1/users/me/2fa/enrol".to_owned(),
            json!({"password": PASSWORD}),
        ),
        (
            Method::POST,
            "/api/v1/users/me/2fa/confirm".to_owned(),
            json!({"code": "123456"}),
        ),
        (
            Method::POST,
            "/api/v1/users/me/2fa/disable".to_owned(),
            json!({"password": PASSWORD, "code": "123456"}),
        ),
        (
            Method::POST,
            "/api/v1/users/me/2fa/recovery-codes".to_owned(),
            json!({"password": PASSWORD, "code": "123456"}),
        ),
        (
            Method::POST,
            "/api/v1/api-tokens".to_owned(),
            json!({"name": "another", "scope": "read_write"}),
        ),
    ]
}

/// Sends every credential request with `credential` and expects 403 of
/// `kind` for each.
async fn all_refused(app: &TestApp, credential: &Session, session_id: &str, kind: &str) {
    for (method, path, body) in credential_requests(session_id) {
        let response = app
            .authed(method.clone(), &path, credential)
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_eq!(problem(response).await["type"], kind, "{method} {path}");
    }
}

#[tokio::test]
async fn an_api_token_cannot_manage_credentials_or_mint_tokens() {
    let app = TestApp::spawn().await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let token = api_token(&app, &ada).await;
    let sessions = app
        .fetch_json(Method::GET, "/api/v1/users/me/sessions", &ada)
        .await;
    let session_id = sessions[0]["id"].as_str().expect("id").to_owned();

    all_refused(&app, &token, &session_id, "/problems/session-required").await;

    // Nothing changed: the password, the session and the token count.
    app.login("ada@example.org", PASSWORD).await;
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &ada).await,
        200
    );
    let tokens = app
        .fetch_json(Method::GET, "/api/v1/api-tokens", &ada)
        .await;
    assert_eq!(tokens["items"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn an_admin_impersonating_cannot_create_or_change_credentials() {
    let app = TestApp::spawn().await;
    let (_, root) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (ada_id, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let started: serde_json::Value = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{ada_id}/impersonate"),
            &root,
        )
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let as_ada = Session {
        access_token: started["access_token"].as_str().expect("token").to_owned(),
        ..ada.clone()
    };
    let sessions = app
        .fetch_json(Method::GET, "/api/v1/users/me/sessions", &ada)
        .await;
    let session_id = sessions[0]["id"].as_str().expect("id").to_owned();

    all_refused(
        &app,
        &as_ada,
        &session_id,
        "/problems/impersonation-refused",
    )
    .await;
    let tokens = app
        .fetch_json(Method::GET, "/api/v1/api-tokens", &ada)
        .await;
    assert_eq!(
        tokens["items"].as_array().map(Vec::len),
        Some(0),
        "no token left behind for the customer"
    );
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_every_access_token_of_the_session() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let first = app.login("ada@example.org", PASSWORD).await;
    let refreshed = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "cookie",
            format!("vmcloud_refresh={}", first.refresh_cookie),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(refreshed.status(), 200);
    let second = common::session_from(refreshed).await;
    let other_device = app.login("ada@example.org", PASSWORD).await;

    let logout = app
        .authed(Method::POST, "/api/v1/auth/logout", &second)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    for (token, what) in [(&first, "older token"), (&second, "presented token")] {
        assert_eq!(
            app.status_of(Method::GET, "/api/v1/users/me", token).await,
            401,
            "{what} of the ended session"
        );
    }
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &other_device)
            .await,
        200,
        "another session stays signed in"
    );
    app.stop().await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = TestApp::spawn().await;
    let (_, root) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (mallory_id, mallory) = app
        .signed_in("mallory@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    suspend(&app, &root, &mallory_id).await;
    let logout = app
        .authed(Method::POST, "/api/v1/auth/logout", &ada)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);

    let (database, config) = app.stop_keeping_data().await;
    let app = TestApp::spawn_on(database, config).await;
    for (session, what) in [(&mallory, "suspended admin"), (&ada, "signed-out customer")] {
        assert_eq!(
            app.status_of(Method::GET, "/api/v1/admin/users", session)
                .await,
            401,
            "{what}'s old token after a restart"
        );
    }
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/admin/users", &root)
            .await,
        200,
        "a standing session still works"
    );
    app.stop().await;
}

/// What an admin reads in the outbox for `to`, once `kind` is there.
async fn outbox_message(app: &TestApp, admin: &Session, to: &str, kind: &str) -> serde_json::Value {
    eventually(&format!("a {kind} email to {to}"), || async {
        let outbox = app
            .fetch_json(
                Method::GET,
                &format!("/api/v1/admin/outbox?to={to}&status=logged"),
                admin,
            )
            .await;
        outbox["items"]
            .as_array()
            .and_then(|items| items.iter().find(|m| m["kind"] == kind).cloned())
    })
    .await
}

#[tokio::test]
async fn the_outbox_never_shows_another_admins_reset_link_and_its_reads_are_audited() {
    let app = TestApp::spawn().await;
    let (_, mallory) = app
        .signed_in("mallory@example.org", PASSWORD, UserRole::Admin)
        .await;
    app.create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let asked = app
        .post_json(
            "/api/v1/auth/forgot-password",
            &json!({"email": "root@example.org"}),
        )
        .await;
    assert_eq!(asked.status(), 202);

    let message = outbox_message(&app, &mallory, "root@example.org", "reset_password").await;
    let body = message["body_text"].as_str().expect("body");
    assert!(
        body.contains("/reset-password?token=[redacted]"),
        "the link is masked: {body}"
    );
    // Not even the stored copy holds the token.
    let stored = vmcloud_server::db::entities::email::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("rows");
    assert!(
        stored.iter().all(|row| row
            .body_text
            .as_deref()
            .is_none_or(|body| !body.contains("token=") || body.contains("token=[redacted]"))),
        "{stored:?}"
    );
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"outbox.read".to_owned()),
        "reading the outbox is on the record"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_account_is_told_when_its_password_or_second_factor_changes() {
    let app = TestApp::spawn().await;
    let (_, root) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let changed = app
        .authed(Method::POST, "/api/v1/users/me/password", &ada)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status(), 204);
    let alert = outbox_message(&app, &root, "ada@example.org", "security_alert").await;
    assert_eq!(
        alert["subject"], "Account security: your password was changed",
        "{alert}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_account_learns_it_only_with_the_right_password() {
    let app = TestApp::spawn().await;
    let (_, root) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let ada_id = app
        .create_user("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    suspend(&app, &root, &ada_id).await;
    let login = async |password: &str| {
        app.post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.org", "password": password}),
        )
        .await
    };
    let wrong = login("not the password at all").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        problem(wrong).await["detail"],
        "Invalid email or password.",
        "the same answer as for any wrong password"
    );
    let right = login(PASSWORD).await;
    assert_eq!(right.status(), 403);
    app.stop().await;
}
