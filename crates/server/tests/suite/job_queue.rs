//! The durable job queue and its workers. Every scenario runs on the database
//! store (SQLite, or PostgreSQL with `VMCLOUD_TEST_DATABASE_URL`) and, when
//! `VMCLOUD_TEST_REDIS_URL` is set, on the Redis store.

use crate::common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use vmcloud_server::ids::JobId;
use vmcloud_server::jobs::{
    Backoff, DEFAULT_MAX_ATTEMPTS, EnqueueOutcome, FailOutcome, JobContext, JobHandler, JobQueue,
    JobStatus, Lease, NewJob, QueueStats, WorkerConfig, WorkerPool,
};

/// The longest any condition is waited for before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// Declares each scenario as one test per backend.
macro_rules! on_every_backend {
    ($($scenario:ident),+ $(,)?) => {
        mod on_database {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let test_db = crate::common::TestDatabase::fresh().await;
                    let queue = vmcloud_server::jobs::JobQueue::database(test_db.connect().await);
                    super::$scenario(queue).await;
                }
            )+
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some((url, prefix)) = crate::common::test_redis() else {
                        return;
                    };
                    let queue = vmcloud_server::jobs::JobQueue::redis(&url, &prefix)
                        .await
                        .expect("connect to Redis");
                    super::$scenario(queue).await;
                    super::delete_redis_keys(&url, &prefix).await;
                }
            )+
        }
    };
}

on_every_backend!(
    enqueued_jobs_run_once_woken_without_polling,
    unique_key_deduplicates_while_pending,
    racing_enqueues_share_one_job,
    competing_pools_run_each_job_once,
    delayed_job_waits_for_its_time,
    failed_job_retries_with_growing_backoff,
    exhausted_job_is_dead_lettered_with_its_last_error,
    panics_and_unknown_kinds_are_failures,
    expired_lease_is_taken_over,
    job_lost_on_its_last_attempt_is_dead_lettered,
    heartbeats_keep_a_long_job_leased,
    stale_worker_cannot_clobber_the_new_owner,
    concurrency_is_capped,
    drain_lets_running_jobs_finish_and_claims_nothing_new,
    drain_timeout_hands_unfinished_jobs_back,
);

async fn delete_redis_keys(url: &SecretString, prefix: &str) {
    let client = redis::Client::open(url.expose_secret()).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("list test keys");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("delete test keys");
    }
}

/// Polls `condition` until it holds; fails the test after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until_gone(queue: &JobQueue, id: JobId) {
    wait_until("the job completed", || async {
        queue.job(id).await.expect("read job").is_none()
    })
    .await;
}

fn fast_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        poll_interval: Duration::from_millis(20),
        visibility_timeout: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
        drain_timeout: WAIT,
    }
}

/// A pool running in the background.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(pool: WorkerPool) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pool.run(shutdown.clone()));
        Self { shutdown, task }
    }

    /// Signals shutdown and waits for the pool to drain and return.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the pool returns after draining")
            .expect("the pool task does not panic");
    }
}

async fn enqueue_new(queue: &JobQueue, job: NewJob) -> JobId {
    match queue.enqueue(job).await.expect("enqueue") {
        EnqueueOutcome::Enqueued(id) => id,
        other @ EnqueueOutcome::Deduplicated(_) => panic!("expected a new job, got {other:?}"),
    }
}

async fn stats(queue: &JobQueue) -> QueueStats {
    queue.stats().await.expect("stats")
}

/// What handlers saw, shared with the test.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn snapshot<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.lock().expect("lock").clone()
}

/// Records every run it is given, as a handler registered by type.
struct Recorder(Log<(JobContext, serde_json::Value)>);

#[async_trait::async_trait]
impl JobHandler for Recorder {
    async fn run(&self, ctx: JobContext, payload: serde_json::Value) -> anyhow::Result<()> {
        self.0.lock().expect("lock").push((ctx, payload));
        Ok(())
    }
}

#[test]
fn queue_handle_is_shareable() {
    fn shareable<T: Clone + Send + Sync + std::fmt::Debug + 'static>() {}
    shareable::<JobQueue>();
}

