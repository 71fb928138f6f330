//! TOTP two-factor authentication over HTTP: enrolment, login with a code
//! and with recovery codes, replay refusal, lockout, turning it off, the
//! admin reset and the staff policy.

use crate::common;

use common::{Session, TestApp, problem, session_from};
use reqwest::Method;
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

/// The authenticator app: the code for now plus `offset_secs`.
fn code_at(secret: &str, offset_secs: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).expect("base32"))
        .build()
        .expect("totp");
    let at = u64::try_from(chrono::Utc::now().timestamp() + offset_secs).expect("time");
    totp.generate(at).to_string()
}

/// Turns 2FA on for the session's account; returns the secret and the
/// recovery codes.
async fn enable(app: &TestApp, session: &Session) -> (String, Vec<String>) {
    let enrolment = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/enrol",
            session,
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(enrolment.status(), 200);
    let enrolment: serde_json::Value = enrolment.json().await.expect("json");
    let secret = enrolment["secret"].as_str().expect("secret").to_owned();
    let confirmed = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/confirm",
            session,
            &json!({"code": code_at(&secret, 0)}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let body: serde_json::Value = confirmed.json().await.expect("json");
    let codes = body["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    (secret, codes)
}

async fn login_with(app: &TestApp, email: &str, code: Option<&str>) -> reqwest::Response {
    let mut body = json!({"email": email, "password": PASSWORD});
    if let Some(code) = code {
        body["totp_code"] = json!(code);
    }
    app.post_json("/api/v1/auth/login", &body).await
}

#[tokio::test]
async fn enrolment_gives_a_uri_and_qr_code_and_needs_the_password_and_a_right_code() {
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;

    let wrong_password = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/enrol",
            &session,
            &json!({"password": "not my password at all"}),
        )
        .await;
    assert_eq!(wrong_password.status(), 422);
    assert_eq!(
        problem(wrong_password).await["errors"][0]["field"],
        "password"
    );

    let enrolment = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/enrol",
            &session,
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(enrolment.status(), 200);
    let enrolment: serde_json::Value = enrolment.json().await.expect("json");
    let secret = enrolment["secret"].as_str().expect("secret");
    let uri = enrolment["otpauth_uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/VMCloud:ada%40example.org?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")));
    let svg = enrolment["qr_svg"].as_str().expect("svg");
    assert!(svg.contains("<svg"), "{svg}");

    let status = app
        .fetch_json(Method::GET, "/api/v1/users/me/2fa", &session)
        .await;
    assert_eq!(status["enabled"], false);
    assert_eq!(status["pending"], true);

    let wrong_code = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/confirm",
            &session,
            &json!({"code": "000000"}),
        )
        .await;
    assert_eq!(wrong_code.status(), 422);
    assert_eq!(problem(wrong_code).await["errors"][0]["field"], "code");
    // Not on yet: login still needs only the password.
    assert_eq!(
        login_with(&app, "ada@example.org", None).await.status(),
        200
    );

    let confirmed = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/confirm",
            &session,
            &json!({"code": code_at(secret, 0)}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let codes: serde_json::Value = confirmed.json().await.expect("json");
    assert_eq!(codes["recovery_codes"].as_array().expect("codes").len(), 10);

    let status = app
        .fetch_json(Method::GET, "/api/v1/users/me/2fa", &session)
        .await;
    assert_eq!(status["enabled"], true);
    assert_eq!(status["recovery_codes_left"], 10);
    let me = app
        .fetch_json(Method::GET, "/api/v1/users/me", &session)
        .await;
    assert_eq!(me["two_factor_enabled"], true);

    let again = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/enrol",
            &session,
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(again.status(), 409);
    app.stop().await;
}

