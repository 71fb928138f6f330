//! One suite for both cache backends: every test runs on the in-process cache
//! and, when `VMCLOUD_TEST_REDIS_URL` is set, on Redis under a prefix of its own.

use crate::common;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use vmcloud_server::cache::{Cache, SUBSCRIPTION_BUFFER};

/// Bounds every wait on the cache so a broken backend fails the test instead
/// of hanging it; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(10);

async fn patiently<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
}

async fn connect_redis(url: &SecretString, prefix: &str) -> Cache {
    Cache::connect(Some(url), prefix)
        .await
        .expect("VMCLOUD_TEST_REDIS_URL must be reachable")
}

/// One cache per backend under test, each in a key space of its own.
async fn backends() -> Vec<Cache> {
    let mut caches = vec![Cache::in_memory()];
    if let Some((url, prefix)) = common::test_redis() {
        caches.push(connect_redis(&url, &prefix).await);
    }
    caches
}

/// Per backend, two handles on the same storage: clones in-process, two
/// connections with the same prefix on Redis (as two replicas would have).
async fn shared_pairs() -> Vec<(Cache, Cache)> {
    let memory = Cache::in_memory();
    let mut pairs = vec![(memory.clone(), memory)];
    if let Some((url, prefix)) = common::test_redis() {
        pairs.push((
            connect_redis(&url, &prefix).await,
            connect_redis(&url, &prefix).await,
        ));
    }
    pairs
}

/// Per backend, two caches that must not see each other: two in-process
/// caches, or two Redis prefixes on the same server.
async fn isolated_pairs() -> Vec<(Cache, Cache)> {
    let mut pairs = vec![(Cache::in_memory(), Cache::in_memory())];
    if let (Some((url, first)), Some((_, second))) = (common::test_redis(), common::test_redis()) {
        pairs.push((
            connect_redis(&url, &first).await,
            connect_redis(&url, &second).await,
        ));
    }
    pairs
}

#[tokio::test]
async fn connect_picks_the_backend_and_it_answers() {
    let memory = Cache::connect(None, "vmcloud:").await.expect("in-process");
    assert_eq!(memory.backend_name(), "memory");
    memory.ping().await.expect("in-process ping");
    assert_eq!(Cache::in_memory().backend_name(), "memory");

    if let Some((url, prefix)) = common::test_redis() {
        let redis = connect_redis(&url, &prefix).await;
        assert_eq!(redis.backend_name(), "redis");
        redis.ping().await.expect("Redis ping");
        let debug = format!("{redis:?}");
        assert!(debug.contains(&prefix), "{debug}");
    }
}

#[tokio::test]
async fn connect_errors_never_show_the_password() {
    for url in [
        "redis://:secret@127.0.0.1:1",
        "redis://user:secret@127.0.0.1:notaport",
        "rediss://:secret@127.0.0.1:1",
    ] {
        let error = Cache::connect(Some(&SecretString::from(url)), "vmcloud:")
            .await
            .expect_err("nothing to connect to");
        for text in [format!("{error:#}"), format!("{error:?}")] {
            assert!(!text.contains("secret"), "{url}: {text}");
        }
    }

    let error = Cache::connect(
        Some(&SecretString::from("redis://:secret@127.0.0.1:1")),
        "vmcloud:",
    )
    .await
    .expect_err("nothing listens on port 1");
    let text = format!("{error:#}");
    assert!(
        text.contains("cannot connect to Redis at 127.0.0.1:1"),
        "{text}"
    );
}

#[tokio::test]
async fn set_get_delete() {
    for cache in backends().await {
        let backend = cache.backend_name();
        assert_eq!(cache.get("k").await.expect("get"), None, "{backend}");
        assert!(!cache.delete("k").await.expect("delete"), "{backend}");

        cache.set("k", b"one", None).await.expect("set");
        assert_eq!(
            cache.get("k").await.expect("get").as_deref(),
            Some(&b"one"[..]),
            "{backend}"
        );
        cache.set("k", b"two", None).await.expect("overwrite");
        assert_eq!(
            cache.get("k").await.expect("get").as_deref(),
            Some(&b"two"[..]),
            "{backend}"
        );

        let binary = [0_u8, 0xff, 0x80, b'\n'];
        cache.set("bin", &binary, None).await.expect("set binary");
        cache.set("empty", b"", None).await.expect("set empty");
        assert_eq!(
            cache.get("bin").await.expect("get").as_deref(),
            Some(&binary[..]),
            "{backend}"
        );
        assert_eq!(
            cache.get("empty").await.expect("get").as_deref(),
            Some(&b""[..]),
            "{backend}: an empty value is not a miss"
        );

        assert!(cache.delete("k").await.expect("delete"), "{backend}");
        assert_eq!(cache.get("k").await.expect("get"), None, "{backend}");
        assert!(!cache.delete("k").await.expect("delete again"), "{backend}");
        assert_eq!(
            cache.get("bin").await.expect("get").as_deref(),
            Some(&binary[..]),
            "{backend}: other keys stay"
        );
    }
}

