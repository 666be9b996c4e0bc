//! `POST /identify` (docs/behaviour.md §3): the handler, its OpenAPI description, the checks before the
//! body is parsed (`Content-Type`, the body limit) and the `x-idrecon-outcome` header. The body
//! itself is parsed by [`body`] ([`parse_identify_body`]).

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::answer::IdentifyAnswer;
use super::answer::IdentifyResponse;
use super::error::{ApiError, ErrorEnvelope};
use super::json::json_bytes_response;
use super::state::AppState;
use crate::metrics as metric;
use crate::store::Outcome;

pub mod body;

pub use body::{IdentifyRequestBody, PhoneNumberInput, parse_identify_body};

/// Response header of `/identify` naming what the request did: `new-primary`,
/// `new-secondary`, `merge`, `read` or `refused` ([`outcome_header`]; for load tools and
/// debugging, beside the answer body docs/behaviour.md §3 defines). The same outcome is counted in `/metrics` by the handler.
pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("x-idrecon-outcome");

/// Whether the `Content-Type` is JSON in UTF-8: `application/json` in any case, with or without
/// parameters (RFC 9110 §8.3.1), where a `charset` parameter, if any, must name UTF-8 (in any
/// case, quoted or not; RFC 8259 §8.1: JSON exchanged between systems is UTF-8). A body
/// declared in another charset would otherwise be read as UTF-8 and stored wrongly. The exact
/// common spelling is checked first, without parsing.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    if value.as_bytes() == b"application/json" {
        return true;
    }
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default();
    essence.trim().eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let (name, charset) = parameter.split_once('=').unwrap_or((parameter, ""));
            !name.trim().eq_ignore_ascii_case("charset") || {
                let charset = charset.trim();
                let charset = charset
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .unwrap_or(charset);
                charset.eq_ignore_ascii_case("utf-8")
            }
        })
}

/// The whole body of `req`, declared JSON in UTF-8 ([`is_json`]), at most `limit` bytes: as
/// [`read_body`], after `415 unsupported_media_type` for any other `Content-Type`.
pub(crate) async fn read_json_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json in UTF-8",
        ));
    }
    read_body(req, limit).await
}

/// The whole body of `req`, at most `limit` bytes (docs/behaviour.md §4): `413 payload_too_large` past
/// it (a chunked body, as it arrives; a `Content-Length` above it never gets here, the router's
/// [`super::body_limit`] layer refuses it before reading), `400 invalid_body` when the body
/// cannot be read (the connection failed mid-body).
async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|error| {
            let cause = error.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "request body could not be read",
                )
            }
        })
}

