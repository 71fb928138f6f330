//! A background job in the database-backed queue. Finished jobs are deleted;
//! those that ran out of attempts stay, as `dead`, for an operator to inspect.

use sea_orm::entity::prelude::*;

use crate::ids::JobId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: JobId,
    pub kind: String,
    pub payload: Json,
    /// `queued`, `running` or `dead`.
    pub status: String,
    /// While the job is pending (`queued` or `running`), a second enqueue with
    /// the same key returns this job instead of adding one. Unique among
    /// pending jobs only (a partial index), so a dead job keeps its key for the
    /// operator without blocking a new one.
    pub unique_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTimeUtc,
    /// The lease of the worker running it; past this time another worker may
    /// take the job over.
    pub locked_until: Option<DateTimeUtc>,
    /// The worker holding the lease; with `attempts` it fences off a worker
    /// whose lease was taken over.
    pub locked_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
