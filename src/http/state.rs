//! [`AppState`]: what every handler reads.

use std::sync::Arc;

use axum::body::Bytes;

use super::backend::Backend;
use super::options::HttpOptions;
use crate::phone_region::Normalizer;

/// The router's state: the store, the options and the OpenAPI document, behind one `Arc`.
/// axum clones the state for each request (the route's service and the `State` extractor),
/// so one reference count instead of one per part.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// The inside of an [`AppState`].
pub(crate) struct Shared {
    /// Where every handler's reads and changes are executed: the store, or a cluster member.
    pub(crate) backend: Backend,
    /// The router's settings.
    pub(crate) options: HttpOptions,
    /// The serialized OpenAPI document served at `GET /openapi.json`.
    pub(crate) openapi: Bytes,
}

impl AppState {
    /// A state of these parts.
    pub(crate) fn new(backend: Backend, options: HttpOptions, openapi: Bytes) -> AppState {
        AppState(Arc::new(Shared {
            backend,
            options,
            openapi,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// The normalizer every handler must use for emails and phone numbers taken from a
    /// request (body, path or query), so that lookups match values exactly as they were stored.
    pub(crate) fn normalizer(&self) -> &Normalizer {
        &self.options.normalizer
    }
}
