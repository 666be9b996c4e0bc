//! JSON answers: a status and a serialized value with one `Content-Type: application/json`.

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

/// A response with `json` (already serialized) as its `application/json` body.
pub(crate) fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> Response {
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
    /// bytes as given.
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
        assert_eq!(body.ok().as_deref(), Some(&b"{\"a\":1}"[..]));
    }
}
