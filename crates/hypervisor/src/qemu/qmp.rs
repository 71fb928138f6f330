//! A small client for the QEMU Machine Protocol: newline-delimited JSON over a
//! unix socket. Replies are matched to commands by `id`, so commands may be
//! issued concurrently; asynchronous events go to a broadcast channel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

const EVENT_BUFFER: usize = 64;
/// How often a connect to a monitor with a full backlog is tried again.
const CONNECT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU closed the monitor connection")]
    Disconnected,
}

/// An asynchronous QMP event such as `SHUTDOWN`, `POWERDOWN`, `STOP`,
/// `RESUME` or `RESET`.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    /// The event's `data` member, `Null` when it has none.
    pub data: Value,
}

type Reply = Result<Value, QmpError>;

#[derive(Debug, Default)]
struct Waiters {
    by_id: HashMap<u64, (String, oneshot::Sender<Reply>)>,
    /// Set once the reader has stopped: nothing will answer any more.
    closed: bool,
}

#[derive(Debug)]
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    waiters: Arc<Mutex<Waiters>>,
    /// Kept only to hand out receivers; it closes when the connection ends.
    events: broadcast::Receiver<QmpEvent>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities-negotiation mode.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                // The monitor's backlog is full: QEMU is busy or frozen, and
                // the caller's time bound decides how long to wait.
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        };
        let (read_half, write_half) = stream.into_split();
        let mut lines = BufReader::new(read_half);
        let greeting = read_message(&mut lines)
            .await?
            .ok_or(QmpError::Disconnected)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }

        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let (event_sender, events) = broadcast::channel(EVENT_BUFFER);
        let reader = tokio::spawn(read_loop(lines, Arc::clone(&waiters), event_sender));
        let client = Self {
            writer: tokio::sync::Mutex::new(write_half),
            waiters,
            events,
            next_id: AtomicU64::new(1),
            reader,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, reply) = oneshot::channel();
        {
            let mut waiters = self.lock_waiters();
            if waiters.closed {
                return Err(QmpError::Disconnected);
            }
            waiters.by_id.insert(id, (command.to_owned(), sender));
        }
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        let written = self.writer.lock().await.write_all(line.as_bytes()).await;
        if let Err(error) = written {
            self.lock_waiters().by_id.remove(&id);
            return Err(error.into());
        }
        reply.await.unwrap_or(Err(QmpError::Disconnected))
    }

    /// Events from now on. The receiver reports `Closed` once QEMU has closed
    /// the connection (for instance because it exited).
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.resubscribe()
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_message(lines: &mut BufReader<OwnedReadHalf>) -> Result<Option<Value>, QmpError> {
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            return serde_json::from_str(&line)
                .map(Some)
                .map_err(|error| QmpError::Protocol(format!("{error} in {:?}", line.trim_end())));
        }
    }
}

async fn read_loop(
    mut lines: BufReader<OwnedReadHalf>,
    waiters: Arc<Mutex<Waiters>>,
    events: broadcast::Sender<QmpEvent>,
) {
    loop {
        match read_message(&mut lines).await {
            Ok(Some(message)) => dispatch(message, &waiters, &events),
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "QMP connection unusable");
                break;
            }
        }
    }
    let mut waiters = waiters.lock().unwrap_or_else(PoisonError::into_inner);
    waiters.closed = true;
    for (_, (_, sender)) in waiters.by_id.drain() {
        let _ = sender.send(Err(QmpError::Disconnected));
    }
}

