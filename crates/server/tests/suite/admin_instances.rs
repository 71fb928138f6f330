//! Every customer's instances, for staff: listed with their owner and node
//! and filtered; acted on by an admin through the owners' action path (a
//! stop really stops the VM), audited with the admin as the actor. Support
//! reads but does not act; customers reach none of it.

use crate::common;

use common::cloud::{Cloud, PASSWORD, guest_image};
use common::rows::{catalogue, new_node, new_user};
use common::{TestApp, audit_actions};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _};
use serde_json::{Value, json};
use vmcloud_server::db::entities::instance::{self, InstanceStatus};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::db::entities::{audit_log, node, product, user};

struct Seeded {
    name: &'static str,
    owner: user::Model,
    node: node::Model,
    plan: product::Model,
    status: InstanceStatus,
    ipv4: Option<&'static str>,
}

async fn seed(app: &TestApp, row: Seeded, cat: &common::rows::Catalogue) -> String {
    instance::ActiveModel {
        user_id: Set(row.owner.id),
        product_id: Set(row.plan.id),
        region_id: Set(cat.region.id),
        image_id: Set(cat.image.id),
        node_id: Set(Some(row.node.id)),
        name: Set(row.name.to_owned()),
        hostname: Set(format!("{}.example.net", row.name)),
        status: Set(row.status),
        ipv4: Set(row.ipv4.map(str::to_owned)),
        vcpus: Set(1),
        memory_mib: Set(1024),
        disk_gib: Set(20),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert instance")
    .id
    .to_string()
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect()
}

#[tokio::test]
async fn staff_list_every_customers_instances_with_filters() {
    let app = TestApp::spawn().await;
    let conn = app.state.db.writer();
    let cat = catalogue(conn).await;
    let bob = new_user(conn, "bob@example.org").await;
    let second = new_node(
        conn,
        &cat.region,
        "node-2",
        node::NodeDriver::Qemu,
        "/var/lib/vmcloud/run2",
    )
    .await;
    let big = product::ActiveModel {
        slug: Set("m-2".to_owned()),
        name: Set("Medium".to_owned()),
        vcpus: Set(2),
        memory_mib: Set(2048),
        disk_gib: Set(40),
        transfer_gib: Set(2000),
        price_monthly_minor: Set(1000),
        price_hourly_minor: Set(2),
        currency: Set("EUR".to_owned()),
        active: Set(true),
        hidden: Set(false),
        sort_order: Set(1),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert product");
    let web = seed(
        &app,
        Seeded {
            name: "web",
            owner: cat.user.clone(),
            node: cat.node.clone(),
            plan: cat.product.clone(),
            status: InstanceStatus::Running,
            ipv4: Some("203.0.113.10"),
        },
        &cat,
    )
    .await;
    seed(
        &app,
        Seeded {
            name: "db",
            owner: bob.clone(),
            node: second.clone(),
            plan: big.clone(),
            status: InstanceStatus::Stopped,
            ipv4: Some("203.0.113.20"),
        },
        &cat,
    )
    .await;
    seed(
        &app,
        Seeded {
            name: "cache",
            owner: bob.clone(),
            node: cat.node.clone(),
            plan: cat.product.clone(),
            status: InstanceStatus::Running,
            ipv4: None,
        },
        &cat,
    )
    .await;

    let (_, support) = app
        .signed_in("help@example.org", PASSWORD, UserRole::Support)
        .await;
    let get = |query: String| {
        let (app, support) = (&app, &support);
        async move {
            app.fetch_json(
                Method::GET,
                &format!("/api/v1/admin/instances{query}"),
                support,
            )
            .await
        }
    };
    let all = get(String::new()).await;
    assert_eq!(names(&all), ["cache", "db", "web"], "newest first");
    let db = &all["items"][1];
    assert_eq!(db["owner"]["email"], "bob@example.org");
    assert_eq!(db["owner"]["id"], bob.id.to_string());
    assert_eq!(db["node"]["name"], "node-2");
    assert_eq!(db["plan"]["slug"], "m-2");
    assert_eq!(db["ips"], json!(["203.0.113.20"]));

    assert_eq!(names(&get(format!("?node_id={}", second.id)).await), ["db"]);
    assert_eq!(
        names(&get(format!("?user_id={}", bob.id)).await),
        ["cache", "db"]
    );
    assert_eq!(
        names(&get("?status=running".into()).await),
        ["cache", "web"]
    );
    assert_eq!(names(&get("?plan=m-2".into()).await), ["db"]);
    assert_eq!(
        names(&get(format!("?plan={}", cat.product.id)).await),
        ["cache", "web"]
    );
    assert_eq!(names(&get("?q=203.0.113.1".into()).await), ["web"]);
    assert_eq!(names(&get("?q=cache.example".into()).await), ["cache"]);
    assert_eq!(names(&get("?q=we".into()).await), ["web"]);
    assert_eq!(
        names(&get(format!("?user_id={}&status=stopped", bob.id)).await),
        ["db"]
    );
    let page = get("?limit=2".into()).await;
    assert_eq!(names(&page), ["cache", "db"]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    assert_eq!(
        names(&get(format!("?limit=2&cursor={cursor}")).await),
        ["web"]
    );

    // Support reads but does not act, here or through the owners' path.
    let action = format!("/api/v1/admin/instances/{web}/actions");
    let stop = json!({"type": "stop"});
    let refused = app.send_json(Method::POST, &action, &support, &stop).await;
    assert_eq!(refused.status(), 403);
    let owners_path = format!("/api/v1/instances/{web}/actions");
    let refused = app
        .send_json(Method::POST, &owners_path, &support, &stop)
        .await;
    assert_eq!(refused.status(), 403);
    let delete = format!("/api/v1/admin/instances/{web}");
    assert_eq!(app.status_of(Method::DELETE, &delete, &support).await, 403);

    // A customer reaches none of it, not even for an instance of their own.
    let owner = app.session_for(&cat.user.id.to_string()).await;
    assert_eq!(
        app.status_of(Method::GET, "/api/v1/admin/instances", &owner)
            .await,
        403
    );
    let refused = app.send_json(Method::POST, &action, &owner, &stop).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(app.status_of(Method::DELETE, &delete, &owner).await, 403);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_stops_and_deletes_a_customers_instance() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let ada = cloud.customer("ada@example.org").await;
    let app = &cloud.app;
    let id = cloud.running_instance(&ada, "web").await;

    let stop = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/instances/{id}/actions"),
            &cloud.admin,
            &json!({"type": "stop"}),
        )
        .await;
    assert_eq!(stop.status(), 202);
    let stop: Value = stop.json().await.expect("json");
    cloud.finished(&ada, &id, &stop).await;
    let stopped = cloud.instance(&ada, &id).await;
    assert_eq!(
        stopped["status"], "stopped",
        "the owner sees it stopped: {stopped}"
    );
    let node = stopped["node"].clone();
    assert!(node.is_null(), "owners are not shown the node");

    let again = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/instances/{id}/actions"),
            &cloud.admin,
            &json!({"type": "stop"}),
        )
        .await;
    assert_eq!(again.status(), 409, "the same state rules as for owners");

    let entries = audit_log::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("audit rows");
    let entry = entries
        .iter()
        .find(|e| e.action == "admin.instance.action_requested")
        .expect("the admin's action is audited");
    assert_eq!(
        entry.actor_id.map(|a| a.to_string()),
        Some(cloud.admin.user_id.clone())
    );
    assert_eq!(entry.object_id.as_deref(), Some(id.as_str()));

    let deletion = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/admin/instances/{id}"),
            &cloud.admin,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(deletion.status(), 202);
    let deletion: Value = deletion.json().await.expect("json");
    cloud.finished(&cloud.admin, &id, &deletion).await;
    assert_eq!(
        app.status_of(Method::GET, &format!("/api/v1/instances/{id}"), &ada)
            .await,
        404
    );
    assert!(
        audit_actions(app)
            .await
            .contains(&"admin.instance.delete_requested".to_owned())
    );
    cloud.app.stop().await;
}

/// A server with the test catalogue and one running instance of its customer.
async fn one_running_instance() -> (TestApp, common::rows::Catalogue, String) {
    let app = TestApp::spawn().await;
    let cat = catalogue(app.state.db.writer()).await;
    let web = Seeded {
        name: "web",
        owner: cat.user.clone(),
        node: cat.node.clone(),
        plan: cat.product.clone(),
        status: InstanceStatus::Running,
        ipv4: None,
    };
    let id = seed(&app, web, &cat).await;
    (app, cat, id)
}

/// The name reaches the owner's invoices: support may read an instance but
/// not rename it, and every rename is audited with who did it.
#[tokio::test]
async fn only_the_owner_and_admins_rename_an_instance_and_it_is_audited() {
    let (app, cat, id) = one_running_instance().await;
    let path = format!("/api/v1/instances/{id}");
    let (_, support) = app
        .signed_in("help@example.org", PASSWORD, UserRole::Support)
        .await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let owner = app.session_for(&cat.user.id.to_string()).await;

    let refused = app
        .send_json(Method::PATCH, &path, &support, &json!({"name": "pwned"}))
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        app.fetch_json(Method::GET, &path, &owner).await["name"],
        "web"
    );

    for (session, name) in [(&owner, "frontend"), (&admin, "frontend-2")] {
        let renamed = app
            .send_json(Method::PATCH, &path, session, &json!({"name": name}))
            .await;
        assert_eq!(renamed.status(), 200);
    }
    let renames: Vec<_> = audit_log::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("audit rows")
        .into_iter()
        .filter(|e| e.action == "instance.renamed")
        .collect();
    assert_eq!(renames.len(), 2, "{renames:?}");
    assert_eq!(renames[0].actor_id, Some(cat.user.id));
    assert_eq!(renames[0].details, json!({"from": "web", "to": "frontend"}));
    assert_eq!(
        renames[1].actor_id.map(|a| a.to_string()),
        Some(admin.user_id.clone())
    );
    assert_eq!(renames[1].object_id.as_deref(), Some(id.as_str()));
    app.stop().await;
}

/// A snapshot name the drivers refuse is refused before anything is queued:
/// the driver would only find out after stopping the VM.
#[tokio::test]
async fn snapshot_names_follow_the_drivers_rule_up_front() {
    let (app, cat, id) = one_running_instance().await;
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let snapshots = format!("/api/v1/instances/{id}/snapshots");
    for bad in ["-d", "1st", ".hidden", "with space"] {
        let refused = app
            .send_json(Method::POST, &snapshots, &owner, &json!({"name": bad}))
            .await;
        assert_eq!(refused.status(), 422, "{bad:?}");
        let problem = common::problem(refused).await;
        assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    }
    let actions = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/instances/{id}/actions"),
            &owner,
        )
        .await;
    assert_eq!(actions["items"], json!([]), "nothing was queued");
    app.stop().await;
}
