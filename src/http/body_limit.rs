//! The announced body limit (docs/behaviour.md §4): a request whose `Content-Length` is above
//! `--max-body-bytes` is answered `413 payload_too_large` at once, on every route, before a
//! byte of its body is read.
//!
//! Without it a client could announce a body it never sends and hold the request until the
//! request timeout, and a client sending `Expect: 100-continue` would be told to go ahead with
//! a body that is refused anyway. hyper sends `100 Continue` only when the body is first polled,
//! so answering here, without touching the body, refuses such a request without it; hyper then
//! closes the connection instead of reading the unwanted body.
//!
//! The members' internal Raft routes (`/cluster/raft/…`, docs/behaviour.md §9) are exempt: their
//! messages (snapshot pieces, batches of entries) are larger than any API body and have their
//! own limit where they are read.
//!
//! The length comes from the body's size hint, which hyper sets exactly from the
//! `Content-Length` it validated. A chunked body has no announced length: the route reading it
//! enforces the limit as it reads (`/identify`, [`super::identify`]).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tower::{Layer, Service};

use super::error::ApiError;

/// Paths under this prefix are not limited here (module docs).
pub const EXEMPT_PREFIX: &str = "/cluster/raft/";

/// The layer refusing requests that announce a body larger than `max_body_bytes` (module docs).
/// Add it inside the router (`Router::layer`), so the refusal is counted under its route.
#[derive(Clone, Copy, Debug)]
pub struct ContentLengthLimitLayer {
    max_body_bytes: u64,
}

impl ContentLengthLimitLayer {
    /// Refuses requests whose `Content-Length` is above `max_body_bytes` bytes.
    pub fn new(max_body_bytes: usize) -> Self {
        ContentLengthLimitLayer {
            max_body_bytes: u64::try_from(max_body_bytes).unwrap_or(u64::MAX),
        }
    }
}

impl<S> Layer<S> for ContentLengthLimitLayer {
    type Service = ContentLengthLimit<S>;

    fn layer(&self, inner: S) -> ContentLengthLimit<S> {
        ContentLengthLimit {
            inner,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

/// The service of [`ContentLengthLimitLayer`]: `inner`, or `413 payload_too_large` without
/// calling it when the request announces more than the limit.
#[derive(Clone, Debug)]
pub struct ContentLengthLimit<S> {
    inner: S,
    max_body_bytes: u64,
}

impl<S> Service<Request> for ContentLengthLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.body().size_hint().lower() > self.max_body_bytes
            && !request.uri().path().starts_with(EXEMPT_PREFIX)
        {
            Either::Left(ready(Ok(ApiError::payload_too_large().into_response())))
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;

    async fn status(max: usize, body: Body) -> StatusCode {
        let inner = tower::service_fn(|_: Request| async {
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        let mut service = ContentLengthLimitLayer::new(max).layer(inner);
        match service.call(Request::new(body)).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    }

    /// The limit itself is allowed; one byte more is refused without calling the route.
    #[tokio::test]
    async fn announced_lengths_above_the_limit_are_refused() {
        assert_eq!(status(4, Body::from("abcd")).await, StatusCode::OK);
        assert_eq!(status(4, Body::empty()).await, StatusCode::OK);
        assert_eq!(
            status(4, Body::from("abcde")).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
