//! The `limit` and `cursor` query parameters of every list endpoint.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::{Error, FieldError};
use crate::http::problem::Problem;
use crate::pagination::{DEFAULT_LIMIT, MAX_LIMIT, PageRequest, decode_cursor};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Pagination(pub PageRequest);

impl PageQuery {
    pub fn into_request(self) -> Result<PageRequest, Error> {
        let mut fields = Vec::new();
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            fields.push(FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => {
                let decoded = decode_cursor(cursor);
                if decoded.is_none() {
                    fields.push(FieldError::new("cursor", "is not a cursor from this API"));
                }
                decoded
            }
        };
        Error::check_fields(fields)?;
        Ok(PageRequest { limit, after })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                Problem::from(Error::invalid(vec![FieldError::new(
                    "query",
                    rejection.body_text(),
                )]))
            })?;
        Ok(Self(query.into_request()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagination::encode_cursor;

    #[test]
    fn defaults_and_bounds() {
        let default = PageQuery {
            limit: None,
            cursor: None,
        }
        .into_request()
        .expect("ok");
        assert_eq!(default.limit, DEFAULT_LIMIT);
        for bad in [0, MAX_LIMIT + 1] {
            let query = PageQuery {
                limit: Some(bad),
                cursor: None,
            };
            assert!(query.into_request().is_err());
        }
    }

    #[test]
    fn cursors_are_decoded_or_rejected() {
        let id = uuid::Uuid::now_v7();
        let ok = PageQuery {
            limit: Some(5),
            cursor: Some(encode_cursor(id)),
        };
        assert_eq!(ok.into_request().expect("ok").after, Some(id));
        let bad = PageQuery {
            limit: Some(5),
            cursor: Some("%%%".into()),
        };
        let Err(Error::Validation { fields, .. }) = bad.into_request() else {
            panic!("expected a validation error");
        };
        assert_eq!(fields[0].field, "cursor");
    }
}
