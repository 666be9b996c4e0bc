//! The request span and its closing events, as the callbacks of tower-http's `TraceLayer`
//! (docs/behaviour.md §6.10).
//!
//! Every request runs inside a debug-level `http_request` span with the fields `method`,
//! `route` (the matched route template, see [`route_label`]) and `request_id` (the
//! [`REQUEST_ID_HEADER`] value), so every line a handler logs carries them. When the response
//! head is ready a `request finished` debug event records `status` and `latency_us`. When debug
//! is off for [`TARGET`] at start-up, the router leaves the span out altogether; a `5xx` is
//! logged at error level either way ([`super::route_metrics`]).

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::response::Response;
use tracing::Span;

/// Request and response header carrying the request id: the client's value when it sends one,
/// otherwise a new UUID v4 (tower-http's `SetRequestIdLayer`, outside the router). Logged as
/// `request_id` on the request's span.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The log target of the request span and its events: `RUST_LOG=idrecon::http=debug` (or
/// any filter enabling debug for it at start-up) turns them on.
pub const TARGET: &str = "idrecon::http::trace";

/// The `route` of a request's logs and metrics for a path that matches no route.
pub const UNMATCHED: &str = "unmatched";

/// The `route` of a request's logs and metrics: the template of the route axum matched it to
/// (`/contacts/{id}` for `/contacts/42`: never the raw path, so a client cannot create
/// unbounded label values), or [`UNMATCHED`]. Only known inside the router: axum sets
/// [`MatchedPath`] when it routes the request.
pub fn route_label(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
}

/// The `http_request` span of `request` (module docs).
pub(crate) fn request_span(request: &Request) -> Span {
    tracing::debug_span!(
        target: TARGET,
        "http_request",
        method = %request.method(),
        route = route_label(request),
        request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|id| id.to_str().ok())
            .unwrap_or("-"),
    )
}

/// Logs the end of a request inside its span: `request finished` (debug) with `status` and
/// `latency_us` (microseconds from the router receiving the request to the response head). A
/// `5xx` is logged at error level by [`super::route_metrics`], with or without the span.
pub(crate) fn request_finished(response: &Response, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    tracing::debug!(target: TARGET, status, latency_us, "request finished");
}