/// `POST /identify` (docs/behaviour.md §3).
#[utoipa::path(
    post,
    path = "/identify",
    tag = "identity",
    operation_id = "identify",
    summary = "Identify the customer of a checkout",
    description = "Links the request's email and/or phone number into the identity graph \
        (docs/behaviour.md §3): a new primary, a new secondary, a merge of identities, or a pure read. \
        Answers with the consolidated identity once every change it depends on is durable. \
        The key of the primary id is `primaryContactId` by default; `--response-key` switches \
        it to the original task's `primaryContatctId` or sends both.",
    request_body(
        content = IdentifyRequestBody,
        content_type = "application/json",
        description = "At least one of `email` and `phoneNumber`; unknown keys are ignored. \
            Larger than `--max-body-bytes` (16 KiB by default) is 413.",
        examples(
            ("email and phone" = (value = json!({
                "email": "mcfly@hillvalley.edu", "phoneNumber": "123456"
            }))),
            ("phone only, as a number" = (value = json!({"email": null, "phoneNumber": 123456}))),
            ("email only" = (value = json!({"email": "lorraine@hillvalley.edu"})))
        )
    ),
    responses(
        (status = 200, description = "The consolidated identity.", body = IdentifyResponse,
            headers(("x-idrecon-outcome" = String,
                description = "What the request did: `new-primary`, `new-secondary`, `merge` or `read`.")),
            example = json!({"contact": {
                "primaryContactId": 1,
                "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
                "phoneNumbers": ["123456"],
                "secondaryContactIds": [23]
            }})),
        (status = 400, description = "Not JSON, not an object, a duplicated key, an invalid \
            email or phone number, or neither given (docs/behaviour.md §4).", body = ErrorEnvelope,
            examples(
                ("invalid_json" = (value = json!({"error": {
                    "code": "invalid_json", "message": "request body is not valid JSON"}}))),
                ("invalid_email" = (value = json!({"error": {
                    "code": "invalid_email",
                    "message": "email must have a non-empty part on each side of '@'",
                    "field": "email"}}))),
                ("invalid_phone_number" = (value = json!({"error": {
                    "code": "invalid_phone_number",
                    "message": "phoneNumber must be a string, a non-negative integer or null",
                    "field": "phoneNumber"}}))),
                ("missing_contact" = (value = json!({"error": {
                    "code": "missing_contact",
                    "message": "at least one of email and phoneNumber must be given"}})))
            )),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 413, description = "The body is larger than `--max-body-bytes`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "payload_too_large", "message": "request body is too large"}})),
        (status = 415, description = "`Content-Type` is missing, not `application/json`, or \
            names a charset other than UTF-8.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unsupported_media_type",
                "message": "Content-Type must be application/json in UTF-8"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}})),
        (status = 507, description = "No contact id or slot is left for a new contact.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "capacity_exhausted",
                "message": "no contact id or slot is left for a new contact"}}))
    )
)]
pub(crate) async fn identify(
    State(app): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    // The request is taken whole so its headers are read in place (the `HeaderMap` extractor
    // clones them); the body is read under the body limit.
    let body = read_json_body(req, app.options.max_body_bytes).await?;
    let request = parse_identify_body(&body, app.normalizer())?;
    // The turn of a large read is kept until its answer is rendered.
    let (identity, outcome, turn) = app.backend.identify(&request).await?;
    let primary_id = identity.primary_contact_id;
    let outcome_name = outcome_header(outcome);
    if app.options.log_pii {
        tracing::debug!(
            outcome = outcome_name,
            primary_id,
            email = request.email().map(|e| e.as_str()),
            phone_number = request.phone().map(|p| p.as_str()),
            "identify decision"
        );
    } else {
        tracing::debug!(outcome = outcome_name, primary_id, "identify decision");
    }
    // A large answer is rendered in a slice of its own, after the requests that arrived while
    // it was copied out (docs/behaviour.md §3.6).
    if turn.is_held() {
        tokio::task::yield_now().await;
    }
    // Rendered here, after the store released its locks, from the identity it copied out.
    let answer = IdentifyAnswer::new(&identity, app.options.response_key);
    let json = serde_json::to_vec(&answer).map_err(|_| ApiError::internal())?;
    drop(turn);
    let mut response = json_bytes_response(StatusCode::OK, json);
    metrics::counter!(metric::IDENTIFY_OUTCOMES, "outcome" => outcome_label(outcome)).increment(1);
    response
        .headers_mut()
        .insert(OUTCOME_HEADER, HeaderValue::from_static(outcome_name));
    Ok(response)
}

/// The [`OUTCOME_HEADER`] value of `outcome`: `new-primary`, `new-secondary`, `merge`, `read`
/// or `refused`; also the `outcome` field of the `identify decision` log line.
pub fn outcome_header(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NewPrimary => "new-primary",
        Outcome::NewSecondary => "new-secondary",
        Outcome::Merge => "merge",
        Outcome::PureRead => "read",
        Outcome::Refused => "refused",
    }
}

/// The `outcome` label of [`metric::IDENTIFY_OUTCOMES`] for an answered `/identify`:
/// `new_primary`, `new_secondary`, `merge`, `pure_read` or `merge_refused` (the `rejected`
/// outcome of `4xx` answers is counted by [`super::route_metrics`]).
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::NewPrimary => "new_primary",
        Outcome::NewSecondary => "new_secondary",
        Outcome::Merge => "merge",
        Outcome::PureRead => "pure_read",
        Outcome::Refused => "merge_refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every outcome has its own header value and its own metric label.
    #[test]
    fn outcomes_have_distinct_names() {
        let headers: std::collections::BTreeSet<_> =
            Outcome::ALL.into_iter().map(outcome_header).collect();
        let labels: std::collections::BTreeSet<_> =
            Outcome::ALL.into_iter().map(outcome_label).collect();
        assert_eq!(headers.len(), Outcome::ALL.len());
        assert_eq!(labels.len(), Outcome::ALL.len());
        assert!(!labels.contains("rejected"));
    }

    #[test]
    fn json_content_types_are_recognized_in_any_spelling() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/json; Charset=\"Utf-8\"",
            "application/json; version=2",
            "application/json;",
        ] {
            assert!(with(json), "{json}");
        }
        for other in [
            "text/plain",
            "application/jsonx",
            "application/json-patch+json",
            "",
            "application/json; charset=latin1",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "application/json; charset=utf8",
            "application/json; charset=",
            "application/json; charset",
            "application/json; charset=utf-8; charset=latin1",
        ] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
