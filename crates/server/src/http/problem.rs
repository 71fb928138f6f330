//! RFC 9457 problem details. Every error response of the API is
//! `application/problem+json` with a stable `type`, a human `detail`, field
//! errors where relevant and the request id to quote in a support ticket.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{Error, FieldError};
use crate::http::request_id::RequestId;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem: the body of every error response. Problem-specific
/// members (`limit`, `state`, `reason`, the failing `checks` of `/readyz`)
/// may follow the standard ones.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g.
    /// `/problems/validation-error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Problem-specific members beside the standard ones (`limit`, `state`,
    /// `reason`, the failing `checks` of `/readyz`); the schema leaves
    /// additional properties open for them.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(ignore)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let (kind, title) = kind_and_title(status);
        Self {
            kind,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            request_id: None,
            extensions: serde_json::Map::new(),
            retry_after_secs: None,
        }
    }

    #[must_use]
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn render(&self) -> Response {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = (self.status_code(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The `type` and `title` for each status the API answers with.
fn kind_and_title(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("/problems/malformed-request", "Malformed request"),
        StatusCode::UNAUTHORIZED => ("/problems/unauthorized", "Authentication required"),
        StatusCode::FORBIDDEN => ("/problems/forbidden", "Forbidden"),
        StatusCode::NOT_FOUND => ("/problems/not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("/problems/method-not-allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("/problems/timeout", "Request timed out"),
        StatusCode::CONFLICT => ("/problems/conflict", "Conflict"),
        StatusCode::PAYLOAD_TOO_LARGE => ("/problems/payload-too-large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("/problems/unsupported-media-type", "Unsupported media type")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ("/problems/validation-error", "Validation failed"),
        StatusCode::TOO_MANY_REQUESTS => ("/problems/rate-limited", "Too many requests"),
        StatusCode::BAD_GATEWAY => ("/problems/upstream-error", "Upstream service failed"),
        StatusCode::SERVICE_UNAVAILABLE => ("/problems/unavailable", "Service unavailable"),
        StatusCode::INTERNAL_SERVER_ERROR => ("/problems/internal-error", "Internal error"),
        _ => ("about:blank", status.canonical_reason().unwrap_or("Error")),
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.render();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(detail) => Self::new(StatusCode::NOT_FOUND, detail),
            Error::Validation { message, fields } => {
                let mut problem = Self::new(StatusCode::UNPROCESSABLE_ENTITY, message);
                problem.errors = fields;
                problem
            }
            Error::Conflict(detail) => Self::new(StatusCode::CONFLICT, detail),
            Error::BadRequest(detail) => Self::new(StatusCode::BAD_REQUEST, detail),
            Error::Unauthorized(detail) => Self::new(StatusCode::UNAUTHORIZED, detail),
            Error::Forbidden(detail) => Self::new(StatusCode::FORBIDDEN, detail),
            Error::RateLimited {
                message,
                retry_after_secs,
            } => {
                let mut problem = Self::new(StatusCode::TOO_MANY_REQUESTS, message);
                problem.retry_after_secs = Some(retry_after_secs);
                problem
            }
            Error::Unavailable(detail) => Self::new(StatusCode::SERVICE_UNAVAILABLE, detail),
            Error::PayloadTooLarge(detail) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail),
            Error::UnsupportedMediaType(detail) => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail)
            }
            Error::Upstream(detail) => Self::new(StatusCode::BAD_GATEWAY, detail),
            Error::PaymentRequired(detail) => {
                let mut problem = Self::new(StatusCode::PAYMENT_REQUIRED, detail);
                problem.kind = "/problems/payment-required";
                problem.title = "Payment required";
                problem
            }
            Error::QuotaExceeded { message, limit } => {
                let mut problem =
                    Self::new(StatusCode::FORBIDDEN, message).with_extension("limit", limit.into());
                problem.kind = "/problems/quota-exceeded";
                problem.title = "Quota exceeded";
                problem
            }
            Error::InvalidState { message, state } => {
                let mut problem =
                    Self::new(StatusCode::CONFLICT, message).with_extension("state", state.into());
                problem.kind = "/problems/invalid-state";
                problem.title = "Not possible in this state";
                problem
            }
            Error::NoCapacity(reason) => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    format!("No capacity for this instance: {reason}."),
                )
                .with_extension("reason", reason.into());
                problem.kind = "/problems/no-capacity";
                problem.title = "No capacity";
                problem
            }
            Error::TwoFactorRequired(detail) => {
                let mut problem = Self::new(StatusCode::UNAUTHORIZED, detail);
                problem.kind = "/problems/two-factor-required";
                problem.title = "Second factor required";
                problem
            }
            Error::TwoFactorEnrolmentRequired(detail) => {
                let mut problem = Self::new(StatusCode::FORBIDDEN, detail);
                problem.kind = "/problems/two-factor-enrolment-required";
                problem.title = "Two-factor authentication required";
                problem
            }
            Error::SessionRequired(detail) => {
                let mut problem = Self::new(StatusCode::FORBIDDEN, detail);
                problem.kind = "/problems/session-required";
                problem.title = "Signed-in session required";
                problem
            }
            Error::ImpersonationRefused(detail) => {
                let mut problem = Self::new(StatusCode::FORBIDDEN, detail);
                problem.kind = "/problems/impersonation-refused";
                problem.title = "Not while impersonating";
                problem
            }
            Error::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error occurred. Quote the request id when reporting it.",
                )
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// Middleware: stamps the request id on every problem, and turns any other
/// error response (a 405 from the router, a 408 from the timeout layer, a 413
/// from the body limit, a caught panic) into a problem too, so clients parse
/// one error shape.
pub async fn problem_details(request: Request, next: Next) -> Response {
    let request_id = request.extensions().get::<RequestId>().cloned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let mut problem = response
        .extensions()
        .get::<Problem>()
        .cloned()
        .unwrap_or_else(|| Problem::new(status, default_detail(status)));
    problem.request_id = request_id.map(|id| id.0);
    let mut rendered = problem.render();
    // Keep headers set by the handler or layers (Allow, Retry-After, the
    // request id) except the body's own.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    rendered
}

fn default_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this resource.",
        StatusCode::REQUEST_TIMEOUT => "The request took too long and was cancelled.",
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the server accepts.",
        StatusCode::INTERNAL_SERVER_ERROR => {
            "An unexpected error occurred. Quote the request id when reporting it."
        }
        _ => "The request could not be processed.",
    }
}
