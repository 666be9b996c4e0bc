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
/// fits in 64 bits, written in decimal without a sign or a leading zero (docs/behaviour.md §4):
/// one id has one spelling, so `/contacts/01` and `/contacts/+1` are not `/contacts/1`.
pub(crate) fn path_id(
    id: Result<Path<String>, PathRejection>,
    name: &'static str,
) -> Result<ContactId, ApiError> {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    let canonical = id
        .bytes()
        .next()
        .is_some_and(|b| (b'1'..=b'9').contains(&b))
        && id.bytes().all(|b| b.is_ascii_digit());
    match id.parse::<ContactId>() {
        Ok(value) if canonical => Ok(value),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Result<ContactId, ApiError> {
        path_id(Ok(Path(text.to_owned())), "id")
    }

    /// One spelling per id: decimal digits, no sign, no leading zero, not zero, fits in 64 bits.
    #[test]
    fn path_ids_have_one_spelling() {
        assert_eq!(id("1").ok(), Some(1));
        assert_eq!(id("10").ok(), Some(10));
        assert_eq!(id("18446744073709551615").ok(), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "00",
            "01",
            "007",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x1",
            "١",
            "18446744073709551616",
        ] {
            assert!(id(bad).is_err(), "{bad:?}");
        }
    }
}