#[tokio::test]
async fn redis_errors_never_show_the_password() {
    // Nothing listens on port 1: the connection is refused.
    let unreachable = SecretString::from("redis://:hunter2-secret@127.0.0.1:1/");
    let err = JobQueue::redis(&unreachable, "x:")
        .await
        .expect_err("nothing listens on port 1");
    let text = format!("{err:#} {err:?}");
    assert!(!text.contains("hunter2-secret"), "{text}");

    // A real server that has no such password: authentication fails.
    if let Some((url, prefix)) = common::test_redis() {
        let with_password = url
            .expose_secret()
            .replacen("redis://", "redis://:hunter2-secret@", 1);
        let err = JobQueue::redis(&SecretString::from(with_password), &prefix)
            .await
            .expect_err("the test server has no password");
        let text = format!("{err:#} {err:?}");
        assert!(!text.contains("hunter2-secret"), "{text}");
    }
}

async fn enqueued_jobs_run_once_woken_without_polling(queue: JobQueue) {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut config = fast_config();
    // Only the in-process wake-up can start these jobs in time.
    config.poll_interval = Duration::from_secs(3600);
    let mut pool = WorkerPool::new(queue.clone(), config);
    pool.register("echo", Recorder(Arc::clone(&runs)));
    let running = Running::start(pool);

    let mut ids = BTreeSet::new();
    for n in 0..3 {
        ids.insert(enqueue_new(&queue, NewJob::new("echo", json!({ "n": n }))).await);
    }
    wait_until("every job ran", || async {
        runs.lock().expect("lock").len() == 3
    })
    .await;
    for id in &ids {
        wait_until_gone(&queue, *id).await;
    }
    assert_eq!(stats(&queue).await, QueueStats::default());
    running.stop().await;

    let runs = snapshot(&runs);
    let ran: BTreeSet<JobId> = runs.iter().map(|(ctx, _)| ctx.id).collect();
    assert_eq!(ran, ids);
    let mut payloads: Vec<i64> = runs
        .iter()
        .map(|(_, payload)| payload["n"].as_i64().expect("n"))
        .collect();
    payloads.sort_unstable();
    assert_eq!(payloads, [0, 1, 2]);
    for (ctx, _) in &runs {
        assert_eq!(ctx.kind, "echo");
        assert_eq!(ctx.attempt, 1);
        assert_eq!(ctx.max_attempts, DEFAULT_MAX_ATTEMPTS);
    }
}

async fn unique_key_deduplicates_while_pending(queue: JobQueue) {
    let job = || NewJob::new("sync_node", json!({ "node": 1 })).unique_key("node:1");
    let id = enqueue_new(&queue, job()).await;
    assert_eq!(
        queue.enqueue(job()).await.expect("enqueue"),
        EnqueueOutcome::Deduplicated(id)
    );
    let other = enqueue_new(
        &queue,
        NewJob::new("sync_node", json!({ "node": 2 })).unique_key("node:2"),
    )
    .await;
    assert_ne!(other, id);
    assert_eq!(stats(&queue).await.queued, 2);

    // Still pending while it runs.
    let claimed = queue
        .claim("worker-a", 10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let lease = claimed
        .iter()
        .find(|job| job.lease.id == id)
        .expect("claimed our job")
        .lease
        .clone();
    assert_eq!(
        queue.enqueue(job()).await.expect("enqueue"),
        EnqueueOutcome::Deduplicated(id)
    );

    // Completion frees the key.
    assert!(queue.complete(&lease).await.expect("complete"));
    let next = enqueue_new(&queue, job()).await;
    assert_ne!(next, id);
    let record = queue.job(next).await.expect("read").expect("exists");
    assert_eq!(record.unique_key.as_deref(), Some("node:1"));
    assert_eq!(record.status, JobStatus::Queued);
}

async fn racing_enqueues_share_one_job(queue: JobQueue) {
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue
                    .enqueue(NewJob::new("resize", json!({})).unique_key("instance:7"))
                    .await
                    .expect("enqueue")
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("enqueue task"));
    }
    let ids: BTreeSet<JobId> = outcomes.iter().map(|outcome| outcome.id()).collect();
    assert_eq!(ids.len(), 1, "{outcomes:?}");
    let added = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, EnqueueOutcome::Enqueued(_)))
        .count();
    assert_eq!(added, 1, "{outcomes:?}");
    assert_eq!(stats(&queue).await.queued, 1);
}

