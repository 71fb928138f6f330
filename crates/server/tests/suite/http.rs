//! The HTTP foundation as a client sees it: probes, request ids, problem
//! details, limits, OpenAPI and metrics.

use crate::common;

use axum::Router;
use axum::routing::post;
use common::{TestApp, problem};
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::http::json::ValidJson;

#[tokio::test]
async fn healthz_answers_and_returns_a_generated_request_id() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn a_sane_request_id_is_kept_and_a_forged_one_replaced() {
    let app = TestApp::spawn().await;
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "lb-7f3a-0001")
        .send()
        .await
        .expect("sent");
    assert_eq!(kept.headers()["x-request-id"], "lb-7f3a-0001");

    let forged = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "a b\tc")
        .send()
        .await
        .expect("sent");
    assert_ne!(forged.headers()["x-request-id"], "a b\tc");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_problem_json_404s_carrying_the_request_id() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/v1/nothing-here"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body = problem(response).await;
    assert_eq!(body["type"], "/problems/not-found");
    assert_eq!(body["title"], "Not found");
    assert_eq!(body["status"], 404);
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(body["request_id"], "trace-me");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_json_405_with_allow() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .delete(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    let body = problem(response).await;
    assert_eq!(body["type"], "/problems/method-not-allowed");
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_each_dependency_and_turns_503_when_the_database_goes_away() {
    let app = TestApp::spawn().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["cache"], "ok");

    app.database.destroy().await;
    let unready = app.get("/readyz").await;
    assert_eq!(unready.status(), 503);
    let body = problem(unready).await;
    assert_eq!(body["type"], "/problems/unavailable");
    assert_eq!(body["checks"]["database"], "unavailable");
    assert_eq!(body["checks"]["cache"], "ok");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("database"), "{detail}");
    assert!(
        !detail.contains("sqlite") && !detail.contains("postgres"),
        "{detail}"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_checked_in_copy() {
    let app = TestApp::spawn().await;
    let served = app.get("/api/openapi.json").await;
    assert_eq!(served.status(), 200);
    let served: serde_json::Value = served.json().await.expect("json");
    assert_eq!(served["openapi"], "3.1.0");

    let generated = vmcloud_server::http::openapi::document();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/vmcloud.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "openapi/vmcloud.json is stale: run `cargo run -p vmcloud -- openapi > openapi/vmcloud.json`"
    );
    let generated: serde_json::Value = serde_json::from_str(&generated).expect("json");
    assert_eq!(served, generated);
    app.stop().await;
}

