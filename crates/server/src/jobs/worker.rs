//! Workers: claim due jobs, run each through the handler registered for its
//! kind while heartbeating its lease, retry failures with backoff, and drain
//! on shutdown.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use rand::Rng as _;
use tokio::task::{Id as TaskId, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{ClaimedJob, FailOutcome, JobQueue, Lease};
use crate::ids::JobId;

/// What a handler knows about the run it is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobContext {
    pub id: JobId,
    pub kind: String,
    /// 1 for the first run.
    pub attempt: u32,
    pub max_attempts: u32,
}

/// Does the work of one job kind. Runs at least once per job, possibly more
/// (a retry, or a takeover after a worker vanished), so it must be idempotent.
/// An error or a panic fails the attempt; the error's message is kept.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn run(&self, ctx: JobContext, payload: serde_json::Value) -> anyhow::Result<()>;
}

/// A closure as a handler; see [`WorkerPool::register_fn`].
struct FnHandler<F>(F);

#[async_trait::async_trait]
impl<F, Fut> JobHandler for FnHandler<F>
where
    F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    async fn run(&self, ctx: JobContext, payload: serde_json::Value) -> anyhow::Result<()> {
        (self.0)(ctx, payload).await
    }
}

/// Delay before retrying a failed attempt: `base × 2^(attempt − 1)`, at most
/// `cap`, less up to a quarter at random so that jobs failing together do not
/// retry in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay after attempt `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1 << doublings).min(self.cap);
        let jitter = rand::rng().random_range(0.0..0.25);
        full.mul_f64(1.0 - jitter)
    }
}

/// How a [`WorkerPool`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Jobs run at once by this pool (at least 1).
    pub concurrency: usize,
    /// How often an idle pool looks for due jobs. Jobs enqueued in this
    /// process wake it at once; this bounds the wait for jobs enqueued
    /// elsewhere, delayed jobs and retries.
    pub poll_interval: Duration,
    /// The lease a claimed job is held under. Heartbeats extend it every third
    /// of this; a job whose worker stops heartbeating is taken over once it
    /// lapses.
    pub visibility_timeout: Duration,
    pub backoff: Backoff,
    /// On shutdown, how long running jobs may take to finish before they are
    /// stopped and handed back to the queue.
    pub drain_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll_interval: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs jobs from a [`JobQueue`] with the handlers registered by kind. A job
/// whose kind has no handler here fails (and so is retried: another worker
/// version may know it).
pub struct WorkerPool {
    queue: JobQueue,
    config: WorkerConfig,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    worker_id: String,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        f.debug_struct("WorkerPool")
            .field("worker_id", &self.worker_id)
            .field("config", &self.config)
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// A pool with no handlers yet; register them before [`WorkerPool::run`].
    pub fn new(queue: JobQueue, config: WorkerConfig) -> Self {
        Self {
            queue,
            config,
            handlers: HashMap::new(),
            worker_id: new_worker_id(),
        }
    }

    /// Sets the handler for `kind`, replacing any earlier one.
    pub fn register(&mut self, kind: impl Into<String>, handler: impl JobHandler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Sets an async closure as the handler for `kind`.
    pub fn register_fn<F, Fut>(&mut self, kind: impl Into<String>, handler: F) -> &mut Self
    where
        F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.register(kind, FnHandler(handler))
    }

