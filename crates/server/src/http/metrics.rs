//! Prometheus metrics: request counts and latencies per route, and, at each
//! scrape, the database pool, the job queue depth, the latest usage of each
//! instance this process samples, and the business and infrastructure
//! figures of the database (see `crate::modules::monitoring`).
//!
//! The figures are the operator's (revenue, users, capacity): they are served
//! only with the configured `metrics_token` as a bearer token, and not at
//! all without one.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::error::Error;
use crate::http::AppState;
use crate::modules::monitoring;

/// Middleware on matched routes; the route template (`/api/v1/users/{id}`)
/// keeps label cardinality bounded.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "vmcloud_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status,
    )
    .increment(1);
    metrics::histogram!(
        "vmcloud_http_request_duration_seconds",
        "method" => method, "route" => route,
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
fn presents(headers: &HeaderMap, token: &SecretString) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())))
}

/// `GET /metrics`, in the Prometheus text format.
pub async fn render(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = &state.config.metrics_token else {
        return Error::NotFound("No such route.".to_owned()).into_response();
    };
    if !presents(&headers, token) {
        let mut refused =
            Error::Unauthorized("Scraping needs the metrics token as a bearer token.".to_owned())
                .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    let pool = state.db.pool_usage();
    metrics::gauge!("vmcloud_db_pool_connections").set(f64::from(pool.size));
    metrics::gauge!("vmcloud_db_pool_idle_connections").set(f64::from(pool.idle));
    match tokio::time::timeout(Duration::from_secs(2), state.jobs.stats()).await {
        Ok(Ok(stats)) => {
            for (status, count) in [
                ("queued", stats.queued),
                ("scheduled", stats.scheduled),
                ("running", stats.running),
                ("dead", stats.dead),
            ] {
                #[allow(clippy::cast_precision_loss)]
                metrics::gauge!("vmcloud_jobs", "status" => status).set(count as f64);
            }
        }
        Ok(Err(err)) => tracing::warn!(error = format!("{err:#}"), "queue stats failed"),
        Err(_) => tracing::warn!("queue stats timed out"),
    }
    let mut text = state.metrics.render();
    text.push_str(&state.instance_readings.render_prometheus());
    let now = state.clock.now();
    match tokio::time::timeout(Duration::from_secs(2), monitoring::figures(&state.db, now)).await {
        Ok(Ok(figures)) => text.push_str(&monitoring::render(&figures, &state.config.data_dir)),
        Ok(Err(err)) => tracing::warn!(error = %err, "business figures failed"),
        Err(_) => tracing::warn!("business figures timed out"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