/// What OpenAPI tools and generated clients rely on: unique operation ids,
/// a summary and a tag on every operation, and a description on every
/// response (the shared ones are references that must resolve).
#[test]
fn every_operation_is_named_summarised_tagged_and_its_responses_described() {
    let document: serde_json::Value =
        serde_json::from_str(&vmcloud_server::http::openapi::document()).expect("json");
    let shared = &document["components"]["responses"];
    let mut ids = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let at = format!("{} {path}", method.to_uppercase());
            match operation["operationId"].as_str() {
                Some(id) => {
                    if let Some(first) = ids.insert(id.to_owned(), at.clone()) {
                        problems.push(format!("{at}: operationId `{id}` is also {first}'s"));
                    }
                }
                None => problems.push(format!("{at}: no operationId")),
            }
            if operation["summary"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{at}: no summary"));
            }
            if operation["tags"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{at}: no tag"));
            }
            let responses = operation["responses"].as_object().expect("responses");
            if responses.is_empty() {
                problems.push(format!("{at}: no response"));
            }
            for (status, response) in responses {
                let response = match response["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference.trim_start_matches("#/components/responses/");
                        &shared[name]
                    }
                    None => response,
                };
                if response["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: the {status} response has no description"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let page = app.get("/api/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("cdn"), "assets must not come from a CDN");
    let bundle = app.get("/api/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    let initializer = app.get("/api/docs/swagger-initializer.js").await;
    let script = initializer.text().await.expect("js");
    assert!(script.contains("/api/openapi.json"), "{script}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_requests_pool_queue_and_build_info() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    // A reset mail for an account, none for an unknown address: the counts
    // must not tell them apart.
    app.create_user("ada@example.org", "a long passphrase", UserRole::Customer)
        .await;
    for email in ["ada@example.org", "nobody@example.org"] {
        let answer = app
            .post_json("/api/v1/auth/forgot-password", &json!({ "email": email }))
            .await;
        assert_eq!(answer.status(), 202);
    }
    let anonymous = app.get("/metrics").await;
    assert_eq!(anonymous.status(), 401, "the figures are the operator's");
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("not-the-metrics-token")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let metrics = app.scrape().await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    for needle in [
        "vmcloud_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}",
        "vmcloud_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\"",
        "vmcloud_db_pool_connections",
        "vmcloud_jobs{status=\"queued\"}",
        "vmcloud_build_info{version=",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains("vmcloud_emails_queued_total{"),
        "emails are counted without their kind:\n{text}"
    );
    app.stop().await;

    let unconfigured = TestApp::spawn_with(|config| config.metrics_token = None).await;
    assert_eq!(unconfigured.get("/metrics").await.status(), 404);
    unconfigured.stop().await;
}

#[tokio::test]
async fn responses_are_compressed_when_the_client_accepts_it() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/api/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    app.stop().await;
}

#[derive(Debug, serde::Deserialize, garde::Validate)]
#[serde(deny_unknown_fields)]
struct Greeting {
    #[garde(length(min = 1, max = 20))]
    name: String,
}

/// Serves a JSON endpoint through the real layer stack, on a real port.
async fn serve_json_endpoint(app: &TestApp) -> String {
    async fn greet(ValidJson(greeting): ValidJson<Greeting>) -> String {
        format!("hello {}", greeting.name)
    }
    let routes: Router<vmcloud_server::http::AppState> = Router::new().route("/greet", post(greet));
    let router = vmcloud_server::http::with_layers(routes, app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/greet", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn json_bodies_are_checked_for_type_syntax_shape_size_and_rules() {
    let app = TestApp::spawn_with(|config| config.body_limit_bytes = 2048).await;
    let url = serve_json_endpoint(&app).await;
    let post = |body: String, content_type: &'static str| {
        app.client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let ok = post(r#"{"name":"ada"}"#.into(), "application/json")
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("text"), "hello ada");

    let wrong_type = post(r#"{"name":"ada"}"#.into(), "text/plain")
        .await
        .expect("sent");
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(
        problem(wrong_type).await["type"],
        "/problems/unsupported-media-type"
    );

    let malformed = post(r#"{"name":"#.into(), "application/json")
        .await
        .expect("sent");
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        problem(malformed).await["type"],
        "/problems/malformed-request"
    );

    let unknown = post(
        r#"{"name":"ada","role":"admin"}"#.into(),
        "application/json",
    )
    .await
    .expect("sent");
    assert_eq!(unknown.status(), 422);
    let body = problem(unknown).await;
    assert_eq!(body["type"], "/problems/validation-error");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("role")
    );

    let invalid = post(r#"{"name":""}"#.into(), "application/json")
        .await
        .expect("sent");
    assert_eq!(invalid.status(), 422);
    assert_eq!(problem(invalid).await["errors"][0]["field"], "name");

    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(4096));
    let too_large = post(huge, "application/json").await.expect("sent");
    assert_eq!(too_large.status(), 413);
    assert_eq!(
        problem(too_large).await["type"],
        "/problems/payload-too-large"
    );
    app.stop().await;
}

#[tokio::test]
async fn security_headers_are_on_every_response_and_hsts_only_over_tls() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/api/v1/nothing-here"] {
        let response = app.get(path).await;
        let headers = response.headers();
        assert!(
            headers["content-security-policy"]
                .to_str()
                .expect("ascii")
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(
            headers["referrer-policy"],
            "strict-origin-when-cross-origin"
        );
        assert!(headers.contains_key("permissions-policy"));
        assert!(
            !headers.contains_key("strict-transport-security"),
            "plain http"
        );
    }
    app.stop().await;

    let tls =
        TestApp::spawn_with(|c| c.public_url = Some("https://cloud.example.com".into())).await;
    let response = tls.get("/healthz").await;
    assert!(
        response.headers()["strict-transport-security"]
            .to_str()
            .expect("ascii")
            .starts_with("max-age=")
    );
    tls.stop().await;
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins_with_credentials() {
    let app = TestApp::spawn_with(|c| {
        c.cors_allowed_origins = vec!["https://console.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://console.example.com")
        .await
        .expect("sent");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example").await.expect("sent");
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
    app.stop().await;

    let same_origin_only = TestApp::spawn().await;
    let response = same_origin_only
        .client
        .get(same_origin_only.url("/healthz"))
        .header("origin", "https://console.example.com")
        .send()
        .await
        .expect("sent");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    same_origin_only.stop().await;
}

/// The data directory holds the database, keys and attachments: only the
/// platform's account may read it, also on an install made before the rule.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_are_private_after_every_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let app = TestApp::spawn().await;
    let (database, config) = app.stop_keeping_data().await;
    let dir = config.data_dir.clone();
    let sqlite = dir.join("vmcloud.db");
    chmod(&dir, 0o755);
    if sqlite.exists() {
        chmod(&sqlite, 0o644);
    }
    let app = TestApp::spawn_on(database, config).await;
    assert_eq!(mode(&dir), 0o700);
    if sqlite.exists() {
        assert_eq!(mode(&sqlite), 0o600);
        assert_eq!(mode(&dir.join("vmcloud.db-wal")), 0o600);
    }
    assert_eq!(
        mode(&dir.join(vmcloud_server::modules::auth::keys::GENERATED_KEY_FILE)),
        0o600
    );
    app.stop().await;
}
