//! The HTTP API (SPEC.md §3, §4, §6): a thin axum layer that extracts, validates into domain
//! types, calls the [`Store`] and maps every error to the JSON error shape
//! `{"error": {"code", "message", "field"?}}`.
//!
//! [`serve`] takes an already-bound listener (the mini-redis habit), so tests bind
//! `127.0.0.1:0` and start a real server in one line.
//!
//! Every request passes, outermost first: the request envelope ([`request_layer`]: a request id
//! in [`REQUEST_ID_HEADER`], the client's or a new UUID v4, echoed in the response; a
//! debug-level `http_request` span (method, route template, request id) ending with a
//! `request finished` event (status, latency); the metrics (counts and latency by route template
//! and status, `/identify` outcomes; see [`crate::metrics`]); the request deadline). The body
//! limit (SPEC.md §4) is checked where `/identify`, the one route with a body, reads it.
//! Routes are registered through `utoipa_axum`'s `OpenApiRouter`, from handlers annotated with
//! `#[utoipa::path]`, so the OpenAPI 3.1 document served at `GET /openapi.json` is derived from
//! the very router that serves the requests (see [`crate::openapi`]). Bulk routes sit on an
//! admin sub-router behind [`crate::admin::guard`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower::Layer;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{self, AdminToken};
use crate::contact::{ContactId, ContactRow, ValidationError};
use crate::metrics as metric;
use crate::openapi::{ApiDoc, IdentifyRequestBody, IdentifyResponse};
use crate::phone_region::Normalizer;
use crate::request::parse_identify_body;
use crate::store::{Store, StoreError};
pub use answer::IdentifyAnswer;
use request_layer::RequestLayer;

pub mod answer;
pub mod identities;
pub mod request_layer;
pub mod request_metrics;
pub mod route_table;

/// The key under which `/identify` names the primary id (SPEC.md §3: clients in the wild use
/// both spellings).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
pub enum ResponseKey {
    /// `primaryContactId` (the default).
    #[default]
    #[value(name = "primaryContactId")]
    #[serde(rename = "primaryContactId")]
    PrimaryContactId,
    /// `primaryContatctId`, the original task statement's spelling.
    #[value(name = "primaryContatctId")]
    #[serde(rename = "primaryContatctId")]
    PrimaryContatctId,
    /// Both keys, same value.
    #[value(name = "both")]
    #[serde(rename = "both")]
    Both,
}

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Spelling of the primary id key in `/identify` answers.
    pub response_key: ResponseKey,
    /// Largest accepted request body, in bytes (SPEC.md §4: 16 KiB default → `413` above).
    pub max_body_bytes: usize,
    /// Time a request may take, body reading included, before it is answered `408`.
    pub request_timeout: Duration,
    /// Time a connection may take to deliver a complete request head, idle keep-alive time
    /// included, before it is closed (see [`crate::server`]).
    pub idle_timeout: Duration,
    /// Whether the debug-level `/identify decision` log line may include the request's email
    /// and phone number (`--log-pii`); without it they never appear in logs.
    pub log_pii: bool,
    /// When set, admin routes (`GET /contacts`) need `Authorization: Bearer <token>`; when
    /// unset they are open (see [`crate::admin`]).
    pub admin_token: Option<AdminToken>,
    /// How `/identify` values (and those of any other handler that takes an email or phone
    /// number) are normalized: SPEC.md §4 by default, E.164 phones with `--phone-region`.
    pub normalizer: Normalizer,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            response_key: ResponseKey::PrimaryContactId,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            log_pii: false,
            admin_token: None,
            normalizer: Normalizer::default(),
        }
    }
}

/// An error answer: status plus the SPEC.md §4 error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The `500` of an internal failure (logged by the caller; no detail to the client).
    fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

/// A positive id from a path segment; a rejected path (e.g. invalid percent-encoded UTF-8) gets
/// the same JSON 400 as a malformed id.
fn path_id(id: Result<Path<String>, PathRejection>, name: &'static str) -> Result<u64, ApiError> {
    let id = id.map(|Path(id)| id).unwrap_or_default();
    parse_id(&id, name)
}

/// The key/value pairs of a raw query string (none when absent); `400 invalid_query` when it
/// is not valid URL encoding.
fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| query_error("query", "query string is not valid URL encoding"))
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: e.code,
            message: e.message,
            field: e.field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot durably record changes right now",
            ),
            StoreError::Apply(crate::graph::ApplyError::Full) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "capacity_exhausted",
                "no contact id or slot is left for a new contact",
            ),
            other => {
                tracing::error!(error = %other, "request failed inside the store");
                ApiError::internal()
            }
        }
    }
}

/// The body of every error answer (SPEC.md §4): `{"error": {"code", "message", "field"?}}`.
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
    /// (README's error table lists them per status).
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field.map(str::to_owned),
            },
        };
        json_response(self.status, &body)
    }
}

