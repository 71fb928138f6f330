//! HTTP layer: thin axum handlers that parse input into typed commands and call
//! one service function, plus the cross-cutting layers every request passes:
//! request id, tracing, compression, problem details, panics, timeout, body
//! limit.

pub mod admin_addresses;
pub mod admin_audit;
pub mod admin_billing;
pub mod admin_catalog;
pub mod admin_dashboard;
pub mod admin_instances;
pub mod admin_jobs;
pub mod admin_nodes;
pub mod admin_outbox;
pub mod admin_settings;
pub mod admin_users;
pub mod api_tokens;
pub mod auth;
pub mod billing;
pub mod catalog;
pub mod console;
pub mod extract;
pub mod health;
pub mod instances;
pub mod json;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod request_id;
pub mod security;
pub mod ssh_keys;
pub mod tickets;
pub mod two_factor;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::middleware::from_fn;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa_swagger_ui::SwaggerUi;

use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::db::Database;
use crate::error::Error;
use crate::jobs::JobQueue;
use crate::mail::Mailer;
use crate::modules::auth::keys::KeyRing;
use crate::modules::instances::console::SerialHubs;
use crate::modules::instances::metrics::LatestReadings;
use crate::modules::nodes::drivers::Drivers;
use crate::modules::users::UserViews;

/// What handlers share. Cheap to clone: every field is a handle.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Database,
    pub cache: Cache,
    pub jobs: JobQueue,
    pub metrics: PrometheusHandle,
    pub keys: Arc<KeyRing>,
    /// Seals the secrets the database keeps (TOTP seeds).
    pub sealer: Arc<crate::modules::auth::sealing::Sealer>,
    pub user_views: UserViews,
    pub mailer: Mailer,
    pub drivers: Drivers,
    /// This process' connections to serial consoles, shared by their viewers.
    pub serial_hubs: SerialHubs,
    /// What the instance metrics sampler last read, for `/metrics`.
    pub instance_readings: LatestReadings,
    /// The system clock, or a settable one in tests.
    pub clock: SharedClock,
    /// The card payment provider, when one is configured.
    pub payments: Option<crate::modules::billing::payments::SharedProvider>,
}

impl AppState {
    /// What the second-factor services need.
    pub fn second_factor(&self) -> crate::modules::auth::two_factor::Services {
        crate::modules::auth::two_factor::Services {
            db: self.db.clone(),
            cache: self.cache.clone(),
            views: self.user_views.clone(),
            sealer: self.sealer.clone(),
        }
    }

    /// What the instance services need.
    pub fn instances(&self) -> crate::modules::instances::Services {
        crate::modules::instances::Services {
            db: self.db.clone(),
            cache: self.cache.clone(),
            jobs: self.jobs.clone(),
            drivers: self.drivers.clone(),
            serial_hubs: self.serial_hubs.clone(),
            ssh_host: self.config.ssh_host(),
            clock: self.clock.clone(),
        }
    }

    /// What the billing services need.
    pub fn billing(&self) -> crate::modules::billing::Services {
        crate::modules::billing::Services {
            db: self.db.clone(),
            cache: self.cache.clone(),
            clock: self.clock.clone(),
            jobs: self.jobs.clone(),
            payments: self.payments.clone(),
        }
    }

    /// What the support services need.
    pub fn support(&self) -> crate::modules::support::Services {
        crate::modules::support::Services {
            db: self.db.clone(),
            cache: self.cache.clone(),
            jobs: self.jobs.clone(),
            clock: self.clock.clone(),
            attachments_dir: self.config.data_dir.join("attachments"),
            public_url: self.config.public_url(),
        }
    }
}

/// The whole HTTP application of `vmcloud serve`.
pub fn router(state: AppState) -> Router {
    let (api, document) = openapi::api();
    let routes = Router::new()
        .merge(api.route_layer(from_fn(metrics::track)))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", document));
    with_layers(routes, state)
}

/// What a `vmcloud worker` serves: probes and metrics, for its orchestrator.
pub fn probe_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route_layer(from_fn(metrics::track));
    with_layers(routes, state)
}

/// Adds `/metrics`, the 404 fallback and the layers every request passes.
pub fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let timeout = state.config.request_timeout();
    let config = state.config.clone();
    let router = routes
        .route("/metrics", get(metrics::render))
        .fallback(unknown_route)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(from_fn(problem::problem_details))
        .layer(CompressionLayer::new())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request
                        .headers()
                        .get(&request_id::REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        request_id,
                        user_id = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        );
    security::harden(router, &config).layer(from_fn(request_id::request_id))
}

async fn unknown_route() -> Error {
    Error::NotFound("No such route.".to_owned())
}
