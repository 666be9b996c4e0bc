//! JSON answers: a status and a serialized value with one `Content-Type: application/json`,
//! the body ending in a newline (docs/behaviour.md §6), so `curl` output and logs of raw
//! answers end their line.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

/// `value` as an `application/json` answer with `status`, or the `500 internal` error a
/// serializer failure is answered with (serde_json fails only on maps with non-string keys,
/// which no answer has).
pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(json) => json_bytes_response(status, json),
        Err(_) => ApiError::internal().into_response(),
    }
}

/// A response with `json` (already serialized, without a final newline) as its
/// `application/json` body, followed by `\n`.
pub(crate) fn json_bytes_response(status: StatusCode, mut json: Vec<u8>) -> Response {
    // serde_json's buffer grows by doubling, so this rarely reallocates.
    json.push(b'\n');
    let mut response = Response::new(Body::from(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON answer carries its status, exactly one `Content-Type: application/json` and the
    /// bytes as given plus a newline.
    #[tokio::test]
    async fn json_responses_have_one_json_content_type() {
        let response = json_bytes_response(StatusCode::CONFLICT, b"{\"a\":1}".to_vec());
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let types: Vec<_> = response
            .headers()
            .get_all(header::CONTENT_TYPE)
            .iter()
            .collect();
        assert_eq!(types, ["application/json"]);
        assert_eq!(response.headers().len(), 1);
        let body = axum::body::to_bytes(response.into_body(), 100).await;
        assert_eq!(body.ok().as_deref(), Some(&b"{\"a\":1}\n"[..]));
    }
}