async fn competing_pools_run_each_job_once(queue: JobQueue) {
    const JOBS: usize = 30;
    let runs: Log<JobId> = Arc::default();
    let mut ids = BTreeSet::new();
    for n in 0..JOBS {
        ids.insert(enqueue_new(&queue, NewJob::new("count", json!({ "n": n }))).await);
    }
    let pools: Vec<Running> = (0..3)
        .map(|_| {
            let mut config = fast_config();
            config.concurrency = 3;
            let mut pool = WorkerPool::new(queue.clone(), config);
            let seen = Arc::clone(&runs);
            pool.register_fn("count", move |ctx, _payload| {
                seen.lock().expect("lock").push(ctx.id);
                async { Ok(()) }
            });
            Running::start(pool)
        })
        .collect();
    wait_until("every job completed", || async {
        stats(&queue).await == QueueStats::default()
    })
    .await;
    for pool in pools {
        pool.stop().await;
    }
    let mut ran = snapshot(&runs);
    ran.sort_unstable();
    assert_eq!(
        ran,
        ids.into_iter().collect::<Vec<_>>(),
        "each job ran exactly once"
    );
}

async fn delayed_job_waits_for_its_time(queue: JobQueue) {
    let far = enqueue_new(
        &queue,
        NewJob::new("tick", json!({ "which": "far" })).run_at(Utc::now() + TimeDelta::hours(1)),
    )
    .await;
    let soon_at = Utc::now() + TimeDelta::milliseconds(300);
    let soon = enqueue_new(
        &queue,
        NewJob::new("tick", json!({ "which": "soon" })).run_at(soon_at),
    )
    .await;
    let before = stats(&queue).await;
    assert_eq!(before.queued + before.scheduled, 2);
    assert!(before.scheduled >= 1, "{before:?}");

    let runs: Log<(JobId, DateTime<Utc>)> = Arc::default();
    let mut pool = WorkerPool::new(queue.clone(), fast_config());
    let seen = Arc::clone(&runs);
    pool.register_fn("tick", move |ctx, _payload| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().expect("lock").push((ctx.id, Utc::now()));
            Ok(())
        }
    });
    let running = Running::start(pool);
    wait_until_gone(&queue, soon).await;
    running.stop().await;

    let runs = snapshot(&runs);
    assert_eq!(runs.len(), 1, "only the due job ran: {runs:?}");
    assert_eq!(runs[0].0, soon);
    assert!(
        runs[0].1 >= soon_at,
        "ran at {} before {soon_at}",
        runs[0].1
    );
    let record = queue.job(far).await.expect("read").expect("still there");
    assert_eq!(record.status, JobStatus::Queued);
    assert_eq!(record.attempts, 0);
    assert_eq!(
        stats(&queue).await,
        QueueStats {
            scheduled: 1,
            ..QueueStats::default()
        }
    );
}

async fn failed_job_retries_with_growing_backoff(queue: JobQueue) {
    let base = Duration::from_millis(100);
    let mut config = fast_config();
    config.backoff = Backoff {
        base,
        cap: Duration::from_secs(10),
    };
    // (attempt, when it started, the error kept from the attempt before)
    let runs: Log<(u32, Instant, Option<String>)> = Arc::default();
    let mut pool = WorkerPool::new(queue.clone(), config);
    let (seen, store) = (Arc::clone(&runs), queue.clone());
    pool.register_fn("flaky", move |ctx, _payload| {
        let (seen, store) = (Arc::clone(&seen), store.clone());
        async move {
            let started = Instant::now();
            let record = store.job(ctx.id).await?.expect("running job exists");
            seen.lock()
                .expect("lock")
                .push((ctx.attempt, started, record.last_error));
            anyhow::ensure!(ctx.attempt >= 4, "flaky on attempt {}", ctx.attempt);
            Ok(())
        }
    });
    let running = Running::start(pool);
    let id = enqueue_new(&queue, NewJob::new("flaky", json!({})).max_attempts(4)).await;
    wait_until_gone(&queue, id).await;
    running.stop().await;

    let runs = snapshot(&runs);
    let attempts: Vec<u32> = runs.iter().map(|run| run.0).collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    assert_eq!(runs[0].2, None);
    for (k, pair) in runs.windows(2).enumerate() {
        let failed = pair[0].0;
        assert_eq!(
            pair[1].2.as_deref(),
            Some(format!("flaky on attempt {failed}").as_str())
        );
        // The delay after attempt k+1 is at least ¾ of base × 2^k.
        let least = base.mul_f64(0.75) * 2_u32.pow(u32::try_from(k).expect("small"));
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= least, "retry {failed}: {gap:?} < {least:?}");
    }
}

