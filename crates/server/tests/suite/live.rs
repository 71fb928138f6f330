//! A real Socket.IO client (rust_socketio) on a test server's `/socket.io`,
//! with what it receives queued for the test to read in order.

use std::time::Duration;

use futures::FutureExt as _;
use rust_socketio::Payload;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long a test waits for an event that needs no VM.
pub const QUICK: Duration = Duration::from_secs(10);

/// A connected client.
pub struct Live {
    pub client: Client,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

/// The first value of a payload (events and acks carry one).
fn first_value(payload: Payload) -> Value {
    match payload {
        Payload::Text(values) => values.into_iter().next().unwrap_or(Value::Null),
        #[allow(deprecated)]
        Payload::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        Payload::Binary(bytes) => Value::String(format!("{} bytes", bytes.len())),
    }
}

/// Opens a connection to the server at `url` with `auth` as the handshake's
/// payload (none when `None`); `Err` carries the `connect_error` message.
pub async fn connect(url: &str, auth: Option<Value>) -> Result<Live, String> {
    let (sender, mut events) = mpsc::unbounded_channel();
    let mut builder = ClientBuilder::new(url).reconnect(false);
    if let Some(auth) = auth {
        builder = builder.auth(auth);
    }
    for name in ["open", "error", "close"] {
        let sender = sender.clone();
        builder = builder.on(name, move |payload, _| {
            let _ = sender.send((name.to_owned(), first_value(payload)));
            async {}.boxed()
        });
    }
    let client = builder
        .on_any(move |event, payload, _| {
            let _ = sender.send((String::from(event), first_value(payload)));
            async {}.boxed()
        })
        .connect()
        .await
        .map_err(|err| format!("transport: {err}"))?;
    let (name, value) = tokio::time::timeout(QUICK, events.recv())
        .await
        .expect("the server answers the connect")
        .expect("open");
    match name.as_str() {
        "open" => Ok(Live { client, events }),
        _ => Err(value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)),
    }
}

/// Connects with `token`, which must be accepted.
pub async fn connect_with(url: &str, token: &str) -> Live {
    connect(url, Some(json!({ "token": token })))
        .await
        .expect("the token is accepted")
}

impl Live {
    /// The next event named `name` within `limit`, skipping others.
    pub async fn next_within(&mut self, name: &str, limit: Duration) -> Value {
        let found = tokio::time::timeout(limit, async {
            loop {
                let (event, value) = self.events.recv().await.expect("connection open");
                if event == name {
                    return value;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no `{name}` event within {limit:?}"))
    }

    pub async fn next(&mut self, name: &str) -> Value {
        self.next_within(name, QUICK).await
    }

    /// The next event of any name.
    pub async fn any(&mut self) -> (String, Value) {
        tokio::time::timeout(QUICK, self.events.recv())
            .await
            .expect("an event arrives")
            .expect("connection open")
    }

    /// Emits `event` with `data` and returns the server's ack.
    pub async fn ask(&self, event: &str, data: Value) -> Value {
        let (sender, mut answer) = mpsc::unbounded_channel();
        self.client
            .emit_with_ack(event, data, QUICK, move |payload, _| {
                // An ack's arguments come as one array.
                let answer = match first_value(payload) {
                    Value::Array(values) => values.into_iter().next().unwrap_or(Value::Null),
                    other => other,
                };
                let _ = sender.send(answer);
                async {}.boxed()
            })
            .await
            .expect("emitted");
        tokio::time::timeout(QUICK, answer.recv())
            .await
            .expect("the server acks")
            .expect("ack")
    }

    /// Subscribes to an instance's room; returns the ack.
    pub async fn subscribe(&self, instance_id: &str) -> Value {
        self.ask("subscribe", json!({ "instance_id": instance_id }))
            .await
    }
}