#[derive(Clone)]
struct AppState(Arc<AppShared>);

impl std::ops::Deref for AppState {
    type Target = AppShared;
    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// What every handler reads, behind one `Arc`: axum clones the state for each request (twice:
/// the route's service and the `State` extractor), so one reference count instead of three.
struct AppShared {
    store: Arc<Store>,
    options: Arc<HttpOptions>,
    /// The request layer's metric handles: `/identify` counts its own outcomes.
    metrics: Arc<request_metrics::RequestMetrics>,
    /// The serialized OpenAPI document served at `GET /openapi.json`.
    openapi: Bytes,
}

impl AppShared {
    /// The normalizer every handler must use for emails and phone numbers taken from a
    /// request (body, path or query), so that lookups match values exactly as they were stored.
    fn normalizer(&self) -> &Normalizer {
        &self.options.normalizer
    }
}

/// Every documented route, registered through `utoipa_axum` so that the router and the OpenAPI
/// document are built from the same list. Admin routes sit on their own sub-router behind
/// [`admin::guard`].
fn api_routes(options: &HttpOptions) -> OpenApiRouter<AppState> {
    let admin_routes = OpenApiRouter::new()
        .routes(routes!(list_contacts))
        .routes(routes!(identities::lookup_identity))
        .routes(routes!(
            identities::get_identity,
            identities::erase_identity
        ))
        .routes(routes!(identities::identity_history))
        .routes(routes!(identities::delete_contact))
        .routes(routes!(identities::compact));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(identify))
        .routes(routes!(get_contact))
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .merge(admin::guard(admin_routes, options.admin_token.clone()))
}

/// The OpenAPI 3.1 document of a server built with `options`, as served at `GET /openapi.json`:
/// every route of [`router`] with its parameters, request and response schemas, error bodies
/// and examples, adapted to `options.response_key` (see [`crate::openapi::document`]).
pub fn openapi_document(options: &HttpOptions) -> serde_json::Value {
    let (_, openapi) = api_routes(options).split_for_parts();
    crate::openapi::document(
        &openapi,
        options.response_key,
        options.admin_token.is_some(),
    )
}

/// The service [`router`] builds: the axum router inside the request layer.
pub type App = request_layer::RequestService<Router>;

/// The service with every route of SPEC.md §3 and §6 plus `GET /openapi.json` and
/// `GET /metrics`, the admin guard on bulk routes, JSON 404/405 fallbacks, the body limit, the
/// request timeout, request ids, request spans and metrics. Installs the process's metrics
/// recorder if it is not installed yet ([`metric::install`]).
///
/// The request layer wraps the router as a whole rather than each route (`Router::layer`):
/// axum boxes a layered route and clones it, once per layer, on every request (see
/// [`route_table`]). The body limit is applied where the one body-reading route reads its body
/// (`read_body`), not as axum's `DefaultBodyLimit` layer, which costs every request an
/// extension in a map of its own; a new route with a body must read it the same way.
pub fn router(store: Arc<Store>, options: HttpOptions) -> App {
    metric::install();
    let timeout = options.request_timeout;
    let (routes, openapi) = api_routes(&options).split_for_parts();
    // The OpenAPI document describes `/metrics` too (`openapi::metrics_doc`), but its handler
    // is routed here, outside `api_routes`: add its template only if the document lacks it, so
    // the table never sees a template twice (which it refuses, with a warning at every start).
    let mut templates: Vec<String> = openapi.paths.paths.keys().cloned().collect();
    if !templates.iter().any(|t| t == METRICS_PATH) {
        templates.push(METRICS_PATH.to_owned());
    }
    let route_table = Arc::new(route_table::RouteTable::new(templates));
    let request_metrics = Arc::new(request_metrics::RequestMetrics::new(route_table.len()));
    let document = crate::openapi::document(
        &openapi,
        options.response_key,
        options.admin_token.is_some(),
    );
    let state = AppState(Arc::new(AppShared {
        store,
        options: Arc::new(options),
        metrics: Arc::clone(&request_metrics),
        openapi: Bytes::from(document.to_string()),
    }));
    let router = routes
        .route(METRICS_PATH, axum::routing::get(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state);
    RequestLayer::new(request_metrics, route_table, timeout).layer(router)
}

/// Where Prometheus scrapes the metrics (SPEC.md §6, issue 6).
const METRICS_PATH: &str = "/metrics";

/// Request and response header carrying the request id: the client's value when it sends one,
/// otherwise a new UUID v4. Logged as `request_id` on the request's span.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// # Errors
/// The I/O error that stopped the accept loop.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeouts = crate::server::ServerTimeouts {
        idle_timeout: options.idle_timeout,
        ..crate::server::ServerTimeouts::default()
    };
    crate::server::serve(listener, router(store, options), timeouts, shutdown).await
}

