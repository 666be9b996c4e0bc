//! The route template of a request path, for the `route` label of request logs and metrics
//! (issue 6), found without going through axum's router.
//!
//! [`super::request_layer::RequestLayer`] wraps the whole router instead of being added to each
//! route with `Router::layer`: a layered route is a boxed, cloneable service that axum clones
//! (one allocation per layer, nested) on every request, which cost about 3 000 instructions of
//! a pure-read `/identify` (issue 3, BENCHMARKS.md "sixth pass"). Outside the router the layer
//! no longer sees axum's `MatchedPath`, so it asks this table: the same templates in the same
//! matcher (`matchit`, the crate axum routes with), so a path gets the template axum matches it
//! to, or `unmatched` when axum would answer with its 404 fallback.

/// The label of a path that matches no route.
pub const UNMATCHED: &str = "unmatched";

/// Route templates (`/contacts/{id}`) by path. Built once per router; lookups allocate nothing.
#[derive(Debug, Default)]
pub struct RouteTable {
    matcher: matchit::Router<usize>,
    templates: Vec<String>,
}

impl RouteTable {
    /// A table of `templates` in axum 0.8's syntax (`{name}` segments, `{*rest}` wildcards).
    ///
    /// The templates are the router's own, which axum has already inserted into a matcher of
    /// the same crate and version without conflict, so inserting them here cannot fail in
    /// practice. If one did (a template axum accepts but this matcher refuses), that route's
    /// requests would be labelled [`UNMATCHED`]; a warning says so, and tests/metrics.rs checks
    /// the labels of the real routes.
    pub fn new(templates: impl IntoIterator<Item = String>) -> RouteTable {
        let mut table = RouteTable::default();
        for template in templates {
            match table
                .matcher
                .insert(template.as_str(), table.templates.len())
            {
                Ok(()) => table.templates.push(template),
                Err(error) => {
                    tracing::warn!(%error, template, "route template left out of metric labels");
                }
            }
        }
        table
    }

    /// The route `path` matches, if any. `path` is the request URI's path, undecoded, as axum
    /// matches it.
    pub fn lookup(&self, path: &str) -> Route {
        Route(self.matcher.at(path).ok().map(|found| *found.value))
    }

    /// How many templates the table holds: every [`Route::index`] is below it.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether the table holds no template (every path is [`UNMATCHED`]).
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The label of `route`: its template (e.g. `/contacts/{id}` for `/contacts/42`), or
    /// [`UNMATCHED`].
    pub fn label(&self, route: Route) -> &str {
        route
            .0
            .and_then(|index| self.templates.get(index))
            .map_or(UNMATCHED, String::as_str)
    }
}

/// A route found by [`RouteTable::lookup`]: a `Copy` handle kept across the request while the
/// request itself moves into the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route(Option<usize>);

impl Route {
    /// The index of the route's template in its table (below [`RouteTable::len`]), or `None`
    /// for a path that matches no route.
    pub fn index(self) -> Option<usize> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_their_template_and_others_are_unmatched() {
        let table = RouteTable::new(
            [
                "/identify",
                "/contacts/{id}",
                "/identities/{contactId}/history",
            ]
            .map(String::from),
        );
        let label = |path| table.label(table.lookup(path));
        assert_eq!(label("/identify"), "/identify");
        assert_eq!(label("/contacts/42"), "/contacts/{id}");
        assert_eq!(label("/contacts/x%20y"), "/contacts/{id}");
        assert_eq!(
            label("/identities/7/history"),
            "/identities/{contactId}/history"
        );
        for path in [
            "/",
            "/identify/",
            "/contacts",
            "/contacts/1/2",
            "/identities/7",
        ] {
            assert_eq!(label(path), UNMATCHED, "{path}");
            assert_eq!(table.lookup(path).index(), None, "{path}");
        }
        // Each template has its own index below `len` (the metric slots rely on it).
        assert_eq!(table.len(), 3);
        let indexes: Vec<_> = ["/identify", "/contacts/1", "/identities/1/history"]
            .map(|path| table.lookup(path).index())
            .into();
        assert_eq!(indexes, [Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn a_conflicting_template_is_left_out_not_fatal() {
        let table = RouteTable::new(["/a/{x}", "/a/{y}"].map(String::from));
        assert_eq!(table.label(table.lookup("/a/1")), "/a/{x}");
        assert_eq!(table.len(), 1);
    }
}
