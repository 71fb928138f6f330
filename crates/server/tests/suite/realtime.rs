//! Real time over Socket.IO, spoken by a real Socket.IO client
//! (rust_socketio) to the spawned server: authentication, rooms and their
//! authorization, the per-account connection limit, credential expiry, the
//! status events of a real VM in order, and events crossing replicas.
//!
//! The VM test needs the test guest in `VMCLOUD_TEST_GUEST_IMAGE`; the
//! replica test needs PostgreSQL and Redis (`VMCLOUD_TEST_DATABASE_URL`,
//! `VMCLOUD_TEST_REDIS_URL`). Without them they are skipped, loudly.

use crate::common;
use crate::live;

use std::io::Write as _;

use chrono::Utc;
use common::cloud::{Cloud, PASSWORD, SLOW, guest_image, order};
use common::{Session, TestApp, eventually, rows};
use live::{Live, connect, connect_with};
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::db::entities::node::NodeDriver;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::modules::events::{self, Audience, Event, EventType};
use vmcloud_server::startup::Role;

async fn account(app: &TestApp, email: &str, role: UserRole) -> Session {
    let id = app.create_user(email, PASSWORD, role).await;
    app.session_for(&id).await
}

/// A personal API token of `session`'s account, expiring at `expires_at`.
async fn api_token(
    app: &TestApp,
    session: &Session,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> String {
    let response = app
        .send_json(
            Method::POST,
            "/api/v1/api-tokens",
            session,
            &json!({ "name": "live", "scope": "read", "expires_at": expires_at }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    body["token"].as_str().expect("token").to_owned()
}

fn refused(outcome: Result<Live, String>) -> String {
    outcome.err().expect("the connection is refused")
}

#[tokio::test]
async fn connections_need_a_valid_access_or_api_token() {
    let app = TestApp::spawn().await;
    let ann = account(&app, "ann@example.com", UserRole::Customer).await;

    let message = refused(connect(&app.url("/"), None).await);
    assert!(message.contains("auth: {token}"), "{message}");
    let message = refused(connect(&app.url("/"), Some(json!({ "token": "forged" }))).await);
    assert!(message.contains("invalid or expired"), "{message}");
    let message = refused(connect(&app.url("/"), Some(json!({ "token": "vmc_forged" }))).await);
    assert!(message.contains("invalid, expired or revoked"), "{message}");

    connect_with(&app.url("/"), &ann.access_token).await;
    connect_with(&app.url("/"), &api_token(&app, &ann, None).await).await;
    app.stop().await;
}

#[tokio::test]
async fn instance_rooms_are_joined_after_the_rest_apis_check() {
    let app = TestApp::spawn().await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let instance = rows::new_instance(app.state.db.writer(), &cat).await;
    let id = instance.id.to_string();
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let eve = account(&app, "eve@example.com", UserRole::Customer).await;
    let sam = account(&app, "sam@example.com", UserRole::Support).await;

    let ack = connect_with(&app.url("/"), &owner.access_token)
        .await
        .subscribe(&id)
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["instance_id"], id.as_str());
    let ack = connect_with(&app.url("/"), &sam.access_token)
        .await
        .subscribe(&id)
        .await;
    assert_eq!(ack["ok"], true, "support may watch any instance: {ack}");

    // Another customer's instance is refused as the REST API refuses it.
    let eve_live = connect_with(&app.url("/"), &eve.access_token).await;
    let ack = eve_live.subscribe(&id).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["status"], 404, "{ack}");
    let path = format!("/api/v1/instances/{id}");
    assert_eq!(app.status_of(Method::GET, &path, &eve).await, 404);
    let ack = eve_live.ask("subscribe", json!({ "instance": id })).await;
    assert_eq!(ack["error"]["status"], 422, "{ack}");
    app.stop().await;
}

#[tokio::test]
async fn events_reach_their_rooms_once_and_nobody_else() {
    let app = TestApp::spawn().await;
    let cat = rows::catalogue(app.state.db.writer()).await;
    let instance = rows::new_instance(app.state.db.writer(), &cat).await;
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let eve = account(&app, "eve@example.com", UserRole::Customer).await;
    let sam = account(&app, "sam@example.com", UserRole::Support).await;
    let mut owner_live = connect_with(&app.url("/"), &owner.access_token).await;
    let mut eve_live = connect_with(&app.url("/"), &eve.access_token).await;
    let mut sam_live = connect_with(&app.url("/"), &sam.access_token).await;
    assert_eq!(
        owner_live.subscribe(&instance.id.to_string()).await["ok"],
        true
    );
    let publish = |kind, audience: Vec<Audience>, fields: Value| {
        let cache = app.state.cache.clone();
        async move { events::publish(&cache, audience, Event::new(kind, instance.id, fields)).await }
    };

    // The owner is in both rooms and hears the event once; support, in
    // neither, and the other customer do not hear it. Events of one channel
    // keep their order, so the marker that follows shows what came before.
    let both = vec![Audience::User(cat.user.id), Audience::Instance(instance.id)];
    publish(EventType::InstanceStatus, both, json!({ "to": "stopped" })).await;
    let everyone = vec![
        Audience::User(cat.user.id),
        Audience::User(user_id(&eve)),
        Audience::Staff,
    ];
    publish(
        EventType::InstanceStatus,
        everyone.clone(),
        json!({ "marker": 1 }),
    )
    .await;
    let first = owner_live.next("instance.status").await;
    assert_eq!(first["type"], "instance.status");
    assert_eq!(first["id"], instance.id.to_string());
    assert_eq!(first["to"], "stopped");
    assert!(first["timestamp"].is_string(), "{first}");
    assert_eq!(owner_live.next("instance.status").await["marker"], 1);
    assert_eq!(eve_live.next("instance.status").await["marker"], 1);
    assert_eq!(sam_live.next("instance.status").await["marker"], 1);

    // Node events go to staff only.
    publish(
        EventType::NodeStatus,
        vec![Audience::Staff],
        json!({ "to": "offline" }),
    )
    .await;
    publish(EventType::NodeStatus, everyone, json!({ "marker": 2 })).await;
    assert_eq!(sam_live.next("node.status").await["to"], "offline");
    assert_eq!(sam_live.next("node.status").await["marker"], 2);
    assert_eq!(owner_live.next("node.status").await["marker"], 2);
    assert_eq!(eve_live.next("node.status").await["marker"], 2);
    app.stop().await;
}

fn user_id(session: &Session) -> vmcloud_server::ids::UserId {
    session.user_id.parse().expect("uuid")
}

#[tokio::test]
async fn each_account_holds_at_most_the_configured_connections() {
    let app = TestApp::spawn().await;
    let admin = account(&app, "root@example.org", UserRole::Admin).await;
    let ann = account(&app, "ann@example.com", UserRole::Customer).await;
    let response = app
        .send_json(
            Method::PUT,
            "/api/v1/admin/settings/realtime",
            &admin,
            &json!({ "max_connections_per_user": 1 }),
        )
        .await;
    assert_eq!(response.status(), 200);

    let first = connect_with(&app.url("/"), &ann.access_token).await;
    let auth = json!({ "token": ann.access_token });
    let message = refused(connect(&app.url("/"), Some(auth.clone())).await);
    assert!(message.contains("already holds 1"), "{message}");
    connect_with(&app.url("/"), &admin.access_token).await;

    first.client.disconnect().await.expect("disconnects");
    eventually("the connection to be given back", || async {
        connect(&app.url("/"), Some(auth.clone()))
            .await
            .ok()
            .map(drop)
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_expired_credential_ends_the_connection_unless_renewed() {
    let app = TestApp::spawn().await;
    let ann = account(&app, "ann@example.com", UserRole::Customer).await;
    let eve = account(&app, "eve@example.com", UserRole::Customer).await;
    let soon = Some(Utc::now() + chrono::TimeDelta::seconds(2));
    let mut left = connect_with(&app.url("/"), &api_token(&app, &ann, soon).await).await;
    let mut renewed = connect_with(&app.url("/"), &api_token(&app, &ann, soon).await).await;

    let ack = renewed
        .ask("authenticate", json!({ "token": eve.access_token }))
        .await;
    assert_eq!(
        ack["error"]["status"], 403,
        "another account's token: {ack}"
    );
    let ack = renewed
        .ask("authenticate", json!({ "token": ann.access_token }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["expires_at"].is_string(), "{ack}");

    let notice = left.next("session.expired").await;
    assert_eq!(notice["id"], ann.user_id.as_str());
    assert!(notice["reason"].is_string(), "{notice}");
    left.next("close").await;

    // Both tokens expired in the same check; the renewed connection stays.
    let ann_id = user_id(&ann);
    events::publish(
        &app.state.cache,
        vec![Audience::User(ann_id)],
        Event::new(EventType::Notification, ann_id, json!({ "text": "hello" })),
    )
    .await;
    let (name, notification) = renewed.any().await;
    assert_eq!(name, "notification", "{notification}");
    assert_eq!(notification["text"], "hello");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_credential_ends_its_connections_at_once() {
    let app = TestApp::spawn().await;
    let ann = account(&app, "ann@example.com", UserRole::Customer).await;
    let other_session = app.session_for(&ann.user_id).await;
    let token = api_token(&app, &ann, None).await;
    let mut signed_out = connect_with(&app.url("/"), &ann.access_token).await;
    let mut by_token = connect_with(&app.url("/"), &token).await;
    let mut kept = connect_with(&app.url("/"), &other_session.access_token).await;

    // Ann signs out of one session: its connection is told why and closed.
    let logout = app
        .authed(Method::POST, "/api/v1/auth/logout", &ann)
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 204);
    let notice = signed_out.next("session.revoked").await;
    assert_eq!(notice["id"], ann.user_id.as_str());
    assert!(notice["reason"].is_string(), "{notice}");
    signed_out.next("close").await;

    // Her API token is deleted: the connection it opened is closed.
    let tokens = app
        .fetch_json(Method::GET, "/api/v1/api-tokens", &other_session)
        .await;
    let id = tokens["items"][0]["id"].as_str().expect("token id");
    let deleted = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/api-tokens/{id}"),
            &other_session,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 200);
    by_token.next("session.revoked").await;
    by_token.next("close").await;

    // The connection of her other session stays and hears what follows.
    let ann_id = user_id(&ann);
    events::publish(
        &app.state.cache,
        vec![Audience::User(ann_id)],
        Event::new(
            EventType::Notification,
            ann_id,
            json!({ "text": "still here" }),
        ),
    )
    .await;
    let (name, notification) = kept.any().await;
    assert_eq!(name, "notification", "{notification}");
    assert_eq!(notification["text"], "still here");
    app.stop().await;
}

/// The `(from, to)` of the status events up to the one reaching `to`.
async fn transitions_until(live: &mut Live, to: &str) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    loop {
        let event = live.next_within("instance.status", SLOW).await;
        seen.push((event["from"].clone(), event["to"].clone()));
        if event["to"] == to {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_customer_follows_their_vm_live_in_order() {
    let Some(image) = guest_image() else { return };
    let cloud = Cloud::start(|config| config.metrics_interval_secs = 1).await;
    cloud.image("tiny", &image).await;
    cloud.plan("small", 1, 256, 1).await;
    let ann = cloud.customer("ann@example.com").await;
    let mut live = connect_with(&cloud.app.url("/"), &ann.access_token).await;

    // The owner's room hears the whole provisioning, each event starting
    // where the one before ended.
    let created = order(&cloud.app, &ann, "live-1").await;
    let id = created["id"].as_str().expect("id").to_owned();
    let provisioning = transitions_until(&mut live, "running").await;
    assert_eq!(provisioning[0], (Value::Null, json!("provisioning")));
    for pair in provisioning.windows(2) {
        assert_eq!(pair[1].0, pair[0].1, "{provisioning:?}");
    }

    // Subscribed, it gets live samples, then a stop's progress and states,
    // interleaved in the order they happened.
    assert_eq!(live.subscribe(&id).await["ok"], true);
    let sample = live.next_within("instance.metrics", SLOW).await;
    assert_eq!(sample["id"], id.as_str());
    assert!(sample["cpu_percent"].is_number(), "{sample}");
    let stop = cloud.act(&ann, &id, json!({ "type": "stop" })).await;
    let mut story = Vec::new();
    while story
        .last()
        .is_none_or(|last: &String| !last.starts_with("action succeeded"))
    {
        let (name, event) = live.any().await;
        match name.as_str() {
            "instance.status" => story.push(format!("status {} -> {}", event["from"], event["to"])),
            "instance.action" if event["action"]["id"] == stop["id"] => story.push(format!(
                "action {} {}/{}",
                event["action"]["status"].as_str().unwrap_or_default(),
                event["action"]["step"],
                event["action"]["total_steps"]
            )),
            _ => {}
        }
    }
    assert_eq!(
        story,
        [
            "action running 0/1",
            "status \"running\" -> \"stopping\"",
            "action running 1/1",
            "status \"stopping\" -> \"stopped\"",
            "action succeeded 1/1",
        ]
    );
    cloud.delete_instance(&ann, &id).await;
    cloud.app.stop().await;
}

#[tokio::test]
async fn events_cross_replicas_and_the_worker() {
    if common::test_redis().is_none() || std::env::var("VMCLOUD_TEST_DATABASE_URL").is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED replica test: it needs VMCLOUD_TEST_DATABASE_URL and \
             VMCLOUD_TEST_REDIS_URL, which replicas share ***\n"
        );
        return;
    }
    // Replicas A and B reconcile only as they start; the worker every
    // second, so only it marks a node that stops answering.
    let a = TestApp::spawn().await;
    let b = a.spawn_replica(Role::Serve, |_| {}).await;
    let worker = a
        .spawn_replica(Role::Worker, |config| config.reconcile_interval_secs = 1)
        .await;
    let sam = account(&a, "sam@example.com", UserRole::Support).await;
    let mut staff = connect_with(&a.url("/"), &sam.access_token).await;

    let conn = a.state.db.writer();
    let cat = rows::catalogue(conn).await;
    let unreachable = rows::new_node(
        conn,
        &cat.region,
        "gone",
        NodeDriver::Libvirt,
        "qemu+tcp://127.0.0.1:1/system",
    )
    .await;
    let instance = rows::new_instance(
        conn,
        &rows::Catalogue {
            node: unreachable.clone(),
            ..cat
        },
    )
    .await;

    // The worker finds the node gone; staff on replica A hear of it.
    let offline = loop {
        let event = staff.next("node.status").await;
        if event["id"] == unreachable.id.to_string() {
            break event;
        }
    };
    assert_eq!(
        (&offline["from"], &offline["to"]),
        (&json!("online"), &json!("offline"))
    );

    // A deletion asked of replica B, run by a worker, is heard on A.
    let owner = a.session_for(&instance.user_id.to_string()).await;
    let mut live = connect_with(&a.url("/"), &owner.access_token).await;
    assert_eq!(live.subscribe(&instance.id.to_string()).await["ok"], true);
    let path = format!("/api/v1/instances/{}", instance.id);
    let response = b
        .authed(Method::DELETE, &path, &owner)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let status = live.next("instance.status").await;
    assert_eq!(
        (&status["from"], &status["to"]),
        (&json!("running"), &json!("deleting"))
    );
    let action = live.next("instance.action").await;
    assert_eq!(action["action"]["type"], "delete", "{action}");

    worker.stop().await;
    b.stop().await;
    a.stop().await;
}
