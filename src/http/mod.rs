//! The HTTP API (SPEC.md §3, §4, §6): a thin axum layer that extracts, validates into domain
//! types, calls the [`Store`] and maps every error to the JSON error shape
//! `{"error": {"code", "message", "field"?}}` ([`error`]).
//!
//! This module builds the router and nothing else. The modules form a tree, each using only
//! those below it:
//!
//! ```text
//! server            the connection loop; `serve` runs `router` on a listener
//!   mod (router)    routes + layers, the OpenAPI document built from the same route list
//!     identify, contacts, identities, admin, health    one module per resource: handlers
//!                   and their `#[utoipa::path]` documentation
//!     auth          the admin guard and `AdminToken`
//!     openapi       the document's fixed parts and its adaptation to the options
//!     request_layer request ids, the request span, metrics, the request deadline
//!       answer, params, json, state, options, error     shared leaves
//! ```
//!
//! Routes are registered through `utoipa_axum`'s `OpenApiRouter`, from handlers annotated with
//! `#[utoipa::path]`, so the OpenAPI 3.1 document served at `GET /openapi.json` is derived from
//! the very router that serves the requests. Admin routes sit on a sub-router behind
//! [`auth::guard`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use tower::Layer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::store::Store;
use request_layer::RequestLayer;
use state::AppState;

pub mod admin;
pub mod answer;
pub mod auth;
pub mod contacts;
pub mod error;
pub mod health;
pub mod identify;
pub mod identities;
mod json;
pub mod openapi;
pub mod options;
mod params;
pub mod request_layer;
pub mod request_metrics;
pub mod route_table;
pub mod server;
mod state;

pub use answer::IdentifyAnswer;
pub use error::{ApiError, ErrorEnvelope};
pub use identify::OUTCOME_HEADER;
pub use options::{HttpOptions, ResponseKey};
pub use request_layer::REQUEST_ID_HEADER;

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
        .routes(routes!(contacts::delete_contact))
        .routes(routes!(admin::compact));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(identify::identify))
        .routes(routes!(contacts::get_contact))
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

/// The service [`router`] builds: the axum router inside the request layer.
pub type App = request_layer::RequestService<Router>;

/// The service with every route of SPEC.md §3 and §6 plus `GET /openapi.json` and
/// `GET /metrics`, the admin guard on admin routes, JSON 404/405 fallbacks, the request
/// timeout, request ids, request spans and metrics. Installs the process's metrics recorder if
/// it is not installed yet ([`crate::metrics::install`]).
///
/// The request layer wraps the router as a whole rather than each route (`Router::layer`).
/// The body limit is applied where the one body-reading route reads its body, not as axum's
/// `DefaultBodyLimit` layer; a new route with a body must read it the same way.
pub fn router(store: Arc<Store>, options: HttpOptions) -> App {
    crate::metrics::install();
    let timeout = options.request_timeout;
    let (routes, openapi) = api_routes(&options).split_for_parts();
    let templates: Vec<String> = openapi.paths.paths.keys().cloned().collect();
    let route_table = Arc::new(route_table::RouteTable::new(templates));
    let request_metrics = Arc::new(request_metrics::RequestMetrics::new(route_table.len()));
    let document = openapi::document(
        &openapi,
        options.response_key,
        options.admin_token.is_some(),
    );
    let state = AppState::new(
        store,
        options,
        Arc::clone(&request_metrics),
        Bytes::from(document.to_string()),
    );
    let router = routes
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
