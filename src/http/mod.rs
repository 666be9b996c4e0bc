//! The HTTP API (docs/behaviour.md §3, §4, §6): a thin axum layer that extracts, validates
//! into domain types, calls the [`Store`] and maps every error to the JSON error shape
//! `{"error": {"code", "message", "field"?}}` ([`error`]).
//!
//! This module builds the router and nothing else. The modules form a tree, each using only
//! those below it:
//!
//! ```text
//! server                 the connection loop; `serve` runs `router` on a listener
//!   write_stall          the write-stall timeout of a connection
//!   mod (router)         routes and layers; the OpenAPI document from the same route list
//!     identify, contacts, identities, split, blocked, admin, health
//!                        one module per resource: its handlers and their
//!                        `#[utoipa::path]` documentation
//!     auth               the admin guard and `AdminToken`
//!     openapi            the document's fixed parts, its adaptation to the options
//!     trace, route_metrics, body_limit
//!                        the request span, the per-route metrics, the announced body limit
//!       answer, params, values, json, state, options, error
//!                        shared leaves
//! ```
//!
//! Routes are registered through `utoipa_axum`'s `OpenApiRouter`, from handlers annotated with
//! `#[utoipa::path]`, so the OpenAPI 3.1 document served at `GET /openapi.json` is derived from
//! the very router that serves the requests; `routes!` below is the one list of routes. Admin
//! routes sit on a sub-router behind [`auth::guard`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::Store;
use backend::Backend;
use body_limit::ContentLengthLimitLayer;
use error::ApiError;
use route_metrics::RouteMetricsLayer;
use state::AppState;

pub mod admin;
pub mod answer;
pub mod auth;
pub mod backend;
pub mod blocked;
pub mod body_limit;
mod cluster;
pub mod contacts;
pub mod error;
pub mod forward;
pub mod health;
pub mod identify;
pub mod identities;
mod json;
pub mod openapi;
pub mod options;
mod params;
pub mod route_metrics;
pub mod server;
pub mod split;
mod state;
pub mod trace;
pub mod values;
pub mod write_stall;

pub use answer::IdentifyAnswer;
pub use identify::OUTCOME_HEADER;
pub use options::{HttpOptions, ResponseKey};
pub use trace::REQUEST_ID_HEADER;

/// Every documented route, registered through `utoipa_axum` so that the router and the OpenAPI
/// document are built from the same list. Admin routes sit on their own sub-router behind
/// [`auth::guard`].
fn api_routes(options: &HttpOptions) -> OpenApiRouter<AppState> {
    let admin_routes = OpenApiRouter::new()
        .routes(routes!(contacts::list_contacts))
        .routes(routes!(identities::lookup_identity))
        .routes(routes!(
            identities::get_identity,
            identities::erase_identity
        ))
        .routes(routes!(identities::identity_history))
        .routes(routes!(split::identity_links))
        .routes(routes!(split::split_identity))
        .routes(routes!(
            blocked::list_blocked_values,
            blocked::block_values,
            blocked::unblock_values
        ))
        .routes(routes!(contacts::get_contact, contacts::delete_contact))
        .routes(routes!(admin::compact));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(identify::identify))
        .routes(routes!(health::healthz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_json))
        .merge(auth::guard(admin_routes, options.admin_token.clone()))
}

/// The OpenAPI 3.1 document of a server built with `options`, as served at `GET /openapi.json`:
/// every route of [`router`] with its parameters, request and response schemas, error bodies
/// and examples, adapted to `options.response_key` (see [`openapi::document`]).
pub fn openapi_document(options: &HttpOptions) -> serde_json::Value {
    let (_, openapi) = api_routes(options).split_for_parts();
    openapi::document(
        &openapi,
        options.response_key,
        options.admin_token.is_some(),
    )
}

/// The service [`router`] builds: the axum router inside the request id layers.
pub type App = SetRequestId<PropagateRequestId<Router>, MakeRequestUuid>;