/// Whether the `Content-Type` is JSON: `application/json` in any case, with or without
/// parameters (RFC 9110 §8.3.1). The exact common spelling is checked first, without parsing.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    value.as_bytes() == b"application/json"
        || value
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The whole body of `req`, at most `limit` bytes (SPEC.md §4): `413 payload_too_large` past
/// it (a `Content-Length` above it is refused before reading), `400 invalid_body` when the
/// body cannot be read (the connection failed mid-body).
async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|error| {
            let cause = error.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "request body could not be read",
                )
            }
        })
}

/// Response header of `/identify` naming what the request did: `new-primary`,
/// `new-secondary`, `merge`, `read` or `refused` ([`crate::store::Outcome::as_str`]; an
/// addition to SPEC.md, for load tools and debugging). The same outcome is counted in
/// `/metrics` by the handler.
pub const OUTCOME_HEADER: HeaderName = HeaderName::from_static("x-idrecon-outcome");

/// `POST /identify` (SPEC.md §3).
#[utoipa::path(
    post,
    path = "/identify",
    tag = "identity",
    operation_id = "identify",
    summary = "Identify the customer of a checkout",
    description = "Links the request's email and/or phone number into the identity graph \
        (SPEC.md §3): a new primary, a new secondary, a merge of identities, or a pure read. \
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
            email or phone number, or neither given (SPEC.md §4).", body = ErrorEnvelope,
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
        (status = 415, description = "`Content-Type` is missing or not `application/json`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unsupported_media_type",
                "message": "Content-Type must be application/json"}})),
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
async fn identify(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    // The request is taken whole so its headers are read in place (the `HeaderMap` extractor
    // clones them); the body is read under the body limit by `read_body`.
    if !is_json(req.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let body = read_body(req, app.options.max_body_bytes).await?;
    let request = parse_identify_body(&body, app.normalizer())?;
    let key = app.options.response_key;
    let (identity, outcome) = app.store.identify(&request).await?;
    let json = IdentifyAnswer {
        identity: &identity,
        key,
        rows: None,
    }
    .to_json();
    let primary_id = identity.primary_contact_id;
    if app.options.log_pii {
        tracing::debug!(
            outcome = outcome.as_str(),
            primary_id,
            email = request.email().map(|e| e.as_str()),
            phone_number = request.phone().map(|p| p.as_str()),
            "identify decision"
        );
    } else {
        tracing::debug!(outcome = outcome.as_str(), primary_id, "identify decision");
    }
    let mut response = answer_response(json)?;
    app.metrics.outcome(outcome);
    response.headers_mut().insert(
        OUTCOME_HEADER,
        header::HeaderValue::from_static(outcome.as_str()),
    );
    Ok(response)
}

/// `200` with an identity answer ([`IdentifyAnswer::to_json`]) as its body, or the internal
/// error its serialization failed with.
fn answer_response(json: Result<Vec<u8>, serde_json::Error>) -> Result<Response, ApiError> {
    let json = json.map_err(|_| ApiError::internal())?;
    Ok(json_bytes_response(StatusCode::OK, json))
}

/// A response with `json` as its `application/json` body. Built directly rather than from
/// `(status, [(CONTENT_TYPE, "application/json")], json)`: `Vec<u8>`'s `IntoResponse` first
/// inserts `application/octet-stream`, which the pair then replaces, and a `&str` header value
/// is validated and copied into a new allocation on every response (issue 3: about 300
/// instructions of a pure-read `/identify`, BENCHMARKS.md fifteenth pass).
fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `value` as an `application/json` response, or the internal error a serializer failure is
/// answered with (serde_json fails only on non-string map keys, which no answer has).
fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(json) => json_bytes_response(status, json),
        Err(_) => ApiError::internal().into_response(),
    }
}

fn parse_id(text: &str, what: &'static str) -> Result<ContactId, ApiError> {
    match text.parse::<ContactId>() {
        Ok(id) if id > 0 && !text.starts_with('+') => Ok(id),
        _ => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_path_parameter",
            message: format!("{what} must be a positive integer"),
            field: Some(what),
        }),
    }
}

