//! The Redis backend: commands over one auto-reconnecting multiplexed
//! connection, pub/sub over a dedicated connection per subscription. Every key
//! and channel carries the configured prefix.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubStream};
use redis::{Client, Script, cmd};
use secrecy::{ExposeSecret as _, SecretString};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per (re)connection before the pending commands fail; the next
/// command starts a new round.
const RECONNECT_ATTEMPTS: usize = 3;
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// INCRBY and the expiry in one atomic step. The expiry is only set when the
/// key has none (it was just created, or was stored without TTL), so later
/// increments never extend the window.
static INCR_FIXED_WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
",
    )
});

#[derive(Clone)]
pub(super) struct RedisCache {
    /// Kept to open pub/sub connections; its Debug output redacts the password
    /// but it is never printed anyway.
    client: Client,
    commands: ConnectionManager,
    prefix: Arc<str>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &"redis")
            .field(
                "address",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    pub(super) async fn connect(url: &SecretString, prefix: &str) -> anyhow::Result<Self> {
        // The parse errors name what is wrong, never echo the URL.
        let client = Client::open(url.expose_secret()).context("the Redis URL is invalid")?;
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_ATTEMPTS)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let commands = client
            .get_connection_manager_with_config(config)
            .await
            .with_context(|| format!("cannot connect to Redis at {address}"))?;
        let cache = Self {
            client,
            commands,
            prefix: prefix.into(),
        };
        cache
            .ping()
            .await
            .with_context(|| format!("Redis at {address} does not answer"))?;
        Ok(cache)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(super) async fn ping(&self) -> anyhow::Result<()> {
        cmd("PING")
            .query_async::<()>(&mut self.commands.clone())
            .await
            .context("Redis PING failed")
    }

    pub(super) async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.commands.clone())
            .await
            .context("Redis GET failed")
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> anyhow::Result<()> {
        let mut set = cmd("SET");
        set.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(millis(ttl));
        }
        set.query_async::<()>(&mut self.commands.clone())
            .await
            .context("Redis SET failed")
    }

    pub(super) async fn delete(&self, key: &str) -> anyhow::Result<bool> {
        let removed: i64 = cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut self.commands.clone())
            .await
            .context("Redis DEL failed")?;
        Ok(removed > 0)
    }

    pub(super) async fn any_exists(&self, keys: &[&str]) -> anyhow::Result<bool> {
        let mut command = cmd("EXISTS");
        for key in keys {
            command.arg(self.key(key));
        }
        let found: i64 = command
            .query_async(&mut self.commands.clone())
            .await
            .context("Redis EXISTS failed")?;
        Ok(found > 0)
    }

    pub(super) async fn incr(&self, key: &str, by: i64, ttl: Duration) -> anyhow::Result<i64> {
        INCR_FIXED_WINDOW
            .key(self.key(key))
            .arg(by)
            .arg(millis(ttl))
            .invoke_async(&mut self.commands.clone())
            .await
            .context("Redis counter increment failed")
    }

    pub(super) async fn ttl(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        // -2: no such key, -1: no expiry.
        let remaining: i64 = cmd("PTTL")
            .arg(self.key(key))
            .query_async(&mut self.commands.clone())
            .await
            .context("Redis PTTL failed")?;
        Ok(u64::try_from(remaining).ok().map(Duration::from_millis))
    }

    pub(super) async fn publish(&self, channel: &str, payload: &[u8]) -> anyhow::Result<()> {
        cmd("PUBLISH")
            .arg(self.key(channel))
            .arg(payload)
            .query_async::<()>(&mut self.commands.clone())
            .await
            .context("Redis PUBLISH failed")
    }

    pub(super) async fn subscribe(&self, channel: &str) -> anyhow::Result<RedisSubscription> {
        let channel = self.key(channel);
        let messages = open_subscription(&self.client, &channel).await?;
        Ok(RedisSubscription {
            client: self.client.clone(),
            channel,
            messages: Some(messages),
        })
    }
}

/// Milliseconds of a TTL already validated and rounded by the caller.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Opens a pub/sub connection subscribed to `channel`; messages published after
/// this returns are delivered.
async fn open_subscription(client: &Client, channel: &str) -> anyhow::Result<PubSubStream> {
    let subscribe = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok::<_, redis::RedisError>(pubsub.into_on_message())
    };
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
        .await
        .context("timed out subscribing to a Redis channel")?
        .context("cannot subscribe to a Redis channel")
}

pub(super) struct RedisSubscription {
    client: Client,
    /// The prefixed channel name.
    channel: String,
    /// `None` while reconnecting.
    messages: Option<PubSubStream>,
}

impl RedisSubscription {
    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) async fn next(&mut self) -> Vec<u8> {
        loop {
            if let Some(messages) = &mut self.messages {
                if let Some(message) = messages.next().await {
                    return message.get_payload_bytes().to_vec();
                }
                tracing::warn!(channel = %self.channel, "Redis pub/sub connection lost; resubscribing");
                self.messages = None;
            }
            self.messages = Some(self.resubscribe().await);
        }
    }

    /// Retries until Redis takes the subscription again: a subscriber waits for
    /// messages, and none can come while Redis is away.
    async fn resubscribe(&self) -> PubSubStream {
        let mut delay = MIN_RESUBSCRIBE_DELAY;
        loop {
            match open_subscription(&self.client, &self.channel).await {
                Ok(messages) => {
                    tracing::info!(channel = %self.channel, "Redis pub/sub subscription restored");
                    return messages;
                }
                Err(error) => {
                    tracing::warn!(
                        channel = %self.channel,
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis(),
                        "cannot resubscribe to Redis"
                    );
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
        }
    }
}
