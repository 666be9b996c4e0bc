//! Requests on any member (docs/behaviour.md §9): a follower sends what only the leader may
//! execute to the leader and relays its answer (status, headers, body), or, with forwarding
//! off, answers `421` naming the leader. Without a known leader the answer is `503
//! unavailable` with `Retry-After: 1`.
//!
//! A member executes itself: `/healthz`, `/metrics`, `/openapi.json`, `GET /cluster/status`, the
//! internal Raft routes, and reads that opt into a local answer with `?local=true`. Everything
//! else is the leader's. A forwarded request carries [`FORWARDED_HEADER`]; a member that
//! receives one and does not lead answers `503` instead of forwarding again, so a request
//! crosses at most one hop while leadership moves.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::backend::{not_leader, unavailable};
use super::error::ApiError;
use crate::cluster::ClusterNode;

/// The header a follower adds to a request it forwards: its own member id.
pub const FORWARDED_HEADER: &str = "x-idrecon-forwarded-by";

/// What the forwarding layer needs: the member, the client it forwards with, and the largest
/// body it relays.
#[derive(Clone)]
pub(crate) struct Forwarder {
    node: Arc<ClusterNode>,
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl Forwarder {
    /// A forwarder for `node` that relays bodies up to `max_body_bytes`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub(crate) fn new(
        node: Arc<ClusterNode>,
        max_body_bytes: usize,
    ) -> Result<Forwarder, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_millis(500))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Forwarder {
            node,
            client,
            max_body_bytes,
        })
    }
}

/// Whether `request` is executed by whichever member receives it.
fn executed_locally(request: &Request) -> bool {
    let path = request.uri().path();
    if matches!(
        path,
        "/healthz" | "/metrics" | "/openapi.json" | "/cluster/status"
    ) || path.starts_with("/cluster/raft/")
    {
        return true;
    }
    let reads_rows = path.starts_with("/identities") || path.starts_with("/contacts");
    request.method() == Method::GET && reads_rows && asks_local(request.uri().query())
}

/// Whether a query string holds `local=true` (docs/behaviour.md §9).
pub(crate) fn asks_local(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.eq_ignore_ascii_case("local=true"))
    })
}

/// The middleware: runs `request` here when this member executes it, else forwards it.
pub(crate) async fn forward(
    State(forwarder): State<Forwarder>,
    request: Request,
    next: Next,
) -> Response {
    let node = &forwarder.node;
    if executed_locally(&request) || node.is_leader() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED_HEADER) {
        return unavailable("leadership is changing; retry shortly").into_response();
    }
    let Some(leader) = node.leader() else {
        return unavailable("no leader is elected right now; retry shortly").into_response();
    };
    if !node.options().forward {
        return not_leader(&leader.address).into_response();
    }
    match relay(&forwarder, &leader.address, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Headers that belong to one connection, not to the request or answer (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Sends `request` to the leader at `address` and turns its answer into this member's.
async fn relay(
    forwarder: &Forwarder,
    address: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, forwarder.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than the limit",
            )
        })?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        HeaderName::from_static(FORWARDED_HEADER),
        HeaderValue::from(forwarder.node.id()),
    );
    let answer = forwarder
        .client
        .request(parts.method, format!("http://{address}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(leader = %address, error = %e, "forwarding to the leader failed");
            unavailable("the leader cannot be reached right now; retry shortly")
        })?;
    let status = answer.status();
    let mut relayed = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            relayed.append(name.clone(), value.clone());
        }
    }
    let bytes = answer.bytes().await.map_err(|e| {
        tracing::warn!(leader = %address, error = %e, "reading the leader's answer failed");
        unavailable("the leader's answer was cut off; retry shortly")
    })?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = relayed;
    if !response.headers().contains_key(header::CONTENT_TYPE) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Ok(response)
}
