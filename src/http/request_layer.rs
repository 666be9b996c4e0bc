//! The per-request envelope of every route, as one tower layer: the request id, the debug-level
//! request span, the metrics and the request deadline (SPEC.md §6; issue 6 logs and metrics;
//! issue 3 speed).
//!
//! These were four library layers (tower-http's `SetRequestId`, `PropagateRequestId` and
//! `Trace`, then two `axum::middleware::from_fn`s). Each cost about 1 µs of CPU per request and
//! all of them together about 6 µs of the ~22 µs a pure-read `/identify` costs on one core, a
//! quarter of the gap to the ceiling server (BENCHMARKS.md, "fourth pass"): every layer took its
//! own clone of the inner service, boxed its own future, looked headers up and inserted them
//! again, read the clock, and the trace layer wrapped the response body. [`RequestLayer`] does the
//! same work once, in one future:
//!
//! 1. **Request id**: the client's `x-request-id` when it sends a valid one, otherwise a new
//!    UUID v4 (`uuid`'s thread-local `fast-rng`); returned in the response's `x-request-id`.
//! 2. **Span**: `http_request{method, route, request_id}` at debug level, entered around the
//!    handler, ending with a `request finished` debug event (`status`, `latency_us`). A `5xx`
//!    also logs `request failed` at error level, as the trace layer's default did. When debug
//!    is off for this module the span is disabled and nothing is formatted.
//! 3. **Metrics**: requests by route template, method and status, latency by route template
//!    and method, and `/identify` answers refused with a `4xx` as the `rejected` outcome
//!    ([`RequestMetrics`]; the handler counts the other outcomes, which it knows).
//! 4. **Deadline**: a request (body included) that takes longer than the timeout is answered
//!    `408 {"error": {"code": "request_timeout"}}` and its handler is dropped. The timer is
//!    armed only when the handler does not finish on its first poll (`WithinDeadline`, below).
//!
//! It wraps the whole router (not each route with `Router::layer`, which costs a boxed clone
//! per layer and request), so it runs once per request, matched or not, and finds the route
//! template in a [`RouteTable`] of the router's own templates.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::error::ApiError;
use super::request_metrics::RequestMetrics;
use super::route_table::{Route, RouteTable};
use crate::metrics as metric;

/// Request and response header carrying the request id: the client's value when it sends one,
/// otherwise a new UUID v4. Logged as `request_id` on the request's span.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The layer: shared metric handles, the route templates and the request deadline. Cheap to
/// clone (one `Arc`: every request's [`Answer`] holds a clone until it finishes).
#[derive(Clone)]
pub struct RequestLayer {
    shared: Arc<Shared>,
}

/// What every request of a [`RequestLayer`] reads.
struct Shared {
    metrics: Arc<RequestMetrics>,
    routes: Arc<RouteTable>,
    timeout: Duration,
}