async fn exhausted_job_is_dead_lettered_with_its_last_error(queue: JobQueue) {
    let runs = Arc::new(AtomicU32::new(0));
    let mut pool = WorkerPool::new(queue.clone(), fast_config());
    let counter = Arc::clone(&runs);
    pool.register_fn("doomed", move |ctx, _payload| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { anyhow::bail!("boom on attempt {}", ctx.attempt) }
    });
    let running = Running::start(pool);
    let job = || {
        NewJob::new("doomed", json!({}))
            .unique_key("doomed:1")
            .max_attempts(3)
    };
    let id = enqueue_new(&queue, job()).await;
    wait_until("the job is dead", || async {
        queue
            .job(id)
            .await
            .expect("read")
            .is_some_and(|job| job.status == JobStatus::Dead)
    })
    .await;
    running.stop().await;

    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let record = queue.job(id).await.expect("read").expect("kept");
    assert_eq!(record.attempts, 3);
    assert_eq!(record.max_attempts, 3);
    assert_eq!(record.last_error.as_deref(), Some("boom on attempt 3"));
    assert_eq!(record.unique_key.as_deref(), Some("doomed:1"));
    assert_eq!(record.locked_by, None);
    assert_eq!(
        stats(&queue).await,
        QueueStats {
            dead: 1,
            ..QueueStats::default()
        }
    );
    // The dead job no longer holds its key.
    let again = enqueue_new(&queue, job()).await;
    assert_ne!(again, id);
}

async fn panics_and_unknown_kinds_are_failures(queue: JobQueue) {
    let errors_seen: Log<Option<String>> = Arc::default();
    let mut pool = WorkerPool::new(queue.clone(), fast_config());
    let (seen, store) = (Arc::clone(&errors_seen), queue.clone());
    pool.register_fn("fragile", move |ctx, _payload| {
        let (seen, store) = (Arc::clone(&seen), store.clone());
        async move {
            let record = store.job(ctx.id).await?.expect("running job exists");
            seen.lock().expect("lock").push(record.last_error);
            assert!(ctx.attempt > 1, "kaboom");
            Ok(())
        }
    });
    let running = Running::start(pool);
    let fragile = enqueue_new(&queue, NewJob::new("fragile", json!({})).max_attempts(3)).await;
    let mystery = enqueue_new(&queue, NewJob::new("mystery", json!({})).max_attempts(2)).await;
    wait_until_gone(&queue, fragile).await;
    wait_until("the unknown kind is dead", || async {
        queue
            .job(mystery)
            .await
            .expect("read")
            .is_some_and(|job| job.status == JobStatus::Dead)
    })
    .await;
    running.stop().await;

    let errors_seen = snapshot(&errors_seen);
    assert_eq!(errors_seen.len(), 2, "the pool survived the panic");
    assert_eq!(errors_seen[0], None);
    let after_panic = errors_seen[1].as_deref().expect("the panic was recorded");
    assert!(
        after_panic.contains("panicked") && after_panic.contains("kaboom"),
        "{after_panic}"
    );

    let record = queue.job(mystery).await.expect("read").expect("kept");
    assert_eq!(record.attempts, 2, "an unknown kind is retried");
    let error = record.last_error.expect("error kept");
    assert!(
        error.contains("no handler") && error.contains("mystery"),
        "{error}"
    );
}

async fn expired_lease_is_taken_over(queue: JobQueue) {
    let id = enqueue_new(&queue, NewJob::new("orphan", json!({}))).await;
    // A worker claims it with a short lease and then dies: no heartbeat, no
    // outcome.
    let claimed = queue
        .claim("vanished-worker", 1, Duration::from_millis(200))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.attempt, 1);
    assert_eq!(stats(&queue).await.running, 1);

    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut pool = WorkerPool::new(queue.clone(), fast_config());
    pool.register("orphan", Recorder(Arc::clone(&runs)));
    let running = Running::start(pool);
    wait_until_gone(&queue, id).await;
    running.stop().await;

    let runs = snapshot(&runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0.id, id);
    assert_eq!(runs[0].0.attempt, 2, "the lost run counts as an attempt");
}

