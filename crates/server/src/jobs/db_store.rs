//! The queue in the `jobs` table: one SeaORM code path for SQLite and
//! PostgreSQL. Claims are optimistic conditional UPDATEs (the row must still
//! be claimable and show the attempt count we read), so any number of workers
//! in any number of processes can compete without backend-specific locking.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, EntityTrait as _, PaginatorTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, SqlErr,
};

use super::{
    Claimed, ClaimedJob, EnqueueOutcome, FailOutcome, Intervention, JobFilter, JobRecord, JobState,
    JobStatus, Lease, NewJob, QueueStats,
};
use crate::db::Database;
use crate::db::entities::job::{self, Column, Entity as Jobs};
use crate::ids::JobId;
use crate::pagination::{Page, PageRequest, fetch_page};

/// Candidates read per slot to fill: competing workers read the same oldest
/// rows, so a claimer that loses a few races still finds work further on.
const CANDIDATES_PER_SLOT: u64 = 4;
/// A unique-key insert that collides looks the holder up again; the holder
/// can finish in between, so a few rounds may be needed.
const ENQUEUE_ROUNDS: usize = 5;

#[derive(Debug)]
pub(super) struct DbStore {
    db: Database,
}

impl DbStore {
    pub(super) fn new(db: Database) -> Self {
        Self { db }
    }

