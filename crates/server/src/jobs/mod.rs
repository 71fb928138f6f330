//! Durable background jobs: queue, workers, retries.
//!
//! One [`JobQueue`] type over two stores: the `jobs` table (the default, the
//! same code on SQLite and PostgreSQL) or Redis when it is configured. A job
//! is enqueued with a kind and a JSON payload, claimed by a worker under a
//! lease that heartbeats extend, and then deleted when it succeeds, retried
//! with exponential backoff when it fails, or kept as `dead` once it is out of
//! attempts. Delivery is at least once: handlers must be idempotent.
//!
//! A lease is fenced by the worker id and the attempt number, so a worker that
//! stalled past its lease cannot complete, fail or release a job another
//! worker has taken over.

mod db_store;
mod redis_store;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::Notify;

use crate::db::Database;
use crate::ids::JobId;
use crate::pagination::{Page, PageRequest};

pub use worker::{Backoff, JobContext, JobHandler, WorkerConfig, WorkerPool};

/// Attempts a job gets unless its [`NewJob`] says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The longest job kind the `jobs` table accepts.
const MAX_KIND_LEN: usize = 100;
/// The longest unique key the `jobs` table accepts.
const MAX_UNIQUE_KEY_LEN: usize = 255;
/// Longer error messages are cut: the start of a failure says what went wrong.
const MAX_ERROR_LEN: usize = 4000;
/// The error kept on a job whose worker vanished during its last attempt.
const LOST_ON_LAST_ATTEMPT: &str = "the worker running the last attempt stopped heartbeating";

/// A job to add to the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// Selects the handler, e.g. `provision_instance`.
    pub kind: String,
    pub payload: serde_json::Value,
    /// While a job with this key is queued or running, enqueueing another one
    /// returns the existing job instead.
    pub unique_key: Option<String>,
    /// Not before this time; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Runs, the first included, before the job is dead-lettered.
    pub max_attempts: u32,
}

impl NewJob {
    /// A job due now, with [`DEFAULT_MAX_ATTEMPTS`] and no unique key.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            unique_key: None,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Deduplicates against pending jobs with the same key.
    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Delays the job until `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs before dead-lettering, at least 1.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.kind.is_empty() && self.kind.len() <= MAX_KIND_LEN,
            "job kind must be 1 to {MAX_KIND_LEN} bytes long"
        );
        if let Some(key) = &self.unique_key {
            anyhow::ensure!(
                !key.is_empty() && key.len() <= MAX_UNIQUE_KEY_LEN,
                "job unique key must be 1 to {MAX_UNIQUE_KEY_LEN} bytes long"
            );
        }
        anyhow::ensure!(
            (1..=i32::MAX.unsigned_abs()).contains(&self.max_attempts),
            "a job needs at least one attempt"
        );
        Ok(())
    }
}

/// What [`JobQueue::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new job was added.
    Enqueued(JobId),
    /// A pending job already had the unique key; this is its id.
    Deduplicated(JobId),
}

impl EnqueueOutcome {
    /// The job that will do the work, new or existing.
    pub fn id(self) -> JobId {
        match self {
            Self::Enqueued(id) | Self::Deduplicated(id) => id,
        }
    }
}

/// A worker's hold on a claimed job. Every later call about the job presents
/// it, and is refused once the lease has been taken over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: JobId,
    pub worker: String,
    /// 1 for the first run.
    pub attempt: u32,
}

/// A job a worker has claimed and must now run.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    pub lease: Lease,
    pub kind: String,
    pub payload: serde_json::Value,
    pub max_attempts: u32,
}

/// What [`JobQueue::fail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, to run at this time.
    Retrying { run_at: DateTime<Utc> },
    /// Out of attempts: kept as `dead` with the error.
    Dead,
    /// The lease had been taken over; nothing was changed.
    LeaseLost,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for its `run_at` time or for a free worker.
    Queued,
    /// Claimed by a worker (its lease may have expired without a takeover yet).
    Running,
    /// Out of attempts.
    Dead,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Dead => "dead",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "dead" => Ok(Self::Dead),
            other => anyhow::bail!("unknown job status {other:?}"),
        }
    }
}

/// A job as stored, for inspection. Completed jobs no longer exist.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub unique_key: Option<String>,
    /// Runs started so far, the current one included.
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a job stands, as operators see it: queued jobs are told apart by
/// whether they are due and whether a run of theirs already failed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Due, waiting for a worker.
    Queued,
    /// Waiting for its `run_at` time.
    Scheduled,
    Running,
    /// Queued again after a failed attempt (with its error), waiting for the
    /// retry.
    Failed,
    /// Out of attempts.
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }
}

impl JobRecord {
    pub fn state(&self, now: DateTime<Utc>) -> JobState {
        match self.status {
            JobStatus::Running => JobState::Running,
            JobStatus::Dead => JobState::Dead,
            JobStatus::Queued if self.last_error.is_some() => JobState::Failed,
            JobStatus::Queued if self.run_at > now => JobState::Scheduled,
            JobStatus::Queued => JobState::Queued,
        }
    }
}

