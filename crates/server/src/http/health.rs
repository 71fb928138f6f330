//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::AppState;
use crate::http::problem::Problem;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, or `degraded` while some hypervisor nodes are unreachable:
    /// the API still serves, so the process stays in the load balancer.
    pub status: &'static str,
    /// Each dependency and whether it answered: `ok` or `unavailable`.
    pub checks: serde_json::Map<String, serde_json::Value>,
    /// The nodes whose last health check failed, by name.
    pub degraded_nodes: Vec<String>,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database and the cache answer; load balancers route traffic here only
/// while this is 200. Unreachable hypervisor nodes make it `degraded`, not
/// unready.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "A dependency is unreachable; `checks` names it",
            body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, Problem> {
    let (database, cache) = tokio::join!(
        probe("database", state.db.ping()),
        probe("cache", state.cache.ping()),
    );
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    for (name, healthy) in [("database", database), ("cache", cache)] {
        checks.insert(
            name.into(),
            (if healthy { "ok" } else { "unavailable" }).into(),
        );
        if !healthy {
            failing.push(name);
        }
    }
    if failing.is_empty() {
        let degraded_nodes =
            match tokio::time::timeout(CHECK_TIMEOUT, crate::modules::nodes::offline(&state.db))
                .await
            {
                Ok(Ok(names)) => names,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot list offline nodes");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
        return Ok(Json(Readiness {
            status: if degraded_nodes.is_empty() {
                "ready"
            } else {
                "degraded"
            },
            checks,
            degraded_nodes,
        }));
    }
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Not ready: {} unreachable.", failing.join(" and ")),
    )
    .with_extension("checks", checks.into()))
}

/// Runs one check with a bound; the cause is logged, not returned.
async fn probe(name: &'static str, check: impl Future<Output = anyhow::Result<()>>) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(
                check = name,
                error = format!("{err:#}"),
                "readiness check failed"
            );
            false
        }
        Err(_) => {
            tracing::warn!(check = name, "readiness check timed out");
            false
        }
    }
}