    pub(super) async fn enqueue(
        &self,
        job: &NewJob,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<EnqueueOutcome> {
        let db = self.db.writer();
        for _ in 0..ENQUEUE_ROUNDS {
            if let Some(key) = &job.unique_key {
                let holder = Jobs::find()
                    .select_only()
                    .column(Column::Id)
                    .filter(Column::UniqueKey.eq(key.as_str()))
                    .filter(Column::Status.ne(JobStatus::Dead.as_str()))
                    .into_tuple::<JobId>()
                    .one(db)
                    .await
                    .context("cannot look up the job holding a unique key")?;
                if let Some(id) = holder {
                    return Ok(EnqueueOutcome::Deduplicated(id));
                }
            }
            let id = JobId::new();
            let row = job::ActiveModel {
                id: Set(id),
                kind: Set(job.kind.clone()),
                payload: Set(job.payload.clone()),
                status: Set(JobStatus::Queued.as_str().to_owned()),
                unique_key: Set(job.unique_key.clone()),
                attempts: Set(0),
                max_attempts: Set(to_db_int(job.max_attempts)?),
                run_at: Set(run_at),
                locked_until: Set(None),
                locked_by: Set(None),
                last_error: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            };
            match Jobs::insert(row).exec_without_returning(db).await {
                Ok(_) => return Ok(EnqueueOutcome::Enqueued(id)),
                // Another enqueue with the same key won the race: return its job.
                Err(err)
                    if job.unique_key.is_some()
                        && matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {}
                Err(err) => return Err(err).context("cannot insert the job"),
            }
        }
        anyhow::bail!("the job's unique key kept changing hands; try again")
    }

    pub(super) async fn claim(
        &self,
        worker: &str,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Claimed> {
        let db = self.db.writer();
        let locked_until = now + TimeDelta::from_std(lease)?;
        let candidates = Jobs::find()
            .filter(claimable(now))
            .order_by_asc(Column::RunAt)
            .order_by_asc(Column::Id)
            .limit(u64::try_from(limit)?.saturating_mul(CANDIDATES_PER_SLOT))
            .all(db)
            .await
            .context("cannot look for due jobs")?;
        let mut claimed = Claimed {
            jobs: Vec::new(),
            dead_kinds: Vec::new(),
        };
        for row in candidates {
            if claimed.jobs.len() == limit {
                break;
            }
            let seen = Condition::all()
                .add(Column::Id.eq(row.id))
                .add(Column::Attempts.eq(row.attempts))
                .add(claimable(now));
            if row.status == JobStatus::Running.as_str() && row.attempts >= row.max_attempts {
                let result = Jobs::update_many()
                    .col_expr(Column::Status, Expr::value(JobStatus::Dead.as_str()))
                    .col_expr(Column::LockedUntil, Expr::value(None::<DateTime<Utc>>))
                    .col_expr(Column::LockedBy, Expr::value(None::<String>))
                    .col_expr(Column::LastError, Expr::value(super::LOST_ON_LAST_ATTEMPT))
                    .col_expr(Column::UpdatedAt, Expr::value(now))
                    .filter(seen)
                    .exec(db)
                    .await
                    .context("cannot dead-letter an abandoned job")?;
                if result.rows_affected == 1 {
                    claimed.dead_kinds.push(row.kind);
                }
                continue;
            }
            let attempt = row.attempts + 1;
            let result = Jobs::update_many()
                .col_expr(Column::Status, Expr::value(JobStatus::Running.as_str()))
                .col_expr(Column::Attempts, Expr::value(attempt))
                .col_expr(Column::LockedUntil, Expr::value(locked_until))
                .col_expr(Column::LockedBy, Expr::value(worker))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(seen)
                .exec(db)
                .await
                .context("cannot claim a job")?;
            // Zero rows: another worker claimed it first.
            if result.rows_affected == 1 {
                claimed.jobs.push(ClaimedJob {
                    lease: Lease {
                        id: row.id,
                        worker: worker.to_owned(),
                        attempt: from_db_int(attempt)?,
                    },
                    kind: row.kind,
                    payload: row.payload,
                    max_attempts: from_db_int(row.max_attempts)?,
                });
            }
        }
        Ok(claimed)
    }

    pub(super) async fn heartbeat(
        &self,
        held: &Lease,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let result = Jobs::update_many()
            .col_expr(
                Column::LockedUntil,
                Expr::value(now + TimeDelta::from_std(lease)?),
            )
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(held_by(held)?)
            .exec(self.db.writer())
            .await
            .context("cannot extend a job lease")?;
        Ok(result.rows_affected == 1)
    }

    pub(super) async fn complete(&self, held: &Lease) -> anyhow::Result<bool> {
        let result = Jobs::delete_many()
            .filter(held_by(held)?)
            .exec(self.db.writer())
            .await
            .context("cannot delete a completed job")?;
        Ok(result.rows_affected == 1)
    }

    pub(super) async fn fail(
        &self,
        held: &Lease,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<FailOutcome> {
        let db = self.db.writer();
        let attempt = to_db_int(held.attempt)?;
        let dead = Jobs::update_many()
            .col_expr(Column::Status, Expr::value(JobStatus::Dead.as_str()))
            .col_expr(Column::LockedUntil, Expr::value(None::<DateTime<Utc>>))
            .col_expr(Column::LockedBy, Expr::value(None::<String>))
            .col_expr(Column::LastError, Expr::value(error))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(held_by(held)?)
            .filter(Column::MaxAttempts.lte(attempt))
            .exec(db)
            .await
            .context("cannot dead-letter a failed job")?;
        if dead.rows_affected == 1 {
            return Ok(FailOutcome::Dead);
        }
        let retried = Jobs::update_many()
            .col_expr(Column::Status, Expr::value(JobStatus::Queued.as_str()))
            .col_expr(Column::RunAt, Expr::value(retry_at))
            .col_expr(Column::LockedUntil, Expr::value(None::<DateTime<Utc>>))
            .col_expr(Column::LockedBy, Expr::value(None::<String>))
            .col_expr(Column::LastError, Expr::value(error))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(held_by(held)?)
            .filter(Column::MaxAttempts.gt(attempt))
            .exec(db)
            .await
            .context("cannot requeue a failed job")?;
        Ok(if retried.rows_affected == 1 {
            FailOutcome::Retrying { run_at: retry_at }
        } else {
            FailOutcome::LeaseLost
        })
    }

    pub(super) async fn release(&self, held: &Lease, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let result = Jobs::update_many()
            .col_expr(Column::Status, Expr::value(JobStatus::Queued.as_str()))
            .col_expr(Column::Attempts, Expr::value(to_db_int(held.attempt)? - 1))
            .col_expr(Column::RunAt, Expr::value(now))
            .col_expr(Column::LockedUntil, Expr::value(None::<DateTime<Utc>>))
            .col_expr(Column::LockedBy, Expr::value(None::<String>))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(held_by(held)?)
            .exec(self.db.writer())
            .await
            .context("cannot release a job")?;
        Ok(result.rows_affected == 1)
    }

    pub(super) async fn job(&self, id: JobId) -> anyhow::Result<Option<JobRecord>> {
        let row = Jobs::find_by_id(id)
            .one(self.db.writer())
            .await
            .context("cannot read a job")?;
        row.map(record).transpose()
    }

    pub(super) async fn list(
        &self,
        filter: &JobFilter,
        page: PageRequest,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Page<JobRecord>> {
        let mut condition = Condition::all();
        if let Some(kind) = &filter.kind {
            condition = condition.add(Column::Kind.eq(kind.as_str()));
        }
        if let Some(state) = filter.state {
            condition = condition.add(in_state(state, now));
        }
        let page = fetch_page(
            self.db.reader(),
            Jobs::find().filter(condition),
            Column::Id,
            page,
            |row| row.id.into(),
        )
        .await
        .context("cannot list jobs")?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(record)
                .collect::<anyhow::Result<_>>()?,
            next_cursor: page.next_cursor,
        })
    }

    pub(super) async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Intervention> {
        let db = self.db.writer();
        let Some(current) = self.job(id).await? else {
            return Ok(Intervention::Missing);
        };
        let state = current.state(now);
        let update = match state {
            // A fresh set of attempts; the last error stays for the record.
            JobState::Dead => Jobs::update_many()
                .col_expr(Column::Status, Expr::value(JobStatus::Queued.as_str()))
                .col_expr(Column::Attempts, Expr::value(0))
                .col_expr(Column::RunAt, Expr::value(now))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(Column::Id.eq(id))
                .filter(Column::Status.eq(JobStatus::Dead.as_str())),
            JobState::Failed => Jobs::update_many()
                .col_expr(Column::RunAt, Expr::value(now))
                .col_expr(Column::UpdatedAt, Expr::value(now))
                .filter(Column::Id.eq(id))
                .filter(in_state(JobState::Failed, now)),
            other => return Ok(Intervention::Refused(other)),
        };
        match update.exec(db).await {
            Ok(result) if result.rows_affected == 1 => Ok(Intervention::Done),
            // It moved on in between (a worker claimed it): say where it is.
            Ok(_) => Ok(self.job(id).await?.map_or(Intervention::Missing, |job| {
                Intervention::Refused(job.state(now))
            })),
            // The partial unique index: another pending job holds the key.
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Ok(Intervention::KeyTaken)
            }
            Err(err) => Err(err).context("cannot queue a job again"),
        }
    }

    pub(super) async fn discard(&self, id: JobId) -> anyhow::Result<Intervention> {
        let result = Jobs::delete_many()
            .filter(Column::Id.eq(id))
            .filter(Column::Status.ne(JobStatus::Running.as_str()))
            .exec(self.db.writer())
            .await
            .context("cannot discard a job")?;
        if result.rows_affected == 1 {
            return Ok(Intervention::Done);
        }
        Ok(match self.job(id).await? {
            None => Intervention::Missing,
            Some(_) => Intervention::Refused(JobState::Running),
        })
    }

    pub(super) async fn stats(&self, now: DateTime<Utc>) -> anyhow::Result<QueueStats> {
        // Counts tolerate replica lag, so they stay off the primary.
        let db = self.db.reader();
        let queued = Column::Status.eq(JobStatus::Queued.as_str());
        Ok(QueueStats {
            queued: Jobs::find()
                .filter(queued.clone())
                .filter(Column::RunAt.lte(now))
                .count(db)
                .await?,
            scheduled: Jobs::find()
                .filter(queued)
                .filter(Column::RunAt.gt(now))
                .count(db)
                .await?,
            running: Jobs::find()
                .filter(Column::Status.eq(JobStatus::Running.as_str()))
                .count(db)
                .await?,
            dead: Jobs::find()
                .filter(Column::Status.eq(JobStatus::Dead.as_str()))
                .count(db)
                .await?,
        })
    }
}

fn record(row: job::Model) -> anyhow::Result<JobRecord> {
    Ok(JobRecord {
        id: row.id,
        kind: row.kind,
        payload: row.payload,
        status: JobStatus::parse(&row.status)?,
        unique_key: row.unique_key,
        attempts: from_db_int(row.attempts)?,
        max_attempts: from_db_int(row.max_attempts)?,
        run_at: row.run_at,
        locked_until: row.locked_until,
        locked_by: row.locked_by,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// The rows [`JobRecord::state`] puts in `state`.
fn in_state(state: JobState, now: DateTime<Utc>) -> Condition {
    let queued = Condition::all().add(Column::Status.eq(JobStatus::Queued.as_str()));
    match state {
        JobState::Queued => queued
            .add(Column::LastError.is_null())
            .add(Column::RunAt.lte(now)),
        JobState::Scheduled => queued
            .add(Column::LastError.is_null())
            .add(Column::RunAt.gt(now)),
        JobState::Failed => queued.add(Column::LastError.is_not_null()),
        JobState::Running => Condition::all().add(Column::Status.eq(JobStatus::Running.as_str())),
        JobState::Dead => Condition::all().add(Column::Status.eq(JobStatus::Dead.as_str())),
    }
}

/// Due and waiting, or running under a lease that has expired.
fn claimable(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(
            Condition::all()
                .add(Column::Status.eq(JobStatus::Queued.as_str()))
                .add(Column::RunAt.lte(now)),
        )
        .add(
            Condition::all()
                .add(Column::Status.eq(JobStatus::Running.as_str()))
                .add(Column::LockedUntil.lt(now)),
        )
}

/// Still running under this very lease.
fn held_by(held: &Lease) -> anyhow::Result<Condition> {
    Ok(Condition::all()
        .add(Column::Id.eq(held.id))
        .add(Column::Status.eq(JobStatus::Running.as_str()))
        .add(Column::LockedBy.eq(held.worker.as_str()))
        .add(Column::Attempts.eq(to_db_int(held.attempt)?)))
}

fn to_db_int(value: u32) -> anyhow::Result<i32> {
    i32::try_from(value).context("attempt count out of range")
}

fn from_db_int(value: i32) -> anyhow::Result<u32> {
    u32::try_from(value).context("negative attempt count in the jobs table")
}