/// `GET /contacts/{id}` (SPEC.md §6).
#[utoipa::path(
    get,
    path = "/contacts/{id}",
    tag = "identity",
    operation_id = "getContact",
    summary = "One Contact row",
    description = "All eight columns of the row, deleted rows included (SPEC.md §6).",
    params(("id" = u64, Path, description = "Contact id, a positive integer.", minimum = 1,
        example = 4)),
    responses(
        (status = 200, description = "The row.", body = ContactRow),
        (status = 400, description = "`id` is not a positive integer.", body = ErrorEnvelope,
            example = json!({"error": {"code": "invalid_path_parameter",
                "message": "id must be a positive integer", "field": "id"}})),
        (status = 404, description = "No contact has this id.", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found",
                "message": "contact 99 does not exist"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
async fn get_contact(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "id")?;
    match app.store.contact(id).await? {
        Some(row) => Ok(json_response(StatusCode::OK, &row)),
        None => Err(ApiError::not_found(format!("contact {id} does not exist"))),
    }
}

/// Largest `limit` of the listing (SPEC.md §6).
pub const MAX_PAGE: usize = 10_000;
/// Default `limit` of the listing (SPEC.md §6).
pub const DEFAULT_PAGE: usize = 1_000;

fn query_error(name: &'static str, message: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_query_parameter",
        message: message.to_owned(),
        field: Some(name),
    }
}

/// One page of `GET /contacts` (SPEC.md §6): rows in id order after the `after` id, and the
/// `after` value of the next page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"contacts": [{
    "id": 3, "phoneNumber": "919191", "email": "george@hillvalley.edu", "linkedId": null,
    "linkPrecedence": "primary", "createdAt": "2023-04-11T00:00:00.374Z",
    "updatedAt": "2023-04-11T00:00:00.374Z", "deletedAt": null
}], "next": 3}))]
pub struct ContactPage {
    /// Up to `limit` rows (deleted rows included), in id order.
    pub contacts: Vec<ContactRow>,
    /// The id to pass as `after` for the next page; null when this page reached the end.
    #[schema(value_type = Option<u64>, required = true, minimum = 1)]
    pub next: Option<ContactId>,
}

/// `GET /contacts?after={id}&limit={n}` (SPEC.md §6). An admin route: behind the admin token
/// when one is configured.
#[utoipa::path(
    get,
    path = "/contacts",
    tag = "admin",
    operation_id = "listContacts",
    summary = "Every Contact row, page by page",
    description = "Rows in id order, deleted rows included (SPEC.md §6). An admin route: when \
        the server has an admin token (`--admin-token`), it needs \
        `Authorization: Bearer <token>`.",
    params(
        ("after" = Option<u64>, Query, description = "Answer rows with an id greater than this \
            (default 0: from the start).", minimum = 0, example = 2),
        ("limit" = Option<usize>, Query, description = "Rows per page, 1–10 000 (default 1 000).",
            minimum = 1, maximum = 10000, example = 1)
    ),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "One page of rows.", body = ContactPage),
        (status = 400, description = "`after` or `limit` is not a valid number.",
            body = ErrorEnvelope, example = json!({"error": {"code": "invalid_query_parameter",
                "message": "limit must be an integer from 1 to 10000", "field": "limit"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
async fn list_contacts(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut after, mut limit) = (0u64, DEFAULT_PAGE);
    for (key, value) in query_pairs(query.as_deref())? {
        match key.as_str() {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| query_error("after", "after must be a non-negative integer"))?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        query_error("limit", "limit must be an integer from 1 to 10000")
                    })?;
            }
            _ => {}
        }
    }
    let mut rows = app.store.contacts_after(after, limit + 1).await?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &ContactPage {
            contacts: rows,
            next,
        },
    ))
}

/// The body of a healthy `GET /healthz`: `{"status": "ok"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /healthz` (SPEC.md §6).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Liveness and write health",
    description = "200 once recovery has finished; 503 once the log can no longer acknowledge \
        writes (a restart recovers from what is on disk).",
    responses(
        (status = 200, description = "Serving and able to acknowledge writes.", body = Health),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 503, description = "The log failed; no write is acknowledged any more.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
async fn healthz(State(app): State<AppState>) -> Result<Response, ApiError> {
    if app.store.healthy() {
        Ok(json_response(
            StatusCode::OK,
            &Health {
                status: "ok".to_owned(),
            },
        ))
    } else {
        Err(StoreError::Unavailable.into())
    }
}

/// `GET /metrics`: every metric in the Prometheus text format ([`crate::metrics`]), after
/// setting the contacts / identities / largest identity gauges from the graph (O(1) under the
/// shared lock). The counts may include changes not yet durable.
async fn metrics(State(app): State<AppState>) -> Response {
    let (contacts, identities, largest) = app
        .store
        .with_graph(|g| (g.len(), g.identity_count(), g.largest_identity()));
    metric::set_state_gauges(contacts, identities, largest);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, metric::CONTENT_TYPE)],
        metric::render(),
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
async fn openapi_json(State(app): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.clone(),
    )
        .into_response()
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

    #[test]
    fn json_content_types_are_recognized_in_any_spelling() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(value),
            );
            is_json(&headers)
        };
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(with(json), "{json}");
        }
        for other in [
            "text/plain",
            "application/jsonx",
            "application/json-patch+json",
            "",
        ] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
