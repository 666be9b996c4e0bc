//! Error answers: [`ApiError`] (a status plus the JSON error body) and the body's shape,
//! [`ErrorEnvelope`] `{"error": {"code", "message", "field"?}}` (docs/behaviour.md §4).
//!
//! A leaf: every handler, the admin guard and the timeout layer answer their errors through it,
//! and it depends on nothing else in `http`.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::contact::ValidationError;
use crate::graph::ApplyError;
use crate::store::StoreError;

/// An error answer: an HTTP status plus the docs/behaviour.md §4 error body. Built from a
/// [`ValidationError`] (`400` with its code and field) or a [`StoreError`] (`503`, `507` or
/// `500`), or by the handlers for their own refusals.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    /// Headers the answer carries besides `Content-Type` (`Retry-After`, the leader's address).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error answered with `status`, machine-readable `code` and human-readable `message`.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            headers: Vec::new(),
        }
    }

    /// The same error, answered with the header `name: value` as well.
    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The same error, naming the request field or parameter at fault.
    pub(crate) fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// `404 not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `400 invalid_query_parameter` about the query parameter `name`.
    pub(crate) fn invalid_query(name: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query_parameter", message).with_field(name)
    }

    /// `413 payload_too_large`: the body is, or is announced to be, larger than
    /// `--max-body-bytes` (docs/behaviour.md §4).
    pub(crate) fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
    }

    /// The `500` of an internal failure (logged by the caller; no detail to the client).
    pub(crate) fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// The `408` of a request that took longer than the request timeout.
    pub(crate) fn request_timeout() -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "request took too long",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: e.code,
            message: e.message,
            field: e.field,
            headers: Vec::new(),
        }
    }
}

impl From<StoreError> for ApiError {
    /// `503 unavailable` when the log can no longer acknowledge writes, `507
    /// capacity_exhausted` when the graph is full, `507 capacity_exceeded` past `--max-contacts`
    /// (docs/behaviour.md §3.6), and a logged `500 internal` for anything else.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot durably record changes right now",
            ),
            StoreError::Apply(ApplyError::Full) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "capacity_exhausted",
                "no contact id or slot is left for a new contact",
            ),
            StoreError::CapacityExceeded { limit } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "capacity_exceeded",
                format!(
                    "the service holds its maximum of {limit} contacts; no new contact can be \
                     added (reads and requests that add nothing still work)"
                ),
            ),
            other => {
                tracing::error!(error = %other, "request failed inside the store");
                ApiError::internal()
            }
        }
    }
}

/// The body of every error answer (docs/behaviour.md §4): `{"error": {"code", "message", "field"?}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {
    "code": "invalid_email",
    "message": "email must contain exactly one '@'",
    "field": "email"
}}))]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The inside of an [`ErrorEnvelope`]: `{"code", "message", "field"?}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable error code, e.g. `invalid_email`, `not_found`, `unauthorized`
    /// (docs/behaviour.md §4 lists them per status).
    #[schema(example = "invalid_email")]
    pub code: String,
    /// Human-readable explanation; never echoes parser internals or stack traces.
    #[schema(example = "email must contain exactly one '@'")]
    pub message: String,
    /// The request field or parameter at fault (`email`, `phoneNumber`, `id`, `after`,
    /// `limit`, …); absent when the error is not about one field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, example = "email")]
    pub field: Option<String>,
}

/// The body of [`ApiError::internal`], for the (unreachable) case where an envelope cannot be
/// serialized.
const INTERNAL_BODY: &str = "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}\n";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let envelope = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field.map(str::to_owned),
            },
        };
        // serde_json fails only on maps with non-string keys, which the envelope has none of.
        // Like every JSON answer, the body ends in a newline (super::json).
        let (status, body) = match serde_json::to_vec(&envelope) {
            Ok(mut body) => {
                body.push(b'\n');
                (self.status, Body::from(body))
            }
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Body::from(INTERNAL_BODY)),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
