//! Nodes over HTTP: the local node registers itself once; admins register,
//! resize, drain and remove nodes; staff can read them.

use crate::common;

use common::{TestApp, problem};
use reqwest::Method;
use serde_json::json;
use vmcloud_server::db::entities::user::UserRole;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn the_local_node_registers_itself_once_with_the_host_capacity() {
    let app = TestApp::spawn_with(|config| config.local_node = true).await;
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let admin = app.session_for(&admin).await;
    let nodes = app
        .fetch_json(Method::GET, "/api/v1/admin/nodes", &admin)
        .await;
    let nodes = nodes.as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let local = &nodes[0];
    assert_eq!(local["driver"], "qemu");
    assert_eq!(local["region"], "local");
    assert_eq!(local["status"], "online");
    assert!(local["total"]["vcpus"].as_i64().expect("vcpus") >= 1);
    assert!(local["total"]["memory_mib"].as_i64().expect("memory") > 256);
    assert_eq!(local["free"], local["total"], "nothing placed yet");

    // A second start finds the node it registered.
    let again = vmcloud_server::modules::nodes::ensure_local_node(
        &app.state.db,
        &app.state.config.data_dir,
        "local",
    )
    .await
    .expect("registered");
    assert_eq!(again.to_string(), local["id"].as_str().expect("id"));
    app.stop().await;
}

#[tokio::test]
async fn admins_register_drain_and_remove_nodes() {
    let app = TestApp::spawn().await;
    let admin = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let admin = app.session_for(&admin).await;
    let support = app
        .create_user("help@example.org", PASSWORD, UserRole::Support)
        .await;
    let support = app.session_for(&support).await;
    let region = app
        .authed(Method::POST, "/api/v1/admin/regions", &admin)
        .json(&json!({"slug": "eu-west", "name": "Europe West"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(region.status(), 201);

    let node = json!({
        "name": "hv-1", "region": "eu-west", "driver": "libvirt",
        "uri": "qemu+ssh://root@hv-1/system", "vcpus": 16, "memory_mib": 65536,
        "disk_gib": 2000, "cpu_overcommit_pct": 400,
    });
    let created = app
        .authed(Method::POST, "/api/v1/admin/nodes", &admin)
        .json(&node)
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.expect("json");
    assert_eq!(created["free"]["vcpus"], 64, "overcommit applies");
    assert_eq!(created["free"]["memory_mib"], 65536);
    let id = created["id"].as_str().expect("id");

    let duplicate = app
        .authed(Method::POST, "/api/v1/admin/nodes", &admin)
        .json(&node)
        .send()
        .await
        .expect("sent");
    assert_eq!(duplicate.status(), 409);
    let mut elsewhere = node.clone();
    elsewhere["name"] = json!("hv-2");
    elsewhere["region"] = json!("mars-1");
    elsewhere["vcpus"] = json!(0);
    let invalid = app
        .authed(Method::POST, "/api/v1/admin/nodes", &admin)
        .json(&elsewhere)
        .send()
        .await
        .expect("sent");
    assert_eq!(invalid.status(), 422);
    assert_eq!(problem(invalid).await["errors"][0]["field"], "vcpus");

    let drained = app
        .authed(Method::PATCH, &format!("/api/v1/admin/nodes/{id}"), &admin)
        .json(&json!({"status": "draining"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(drained.status(), 200);
    let offline = app
        .authed(Method::PATCH, &format!("/api/v1/admin/nodes/{id}"), &admin)
        .json(&json!({"status": "offline"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(offline.status(), 422);

    let seen = app
        .fetch_json(Method::GET, &format!("/api/v1/admin/nodes/{id}"), &support)
        .await;
    assert_eq!(seen["status"], "draining");
    assert_eq!(
        app.status_of(
            Method::DELETE,
            &format!("/api/v1/admin/nodes/{id}"),
            &support
        )
        .await,
        403,
        "support reads, admins change"
    );
    assert_eq!(
        app.status_of(Method::DELETE, &format!("/api/v1/admin/nodes/{id}"), &admin)
            .await,
        204
    );
    app.stop().await;
}
