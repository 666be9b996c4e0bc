//! Request parameters shared by several routes: a positive contact id from a path segment and
//! the key/value pairs of a query string, each refused with the JSON error body (docs/behaviour.md §4).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;

use super::backend::Consistency;
use super::error::ApiError;
use crate::contact::ContactId;

/// A positive id from the path segment `name`; a rejected path (e.g. invalid percent-encoded
/// UTF-8) gets the same JSON 400 as a malformed id.
///
/// # Errors
/// `400 invalid_path_parameter` (field `name`) unless the segment is a positive integer that
/// fits in 64 bits, written without a sign.
pub(crate) fn path_id(
    id: Result<Path<String>, PathRejection>,
    name: &'static str,
) -> Result<ContactId, ApiError> {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    match id.parse::<ContactId>() {
        Ok(value) if value > 0 && !id.starts_with('+') => Ok(value),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path_parameter",
            format!("{name} must be a positive integer"),
        )
        .with_field(name)),
    }
}

/// How fresh a read of `uri` must be: [`Consistency::Local`] when its query holds
/// `local=true` (docs/behaviour.md §9; only a cluster member tells the two apart).
pub(crate) fn consistency(uri: &axum::http::Uri) -> Consistency {
    if super::forward::asks_local(uri.query()) {
        Consistency::Local
    } else {
        Consistency::Linearizable
    }
}

/// The extractor of a query string's key/value pairs: axum's [`Query`], its rejection kept for
/// [`query_pairs`] to answer with the JSON error body.
pub(crate) type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The key/value pairs of the query string (none when absent), in order, repeated keys
/// included.
///
/// # Errors
/// `400 invalid_query_parameter` (field `query`) when it is not valid URL encoding.
pub(crate) fn query_pairs(query: QueryPairs) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|_| ApiError::invalid_query("query", "query string is not valid URL encoding"))
}
