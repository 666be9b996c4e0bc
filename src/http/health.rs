//! Operations routes: `GET /healthz` (docs/behaviour.md §6.9), `GET /metrics` (the Prometheus
//! scrape, §6.10) and `GET /openapi.json` (this server's OpenAPI document, §6.11).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::state::AppState;
use crate::metrics as metric;
use crate::store::StoreError;

/// The body of a healthy `GET /healthz` (docs/behaviour.md §6.9): `{"status": "ok"}`, and
/// with `--max-contacts` also the contacts held, the limit and whether it is reached:
/// `{"status": "ok", "contacts": 3, "max_contacts": 3, "capacity": "full"}`; a cluster member
/// adds its role, the leader it knows and whether it can get a write executed now
/// (`{"status": "ok", "role": "follower", "leader": 1, "writable": true}`, §9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ok", "contacts": 3, "max_contacts": 3, "capacity": "full"}))]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// Contacts held (rows, deleted ones included); only with `--max-contacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<u64>,
    /// The `--max-contacts` limit; only with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_contacts: Option<u64>,
    /// `ok` while requests may still add contacts, `full` once `contacts` has reached
    /// `max_contacts` (such requests are answered `507 capacity_exceeded`); only with
    /// `--max-contacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// A cluster member's role: `leader`, `follower`, `candidate` or `learner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The leader's member id a cluster member knows (absent while there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    /// Whether a write sent to this cluster member would be executed now (a leader is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<bool>,
}

impl Health {
    /// `ok`, with the contacts held, the limit and whether it is reached when `--max-contacts`
    /// is set (docs/behaviour.md §3.6, §6.9); no cluster fields.
    fn of_capacity(app: &AppState) -> Health {
        let (contacts, limit) = app.backend.capacity();
        let contacts = contacts as u64;
        Health {
            status: "ok".to_owned(),
            role: None,
            leader: None,
            writable: None,
            contacts: limit.map(|_| contacts),
            max_contacts: limit,
            capacity: limit.map(|max| if contacts >= max { "full" } else { "ok" }.to_owned()),
        }
    }
}

/// `GET /healthz` (docs/behaviour.md §6.9).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness and write health",
    description = "200 once recovery has finished; 503 `unavailable` once the log can no longer \
        acknowledge writes (a restart recovers from what is on disk); 503 `disk_full` while the \
        data directory's file system has less than `--disk-full-below-bytes` (default 1 MiB) \
        available, on a single node and on a cluster member (200 again once space is freed). \
        With `--max-contacts`, the body also has `contacts`, `max_contacts` and `capacity` \
        (`ok` or `full`: new contacts are refused with 507 while reads go on).",
    responses(
        (status = 200, description = "Serving and able to acknowledge writes.", body = Health),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 503, description = "The log failed (`unavailable`; no write is acknowledged \
            any more), or the data directory's file system is full (`disk_full`).",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn healthz(State(app): State<AppState>) -> Result<Response, ApiError> {
    // A cluster member is up until it shuts down (its role body says whether it can write); a
    // single node until its log fails.
    let node = app.backend.cluster();
    let role = node.map(|node| node.role());
    let up = role.map_or_else(
        || app.backend.healthy(),
        |role| role != crate::cluster::Role::Shutdown,
    );
    if !up {
        return Err(StoreError::Unavailable.into());
    }
    if app.backend.disk_full() {
        return Err(disk_full());
    }
    let mut health = Health::of_capacity(&app);
    if let (Some(node), Some(role)) = (node, role) {
        let leader = node.leader();
        health.role = Some(role.as_str().to_owned());
        health.writable = Some(leader.is_some());
        health.leader = leader.map(|l| l.id);
    }
    Ok(json_response(StatusCode::OK, &health))
}

/// `503 disk_full`: the data directory's file system has less than `--disk-full-below-bytes` free.
fn disk_full() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "disk_full",
        "the data directory's file system has less free space than --disk-full-below-bytes; \
         writes may fail",
    )
}

/// Content type of the Prometheus text exposition format, version 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: every metric in the Prometheus text format, rendered by the process's
/// installed recorder ([`crate::metrics::installed`]; the binary installs it before it opens
/// the store, the router never does; without one the payload is empty), after setting the
/// contacts / identities / largest identity and capacity gauges from the graph (O(1) under
/// the shared lock). The counts may include changes not yet durable.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Counters, histograms and gauges in the Prometheus text exposition format \
        (requests, identify outcomes, request latency, fsync time, group-commit batch size, \
        snapshots, contacts/identities/largest identity). See docs/OPERATIONS.md.",
    responses(
        (status = 200, description = "The metrics, as text.", body = String,
            content_type = "text/plain",
            example = json!("# TYPE idrecon_http_requests_total counter\n\
                idrecon_http_requests_total{route=\"/identify\",status=\"200\"} 1027\n")),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}}))
    )
)]
pub(crate) async fn metrics(State(app): State<AppState>) -> Response {
    let (contacts, identities, largest) = app
        .backend
        .with_graph(|g| (g.len(), g.identity_count(), g.largest_identity()));
    metric::set_state_gauges(contacts, identities, largest);
    metric::set_capacity_gauges(contacts, app.backend.capacity().1);
    let payload = metric::installed()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        payload,
    )
        .into_response()
}

/// `GET /openapi.json`: this server's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This API's OpenAPI 3.1 document",
    description = "Generated from the router at start-up, for this server's configuration \
        (the configured `--response-key` spelling is the required one).",
    responses(
        (status = 200, description = "The OpenAPI document.", body = serde_json::Value,
            content_type = "application/json"),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}}))
    )
)]
pub(crate) async fn openapi_json(State(app): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
        .into_response()
}