#[tokio::test]
async fn login_needs_a_fresh_code_or_an_unused_recovery_code() {
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let (secret, recovery) = enable(&app, &session).await;

    let prompt = login_with(&app, "ada@example.org", None).await;
    assert_eq!(prompt.status(), 401);
    assert_eq!(
        problem(prompt).await["type"],
        "/problems/two-factor-required"
    );

    // The confirmation used the current step; the next one is still fresh.
    let next = code_at(&secret, 30);
    let signed_in = login_with(&app, "ada@example.org", Some(&next)).await;
    assert_eq!(signed_in.status(), 200);
    let signed_in = session_from(signed_in).await;
    let token_claims = signed_in.access_token.split('.').nth(1).expect("payload");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token_claims,
        )
        .expect("base64"),
    )
    .expect("claims");
    assert_eq!(claims["mfa"], true);

    let replayed = login_with(&app, "ada@example.org", Some(&next)).await;
    assert_eq!(replayed.status(), 401, "a code is accepted once");

    let first = recovery[0].to_uppercase();
    assert_eq!(
        login_with(&app, "ada@example.org", Some(&first))
            .await
            .status(),
        200
    );
    assert_eq!(
        login_with(&app, "ada@example.org", Some(&recovery[0]))
            .await
            .status(),
        401,
        "a recovery code works once"
    );
    let status = app
        .fetch_json(Method::GET, "/api/v1/users/me/2fa", &session)
        .await;
    assert_eq!(status["recovery_codes_left"], 9);
    app.stop().await;
}

#[tokio::test]
async fn wrong_codes_lead_to_lockout_even_with_the_right_password() {
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let (secret, _) = enable(&app, &session).await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            login_with(&app, "ada@example.org", Some("123456"))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[..4], [401, 401, 401, 401]);
    assert_eq!(statuses[4], 429, "the fifth failure locks the account");
    let locked = login_with(&app, "ada@example.org", Some(&code_at(&secret, 30))).await;
    assert_eq!(locked.status(), 429, "a right code does not lift the lock");
    assert!(locked.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn turning_off_and_new_recovery_codes_need_the_password_and_a_code() {
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let (_, recovery) = enable(&app, &session).await;

    let without_code = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/recovery-codes",
            &session,
            &json!({"password": PASSWORD, "code": "000000"}),
        )
        .await;
    assert_eq!(without_code.status(), 422);

    let renewed = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/recovery-codes",
            &session,
            &json!({"password": PASSWORD, "code": recovery[0]}),
        )
        .await;
    assert_eq!(renewed.status(), 200);
    let renewed: serde_json::Value = renewed.json().await.expect("json");
    let fresh = renewed["recovery_codes"][0].as_str().expect("code");
    assert_eq!(
        login_with(&app, "ada@example.org", Some(&recovery[1]))
            .await
            .status(),
        401,
        "old recovery codes stop working"
    );

    let wrong_password = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/disable",
            &session,
            &json!({"password": "not my password at all", "code": fresh}),
        )
        .await;
    assert_eq!(wrong_password.status(), 422);
    let disabled = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/disable",
            &session,
            &json!({"password": PASSWORD, "code": fresh}),
        )
        .await;
    assert_eq!(disabled.status(), 204);
    assert_eq!(
        login_with(&app, "ada@example.org", None).await.status(),
        200
    );

    let actions = common::audit_actions(&app).await;
    for action in [
        "user.2fa_enrolment_started",
        "user.2fa_enabled",
        "user.2fa_recovery_codes_regenerated",
        "user.2fa_disabled",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action} audited");
    }
    app.stop().await;
}