impl RequestLayer {
    /// A layer recording into `metrics` under the templates of `routes` and answering `408`
    /// after `timeout` (wall time from the request head reaching the router to the response
    /// head).
    pub fn new(
        metrics: Arc<RequestMetrics>,
        routes: Arc<RouteTable>,
        timeout: Duration,
    ) -> RequestLayer {
        RequestLayer {
            shared: Arc::new(Shared {
                metrics,
                routes,
                timeout,
            }),
        }
    }
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> RequestService<S> {
        RequestService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RequestLayer`] wraps around the router. Never fails: every outcome, the
/// deadline included, is a response. Takes requests with any body type (hyper's `Incoming`
/// from the server, axum's `Body` in tests) and hands the inner service an axum [`Request`].
#[derive(Clone)]
pub struct RequestService<S> {
    inner: S,
    layer: RequestLayer,
}

impl<S, B> Service<axum::http::Request<B>> for RequestService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    /// Not boxed: hyper keeps one boxed slot per connection for the service's future and
    /// reuses it, so a box here would be one more allocation per request (issue 3).
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let layer = Arc::clone(&self.layer.shared);

        let request_id = client_request_id(req.headers()).unwrap_or_else(new_request_id);
        let method = metric::method_label(req.method());
        let route = layer.routes.lookup(req.uri().path());
        let span = tracing::debug_span!(
            "http_request",
            method = %req.method(),
            route = layer.routes.label(route),
            request_id = request_id.to_str().unwrap_or("-"),
        );

        let deadline = started + layer.timeout;
        // The inner service polled ready is the one called (tower's contract); its future
        // owns what it needs, so no clone of the service is moved into ours.
        Answer {
            handled: WithinDeadline::new(self.inner.call(req.map(Body::new)), deadline),
            finish: Some(Finish {
                started,
                layer,
                route,
                method,
                request_id,
                span,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of one request: the handler's, within the deadline, then [`Finish`].
    ///
    /// Written out rather than as an `async` block around an `async fn`: those moved the
    /// handler's future (several hundred bytes) from one state machine into the next three
    /// times per request, about 300 instructions of `memcpy` (issue 3, BENCHMARKS.md
    /// sixteenth pass). Polled again after it is ready, it polls the finished handler again,
    /// as the `async` block it replaces did. Public only as [`RequestService`]'s future type.
    pub struct Answer<F> {
        #[pin]
        handled: WithinDeadline<F>,
        finish: Option<Finish>,
    }
}

/// What the request layer does once the handler has answered (or the deadline passed).
struct Finish {
    started: Instant,
    layer: Arc<Shared>,
    route: Route,
    method: &'static str,
    request_id: HeaderValue,
    span: tracing::Span,
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Answer<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let handled = match this.finish.as_ref() {
            Some(finish) if !finish.span.is_disabled() => {
                let _entered = finish.span.enter();
                this.handled.poll(cx)
            }
            _ => this.handled.poll(cx),
        };
        let Poll::Ready(handled) = handled else {
            return Poll::Pending;
        };
        let response = match handled {
            Ok(Ok(response)) => response,
            Err(DeadlinePassed) => ApiError::request_timeout().into_response(),
        };
        Poll::Ready(Ok(match this.finish.take() {
            Some(finish) => finish.answer(response),
            None => response,
        }))
    }
}

impl Finish {
    /// Records the request's metrics, logs its end when its span is enabled (and a `5xx` always),
    /// and returns `response` with the request id.
    fn answer(self, mut response: Response) -> Response {
        let elapsed = self.started.elapsed();
        let status = response.status();
        let label = self.layer.routes.label(self.route);
        record(
            &self.layer.metrics,
            self.route,
            label,
            self.method,
            &response,
            elapsed,
        );
        if !self.span.is_disabled() || status.is_server_error() {
            let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            self.span.in_scope(|| {
                let status = status.as_u16();
                if status >= 500 {
                    tracing::error!(status, latency_us, "request failed");
                }
                tracing::debug!(status, latency_us, "request finished");
            });
        }
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER, self.request_id);
        response
    }
}

/// The error of a [`WithinDeadline`] whose deadline passed first.
#[derive(Debug, PartialEq, Eq)]
struct DeadlinePassed;

pin_project_lite::pin_project! {
    /// Runs `future` to completion unless `deadline` passes first (then [`DeadlinePassed`]),
    /// like `tokio::time::timeout_at`, but arms the timer only if the first poll does not
    /// finish it.
    ///
    /// Most requests (a pure-read `/identify` whose body arrived with its head, every `GET`)
    /// complete on their first poll, and for them putting a timer into tokio's wheel and taking
    /// it out again is work for nothing: about 400 of the 33 500 user-space instructions of a
    /// pure read (callgrind, `benches/callgrind_http.sh`; BENCHMARKS.md, eleventh pass). A
    /// future that waits (a slow body, a write waiting for its group commit) is raced against
    /// the same deadline as before, counted from the request's arrival; its timer is boxed, so
    /// the common case carries no room for one.
    struct WithinDeadline<F> {
        #[pin]
        future: F,
        deadline: Instant,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> WithinDeadline<F> {
    fn new(future: F, deadline: Instant) -> WithinDeadline<F> {
        WithinDeadline {
            future,
            deadline,
            timer: None,
        }
    }
}

impl<F: Future> Future for WithinDeadline<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(DeadlinePassed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The request's first `x-request-id` value, found by comparing names rather than through
/// `HeaderMap::get`, which hashes the custom name byte by byte (about 150 instructions; a
/// request has a handful of headers, and comparing a standard name with a custom one is a tag
/// check: issue 3, BENCHMARKS.md seventeenth pass).
fn client_request_id(headers: &axum::http::HeaderMap) -> Option<HeaderValue> {
    headers
        .iter()
        .find(|(name, _)| *name == REQUEST_ID_HEADER)
        .map(|(_, value)| value.clone())
}

/// A new request id: a UUID v4 in its hyphenated lower-case form (RFC 9562 §5.4).
fn new_request_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let bytes = Bytes::copy_from_slice(text.as_bytes());
    // SAFETY: `from_maybe_shared_unchecked` requires visible ASCII (RFC 9110 §5.5 field-value
    // bytes); a hyphenated UUID is hex digits and hyphens only. Skipping `from_str`'s check of
    // every byte saves about 100 instructions per request (issue 3); debug builds still check,
    // and `generated_request_ids_are_uuid_v4` below checks the bytes.
    unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) }
}

/// Counts the answer by route template, method and status, records its latency, and counts a
/// `4xx` answer of `/identify` as the `rejected` outcome (the handler counts the others,
/// [`RequestMetrics::outcome`]).
fn record(
    metrics: &RequestMetrics,
    route: Route,
    label: &str,
    method: &'static str,
    response: &Response,
    elapsed: Duration,
) {
    let status = response.status();
    if label == "/identify" && status.is_client_error() {
        metrics.rejected();
    }
    metrics.request(route, label, method, status.as_u16(), elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_uuid_v4() {
        let id = new_request_id();
        let text = id.to_str().unwrap_or_default();
        let parsed = uuid::Uuid::parse_str(text).unwrap_or_default();
        assert_eq!(parsed.get_version_num(), 4, "{text}");
        assert_eq!(parsed.hyphenated().to_string(), text);
        assert_ne!(new_request_id(), id);
    }

    /// A future that finishes on its first poll is answered without a timer: this runtime has
    /// no time driver, so arming one would panic, and the deadline, already past, is not
    /// looked at (as `tokio::time::timeout_at` polls the future before its deadline).
    #[test]
    fn the_client_request_id_is_the_first_value_of_its_header() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::HOST, HeaderValue::from_static("x"));
        headers.insert("x-request-ids", HeaderValue::from_static("not this"));
        assert_eq!(client_request_id(&headers), None);
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID_HEADER, HeaderValue::from_static("second"));
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("y"),
        );
        assert_eq!(
            client_request_id(&headers),
            headers.get(REQUEST_ID_HEADER).cloned()
        );
        assert_eq!(
            client_request_id(&headers),
            Some(HeaderValue::from_static("first"))
        );
    }

    #[test]
    fn a_future_ready_at_once_needs_no_timer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let past = Instant::now();
        let answered = runtime.block_on(WithinDeadline::new(std::future::ready(7), past));
        assert_eq!(answered.ok(), Some(7));
    }

    /// A future that waits is raced against the deadline: one that never finishes is cut off
    /// once it passes, one that finishes in time is answered.
    #[tokio::test]
    async fn a_waiting_future_is_cut_off_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let never = WithinDeadline::new(std::future::pending::<()>(), deadline).await;
        assert!(never.is_err());
        assert!(Instant::now() >= deadline);

        let later = Instant::now() + Duration::from_secs(10);
        let in_time = WithinDeadline::new(
            async {
                tokio::task::yield_now().await;
                8
            },
            later,
        )
        .await;
        assert_eq!(in_time.ok(), Some(8));
    }
}
