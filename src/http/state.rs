//! [`AppState`]: what every handler reads.

use std::sync::Arc;

use axum::body::Bytes;

use super::options::HttpOptions;
use crate::phone_region::Normalizer;
use crate::store::Store;

/// The router's state: the store, the options and the OpenAPI document, behind one `Arc`.
/// axum clones the state for each request (the route's service and the `State` extractor),
/// so one reference count instead of one per part.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// The inside of an [`AppState`].
pub(crate) struct Shared {
    /// The identity store every handler reads or changes.
    pub(crate) store: Arc<Store>,
    /// The router's settings.
    pub(crate) options: HttpOptions,
    /// The serialized OpenAPI document served at `GET /openapi.json`.
    pub(crate) openapi: Bytes,
}

impl AppState {
    /// A state of these parts.
    pub(crate) fn new(store: Arc<Store>, options: HttpOptions, openapi: Bytes) -> AppState {
        AppState(Arc::new(Shared {
            store,
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
