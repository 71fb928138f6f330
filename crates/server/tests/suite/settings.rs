//! `/api/v1/admin/settings`: typed keys with defaults and validation, the
//! settings that change what the platform does, and a change reaching every
//! replica at once.

use crate::common;

use std::io::Write as _;

use common::{TestApp, audit_actions, problem};
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::startup::Role;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn settings_are_listed_with_defaults_and_checked_by_type() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;

    let listed = app
        .fetch_json(Method::GET, "/api/v1/admin/settings", &admin)
        .await;
    let keys: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["key"].as_str().expect("key"))
        .collect();
    for key in [
        "accounts",
        "security",
        "billing",
        "invoicing",
        "instances",
        "nodes",
        "realtime",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    for setting in listed.as_array().expect("a list") {
        assert_eq!(setting["value"], setting["default"], "{setting}");
        assert!(!setting["description"].as_str().expect("text").is_empty());
    }

    let unknown = app
        .authed(Method::GET, "/api/v1/admin/settings/colour", &admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 422);
    let body = problem(unknown).await;
    assert_eq!(body["errors"][0]["field"], "key");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("instances"),
        "the known keys are listed: {body}"
    );

    let put = |key: &'static str, value: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            app.send_json(
                Method::PUT,
                &format!("/api/v1/admin/settings/{key}"),
                admin,
                &value,
            )
            .await
        }
    };
    let valid = json!({"max_instances_per_user": 3, "placement_strategy": "pack", "restart_crashed": false});
    for (value, field) in [
        (
            json!({"max_instances_per_user": "three", "placement_strategy": "pack", "restart_crashed": false}),
            "max_instances_per_user",
        ),
        (
            json!({"max_instances_per_user": 20_000, "placement_strategy": "pack", "restart_crashed": false}),
            "max_instances_per_user",
        ),
        (json!({"max_instances_per_user": 3}), ""),
        (json!(true), ""),
    ] {
        let response = put("instances", value.clone()).await;
        assert_eq!(response.status(), 422, "{value}");
        let body = problem(response).await;
        assert_eq!(body["errors"][0]["field"], field, "{value}: {body}");
    }
    let mut extra = valid.clone();
    extra["colour"] = json!("blue");
    let response = put("instances", extra).await;
    assert_eq!(response.status(), 422);
    assert!(
        problem(response).await["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("unknown field `colour`")
    );
    let response = put("invoicing", json!({"seller": {"name": "", "address": "1 rue", "country": "fr", "vat_id": null, "email": null}, "vat_rates": {}, "payment_terms_days": 14})).await;
    assert_eq!(response.status(), 422, "rules beyond the types apply too");
    let fields: Vec<Value> = problem(response).await["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, [json!("seller/name"), json!("seller/country")]);

    let changed = put("instances", valid.clone()).await;
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.json::<Value>().await.expect("json"), valid);
    assert_eq!(
        app.fetch_json(Method::GET, "/api/v1/admin/settings/instances", &admin)
            .await,
        valid
    );
    let listed = app
        .fetch_json(Method::GET, "/api/v1/admin/settings", &admin)
        .await;
    let instances = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["key"] == "instances")
        .expect("listed");
    assert_eq!(instances["value"], valid);
    assert_ne!(instances["default"], valid);
    assert_eq!(
        audit_actions(&app)
            .await
            .iter()
            .filter(|a| *a == "settings.changed")
            .count(),
        1,
        "only the accepted change is audited"
    );
    app.stop().await;
}

#[tokio::test]
async fn closed_registration_refuses_sign_ups() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let sign_up = |email: &'static str| {
        let app = &app;
        async move {
            app.post_json(
                "/api/v1/auth/register",
                &json!({"email": email, "name": "Ada", "password": PASSWORD}),
            )
            .await
        }
    };
    let closed = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/accounts",
            &admin,
            &json!({"registration_open": false}),
        )
        .await;
    assert_eq!(closed.status(), 200);
    let refused = sign_up("ada@example.com").await;
    assert_eq!(refused.status(), 403);
    assert!(
        problem(refused).await["detail"]
            .as_str()
            .expect("detail")
            .contains("Registration is closed")
    );

    let opened = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/accounts",
            &admin,
            &json!({"registration_open": true}),
        )
        .await;
    assert_eq!(opened.status(), 200);
    assert_eq!(sign_up("ada@example.com").await.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn new_nodes_take_the_default_overcommit() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let region = app
        .send_json(
            Method::POST,
            "/api/v1/admin/regions",
            &admin,
            &json!({"slug": "eu-west", "name": "Europe West"}),
        )
        .await;
    assert_eq!(region.status(), 201);
    let defaults = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/nodes",
            &admin,
            &json!({"cpu_overcommit_pct": 300, "memory_overcommit_pct": 150}),
        )
        .await;
    assert_eq!(defaults.status(), 200);
    let node = |name: &str, own: Option<i32>| {
        let mut node = json!({
            "name": name, "region": "eu-west", "driver": "libvirt",
            "uri": format!("qemu+ssh://root@{name}/system"), "vcpus": 8,
            "memory_mib": 16384, "disk_gib": 500,
        });
        if let Some(pct) = own {
            node["cpu_overcommit_pct"] = json!(pct);
        }
        node
    };
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/admin/nodes",
            &admin,
            &node("hv-1", None),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["cpu_overcommit_pct"], 300);
    assert_eq!(created["memory_overcommit_pct"], 150);
    assert_eq!(created["free"]["vcpus"], 24);
    let own = app
        .send_json(
            Method::POST,
            "/api/v1/admin/nodes",
            &admin,
            &node("hv-2", Some(100)),
        )
        .await;
    let own: Value = own.json().await.expect("json");
    assert_eq!(own["cpu_overcommit_pct"], 100, "the node's own value wins");
    app.stop().await;
}

#[tokio::test]
async fn a_change_reaches_every_replica_at_once() {
    if common::test_redis().is_none() || std::env::var("VMCLOUD_TEST_DATABASE_URL").is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED replica test: it needs VMCLOUD_TEST_DATABASE_URL and \
             VMCLOUD_TEST_REDIS_URL, which replicas share ***\n"
        );
        return;
    }
    let a = TestApp::spawn().await;
    let b = a.spawn_replica(Role::Serve, |_| {}).await;
    let (_, admin) = a
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let path = "/api/v1/admin/settings/realtime";
    // B reads the setting, so it holds its own copy of it.
    assert_eq!(
        b.fetch_json(Method::GET, path, &admin).await,
        json!({"max_connections_per_user": 20})
    );
    for limit in [5, 7] {
        let changed = a
            .send_json(
                Method::PUT,
                path,
                &admin,
                &json!({"max_connections_per_user": limit}),
            )
            .await;
        assert_eq!(changed.status(), 200);
        // The copy is evicted over pub/sub: B sees the change well before
        // its copy would expire (a minute).
        common::eventually("B sees the new limit", || async {
            (b.fetch_json(Method::GET, path, &admin).await
                == json!({"max_connections_per_user": limit}))
            .then_some(())
        })
        .await;
    }
    b.stop().await;
    a.stop().await;
}
