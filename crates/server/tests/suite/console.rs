//! Instance consoles on the real local QEMU node: the owner gets a ticket,
//! watches the guest boot on the serial console WebSocket (two viewers share
//! one connection to the VM) and reaches the VNC server through the display
//! WebSocket. Tickets work once, for their instance only; other customers and
//! support staff get none.
//!
//! Needs the test guest in `VMCLOUD_TEST_GUEST_IMAGE`, like instances.rs;
//! skipped loudly without it.

use crate::common;

use std::time::Duration;

use common::cloud::{Cloud, PASSWORD, SLOW, guest_image};
use common::{Session, audit_actions};
use futures::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use vmcloud_server::db::entities::user::UserRole;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ticket(cloud: &Cloud, session: &Session, id: &str) -> Value {
    let response = cloud
        .app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{id}/console"),
            session,
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn ws_url(cloud: &Cloud, path: &Value) -> String {
    format!(
        "ws://{}{}",
        cloud.app.address,
        path.as_str().expect("a URL path")
    )
}

/// The HTTP status a WebSocket handshake was refused with.
async fn refusal(url: &str) -> u16 {
    match connect_async(url).await {
        Err(WsError::Http(response)) => {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            response.status().as_u16()
        }
        Err(other) => panic!("{url}: {other}"),
        Ok(_) => panic!("{url}: the handshake succeeded"),
    }
}

/// Reads the console until `text` has appeared `times` times in all.
async fn read_until(socket: &mut Socket, seen: &mut String, text: &str, times: usize) {
    let reading = async {
        while seen.matches(text).count() < times {
            match socket.next().await.expect("the console stays open") {
                Ok(Message::Binary(bytes)) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("unexpected from the console: {other:?}"),
            }
        }
    };
    tokio::time::timeout(SLOW, reading)
        .await
        .unwrap_or_else(|_| panic!("{text:?} did not show {times} times; got:\n{seen}"));
}

#[tokio::test]
async fn the_owner_watches_the_guest_boot_and_reaches_its_display() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|_| {}).await;
    let app = &cloud.app;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let customer = cloud.customer("ada@example.org").await;
    let id = cloud.running_instance(&customer, "ada-console").await;
    let console = format!("/api/v1/instances/{id}/console");

    // Another customer does not see the instance; support staff see it but
    // may not type into it; admins may.
    let other = cloud.customer("eve@example.org").await;
    assert_eq!(app.status_of(Method::POST, &console, &other).await, 404);
    let support_id = app
        .create_user("help@example.org", PASSWORD, UserRole::Support)
        .await;
    let support = app.session_for(&support_id).await;
    assert_eq!(app.status_of(Method::POST, &console, &support).await, 403);
    ticket(&cloud, &cloud.admin, &id).await;

    let granted = ticket(&cloud, &customer, &id).await;
    assert!(granted["expires_at"].is_string(), "{granted}");
    assert!(
        audit_actions(app)
            .await
            .iter()
            .any(|action| action == "instance.console_ticket_issued")
    );

    // A ticket presented for another instance is refused and stays usable.
    let elsewhere = format!(
        "ws://{}/api/v1/instances/{}/console/serial?ticket={}",
        app.address,
        uuid::Uuid::now_v7(),
        granted["ticket"].as_str().expect("ticket")
    );
    assert_eq!(refusal(&elsewhere).await, 401);

    // The first viewer gets the boot output so far from the log.
    let ready = "VMCLOUD-GUEST-READY hostname=ada-console";
    let serial = ws_url(&cloud, &granted["serial_url"]);
    let (mut first, _) = connect_async(serial.as_str()).await.expect("serial");
    let mut first_seen = String::new();
    read_until(&mut first, &mut first_seen, ready, 1).await;
    assert!(first_seen.contains("vmcloud-guest: ["), "{first_seen}");
    assert_eq!(refusal(&serial).await, 401, "a ticket works once");
    assert_eq!(
        refusal(&format!(
            "ws://{}{console}/serial?ticket=forged",
            app.address
        ))
        .await,
        401
    );

    // A second viewer shares the connection: both see the next boot live.
    let again = ticket(&cloud, &customer, &id).await;
    let (mut second, _) = connect_async(ws_url(&cloud, &again["serial_url"]))
        .await
        .expect("serial");
    let mut second_seen = String::new();
    read_until(&mut second, &mut second_seen, ready, 1).await;
    let reboot = app
        .send_json(
            Method::POST,
            &format!("/api/v1/instances/{id}/actions"),
            &customer,
            &json!({"type": "reboot"}),
        )
        .await;
    assert_eq!(reboot.status(), 202);
    let reboot: Value = reboot.json().await.expect("json");
    let first_ready = first_seen.matches(ready).count();
    let second_ready = second_seen.matches(ready).count();
    tokio::join!(
        read_until(&mut first, &mut first_seen, ready, first_ready + 1),
        read_until(&mut second, &mut second_seen, ready, second_ready + 1),
    );
    cloud.finished(&customer, &id, &reboot).await;
    drop((first, second));

    // Redeemed twice at once, a ticket still opens one connection.
    let raced = ticket(&cloud, &customer, &id).await;
    let url = ws_url(&cloud, &raced["vnc_url"]);
    let (one, other) = tokio::join!(connect_async(url.as_str()), connect_async(url.as_str()));
    let refused = |outcome: &Result<_, WsError>| matches!(outcome, Err(WsError::Http(response)) if response.status() == 401);
    assert!(
        one.is_ok() && refused(&other) || other.is_ok() && refused(&one),
        "{one:?} / {other:?}"
    );

    // The display: plain RFB, its greeting in the first binary frame, with
    // the `binary` subprotocol noVNC asks for.
    let display = ticket(&cloud, &customer, &id).await;
    let mut request = ws_url(&cloud, &display["vnc_url"])
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
    let (mut vnc, response) = connect_async(request).await.expect("vnc");
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    let greeting = tokio::time::timeout(Duration::from_secs(30), vnc.next())
        .await
        .expect("a greeting in time")
        .expect("a frame")
        .expect("a message");
    assert!(
        greeting.into_data().starts_with(b"RFB 003.00"),
        "not an RFB greeting"
    );
    drop(vnc);

    cloud.delete_instance(&customer, &id).await;
    cloud.app.stop().await;
}