#[tokio::test]
async fn api_tokens_cannot_manage_the_second_factor() {
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/api-tokens",
            &session,
            &json!({"name": "ci", "scope": "read_write"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let token: serde_json::Value = created.json().await.expect("json");
    let token_session = Session {
        access_token: token["token"].as_str().expect("token").to_owned(),
        ..session.clone()
    };
    let refused = app
        .send_json(
            Method::POST,
            "/api/v1/users/me/2fa/enrol",
            &token_session,
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(refused.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_can_reset_a_lost_device() {
    let app = TestApp::spawn().await;
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    enable(&app, &session).await;
    let admin = app.session_for(&admin).await;

    let reset = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/users/{id}/reset-2fa"),
            &admin,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(reset.status(), 200);
    let body: serde_json::Value = reset.json().await.expect("json");
    assert_eq!(body["two_factor_enabled"], false);
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &session)
            .await,
        401,
        "the user's sessions end"
    );
    assert_eq!(
        login_with(&app, "ada@example.org", None).await.status(),
        200
    );
    let twice = app
        .status_of(
            Method::POST,
            &format!("/api/v1/admin/users/{id}/reset-2fa"),
            &admin,
        )
        .await;
    assert_eq!(twice, 409);
    assert!(
        common::audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "user.2fa_reset")
    );
    app.stop().await;
}

#[tokio::test]
async fn when_required_staff_must_enrol_before_using_staff_powers() {
    let app = TestApp::spawn().await;
    let admin_id = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let support_id = app
        .create_user("help@example.org", PASSWORD, UserRole::Support)
        .await;
    let admin = app.session_for(&admin_id).await;
    let policy = app
        .authed(Method::PUT, "/api/v1/admin/settings/security", &admin)
        .json(&json!({"require_2fa_for_staff": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(policy.status(), 200);

    let support = app.session_for(&support_id).await;
    let refused = app
        .authed(Method::GET, "/api/v1/admin/users", &support)
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 403);
    assert_eq!(
        problem(refused).await["type"],
        "/problems/two-factor-enrolment-required"
    );
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &support)
            .await,
        200,
        "account routes stay open so staff can enrol"
    );
    // Staff powers are refused through customer routes too: another
    // account's ticket, every ticket, every instance; the support account's
    // own ticket stays its own.
    let customer_id = app
        .create_user("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let customer = app.session_for(&customer_id).await;
    let ticket = json!({"subject": "Help", "category": "technical", "priority": "normal",
                        "body": "Please."});
    let theirs = app
        .send_json(Method::POST, "/api/v1/tickets", &customer, &ticket)
        .await;
    assert_eq!(theirs.status(), 201);
    let theirs: serde_json::Value = theirs.json().await.expect("json");
    let theirs = format!("/api/v1/tickets/{}", theirs["id"].as_str().expect("id"));
    let own = app
        .send_json(Method::POST, "/api/v1/tickets", &support, &ticket)
        .await;
    assert_eq!(own.status(), 201);
    let own: serde_json::Value = own.json().await.expect("json");
    let own = format!("/api/v1/tickets/{}", own["id"].as_str().expect("id"));
    assert_eq!(app.status_of(Method::GET, &own, &support).await, 200);
    for path in [theirs.as_str(), "/api/v1/tickets", "/api/v1/instances"] {
        let refused = app
            .authed(Method::GET, path, &support)
            .send()
            .await
            .expect("sent");
        assert_eq!(refused.status(), 403, "{path}");
        assert_eq!(
            problem(refused).await["type"],
            "/problems/two-factor-enrolment-required",
            "{path}"
        );
    }
    let note = app
        .send_json(
            Method::POST,
            &format!("{theirs}/messages"),
            &support,
            &json!({"body": "Looking.", "internal": true}),
        )
        .await;
    assert_eq!(note.status(), 403);

    enable(&app, &support).await;
    let refreshed = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "cookie",
            format!("vmcloud_refresh={}", support.refresh_cookie),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(refreshed.status(), 200);
    let support = session_from(refreshed).await;
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/admin/users", &support)
            .await,
        200
    );
    for path in [theirs.as_str(), "/api/v1/tickets", "/api/v1/instances"] {
        assert_eq!(
            app.status_of(Method::GET, path, &support).await,
            200,
            "{path}"
        );
    }
    // The admin, still without 2FA, is held to the same rule.
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/admin/settings/security", &admin)
            .await,
        403
    );
    app.stop().await;
}

/// A stolen access token cannot guess the password or the second factor:
/// wrong ones typed to confirm a change count towards the sign-in lockout,
/// which then holds for the right ones and for signing in too.
#[tokio::test]
async fn wrong_passwords_and_codes_on_reauthentication_lock_the_account() {
    use vmcloud_server::modules::auth::login::FREE_FAILURES;
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let (secret, _) = enable(&app, &session).await;
    let disable = |password: &str, code: String| {
        let body = json!({"password": password, "code": code});
        let (app, session) = (&app, &session);
        async move {
            app.send_json(Method::POST, "/api/v1/users/me/2fa/disable", session, &body)
                .await
        }
    };
    for attempt in 1..FREE_FAILURES {
        let wrong = if attempt % 2 == 0 {
            disable(PASSWORD, "abcde-fghjk".to_owned()).await
        } else {
            disable("not my password at all", code_at(&secret, 0)).await
        };
        assert_eq!(wrong.status(), 422, "attempt {attempt}");
    }
    let locking = disable(PASSWORD, "abcde-fghjk".to_owned()).await;
    assert_eq!(locking.status(), 429);
    assert!(locking.headers().contains_key("retry-after"));
    let right = disable(PASSWORD, code_at(&secret, 30)).await;
    assert_eq!(right.status(), 429, "locked even for the right answers");
    let login = login_with(&app, "ada@example.org", Some(&code_at(&secret, 30))).await;
    assert_eq!(login.status(), 429, "and for signing in");

    let bob = app.register("bob@example.org", PASSWORD).await;
    let bob = app.session_for(&bob).await;
    let change = |current: &'static str| {
        let body = json!({"current_password": current, "new_password": "a brand new passphrase"});
        let (app, bob) = (&app, &bob);
        async move {
            app.send_json(Method::POST, "/api/v1/users/me/password", bob, &body)
                .await
                .status()
        }
    };
    for _ in 1..FREE_FAILURES {
        assert_eq!(change("not my password at all").await, 422);
    }
    assert_eq!(change("not my password at all").await, 429);
    assert_eq!(change(PASSWORD).await, 429);
    app.stop().await;
}