/// The service with every route of docs/behaviour.md §3 and §6 plus `GET /openapi.json` and
/// `GET /metrics`, the admin guard on admin routes, JSON 404/405 fallbacks and, around every
/// route and fallback, outermost first:
///
/// 1. the request id ([`REQUEST_ID_HEADER`]: the client's value, else a new UUID v4), set on
///    the request and returned on the response (tower-http's `SetRequestId` and
///    `PropagateRequestId`, around the whole router);
/// 2. the request span and its `request finished` event ([`trace`], tower-http's `TraceLayer`),
///    when debug logging is enabled for [`trace::TARGET`] at start-up;
/// 3. the request metrics ([`route_metrics`]);
/// 4. the announced body limit: `413 payload_too_large` at once for a `Content-Length` above
///    `options.max_body_bytes`, on every route, before the body is read ([`body_limit`]);
/// 5. the request timeout: `408 request_timeout` after `options.request_timeout`, body reading
///    included (tower's `TimeoutLayer`, whose only error, `Elapsed`, becomes the JSON error).
///    tower's timeout polls the request first and arms its timer only if the request has to
///    wait, so a request answered at its first poll (a pure read) never touches the timer
///    wheel; tower-http's arms it first, which costs every request a wake-up of the runtime's
///    I/O driver (a system call).
///
/// Layers 2–5 sit inside the router (`Router::layer`) because they need the matched route
/// template. A chunked body has no announced length: the one body-reading route enforces the
/// limit as it reads (not as axum's `DefaultBodyLimit` layer); a new route with a body must read
/// it the same way.
///
/// Metrics go to the process's global `metrics` recorder, which the caller installs
/// ([`crate::metrics::install`], as `idrecon serve` does before it opens the store); the
/// router never installs one, and `GET /metrics` renders the installed one's handle
/// ([`crate::metrics::installed`]), or an empty payload without one.
pub fn router(store: Arc<Store>, options: HttpOptions) -> App {
    app(Backend::Single(store), options)
}

/// The service of [`router`] over `backend`: in cluster mode (docs/behaviour.md §9) with the
/// cluster routes (module `cluster`) and, inside the per-request layers, the forwarding layer
/// ([`forward`]) that sends what only the leader executes to the leader.
pub fn app(backend: Backend, options: HttpOptions) -> App {
    let timeout = options.request_timeout;
    let max_body_bytes = options.max_body_bytes;
    let (routes, openapi) = api_routes(&options).split_for_parts();
    let document = openapi::document(
        &openapi,
        options.response_key,
        options.admin_token.is_some(),
    );
    let node = backend.cluster().cloned();
    let forwarder = match &node {
        Some(node) => match forward::Forwarder::new(Arc::clone(node), options.max_body_bytes) {
            Ok(forwarder) => Some(forwarder),
            Err(e) => {
                // Only a broken system TLS/DNS configuration fails a plain HTTP client; the
                // member then answers what it executes and 503 for the rest.
                tracing::error!(error = %e, "cannot build the forwarding client");
                None
            }
        },
        None => None,
    };
    let admin_token = options.admin_token.clone();
    // Ends in a newline like every JSON answer (docs/behaviour.md §6).
    let state = AppState::new(backend, options, Bytes::from(format!("{document}\n")));
    // The span costs every request an allocation and a wrapped body even when nothing would
    // record it, so the layer is there only when its debug events are enabled at start-up.
    let trace_requests = tracing::enabled!(target: trace::TARGET, tracing::Level::DEBUG);
    let per_request = ServiceBuilder::new()
        .option_layer(trace_requests.then(|| {
            // The traced body back to axum's, so both arms answer the same type.
            ServiceBuilder::new()
                .map_response(axum::response::IntoResponse::into_response)
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(trace::request_span)
                        .on_request(())
                        .on_response(trace::request_finished)
                        .on_body_chunk(())
                        .on_eos(())
                        .on_failure(()),
                )
                .into_inner()
        }))
        .layer(RouteMetricsLayer)
        .layer(ContentLengthLimitLayer::new(max_body_bytes))
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            // The routes never fail (`Infallible`): the timeout's `Elapsed` is the only error.
            if error.is::<tower::timeout::error::Elapsed>() {
                ApiError::request_timeout()
            } else {
                ApiError::internal()
            }
        }))
        .layer(tower::timeout::TimeoutLayer::new(timeout));
    let routes = match &node {
        Some(node) => routes.merge(cluster::routes(Arc::clone(node), admin_token).with_state(())),
        None => routes,
    };
    let forwarding = ServiceBuilder::new()
        .option_layer(forwarder.map(|f| axum::middleware::from_fn_with_state(f, forward::forward)));
    let router = routes
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(forwarding)
        .layer(per_request)
        .with_state(state);
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .service(router)
}