/// Which jobs to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
}

impl JobFilter {
    fn matches(&self, job: &JobRecord, now: DateTime<Utc>) -> bool {
        self.state.is_none_or(|state| job.state(now) == state)
            && self.kind.as_ref().is_none_or(|kind| job.kind == *kind)
    }
}

/// What an operator's retry or discard did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intervention {
    Done,
    /// No such job (completed jobs no longer exist).
    Missing,
    /// Not in a state that allows it; this is the state.
    Refused(JobState),
    /// A dead job to retry whose unique key another pending job holds now.
    KeyTaken,
}

/// Counts of jobs by state, for metrics and the admin views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Due now, waiting for a worker.
    pub queued: u64,
    /// Waiting for a future `run_at` (delayed jobs and retries in backoff).
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
}

/// The durable job queue, on the database or on Redis. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JobQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Wakes this process's idle workers when a due job is enqueued here;
    /// workers elsewhere find it at their next poll.
    wake: Arc<Notify>,
}

#[derive(Debug)]
enum Store {
    Database(db_store::DbStore),
    // Boxed: its scripts make it far larger than the database variant.
    Redis(Box<redis_store::RedisStore>),
}

/// What a store's claim did: the jobs claimed, and the kinds of jobs found
/// with an expired lease on their last attempt and dead-lettered instead.
struct Claimed {
    jobs: Vec<ClaimedJob>,
    dead_kinds: Vec<String>,
}

impl JobQueue {
    /// The queue in the `jobs` table (migrations must have run).
    pub fn database(db: Database) -> Self {
        Self::with_store(Store::Database(db_store::DbStore::new(db)))
    }

    /// The queue in Redis, every key under `prefix`. Connects and pings; the
    /// error never contains the URL's password. Not for Redis Cluster: the
    /// scripts touch keys they derive at run time.
    pub async fn redis(url: &SecretString, prefix: &str) -> anyhow::Result<Self> {
        let store = redis_store::RedisStore::connect(url, prefix).await?;
        Ok(Self::with_store(Store::Redis(Box::new(store))))
    }

