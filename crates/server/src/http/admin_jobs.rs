//! `/api/v1/admin/jobs`: the background job queue, for admins: list and
//! inspect jobs with their errors, run a dead or failed one again, discard
//! one. Job payloads name internal objects, so support staff do not see them.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::{Admin, ClientInfo};
use crate::http::pagination::{PageQuery, Pagination};
use crate::http::problem::Problem;
use crate::ids::JobId;
use crate::jobs::{JobFilter, JobState};
use crate::modules::audit::{self, Event};
use crate::modules::jobs::{self, JobView};
use crate::pagination::Page;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub status: Option<JobState>,
    /// The job kind, e.g. `send_email`.
    pub kind: Option<String>,
}

/// Jobs, newest first. Completed jobs are not kept.
#[utoipa::path(get, path = "/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobQuery, PageQuery),
    responses((status = 200, body = Page<JobView>), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Query(query): Query<JobQuery>,
    Pagination(page): Pagination,
) -> Result<Json<Page<JobView>>> {
    let filter = JobFilter {
        state: query.status,
        kind: query.kind.filter(|kind| !kind.is_empty()),
    };
    Ok(Json(jobs::list(&state.jobs, &actor, filter, page).await?))
}

/// One job.
#[utoipa::path(get, path = "/admin/jobs/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Admin(actor): Admin,
    Path(id): Path<JobId>,
) -> Result<Json<JobView>> {
    Ok(Json(jobs::get(&state.jobs, &actor, id).await?))
}

/// Run a dead job again with a fresh set of attempts, or a failed one now
/// instead of after its backoff. 409 with `state` for any other job.
#[utoipa::path(post, path = "/admin/jobs/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not dead or failed (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<JobId>,
) -> Result<Json<JobView>> {
    let job = jobs::retry(&state.jobs, &actor, id).await?;
    audited(&state, &client, &actor, "job.retried", &job).await?;
    Ok(Json(job))
}

/// Discard a job that is not running. 409 for a running one.
#[utoipa::path(delete, path = "/admin/jobs/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Discarded"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Running (`state`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn discard(
    State(state): State<AppState>,
    Admin(actor): Admin,
    client: ClientInfo,
    Path(id): Path<JobId>,
) -> Result<StatusCode> {
    let job = jobs::discard(&state.jobs, &actor, id).await?;
    audited(&state, &client, &actor, "job.discarded", &job).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audited(
    state: &AppState,
    client: &ClientInfo,
    actor: &crate::modules::auth::Actor,
    what: &'static str,
    job: &JobView,
) -> Result<()> {
    let event = Event::new(what)
        .on("job", job.id)
        .details(serde_json::json!({
            "kind": job.kind,
            "state": job.state,
            "attempts": job.attempts,
            "last_error": job.last_error,
        }));
    audit::record(&state.db, &client.audit(Some(actor)), event).await
}