    /// The id this pool's leases are held under: unique per pool, so that a
    /// lease can be told from one the same process held earlier.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets running
    /// jobs finish for up to the drain timeout, stops those still running and
    /// hands them back to the queue, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self {
            queue,
            config,
            handlers,
            worker_id,
        } = self;
        let concurrency = config.concurrency.max(1);
        let settings = RunSettings {
            visibility_timeout: config.visibility_timeout,
            backoff: config.backoff,
        };
        let wake = queue.wake_handle();
        let mut running = JoinSet::new();
        let mut leases: HashMap<TaskId, Lease> = HashMap::new();
        tracing::info!(
            worker = %worker_id,
            concurrency,
            backend = queue.backend_name(),
            "job workers started"
        );

        while !shutdown.is_cancelled() {
            // Armed before claiming, so an enqueue during the claim still wakes us.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            let mut claimed_any = false;
            if running.len() < concurrency {
                let room = concurrency - running.len();
                match queue
                    .claim(&worker_id, room, config.visibility_timeout)
                    .await
                {
                    Ok(jobs) if shutdown.is_cancelled() => {
                        // Claimed as shutdown began: give them straight back.
                        for job in jobs {
                            release(&queue, &job.lease).await;
                        }
                    }
                    Ok(jobs) => {
                        claimed_any = !jobs.is_empty();
                        for job in jobs {
                            let handler = handlers.get(&job.kind).cloned();
                            let lease = job.lease.clone();
                            let task =
                                running.spawn(execute(queue.clone(), handler, job, settings));
                            leases.insert(task.id(), lease);
                        }
                    }
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "cannot claim jobs; trying again after the poll interval"
                    ),
                }
            }
            let has_room = running.len() < concurrency;
            if claimed_any && has_room {
                // The claim may have lost races for some due jobs: look again.
                continue;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                Some(joined) = running.join_next_with_id() => {
                    reap(joined, &mut leases);
                }
                () = &mut woken, if has_room => {}
                () = tokio::time::sleep(config.poll_interval), if has_room => {}
            }
        }

        tracing::info!(in_flight = running.len(), "job workers draining");
        let drained = tokio::time::timeout(config.drain_timeout, async {
            while let Some(joined) = running.join_next_with_id().await {
                reap(joined, &mut leases);
            }
        })
        .await
        .is_ok();
        if !drained {
            running.abort_all();
            let mut unfinished = Vec::new();
            while let Some(joined) = running.join_next_with_id().await {
                unfinished.extend(reap(joined, &mut leases));
            }
            tracing::warn!(
                jobs = unfinished.len(),
                "drain timeout reached; handing unfinished jobs back"
            );
            for lease in unfinished {
                release(&queue, &lease).await;
            }
        }
        tracing::info!(worker = %worker_id, "job workers stopped");
    }
}

/// What each job run needs from the pool's configuration.
#[derive(Clone, Copy, Debug)]
struct RunSettings {
    visibility_timeout: Duration,
    backoff: Backoff,
}

/// Forgets a finished task's lease, returning it when the task was stopped
/// before it could record the job's outcome.
fn reap(
    joined: Result<(TaskId, ()), JoinError>,
    leases: &mut HashMap<TaskId, Lease>,
) -> Option<Lease> {
    match joined {
        Ok((task, ())) => {
            leases.remove(&task);
            None
        }
        Err(err) => {
            let lease = leases.remove(&err.id());
            if err.is_cancelled() {
                return lease;
            }
            // Handler panics are caught inside the task; this is a bug in the
            // bookkeeping around it. The lease will lapse and the job rerun.
            tracing::error!(job.id = ?lease.map(|l| l.id), error = %err, "job task panicked");
            None
        }
    }
}

async fn release(queue: &JobQueue, lease: &Lease) {
    match queue.release(lease).await {
        Ok(true) => tracing::info!(job.id = %lease.id, "job handed back to the queue"),
        Ok(false) => {}
        Err(err) => tracing::warn!(
            job.id = %lease.id,
            error = format!("{err:#}"),
            "cannot hand a job back; it reruns once its lease lapses"
        ),
    }
}

