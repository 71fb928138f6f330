//! The OpenAPI 3.1 document, generated from the handlers' annotations. It is
//! served at `/api/openapi.json`, browsable at `/api/docs`, and checked in at
//! `openapi/vmcloud.json` (a test fails when they drift apart).

use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{AppState, health};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "VMCloud API",
        description = "Rent, run and bill virtual machines. Errors are RFC 9457 \
                       `application/problem+json` documents with a stable `type`.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    tags(
        (name = "health", description = "Liveness and readiness probes"),
    ),
)]
struct ApiDoc;

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The document as served, pretty-printed with a trailing newline (the form
/// checked in).
pub fn document() -> String {
    let mut json = api_router()
        .into_openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}