fn dispatch(mut message: Value, waiters: &Mutex<Waiters>, events: &broadcast::Sender<QmpEvent>) {
    if let Some(name) = message.get("event").and_then(Value::as_str) {
        let event = QmpEvent {
            name: name.to_owned(),
            data: message.get_mut("data").map(Value::take).unwrap_or_default(),
        };
        // No subscriber is fine: events are informative.
        let _ = events.send(event);
        return;
    }
    let Some(id) = message.get("id").and_then(Value::as_u64) else {
        tracing::warn!(%message, "QMP message without id ignored");
        return;
    };
    let Some((command, sender)) = waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .by_id
        .remove(&id)
    else {
        tracing::warn!(id, "QMP reply for no pending command");
        return;
    };
    let reply = if let Some(value) = message.get_mut("return") {
        Ok(value.take())
    } else if let Some(error) = message.get("error") {
        let text = |key| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Err(QmpError::Command {
            command,
            class: text("class"),
            desc: text("desc"),
        })
    } else {
        Err(QmpError::Protocol(format!(
            "reply without return or error: {message}"
        )))
    };
    let _ = sender.send(reply);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncBufReadExt;
    use tokio::net::UnixListener;

    use super::*;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}"#;

    /// A scripted QMP server: `answer` maps each received command to the
    /// lines to send back (replies and events).
    fn fake_server(
        answer: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        JoinHandle<Vec<Value>>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read_half, mut write_half) = stream.into_split();
            write_half
                .write_all(format!("{GREETING}\r\n").as_bytes())
                .await
                .expect("write all");
            let mut lines = BufReader::new(read_half).lines();
            let mut received = Vec::new();
            while let Some(line) = lines.next_line().await.expect("next line") {
                let command: Value = serde_json::from_str(&line).expect("from str");
                for reply in answer(&command) {
                    write_half
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .expect("write all");
                }
                received.push(command);
            }
            received
        });
        (dir, path, server)
    }

    fn reply(command: &Value, value: &Value) -> String {
        json!({ "return": value, "id": command["id"] }).to_string()
    }

    #[tokio::test]
    async fn negotiates_capabilities_then_runs_commands() {
        let (_dir, path, server) = fake_server(|command| {
            let value = match command["execute"].as_str().expect("as str") {
                "query-status" => json!({ "status": "running", "running": true }),
                _ => json!({}),
            };
            vec![reply(command, &value)]
        });

        let client = QmpClient::connect(&path).await.expect("connect");
        let status = client.execute("query-status", None).await.expect("execute");
        assert_eq!(status["status"], "running");
        client
            .execute(
                "block_resize",
                Some(json!({ "device": "disk0", "size": 1 })),
            )
            .await
            .expect("execute");
        drop(client);

        let received = server.await.expect("server");
        let commands: Vec<_> = received
            .iter()
            .map(|c| c["execute"].as_str().expect("as str"))
            .collect();
        assert_eq!(
            commands,
            ["qmp_capabilities", "query-status", "block_resize"]
        );
        assert_eq!(received[2]["arguments"]["device"], "disk0");
        assert!(received[0].get("arguments").is_none());
    }

    #[tokio::test]
    async fn matches_replies_to_commands_by_id_even_out_of_order() {
        // The server holds the first query back and answers it after the second.
        let (_dir, path, _server) = fake_server({
            let held = Mutex::new(None::<Value>);
            move |command| match command["execute"].as_str().expect("as str") {
                "first" => {
                    *held.lock().expect("lock") = Some(command.clone());
                    vec![]
                }
                "second" => {
                    let first = held
                        .lock()
                        .expect("lock")
                        .take()
                        .expect("first command held");
                    vec![reply(command, &json!(2)), reply(&first, &json!(1))]
                }
                _ => vec![reply(command, &json!({}))],
            }
        });

        let client = QmpClient::connect(&path).await.expect("connect");
        let first = client.execute("first", None);
        let second = async {
            // Make sure "first" is on the wire before "second".
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.execute("second", None).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.expect("first"), json!(1));
        assert_eq!(second.expect("second"), json!(2));
    }

    #[tokio::test]
    async fn command_errors_carry_class_and_description() {
        let (_dir, path, _server) = fake_server(|command| {
            if command["execute"] == "snapshot-load" {
                let error = json!({ "class": "GenericError", "desc": "no such snapshot" });
                vec![json!({ "error": error, "id": command["id"] }).to_string()]
            } else {
                vec![reply(command, &json!({}))]
            }
        });

        let client = QmpClient::connect(&path).await.expect("connect");
        let error = client
            .execute("snapshot-load", None)
            .await
            .expect_err("execute should fail");
        assert_eq!(
            error.to_string(),
            "snapshot-load failed: GenericError: no such snapshot"
        );
    }

    #[tokio::test]
    async fn delivers_events_and_closes_the_channel_when_qemu_goes_away() {
        let (_dir, path, _server) = fake_server(|command| {
            let mut lines = vec![reply(command, &json!({}))];
            if command["execute"] == "system_powerdown" {
                let event = json!({ "event": "POWERDOWN", "timestamp": { "seconds": 1, "microseconds": 2 } });
                lines.insert(0, event.to_string());
            }
            if command["execute"] == "quit" {
                let data = json!({ "guest": false, "reason": "host-qmp-quit" });
                lines.push(json!({ "event": "SHUTDOWN", "data": data }).to_string());
            }
            lines
        });

        let client = QmpClient::connect(&path).await.expect("connect");
        let mut events = client.subscribe();
        client
            .execute("system_powerdown", None)
            .await
            .expect("execute");
        client.execute("quit", None).await.expect("execute");

        let powerdown = events.recv().await.expect("recv");
        assert_eq!(
            powerdown,
            QmpEvent {
                name: "POWERDOWN".into(),
                data: Value::Null
            }
        );
        let shutdown = events.recv().await.expect("recv");
        assert_eq!(shutdown.name, "SHUTDOWN");
        assert_eq!(shutdown.data["reason"], "host-qmp-quit");
    }

    #[tokio::test]
    async fn pending_and_later_commands_fail_when_the_connection_drops() {
        let (_dir, path, server) = fake_server(|command| {
            if command["execute"] == "quit" {
                // Reply nothing: the test below drops the server's socket.
                vec![]
            } else {
                vec![reply(command, &json!({}))]
            }
        });
        let client = QmpClient::connect(&path).await.expect("connect");
        let mut events = client.subscribe();
        // The fake server only ends when we close our side; simulate QEMU
        // dying by aborting its task instead.
        server.abort();
        let error = client
            .execute("quit", None)
            .await
            .expect_err("execute should fail");
        assert!(
            matches!(error, QmpError::Disconnected | QmpError::Io(_)),
            "{error:?}"
        );
        assert!(matches!(
            events.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        let error = client
            .execute("query-status", None)
            .await
            .expect_err("execute should fail");
        assert!(
            matches!(error, QmpError::Disconnected | QmpError::Io(_)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn rejects_a_server_that_does_not_greet_with_qmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream
                .write_all(b"{\"hello\": 1}\n")
                .await
                .expect("write all");
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let error = QmpClient::connect(&path)
            .await
            .expect_err("connect should fail");
        assert!(matches!(error, QmpError::Protocol(_)), "{error:?}");
    }
}
