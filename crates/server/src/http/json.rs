//! `ValidJson<T>`: the body extractor every handler uses. It requires a JSON
//! content type, rejects unknown fields (the input types carry
//! `#[serde(deny_unknown_fields)]`), reports the path of a bad field, and runs
//! the type's `garde` rules, all as problem+json.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};

use crate::error::Error;
use crate::http::problem::Problem;

#[derive(Clone, Copy, Debug, Default)]
pub struct ValidJson<T>(pub T);

impl<T, S> FromRequest<S> for ValidJson<T>
where
    T: serde::de::DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(&request) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Send the body as JSON with `Content-Type: application/json`.",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        status,
                        "The request body is larger than the server accepts.",
                    )
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "The request body could not be read.",
                    )
                }
            })?;
        let value: T = parse(&bytes).map_err(|problem| *problem)?;
        value
            .validate()
            .map_err(|report| Problem::from(Error::from(report)))?;
        Ok(Self(value))
    }
}

fn has_json_content_type(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Parses JSON; malformed syntax is a 400, a well-formed body of the wrong
/// shape a 422 naming the field.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<Problem>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        if err.inner().is_syntax() || err.inner().is_eof() {
            return Box::new(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("The request body is not valid JSON: {}.", err.inner()),
            ));
        }
        Box::new(Problem::from(crate::validation::shape_error(&err)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, garde::Validate)]
    #[serde(deny_unknown_fields)]
    struct Signup {
        #[garde(email)]
        email: String,
        #[garde(range(min = 1, max = 10))]
        seats: u32,
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        let problem = parse::<Signup>(b"{\"email\":").expect_err("truncated");
        assert_eq!(problem.status, 400);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let problem =
            parse::<Signup>(br#"{"email":"a@b.c","seats":"two"}"#).expect_err("wrong type");
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "seats");
        assert!(!problem.errors[0].message.contains("line"));

        let problem = parse::<Signup>(br#"{"email":"a@b.c","seats":1,"admin":true}"#)
            .expect_err("unknown field");
        assert!(problem.errors[0].message.contains("unknown field `admin`"));
    }

    #[test]
    fn garde_reports_become_field_errors() {
        let value: Signup = parse(br#"{"email":"nope","seats":0}"#).expect("well-formed");
        let report = garde::Validate::validate(&value).expect_err("invalid");
        let Error::Validation { fields, .. } = Error::from(report) else {
            panic!("a garde report is a validation error");
        };
        let mut fields: Vec<_> = fields.into_iter().map(|f| f.field).collect();
        fields.sort();
        assert_eq!(fields, ["email", "seats"]);
    }
}