/// What the database holds for the account's second factor.
async fn stored_factor(app: &TestApp, id: &str) -> (String, Vec<String>) {
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    use vmcloud_server::db::entities::{recovery_code, user};
    let id: vmcloud_server::ids::UserId = id.parse().expect("id");
    let account = user::Entity::find_by_id(id)
        .one(app.state.db.writer())
        .await
        .expect("read")
        .expect("account");
    let codes = recovery_code::Entity::find()
        .filter(recovery_code::Column::UserId.eq(id))
        .all(app.state.db.writer())
        .await
        .expect("codes");
    (
        account.totp_secret.expect("secret"),
        codes.into_iter().map(|c| c.code_hash).collect(),
    )
}

#[tokio::test]
async fn the_secret_is_sealed_and_recovery_codes_salted_also_for_accounts_enrolled_before() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    use vmcloud_server::db::entities::{recovery_code, user};
    let app = TestApp::spawn().await;
    let id = app.register("ada@example.org", PASSWORD).await;
    let session = app.session_for(&id).await;
    let (secret, codes) = enable(&app, &session).await;
    let (stored_secret, hashes) = stored_factor(&app, &id).await;
    assert!(
        stored_secret.starts_with("sealed:v1:") && !stored_secret.contains(&secret),
        "{stored_secret}"
    );
    assert!(
        hashes.iter().all(|h| h.starts_with("$argon2id$")),
        "{hashes:?}"
    );
    let key = std::fs::read_to_string(app.config.data_dir.join("secrets.key")).expect("key");
    assert!(!key.trim().is_empty());

    // An account enrolled before: its secret in clear, its codes as SHA-256.
    let user_id: vmcloud_server::ids::UserId = id.parse().expect("id");
    user::Entity::update_many()
        .col_expr(user::Column::TotpSecret, Expr::value(secret.clone()))
        .filter(user::Column::Id.eq(user_id))
        .exec(app.state.db.writer())
        .await
        .expect("clear secret");
    let legacy_code = "abcde-fghjk";
    recovery_code::Entity::update_many()
        .col_expr(
            recovery_code::Column::CodeHash,
            Expr::value(vmcloud_server::modules::auth::sessions::hash_token(
                "abcdefghjk",
            )),
        )
        .filter(recovery_code::Column::UserId.eq(user_id))
        .filter(recovery_code::Column::CodeHash.eq(hashes[0].as_str()))
        .exec(app.state.db.writer())
        .await
        .expect("legacy code");
    let (database, config) = app.stop_keeping_data().await;
    let app = TestApp::spawn_on(database, config).await;
    let (resealed, _) = stored_factor(&app, &id).await;
    assert!(
        resealed.starts_with("sealed:v1:"),
        "sealed at start: {resealed}"
    );
    assert_eq!(
        login_with(&app, "ada@example.org", Some(&code_at(&secret, 30)))
            .await
            .status(),
        200,
        "the resealed secret still gives the same codes"
    );
    assert_eq!(
        login_with(&app, "ada@example.org", Some(legacy_code))
            .await
            .status(),
        200,
        "a code hashed the old way still works once"
    );
    // One issued code was given the old hash above; the others still work.
    let mut issued_codes_accepted = 0;
    for code in &codes[..2] {
        if login_with(&app, "ada@example.org", Some(code))
            .await
            .status()
            == 200
        {
            issued_codes_accepted += 1;
        }
    }
    assert!(
        issued_codes_accepted >= 1,
        "salted codes work after a restart"
    );
    app.stop().await;
}