    fn with_store(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// `"database"` or `"redis"`, for logs and the readiness view.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.store {
            Store::Database(_) => "database",
            Store::Redis(_) => "redis",
        }
    }

    /// Adds a job, or returns the pending one holding the same unique key.
    pub async fn enqueue(&self, job: NewJob) -> anyhow::Result<EnqueueOutcome> {
        job.validate()?;
        let now = Utc::now();
        let run_at = job.run_at.unwrap_or(now);
        let outcome = match &self.inner.store {
            Store::Database(store) => store.enqueue(&job, run_at, now).await?,
            Store::Redis(store) => store.enqueue(&job, run_at, now).await?,
        };
        if let EnqueueOutcome::Enqueued(id) = outcome {
            tracing::debug!(job.id = %id, job.kind = %job.kind, %run_at, "job enqueued");
            if run_at <= now {
                self.inner.wake.notify_waiters();
            }
        }
        Ok(outcome)
    }

    /// Claims up to `limit` due jobs for `worker`, each under a lease of
    /// `lease` from now; jobs whose lease expired are claimed again. Workers
    /// call this; it is public for tools and tests that act as a worker.
    pub async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> anyhow::Result<Vec<ClaimedJob>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let claimed = match &self.inner.store {
            Store::Database(store) => store.claim(worker, limit, lease, now).await?,
            Store::Redis(store) => store.claim(worker, limit, lease, now).await?,
        };
        for kind in claimed.dead_kinds {
            tracing::error!(job.kind = %kind, "job lost its worker on its last attempt; dead-lettered");
            metrics::counter!("vmcloud_jobs_dead_total", "kind" => kind).increment(1);
        }
        Ok(claimed.jobs)
    }

    /// Extends a lease to `lease` from now. `false` when it was taken over.
    pub async fn heartbeat(&self, held: &Lease, lease: Duration) -> anyhow::Result<bool> {
        let now = Utc::now();
        match &self.inner.store {
            Store::Database(store) => store.heartbeat(held, lease, now).await,
            Store::Redis(store) => store.heartbeat(held, lease, now).await,
        }
    }

    /// Deletes a job that succeeded. `false` when the lease was taken over
    /// (the new owner's run stands).
    pub async fn complete(&self, held: &Lease) -> anyhow::Result<bool> {
        match &self.inner.store {
            Store::Database(store) => store.complete(held).await,
            Store::Redis(store) => store.complete(held).await,
        }
    }

    /// Records a failed run: queued again after `retry_delay`, or dead when it
    /// was the last attempt. The error is kept either way.
    pub async fn fail(
        &self,
        held: &Lease,
        error: &str,
        retry_delay: Duration,
    ) -> anyhow::Result<FailOutcome> {
        let now = Utc::now();
        let retry_at = now + chrono::TimeDelta::from_std(retry_delay)?;
        let error = truncate(error, MAX_ERROR_LEN);
        match &self.inner.store {
            Store::Database(store) => store.fail(held, error, retry_at, now).await,
            Store::Redis(store) => store.fail(held, error, retry_at, now).await,
        }
    }

    /// Gives a claimed job back unrun: queued, due now, and the interrupted
    /// attempt not counted. `false` when the lease was taken over.
    pub async fn release(&self, held: &Lease) -> anyhow::Result<bool> {
        let now = Utc::now();
        let released = match &self.inner.store {
            Store::Database(store) => store.release(held, now).await?,
            Store::Redis(store) => store.release(held, now).await?,
        };
        if released {
            self.inner.wake.notify_waiters();
        }
        Ok(released)
    }

    /// The job as stored; `None` once it completed (or if it never existed).
    pub async fn job(&self, id: JobId) -> anyhow::Result<Option<JobRecord>> {
        match &self.inner.store {
            Store::Database(store) => store.job(id).await,
            Store::Redis(store) => store.job(id).await,
        }
    }

    /// Counts of jobs by state, read from the replica when there is one.
    pub async fn stats(&self) -> anyhow::Result<QueueStats> {
        let now = Utc::now();
        match &self.inner.store {
            Store::Database(store) => store.stats(now).await,
            Store::Redis(store) => store.stats(now).await,
        }
    }

    /// Jobs newest first, filtered, one page at a time.
    pub async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
    ) -> anyhow::Result<Page<JobRecord>> {
        let now = Utc::now();
        match &self.inner.store {
            Store::Database(store) => store.list(filter, page, now).await,
            Store::Redis(store) => store.list(filter, page, now).await,
        }
    }

    /// Runs a dead job again with a fresh set of attempts, or a failed one
    /// now rather than after its backoff. Other states are refused.
    pub async fn retry(&self, id: JobId) -> anyhow::Result<Intervention> {
        let now = Utc::now();
        let outcome = match &self.inner.store {
            Store::Database(store) => store.retry(id, now).await?,
            Store::Redis(store) => store.retry(id, now).await?,
        };
        if outcome == Intervention::Done {
            tracing::info!(job.id = %id, "job queued again by an operator");
            self.inner.wake.notify_waiters();
        }
        Ok(outcome)
    }

    /// Deletes a job that is not running (queued, scheduled, failed or dead).
    pub async fn discard(&self, id: JobId) -> anyhow::Result<Intervention> {
        let outcome = match &self.inner.store {
            Store::Database(store) => store.discard(id).await?,
            Store::Redis(store) => store.discard(id).await?,
        };
        if outcome == Intervention::Done {
            tracing::info!(job.id = %id, "job discarded by an operator");
        }
        Ok(outcome)
    }

    fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.wake)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it backs off to before it.
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn new_jobs_are_validated() {
        let ok = NewJob::new("send_email", serde_json::json!({}));
        assert!(ok.validate().is_ok());
        assert!(NewJob::new("", serde_json::json!({})).validate().is_err());
        assert!(
            NewJob::new("k".repeat(101), serde_json::json!({}))
                .validate()
                .is_err()
        );
        assert!(ok.clone().unique_key("").validate().is_err());
        assert!(ok.clone().unique_key("u".repeat(256)).validate().is_err());
        assert!(ok.clone().max_attempts(0).validate().is_err());
        assert!(
            ok.unique_key("instance:1")
                .max_attempts(1)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn statuses_round_trip() {
        for status in [JobStatus::Queued, JobStatus::Running, JobStatus::Dead] {
            assert_eq!(JobStatus::parse(status.as_str()).ok(), Some(status));
        }
        assert!(JobStatus::parse("done").is_err());
    }

    #[test]
    fn states_are_named_alike_in_json_and_problems() {
        for state in [
            JobState::Queued,
            JobState::Scheduled,
            JobState::Running,
            JobState::Failed,
            JobState::Dead,
        ] {
            assert_eq!(
                serde_json::to_value(state).expect("json"),
                serde_json::Value::from(state.as_str())
            );
        }
    }

    #[test]
    fn a_queued_job_is_failed_scheduled_or_due() {
        let now = Utc::now();
        let job = JobRecord {
            id: JobId::new(),
            kind: "send_email".to_owned(),
            payload: serde_json::json!({}),
            status: JobStatus::Queued,
            unique_key: None,
            attempts: 0,
            max_attempts: 5,
            run_at: now,
            locked_until: None,
            locked_by: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(job.state(now), JobState::Queued);
        let later = JobRecord {
            run_at: now + chrono::TimeDelta::minutes(1),
            ..job.clone()
        };
        assert_eq!(later.state(now), JobState::Scheduled);
        let failed = JobRecord {
            last_error: Some("SMTP refused".to_owned()),
            ..later
        };
        assert_eq!(failed.state(now), JobState::Failed);
        let dead = JobRecord {
            status: JobStatus::Dead,
            ..failed
        };
        assert_eq!(dead.state(now), JobState::Dead);
        let filter = JobFilter {
            state: Some(JobState::Queued),
            kind: Some("send_email".to_owned()),
        };
        assert!(filter.matches(&job, now));
        assert!(!filter.matches(&dead, now));
    }
}
