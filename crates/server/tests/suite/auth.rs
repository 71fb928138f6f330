//! Sign-up, sign-in, rotation, reuse detection, logout, sessions, lockout and
//! rate limits, over HTTP against the real server.

use crate::common;

use common::{TestApp, problem, refresh_cookie, session_from};
use reqwest::Method;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

async fn refresh_with(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", format!("vmcloud_refresh={cookie}"))
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn registration_validates_and_refuses_duplicates() {
    let app = TestApp::spawn().await;
    let id = app.register(" Ada@Example.org ", PASSWORD).await;
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let duplicate = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "ada@example.org", "password": PASSWORD, "name": "Ada"}),
        )
        .await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(problem(duplicate).await["type"], "/problems/conflict");

    let invalid = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "nope", "password": "password123", "name": ""}),
        )
        .await;
    assert_eq!(invalid.status(), 422);
    let body = problem(invalid).await;
    let mut fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "name", "password"], "{body}");
    app.stop().await;
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_the_token_reaches_users_me() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "ADA@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/v1/auth",
        "Max-Age=",
    ] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains("Secure"),
        "plain-http deployment: {cookie}"
    );
    let session = session_from(response).await;

    let me = app
        .authed(Method::GET, "/api/v1/users/me", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.expect("json");
    assert_eq!(me["email"], "ada@example.org");
    assert_eq!(me["role"], "customer");
    assert_eq!(me["email_verified"], false);
    assert!(me.get("password_hash").is_none());

    let anonymous = app.get("/api/v1/users/me").await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(problem(anonymous).await["type"], "/problems/unauthorized");
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"auth.login.succeeded".to_owned())
    );
    app.stop().await;
}

