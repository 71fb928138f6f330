//! HTTP layer: thin axum handlers, extractors, OpenAPI.
