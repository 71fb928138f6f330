//! The job queue as admins see it: what is queued, scheduled, running,
//! failing or dead, with the last error, and the two things an operator does
//! about it: run a dead or failed job again, or discard one that is not
//! running. Completed jobs are deleted by the queue and so never listed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::jobs::{Intervention, JobFilter, JobQueue, JobRecord, JobState};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest};

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: JobId,
    /// The handler it runs, e.g. `send_email`, `instance_queue`.
    pub kind: String,
    pub state: JobState,
    /// Runs started so far, the current one included.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Why the last run failed, if it did.
    pub last_error: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub unique_key: Option<String>,
    /// Due at (for a queued, scheduled or failed job).
    pub run_at: DateTime<Utc>,
    /// The worker running it and until when its lease holds.
    pub worker: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl JobView {
    fn of(job: JobRecord, now: DateTime<Utc>) -> Self {
        Self {
            id: job.id,
            state: job.state(now),
            kind: job.kind,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            payload: job.payload,
            unique_key: job.unique_key,
            run_at: job.run_at,
            worker: job.locked_by,
            locked_until: job.locked_until,
            created_at: job.created_at,
            updated_at: job.updated_at,
        }
    }
}

/// Jobs, newest first.
pub async fn list(
    jobs: &JobQueue,
    actor: &Actor,
    filter: JobFilter,
    page: PageRequest,
) -> Result<Page<JobView>> {
    actor.require_admin()?;
    let now = Utc::now();
    Ok(jobs
        .list(&filter, page)
        .await?
        .map(|job| JobView::of(job, now)))
}

pub async fn get(jobs: &JobQueue, actor: &Actor, id: JobId) -> Result<JobView> {
    actor.require_admin()?;
    jobs.job(id)
        .await?
        .map(|job| JobView::of(job, Utc::now()))
        .ok_or_else(|| Error::not_found("Job"))
}

/// Queues a dead or failed job to run now (409 otherwise); answers it as it
/// now stands.
pub async fn retry(jobs: &JobQueue, actor: &Actor, id: JobId) -> Result<JobView> {
    actor.require_admin()?;
    match jobs.retry(id).await? {
        Intervention::Done => get(jobs, actor, id).await,
        Intervention::Missing => Err(Error::not_found("Job")),
        Intervention::KeyTaken => Err(Error::Conflict(
            "Another pending job holds this job's unique key and does the same work; \
             wait for it or discard this one."
                .to_owned(),
        )),
        Intervention::Refused(state) => {
            Err(refused(state, "Only a dead or failed job can be retried"))
        }
    }
}

/// Deletes a job that is not running (409 for a running one); answers it as
/// it was.
pub async fn discard(jobs: &JobQueue, actor: &Actor, id: JobId) -> Result<JobView> {
    let job = get(jobs, actor, id).await?;
    match jobs.discard(id).await? {
        Intervention::Done => Ok(job),
        Intervention::Missing => Err(Error::not_found("Job")),
        Intervention::Refused(state) => Err(refused(state, "A running job cannot be discarded")),
        Intervention::KeyTaken => {
            Err(anyhow::anyhow!("a discard never contends for a unique key").into())
        }
    }
}

fn refused(state: JobState, rule: &str) -> Error {
    let state = state.as_str().to_owned();
    Error::InvalidState {
        message: format!("{rule}; this one is {state}."),
        state,
    }
}