#[tokio::test]
async fn secure_cookies_when_served_over_tls() {
    let app =
        TestApp::spawn_with(|c| c.public_url = Some("https://cloud.example.com".into())).await;
    app.register("ada@example.org", PASSWORD).await;
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.org", "password": PASSWORD}),
        )
        .await;
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Secure")
    );
    app.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let first = app.login("ada@example.org", PASSWORD).await;

    let rotated = refresh_with(&app, &first.refresh_cookie).await;
    assert_eq!(rotated.status(), 200);
    let second = session_from(rotated).await;
    assert_ne!(second.refresh_cookie, first.refresh_cookie);
    assert_ne!(second.access_token, first.access_token);

    // The first cookie comes back: someone holds a stolen copy.
    let replay = refresh_with(&app, &first.refresh_cookie).await;
    assert_eq!(replay.status(), 401);
    assert_eq!(refresh_cookie(&replay), None, "the cookie is cleared");
    // Every token of that login is dead now, including the newest ones.
    assert_eq!(
        refresh_with(&app, &second.refresh_cookie).await.status(),
        401
    );
    let me = app
        .authed(Method::GET, "/api/v1/users/me", &second)
        .send()
        .await
        .expect("sent");
    assert_eq!(me.status(), 401);
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"auth.refresh.reused".to_owned())
    );

    // Other logins are unaffected.
    let other = app.login("ada@example.org", PASSWORD).await;
    assert_eq!(
        refresh_with(&app, &other.refresh_cookie).await.status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn refresh_needs_a_cookie_and_a_trusted_origin() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let no_cookie = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .send()
        .await
        .expect("sent");
    assert_eq!(no_cookie.status(), 401);
    let foreign = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .header(
            "cookie",
            format!("vmcloud_refresh={}", session.refresh_cookie),
        )
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 403);
    let garbage = refresh_with(&app, "not-a-token").await;
    assert_eq!(garbage.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn logout_kills_the_access_token_and_the_session() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let logout = app
        .authed(Method::POST, "/api/v1/auth/logout", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let me = app
        .authed(Method::GET, "/api/v1/users/me", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(me.status(), 401);
    assert_eq!(
        refresh_with(&app, &session.refresh_cookie).await.status(),
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn sessions_are_listed_and_one_can_be_revoked() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let laptop = app.login("ada@example.org", PASSWORD).await;
    let phone = app.login("ada@example.org", PASSWORD).await;

    let list = app
        .fetch_json(Method::GET, "/api/v1/users/me/sessions", &laptop)
        .await;
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 2);
    let phone_session = list
        .iter()
        .find(|s| s["current"] == false)
        .expect("the other one");
    let phone_id = phone_session["id"].as_str().expect("id");

    let revoke = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/users/me/sessions/{phone_id}"),
            &laptop,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(revoke.status(), 204);
    let cut_off = app
        .authed(Method::GET, "/api/v1/users/me", &phone)
        .send()
        .await
        .expect("sent");
    assert_eq!(cut_off.status(), 401);
    let still = app
        .authed(Method::GET, "/api/v1/users/me", &laptop)
        .send()
        .await
        .expect("sent");
    assert_eq!(still.status(), 200);

    // Someone else's session is not found, whether it exists or not.
    app.register("eve@example.org", PASSWORD).await;
    let eve = app.login("eve@example.org", PASSWORD).await;
    let laptop_id = list.iter().find(|s| s["current"] == true).expect("current")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let foreign = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/users/me/sessions/{laptop_id}"),
            &eve,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_the_same_answer_then_a_lockout() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let attempt = |email: &'static str, password: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let unknown = problem(
        attempt("nobody@example.org", "whatever whatever")
            .await
            .expect("sent"),
    )
    .await;
    let wrong = problem(
        attempt("ada@example.org", "whatever whatever")
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(unknown["detail"], wrong["detail"]);
    assert_eq!(unknown["status"], 401);

    for _ in 0..3 {
        assert_eq!(
            attempt("ada@example.org", "still wrong!!")
                .await
                .expect("sent")
                .status(),
            401
        );
    }
    let locked = attempt("ada@example.org", "still wrong!!")
        .await
        .expect("sent");
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Locked means locked, even with the right password.
    assert_eq!(
        attempt("ada@example.org", PASSWORD)
            .await
            .expect("sent")
            .status(),
        429
    );
    app.stop().await;
}

#[tokio::test]
async fn registration_is_rate_limited_per_ip() {
    let app = TestApp::spawn().await;
    for n in 0..10 {
        app.register(&format!("user{n}@example.org"), PASSWORD)
            .await;
    }
    let limited = app
        .post_json(
            "/api/v1/auth/register",
            &json!({"email": "one-more@example.org", "password": PASSWORD, "name": "X"}),
        )
        .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(problem(limited).await["type"], "/problems/rate-limited");
    app.stop().await;
}

#[tokio::test]
async fn changing_the_password_signs_other_sessions_out() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let here = app.login("ada@example.org", PASSWORD).await;
    let elsewhere = app.login("ada@example.org", PASSWORD).await;
    let wrong = app
        .authed(Method::POST, "/api/v1/users/me/password", &here)
        .json(
            &json!({"current_password": "not it at all", "new_password": "a brand new passphrase"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 422);
    let changed = app
        .authed(Method::POST, "/api/v1/users/me/password", &here)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(changed.status(), 204);
    let me = |s: &common::Session| app.authed(Method::GET, "/api/v1/users/me", s).send();
    assert_eq!(me(&here).await.expect("sent").status(), 200);
    assert_eq!(me(&elsewhere).await.expect("sent").status(), 401);
    assert_eq!(
        app.post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.org", "password": PASSWORD})
        )
        .await
        .status(),
        401
    );
    app.login("ada@example.org", "a brand new passphrase").await;
    app.stop().await;
}

#[tokio::test]
async fn profile_updates_are_validated() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let before: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/users/me", &session)
        .await;
    assert_eq!(before["name"], "Test User");
    let updated = app
        .authed(Method::PATCH, "/api/v1/users/me", &session)
        .json(&json!({"name": "Ada Lovelace", "locale": "fr", "country": "fr", "vat_id": "FR 12 345678901"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(updated.status(), 200);
    let body: serde_json::Value = updated.json().await.expect("json");
    assert_eq!(body["country"], "FR");
    assert_eq!(body["vat_id"], "FR12345678901");
    assert_eq!(body["locale"], "fr");
    let after: serde_json::Value = app
        .fetch_json(Method::GET, "/api/v1/users/me", &session)
        .await;
    assert_eq!(
        after["name"], "Ada Lovelace",
        "the cached view is dropped on update"
    );

    let invalid = app
        .authed(Method::PATCH, "/api/v1/users/me", &session)
        .json(&json!({"locale": "de", "country": "France", "role": "admin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(invalid.status(), 422, "unknown field `role` is rejected");
    app.stop().await;
}

#[tokio::test]
async fn tokens_with_bad_signatures_unknown_keys_or_past_expiry_are_401() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let call = |token: String| {
        app.client
            .get(app.url("/api/v1/users/me"))
            .bearer_auth(token)
            .send()
    };
    let mut tampered = session.access_token.clone();
    tampered.pop();
    tampered.push(if session.access_token.ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert_eq!(call(tampered).await.expect("sent").status(), 401);

    let key =
        std::fs::read_to_string(app.database.dir.path().join("jwt-signing.key")).expect("key");
    let (kid, secret) = key.trim().split_once(':').expect("kid:secret");
    let secret = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret)
        .expect("b64");
    // The forgeries name the real session: only the signature and expiry differ.
    let payload = session.access_token.split('.').nth(1).expect("payload");
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("b64"),
    )
    .expect("json");
    let sid = payload["sid"].clone();
    let claims = |exp: i64| {
        json!({"sub": session.user_id, "role": "admin", "sid": sid, "jti": uuid::Uuid::new_v4(),
               "iat": exp - 900, "exp": exp, "iss": "vmcloud"})
    };
    let sign = |kid: &str, claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).expect("sign")
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        call(sign(kid, claims(now + 600)))
            .await
            .expect("sent")
            .status(),
        200,
        "a well-signed token works"
    );
    assert_eq!(
        call(sign(kid, claims(now - 60)))
            .await
            .expect("sent")
            .status(),
        401,
        "expired"
    );
    assert_eq!(
        call(sign("other-kid", claims(now + 600)))
            .await
            .expect("sent")
            .status(),
        401,
        "unknown kid"
    );
    let none_alg = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&claims(now + 600).to_string())
    );
    assert_eq!(
        call(none_alg).await.expect("sent").status(),
        401,
        "alg none"
    );
    app.stop().await;
}

fn base64_url(text: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
}

#[tokio::test]
async fn closing_an_account_needs_the_password_and_frees_the_email() {
    let app = TestApp::spawn().await;
    app.register("ada@example.org", PASSWORD).await;
    let session = app.login("ada@example.org", PASSWORD).await;
    let wrong = app
        .authed(Method::POST, "/api/v1/users/me/deletion", &session)
        .json(&json!({"password": "not the password"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 422);
    let closed = app
        .authed(Method::POST, "/api/v1/users/me/deletion", &session)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(closed.status(), 204);
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/users/me", &session)
            .await,
        401
    );
    let login = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "ada@example.org", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), 401);
    app.register("ada@example.org", PASSWORD).await;
    assert!(
        common::audit_actions(&app)
            .await
            .contains(&"user.deleted".to_owned())
    );
    app.stop().await;
}