#[tokio::test]
async fn any_exists_checks_several_keys_at_once_and_ignores_expired_ones() {
    for cache in backends().await {
        let backend = cache.backend_name();
        assert!(!cache.any_exists(&[]).await.expect("none"), "{backend}");
        assert!(
            !cache.any_exists(&["a", "b"]).await.expect("absent"),
            "{backend}"
        );
        cache.set("b", b"1", None).await.expect("set");
        assert!(
            cache.any_exists(&["a", "b"]).await.expect("one"),
            "{backend}"
        );
        assert!(
            !cache.any_exists(&["a", "c"]).await.expect("others"),
            "{backend}"
        );
        cache
            .set("short", b"1", Some(Duration::from_millis(50)))
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !cache.any_exists(&["short"]).await.expect("expired"),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn entries_expire_after_their_ttl_and_set_without_ttl_clears_it() {
    for cache in backends().await {
        let backend = cache.backend_name();
        let ttl = Some(Duration::from_secs(1));
        cache.set("short", b"v", ttl).await.expect("set");
        cache.set("kept", b"v", ttl).await.expect("set");
        cache.set("kept", b"w", None).await.expect("set again");
        cache
            .set("long", b"v", Some(Duration::from_secs(60)))
            .await
            .expect("set");
        assert!(
            cache.get("short").await.expect("get").is_some(),
            "{backend}"
        );

        tokio::time::sleep(Duration::from_millis(1_300)).await;

        assert_eq!(cache.get("short").await.expect("get"), None, "{backend}");
        assert!(
            !cache.delete("short").await.expect("delete"),
            "{backend}: an expired entry does not count as deleted"
        );
        assert_eq!(
            cache.get("kept").await.expect("get").as_deref(),
            Some(&b"w"[..]),
            "{backend}: set without TTL made it permanent"
        );
        assert!(cache.get("long").await.expect("get").is_some(), "{backend}");
    }
}

#[tokio::test]
async fn zero_ttls_are_rejected() {
    for cache in backends().await {
        let backend = cache.backend_name();
        assert!(
            cache.set("k", b"v", Some(Duration::ZERO)).await.is_err(),
            "{backend}"
        );
        assert!(
            cache.incr("n", 1, Duration::ZERO).await.is_err(),
            "{backend}"
        );
        assert_eq!(cache.get("k").await.expect("get"), None, "{backend}");
        assert_eq!(cache.get("n").await.expect("get"), None, "{backend}");
    }
}

#[tokio::test]
async fn ttl_reports_the_remaining_time() {
    for cache in backends().await {
        let backend = cache.backend_name();
        assert_eq!(cache.ttl("missing").await.expect("ttl"), None, "{backend}");

        cache.set("forever", b"v", None).await.expect("set");
        assert_eq!(cache.ttl("forever").await.expect("ttl"), None, "{backend}");

        let ttl = Duration::from_secs(60);
        cache.set("minute", b"v", Some(ttl)).await.expect("set");
        let remaining = cache.ttl("minute").await.expect("ttl").expect("has a TTL");
        assert!(
            remaining <= ttl && remaining > Duration::from_secs(30),
            "{backend}: {remaining:?}"
        );
    }
}

#[tokio::test]
async fn incr_counts_from_zero_by_any_step() {
    for cache in backends().await {
        let backend = cache.backend_name();
        let window = Duration::from_secs(60);
        assert_eq!(
            cache.incr("n", 5, window).await.expect("incr"),
            5,
            "{backend}"
        );
        assert_eq!(
            cache.incr("n", -2, window).await.expect("incr"),
            3,
            "{backend}"
        );
        assert_eq!(
            cache.incr("n", 0, window).await.expect("incr"),
            3,
            "{backend}"
        );
        assert_eq!(
            cache.get("n").await.expect("get").as_deref(),
            Some(&b"3"[..]),
            "{backend}: counters read as decimal text"
        );

        cache.set("plain", b"41", None).await.expect("set");
        assert_eq!(
            cache.incr("plain", 1, window).await.expect("incr"),
            42,
            "{backend}"
        );
        assert!(
            cache.ttl("plain").await.expect("ttl").is_some(),
            "{backend}: a counter without expiry gets the window"
        );

        cache.set("text", b"abc", None).await.expect("set");
        assert!(cache.incr("text", 1, window).await.is_err(), "{backend}");
        assert_eq!(
            cache.get("text").await.expect("get").as_deref(),
            Some(&b"abc"[..]),
            "{backend}: a failed increment changes nothing"
        );

        cache
            .set("max", i64::MAX.to_string().as_bytes(), None)
            .await
            .expect("set");
        assert!(
            cache.incr("max", 1, window).await.is_err(),
            "{backend}: overflow"
        );
    }
}

#[tokio::test]
async fn concurrent_increments_never_lose_counts() {
    const TASKS: i64 = 50;
    const STEPS: i64 = 20;
    for cache in backends().await {
        let backend = cache.backend_name();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..STEPS {
                        seen.push(
                            cache
                                .incr("hits", 1, Duration::from_secs(60))
                                .await
                                .expect("incr"),
                        );
                    }
                    seen
                })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.extend(patiently("the increments", task).await.expect("task"));
        }
        seen.sort_unstable();
        // Every increment saw a distinct value: none was lost or doubled.
        assert_eq!(seen, (1..=TASKS * STEPS).collect::<Vec<_>>(), "{backend}");
        assert_eq!(
            cache.get("hits").await.expect("get").as_deref(),
            Some((TASKS * STEPS).to_string().as_bytes()),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn incr_uses_a_fixed_window() {
    for cache in backends().await {
        let backend = cache.backend_name();
        let window = Duration::from_secs(1);
        assert_eq!(
            cache.incr("tries", 1, window).await.expect("incr"),
            1,
            "{backend}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            cache.incr("tries", 1, window).await.expect("incr"),
            2,
            "{backend}"
        );
        let remaining = cache.ttl("tries").await.expect("ttl").expect("has a TTL");
        // At least 500 ms of the window are gone: the second increment did
        // not extend it.
        assert!(
            remaining <= Duration::from_millis(800),
            "{backend}: {remaining:?}"
        );

        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            cache.get("tries").await.expect("get"),
            None,
            "{backend}: the window is over"
        );
        assert_eq!(
            cache.incr("tries", 1, window).await.expect("incr"),
            1,
            "{backend}: a new window starts from zero"
        );
        assert!(
            cache.ttl("tries").await.expect("ttl").is_some(),
            "{backend}"
        );
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Session {
    user: String,
    roles: Vec<String>,
    expires: i64,
}

#[tokio::test]
async fn json_helpers_round_trip() {
    let session = Session {
        user: "ada".to_owned(),
        roles: vec!["admin".to_owned()],
        expires: 1_700_000_000,
    };
    for cache in backends().await {
        let backend = cache.backend_name();
        assert_eq!(
            cache.get_json::<Session>("session").await.expect("get"),
            None,
            "{backend}"
        );
        cache
            .set_json("session", &session, Some(Duration::from_secs(60)))
            .await
            .expect("set");
        assert_eq!(
            cache.get_json::<Session>("session").await.expect("get"),
            Some(session.clone()),
            "{backend}"
        );
        assert!(
            cache.ttl("session").await.expect("ttl").is_some(),
            "{backend}"
        );

        cache.set("session", b"not json", None).await.expect("set");
        assert!(
            cache.get_json::<Session>("session").await.is_err(),
            "{backend}: a value of another shape is an error, not a miss"
        );
    }
}

#[tokio::test]
async fn pub_sub_reaches_every_subscriber_of_the_channel_only() {
    for (first, second) in shared_pairs().await {
        let backend = first.backend_name();
        let mut on_first = first.subscribe("events").await.expect("subscribe");
        let mut on_second = second.subscribe("events").await.expect("subscribe");
        let mut elsewhere = first.subscribe("other").await.expect("subscribe");

        second.publish("events", b"hello").await.expect("publish");
        for subscription in [&mut on_first, &mut on_second] {
            assert_eq!(
                patiently("a message", subscription.next()).await.as_deref(),
                Some(&b"hello"[..]),
                "{backend}"
            );
        }

        first.publish("other", b"marker").await.expect("publish");
        assert_eq!(
            patiently("the marker", elsewhere.next()).await.as_deref(),
            Some(&b"marker"[..]),
            "{backend}: `hello` must not have reached another channel"
        );

        first.publish("events", b"again").await.expect("publish");
        assert_eq!(
            patiently("a message", on_second.next()).await.as_deref(),
            Some(&b"again"[..]),
            "{backend}"
        );
        first
            .publish("nobody-listens", b"x")
            .await
            .expect("publish");
    }
}

#[tokio::test]
async fn a_slow_subscriber_skips_but_keeps_receiving() {
    let count = SUBSCRIPTION_BUFFER * 2;
    for cache in backends().await {
        let backend = cache.backend_name();
        let mut subscription = cache.subscribe("burst").await.expect("subscribe");
        for i in 0..count {
            cache
                .publish("burst", i.to_string().as_bytes())
                .await
                .expect("publish");
        }
        let last = count - 1;
        let mut previous = None;
        loop {
            let message = patiently("the burst", subscription.next())
                .await
                .expect("a lagging subscription keeps going");
            let n: usize = std::str::from_utf8(&message)
                .expect("utf-8")
                .parse()
                .expect("number");
            assert!(previous.is_none_or(|p| n > p), "{backend}: order kept");
            previous = Some(n);
            if n == last {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_subscription_is_a_stream() {
    for cache in backends().await {
        let backend = cache.backend_name();
        let stream = cache.subscribe("s").await.expect("subscribe").into_stream();
        for message in ["a", "b", "c"] {
            cache
                .publish("s", message.as_bytes())
                .await
                .expect("publish");
        }
        let received: Vec<Vec<u8>> = patiently("three messages", stream.take(3).collect()).await;
        assert_eq!(received, [b"a", b"b", b"c"], "{backend}");
    }
}

#[tokio::test]
async fn separate_caches_and_prefixes_do_not_see_each_other() {
    for (first, second) in isolated_pairs().await {
        let backend = first.backend_name();
        first.set("k", b"first", None).await.expect("set");
        assert_eq!(second.get("k").await.expect("get"), None, "{backend}");
        assert_eq!(
            second
                .incr("k", 1, Duration::from_secs(60))
                .await
                .expect("incr"),
            1,
            "{backend}"
        );
        assert!(second.delete("k").await.expect("delete"), "{backend}");
        assert_eq!(
            first.get("k").await.expect("get").as_deref(),
            Some(&b"first"[..]),
            "{backend}"
        );

        let mut subscription = second.subscribe("ch").await.expect("subscribe");
        first.publish("ch", b"not for you").await.expect("publish");
        second.publish("ch", b"marker").await.expect("publish");
        assert_eq!(
            patiently("the marker", subscription.next())
                .await
                .as_deref(),
            Some(&b"marker"[..]),
            "{backend}"
        );
    }
}

/// Kills the Redis connections of one cache (it logs in as a throw-away ACL
/// user, so no other test's connections are touched) and checks that commands
/// and subscriptions come back by themselves.
#[tokio::test]
async fn redis_connections_recover_after_being_killed() {
    let Some((url, prefix)) = common::test_redis() else {
        return;
    };
    let admin_client = redis::Client::open(url.expose_secret()).expect("url");
    let mut admin = admin_client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let user = format!("vmcloud-test-{}", uuid::Uuid::new_v4().simple());
    redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">pw", "~*", "&*", "+@all"])
        .query_async::<()>(&mut admin)
        .await
        .expect("create the ACL user");
    let _delete_user = AclUserGuard {
        client: admin_client.clone(),
        user: user.clone(),
    };

    let user_url = SecretString::from(with_credentials(url.expose_secret(), &user, "pw"));
    let cache = connect_redis(&user_url, &prefix).await;
    let publisher = connect_redis(&url, &prefix).await;
    let mut subscription = cache.subscribe("live").await.expect("subscribe");
    publisher.publish("live", b"before").await.expect("publish");
    assert_eq!(
        patiently("a message", subscription.next()).await.as_deref(),
        Some(&b"before"[..])
    );

    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "USER", &user])
        .query_async(&mut admin)
        .await
        .expect("kill the user's connections");
    assert!(killed >= 2, "commands and pub/sub connections: {killed}");

    // Messages published while the subscription reconnects are lost, so keep
    // publishing until one arrives.
    let keep_publishing = tokio::spawn(async move {
        loop {
            publisher.publish("live", b"after").await.expect("publish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        patiently("a message after reconnecting", subscription.next())
            .await
            .as_deref(),
        Some(&b"after"[..])
    );
    keep_publishing.abort();

    // The first command after the kill may fail; the manager reconnects.
    patiently("commands to work again", async {
        while cache.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    cache
        .set("k", b"v", None)
        .await
        .expect("set after reconnecting");
}

/// Deletes the throw-away ACL user however the test ends, so a failure does
/// not leave it on the shared server.
struct AclUserGuard {
    client: redis::Client,
    user: String,
}

impl Drop for AclUserGuard {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and this runs once.
        let deleted = self.client.get_connection().and_then(|mut connection| {
            redis::cmd("ACL")
                .arg(&["DELUSER", &self.user])
                .exec(&mut connection)
        });
        if let Err(error) = deleted {
            eprintln!("could not delete the ACL user {}: {error}", self.user);
        }
    }
}

/// `url` with its user info replaced by `user:password`.
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = rest[..authority_end]
        .rsplit_once('@')
        .map_or(&rest[..authority_end], |(_, host)| host);
    format!(
        "{scheme}://{user}:{password}@{host}{}",
        &rest[authority_end..]
    )
}
