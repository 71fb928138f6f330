//! Links that arrive by email (verification, password reset) and the
//! first-admin setup link, exercised with tokens issued the way the mailer
//! gets them.

use crate::common;

use common::{TestApp, problem};
use reqwest::Method;
use serde_json::json;
use vmcloud_server::db::entities::one_time_token::TokenPurpose;
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::auth::one_time;
use vmcloud_server::modules::users::flows;

const PASSWORD: &str = "correct horse battery staple";

async fn issue(app: &TestApp, purpose: TokenPurpose, user: &str) -> String {
    let id: UserId = user.parse().expect("uuid");
    one_time::issue(&app.state.db, purpose, Some(id))
        .await
        .expect("issued")
}

#[tokio::test]
async fn an_email_is_verified_once_with_its_link() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.org", PASSWORD).await;
    let token = issue(&app, TokenPurpose::VerifyEmail, &ada).await;
    let verified = app
        .post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(verified.status(), 200);
    assert_eq!(
        verified.json::<serde_json::Value>().await.expect("json")["email_verified"],
        true
    );
    let again = app
        .post_json("/api/v1/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(again.status(), 422);
    assert_eq!(problem(again).await["errors"][0]["field"], "token");
    let wrong_purpose = issue(&app, TokenPurpose::ResetPassword, &ada).await;
    let mismatch = app
        .post_json(
            "/api/v1/auth/verify-email",
            &json!({"token": wrong_purpose}),
        )
        .await;
    assert_eq!(mismatch.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let stale = issue(&app, TokenPurpose::ResetPassword, &ada).await;
    let token = issue(&app, TokenPurpose::ResetPassword, &ada).await;

    let weak = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": "password1234"}),
        )
        .await;
    assert_eq!(weak.status(), 422);
    assert_eq!(problem(weak).await["errors"][0]["field"], "new_password");

    let superseded = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": stale, "new_password": "a fresh new passphrase"}),
        )
        .await;
    assert_eq!(superseded.status(), 422, "only the newest link works");

    let reset = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": "a fresh new passphrase"}),
        )
        .await;
    assert_eq!(
        reset.status(),
        204,
        "a weak attempt does not spend the link"
    );
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &session)
            .await,
        401
    );
    app.login("ada@example.org", "a fresh new passphrase").await;
    let reused = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": "yet another passphrase"}),
        )
        .await;
    assert_eq!(reused.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    use vmcloud_server::db::entities::one_time_token;
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.org", PASSWORD).await;
    let token = issue(&app, TokenPurpose::ResetPassword, &ada).await;
    one_time_token::Entity::update_many()
        .col_expr(
            one_time_token::Column::ExpiresAt,
            (chrono::Utc::now() - chrono::Duration::minutes(1)).into(),
        )
        .filter(one_time_token::Column::Purpose.eq(TokenPurpose::ResetPassword))
        .exec(app.state.db.writer())
        .await
        .expect("expire");
    let expired = app
        .post_json(
            "/api/v1/auth/reset-password",
            &json!({"token": token, "new_password": "a fresh new passphrase"}),
        )
        .await;
    assert_eq!(expired.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn the_setup_link_creates_the_first_admin_and_only_the_first() {
    let app = TestApp::spawn().await;
    let token = flows::first_admin_setup_token(&app.state.db)
        .await
        .expect("db")
        .expect("no admin yet");
    let bad = app
        .post_json("/api/v1/auth/setup", &json!({"token": token, "email": "root@example.org", "password": "short", "name": "Root"}))
        .await;
    assert_eq!(bad.status(), 422);
    let created = app
        .post_json(
            "/api/v1/auth/setup",
            &json!({"token": token, "email": "root@example.org", "password": PASSWORD, "name": "Root"}),
        )
        .await;
    assert_eq!(
        created.status(),
        201,
        "a rejected attempt does not spend the link"
    );
    let body: serde_json::Value = created.json().await.expect("json");
    assert_eq!(body["role"], "admin");
    assert_eq!(body["email_verified"], true);
    assert!(
        flows::first_admin_setup_token(&app.state.db)
            .await
            .expect("db")
            .is_none()
    );

    let second = app
        .post_json(
            "/api/v1/auth/setup",
            &json!({"token": token, "email": "mallory@example.org", "password": PASSWORD, "name": "M"}),
        )
        .await;
    assert_eq!(second.status(), 409);
    app.stop().await;
}