async fn job_lost_on_its_last_attempt_is_dead_lettered(queue: JobQueue) {
    let id = enqueue_new(
        &queue,
        NewJob::new("once", json!({}))
            .unique_key("once:1")
            .max_attempts(1),
    )
    .await;
    let claimed = queue
        .claim("vanished-worker", 1, Duration::from_millis(100))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    wait_until("the lapsed job is dead-lettered", || async {
        let again = queue
            .claim("rival", 1, Duration::from_secs(30))
            .await
            .expect("claim");
        assert!(again.is_empty(), "a job out of attempts ran again");
        queue
            .job(id)
            .await
            .expect("read")
            .is_some_and(|job| job.status == JobStatus::Dead)
    })
    .await;
    let record = queue.job(id).await.expect("read").expect("kept");
    assert_eq!(record.attempts, 1);
    assert_eq!(record.locked_by, None);
    let error = record.last_error.expect("error kept");
    assert!(error.contains("stopped heartbeating"), "{error}");
    assert_eq!(
        stats(&queue).await,
        QueueStats {
            dead: 1,
            ..QueueStats::default()
        }
    );
    // Its unique key is free again.
    let next = enqueue_new(&queue, NewJob::new("once", json!({})).unique_key("once:1")).await;
    assert_ne!(next, id);
}

