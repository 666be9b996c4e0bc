//! Per-route request metrics (docs/behaviour.md §6.10): a tower layer inside the router, where
//! axum's [`MatchedPath`](axum::extract::MatchedPath) names the route.
//!
//! For every answered request it counts [`metric::HTTP_REQUESTS`] by `route` (the template,
//! [`route_label`]), `method` ([`method_label`]) and `status`, and records the time to the
//! response head in [`metric::HTTP_REQUEST_DURATION`] by `route` and `method`. A `4xx` answer
//! of `/identify` (refused input, a wrong method, a timeout, an oversized body) counts as the
//! `rejected` outcome of [`metric::IDENTIFY_OUTCOMES`]; the handler counts the other outcomes,
//! which only it knows.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use tower::{Layer, Service};

use super::trace::route_label;
use crate::metrics as metric;

/// The layer recording every request's metrics (module docs). Add it inside the router
/// (`Router::layer`), so that the route template is known.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteMetricsLayer;

impl<S> Layer<S> for RouteMetricsLayer {
    type Service = RouteMetrics<S>;

    fn layer(&self, inner: S) -> RouteMetrics<S> {
        RouteMetrics { inner }
    }
}

/// The service of [`RouteMetricsLayer`]: `inner`, with its answers counted.
#[derive(Clone, Debug)]
pub struct RouteMetrics<S> {
    inner: S,
}

impl<S> Service<Request> for RouteMetrics<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let route: Arc<str> = Arc::from(route_label(&request));
        let method = method_label(request.method());
        let answered = self.inner.call(request);
        Box::pin(async move {
            let response = answered.await?;
            record(route, method, response.status(), started.elapsed());
            Ok(response)
        })
    }
}

/// Counts one answer of `route` and `method` with `status` that took `elapsed`.
fn record(route: Arc<str>, method: &'static str, status: StatusCode, elapsed: Duration) {
    if status.is_server_error() {
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::error!(
            route = &*route,
            method,
            status = status.as_u16(),
            latency_us,
            "request failed"
        );
    }
    if &*route == "/identify" && status.is_client_error() {
        metrics::counter!(metric::IDENTIFY_OUTCOMES, "outcome" => "rejected").increment(1);
    }
    metrics::histogram!(
        metric::HTTP_REQUEST_DURATION,
        "route" => route.clone(),
        "method" => method
    )
    .record(elapsed.as_secs_f64());
    metrics::counter!(
        metric::HTTP_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
}

/// The `method` label of [`metric::HTTP_REQUESTS`]: the standard method names, `other` for
/// extension methods (so a client cannot create unbounded label values).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