/// Runs one claimed job and records the outcome.
async fn execute(
    queue: JobQueue,
    handler: Option<Arc<dyn JobHandler>>,
    job: ClaimedJob,
    settings: RunSettings,
) {
    let ClaimedJob {
        lease,
        kind,
        payload,
        max_attempts,
    } = job;
    let span = tracing::info_span!(
        "job",
        job.id = %lease.id,
        job.kind = %kind,
        job.attempt = lease.attempt
    );
    async move {
        let ctx = JobContext {
            id: lease.id,
            kind: kind.clone(),
            attempt: lease.attempt,
            max_attempts,
        };
        let started = Instant::now();
        let result = tokio::select! {
            result = run_handler(handler, ctx, payload) => result,
            never = keep_leased(&queue, &lease, settings.visibility_timeout) => match never {},
        };
        metrics::histogram!("vmcloud_job_duration_seconds", "kind" => kind.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => match queue.complete(&lease).await {
                Ok(true) => {
                    metrics::counter!("vmcloud_jobs_completed_total", "kind" => kind).increment(1);
                    tracing::info!("job completed");
                }
                Ok(false) => {
                    tracing::warn!("job finished after another worker took it over; result dropped");
                }
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "cannot record the job's completion; it reruns once its lease lapses"
                ),
            },
            Err(message) => {
                metrics::counter!("vmcloud_jobs_failed_total", "kind" => kind.clone()).increment(1);
                let delay = settings.backoff.delay(lease.attempt);
                match queue.fail(&lease, &message, delay).await {
                    Ok(FailOutcome::Retrying { run_at }) => {
                        tracing::warn!(error = %message, %run_at, "job failed; will retry");
                    }
                    Ok(FailOutcome::Dead) => {
                        metrics::counter!("vmcloud_jobs_dead_total", "kind" => kind).increment(1);
                        tracing::error!(error = %message, "job failed its last attempt; dead-lettered");
                    }
                    Ok(FailOutcome::LeaseLost) => tracing::warn!(
                        error = %message,
                        "job failed after another worker took it over; failure dropped"
                    ),
                    Err(err) => tracing::error!(
                        error = %message,
                        cause = format!("{err:#}"),
                        "cannot record the job's failure; it reruns once its lease lapses"
                    ),
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// The handler's verdict, with a panic or a missing handler as a failure.
async fn run_handler(
    handler: Option<Arc<dyn JobHandler>>,
    ctx: JobContext,
    payload: serde_json::Value,
) -> Result<(), String> {
    let Some(handler) = handler else {
        return Err(format!(
            "no handler for job kind {:?} in this worker",
            ctx.kind
        ));
    };
    match AssertUnwindSafe(handler.run(ctx, payload))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(panic) => Err(format!("handler panicked: {}", panic_message(&*panic))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Heartbeats the lease for as long as it is polled. Once the lease is lost it
/// stops and waits forever: the run goes on, but its outcome will be refused.
async fn keep_leased(queue: &JobQueue, lease: &Lease, visibility_timeout: Duration) -> Infallible {
    let every = (visibility_timeout / 3).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match queue.heartbeat(lease, visibility_timeout).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("job lease taken over by another worker");
                return std::future::pending().await;
            }
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "cannot extend the job lease; trying again"
            ),
        }
    }
}

/// `<host>-<pid>-<random>`: readable in the admin view, unique per pool.
fn new_worker_id() -> String {
    let host: String = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
        .chars()
        .take(60)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for (attempt, full_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..50 {
                let delay = backoff.delay(attempt);
                let full = Duration::from_millis(full_ms);
                assert!(delay <= full, "attempt {attempt}: {delay:?} > {full:?}");
                assert!(
                    delay >= full.mul_f64(0.75),
                    "attempt {attempt}: {delay:?} too short"
                );
            }
        }
    }

    #[test]
    fn worker_ids_differ_per_pool() {
        assert_ne!(new_worker_id(), new_worker_id());
        assert!(new_worker_id().len() <= 100);
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let text: Box<dyn Any + Send> = Box::new("static");
        let owned: Box<dyn Any + Send> = Box::new(String::from("owned"));
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(&*text), "static");
        assert_eq!(panic_message(&*owned), "owned");
        assert_eq!(panic_message(&*other), "(not a string)");
    }
}