async fn heartbeats_keep_a_long_job_leased(queue: JobQueue) {
    let mut config = fast_config();
    config.visibility_timeout = Duration::from_millis(600);
    let started = Arc::new(AtomicU32::new(0));
    let mut pool = WorkerPool::new(queue.clone(), config);
    let counter = Arc::clone(&started);
    pool.register_fn("slow", move |_ctx, _payload| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            // Well past the visibility timeout: only heartbeats keep it.
            tokio::time::sleep(Duration::from_millis(1800)).await;
            Ok(())
        }
    });
    let running = Running::start(pool);
    let id = enqueue_new(&queue, NewJob::new("slow", json!({}))).await;
    wait_until("the job started", || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    let rival_deadline = Instant::now() + WAIT;
    while queue.job(id).await.expect("read").is_some() {
        let stolen = queue
            .claim("rival", 5, Duration::from_secs(30))
            .await
            .expect("claim");
        assert!(stolen.is_empty(), "a heartbeated lease was taken over");
        assert!(Instant::now() < rival_deadline, "the job never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

async fn stale_worker_cannot_clobber_the_new_owner(queue: JobQueue) {
    let id = enqueue_new(&queue, NewJob::new("contested", json!({}))).await;
    let stale = queue
        .claim("stale-worker", 1, Duration::from_millis(100))
        .await
        .expect("claim")
        .pop()
        .expect("claimed")
        .lease;
    let deadline = Instant::now() + WAIT;
    let fresh = loop {
        let claimed = queue
            .claim("fresh-worker", 1, Duration::from_secs(30))
            .await
            .expect("claim");
        if let Some(job) = claimed.into_iter().next() {
            break job.lease;
        }
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(fresh.id, id);
    assert_eq!(fresh.attempt, 2);

    // The stale worker wakes up and reports: all refused.
    assert!(!queue.complete(&stale).await.expect("complete"));
    assert_eq!(
        queue
            .fail(&stale, "too late", Duration::ZERO)
            .await
            .expect("fail"),
        FailOutcome::LeaseLost
    );
    assert!(
        !queue
            .heartbeat(&stale, Duration::from_secs(60))
            .await
            .expect("heartbeat")
    );
    assert!(!queue.release(&stale).await.expect("release"));
    // The attempt number fences too, whatever the worker id says.
    let forged = Lease {
        worker: fresh.worker.clone(),
        attempt: 1,
        ..fresh.clone()
    };
    assert!(!queue.complete(&forged).await.expect("complete"));

    let record = queue.job(id).await.expect("read").expect("exists");
    assert_eq!(record.status, JobStatus::Running);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.locked_by.as_deref(), Some("fresh-worker"));
    assert_eq!(record.last_error, None);
    assert!(record.locked_until.expect("leased") > Utc::now());

    assert!(queue.complete(&fresh).await.expect("complete"));
    assert!(queue.job(id).await.expect("read").is_none());
}

async fn concurrency_is_capped(queue: JobQueue) {
    const LIMIT: u32 = 3;
    const JOBS: u32 = 9;
    let current = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    for n in 0..JOBS {
        enqueue_new(&queue, NewJob::new("crowd", json!({ "n": n }))).await;
    }
    let mut config = fast_config();
    config.concurrency = usize::try_from(LIMIT).expect("small");
    let mut pool = WorkerPool::new(queue.clone(), config);
    let (cur, top, fin) = (Arc::clone(&current), Arc::clone(&peak), Arc::clone(&done));
    pool.register_fn("crowd", move |_ctx, _payload| {
        let (cur, top, fin) = (Arc::clone(&cur), Arc::clone(&top), Arc::clone(&fin));
        async move {
            let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
            top.fetch_max(now, Ordering::SeqCst);
            // Linger until the pool has been seen full (bounded), so a pool
            // that runs fewer at once shows up as a low peak.
            let until = Instant::now() + Duration::from_millis(500);
            while top.load(Ordering::SeqCst) < LIMIT && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            cur.fetch_sub(1, Ordering::SeqCst);
            fin.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let running = Running::start(pool);
    wait_until("every job ran", || async {
        done.load(Ordering::SeqCst) == JOBS
    })
    .await;
    wait_until("the queue is empty", || async {
        stats(&queue).await == QueueStats::default()
    })
    .await;
    running.stop().await;
    assert_eq!(peak.load(Ordering::SeqCst), LIMIT);
}

async fn drain_lets_running_jobs_finish_and_claims_nothing_new(queue: JobQueue) {
    let started = Arc::new(AtomicU32::new(0));
    let gate = CancellationToken::new();
    let mut config = fast_config();
    config.concurrency = 1;
    let mut pool = WorkerPool::new(queue.clone(), config);
    let (counter, open) = (Arc::clone(&started), gate.clone());
    pool.register_fn("gated", move |_ctx, _payload| {
        counter.fetch_add(1, Ordering::SeqCst);
        let open = open.clone();
        async move {
            open.cancelled().await;
            Ok(())
        }
    });
    let running = Running::start(pool);
    let first = enqueue_new(&queue, NewJob::new("gated", json!({}))).await;
    wait_until("the first job started", || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;

    running.shutdown.cancel();
    let second = enqueue_new(&queue, NewJob::new("gated", json!({}))).await;
    assert!(
        !running.task.is_finished(),
        "the pool waits for its running job"
    );
    gate.cancel();
    running.stop().await;

    assert!(
        queue.job(first).await.expect("read").is_none(),
        "it finished"
    );
    assert_eq!(started.load(Ordering::SeqCst), 1, "nothing new was claimed");
    let record = queue.job(second).await.expect("read").expect("exists");
    assert_eq!(record.status, JobStatus::Queued);
    assert_eq!(record.attempts, 0);
}

async fn drain_timeout_hands_unfinished_jobs_back(queue: JobQueue) {
    /// Sets its flag when dropped: shows the stuck handler was stopped.
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let runs = Arc::new(AtomicU32::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut config = fast_config();
    config.concurrency = 1;
    config.drain_timeout = Duration::from_millis(200);
    let make_pool = || {
        let mut pool = WorkerPool::new(queue.clone(), config.clone());
        let (counter, flag) = (Arc::clone(&runs), Arc::clone(&stopped));
        pool.register_fn("stubborn", move |_ctx, _payload| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let guard = first.then(|| SetOnDrop(Arc::clone(&flag)));
            async move {
                if let Some(_guard) = guard {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok(())
            }
        });
        pool
    };

    let id = enqueue_new(&queue, NewJob::new("stubborn", json!({}))).await;
    let running = Running::start(make_pool());
    wait_until("the job started", || async {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    running.stop().await;

    assert!(
        stopped.load(Ordering::SeqCst),
        "the stuck handler was stopped"
    );
    let record = queue.job(id).await.expect("read").expect("handed back");
    assert_eq!(record.status, JobStatus::Queued);
    assert_eq!(record.attempts, 0, "the interrupted run does not count");
    assert_eq!(record.locked_by, None);
    assert!(record.run_at <= Utc::now(), "due again at once");

    let running = Running::start(make_pool());
    wait_until_gone(&queue, id).await;
    running.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
