//! The per-request metrics of the HTTP layer (issue 6 `/metrics`), with their handles kept.
//!
//! `metrics::counter!(name, labels…)` builds a key (allocating each label's text) and looks it up
//! in the recorder's registry on every call; three such calls were a measurable part of a
//! pure-read `/identify` (issue 3, BENCHMARKS.md "third pass"). [`RequestMetrics`] asks the
//! recorder once per label set and keeps the handles, so a request then costs no allocation:
//! an answer `200` to `GET` or `POST` of a known route (nearly every request) finds its handles
//! in a fixed slot by route index, any other label set in a read-locked map. The recorded
//! series are exactly those the macros record (`tests/metrics.rs` reads them back from
//! `/metrics`).

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use hashbrown::{Equivalent, HashMap};
use metrics::{Counter, Histogram};
use parking_lot::RwLock;

use super::route_table::Route;
use crate::metrics as metric;
use crate::store::Outcome;

/// The `outcome` label of a `/identify` answered `4xx` (refused input, a timeout, a wrong
/// method): the request changed nothing.
const REJECTED: &str = "rejected";

/// The handles of one `(route, method, status)`: the latency histogram (by route and method)
/// and the request counter (by route, method and status).
#[derive(Clone)]
struct RouteHandles {
    duration: Histogram,
    requests: Counter,
}

impl RouteHandles {
    /// Records one answered request that took `seconds`.
    fn record(&self, seconds: f64) {
        self.duration.record(seconds);
        self.requests.increment(1);
    }
}

/// An owned label set, as the cache stores it.
#[derive(PartialEq, Eq)]
struct RouteKey {
    route: String,
    method: &'static str,
    status: u16,
}

impl Hash for RouteKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        RouteKeyRef(&self.route, self.method, self.status).hash(state);
    }
}

/// A borrowed label set: looks a [`RouteKey`] up without allocating its route.
#[derive(Hash)]
struct RouteKeyRef<'a>(&'a str, &'static str, u16);

impl Equivalent<RouteKey> for RouteKeyRef<'_> {
    fn equivalent(&self, key: &RouteKey) -> bool {
        self.0 == key.route && self.1 == key.method && self.2 == key.status
    }
}

/// The methods whose `200` answers have fixed slots ([`RequestMetrics::new`]), in slot order.
const SLOT_METHODS: [&str; 2] = ["GET", "POST"];

/// Metric handles of the HTTP layer, fetched from the installed recorder on first use of each
/// label set. Create it after [`crate::metrics::install`] (as [`crate::http::router`] does):
/// handles fetched before a recorder is installed record nowhere.
#[derive(Default)]
pub struct RequestMetrics {
    /// The handles of `(route, method, 200)` for each route index of the router's
    /// [`super::route_table::RouteTable`] and each of [`SLOT_METHODS`], fetched on first use:
    /// a slot rather than a map entry, so the usual request records without hashing its route
    /// or taking a lock (about 90 instructions; issue 3, BENCHMARKS.md nineteenth pass).
    ok: Box<[[OnceLock<RouteHandles>; SLOT_METHODS.len()]]>,
    /// The handles of every other label set (unmatched routes, other methods, other statuses).
    routes: RwLock<HashMap<RouteKey, RouteHandles>>,
    /// `idrecon_identify_outcomes_total{outcome}` of each [`Outcome`], indexed by its
    /// declaration order (that of [`Outcome::ALL`]), fetched on first use: a fixed slot rather
    /// than a map, so counting is one load and one atomic add (issue 3).
    outcomes: [OnceLock<Counter>; Outcome::ALL.len()],
    /// The same counter for [`REJECTED`].
    rejected: OnceLock<Counter>,
}

impl RequestMetrics {
    /// Handles for a router of `routes` route templates (the length of its
    /// [`super::route_table::RouteTable`]): one fixed slot per template and slotted method.
    pub fn new(routes: usize) -> RequestMetrics {
        RequestMetrics {
            ok: (0..routes).map(|_| Default::default()).collect(),
            ..RequestMetrics::default()
        }
    }

    /// Records one answered request: `seconds` from request head to response head into
    /// `idrecon_http_request_duration_seconds{route,method}` and one into
    /// `idrecon_http_requests_total{route,method,status}`. `route` is the request's route and
    /// `label` its label ([`super::route_table::RouteTable::label`]).
    pub fn request(
        &self,
        route: Route,
        label: &str,
        method: &'static str,
        status: u16,
        seconds: f64,
    ) {
        if let Some(slot) = self.slot(route, method, status) {
            slot.get_or_init(|| Self::fetch(label, method, status))
                .record(seconds);
            return;
        }
        let key = RouteKeyRef(label, method, status);
        // The usual case records through the cached handles in place (no handle clones: each
        // is an `Arc` whose count would go up and down).
        if let Some(handles) = self.routes.read().get(&key) {
            handles.record(seconds);
            return;
        }
        let handles = Self::fetch(label, method, status);
        let owned = RouteKey {
            route: label.to_owned(),
            method,
            status,
        };
        self.routes.write().insert(owned, handles.clone());
        handles.record(seconds);
    }

    /// The fixed slot of `(route, method, status)`: only answers `200` to a matched route with
    /// one of [`SLOT_METHODS`] have one.
    fn slot(&self, route: Route, method: &str, status: u16) -> Option<&OnceLock<RouteHandles>> {
        if status != 200 {
            return None;
        }
        let slots = self.ok.get(route.index()?)?;
        slots.get(SLOT_METHODS.iter().position(|m| *m == method)?)
    }

    /// The recorder's handles of one label set.
    fn fetch(route: &str, method: &'static str, status: u16) -> RouteHandles {
        RouteHandles {
            duration: ::metrics::histogram!(
                metric::HTTP_REQUEST_DURATION,
                "route" => route.to_owned(),
                "method" => method
            ),
            requests: ::metrics::counter!(
                metric::HTTP_REQUESTS,
                "route" => route.to_owned(),
                "method" => method,
                "status" => status.to_string()
            ),
        }
    }

    /// Counts one `/identify` request that `outcome` describes (answered `200`) in
    /// `idrecon_identify_outcomes_total{outcome}`, labelled [`Outcome::metric_label`]. Called
    /// by the handler, which knows the outcome, so the layer need not read it back from the
    /// response's header.
    pub fn outcome(&self, outcome: Outcome) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            count_outcome(counter, outcome.metric_label());
        }
    }

    /// Counts one `/identify` request answered `4xx` in
    /// `idrecon_identify_outcomes_total{outcome="rejected"}`.
    pub fn rejected(&self) {
        count_outcome(&self.rejected, REJECTED);
    }
}

/// Adds one to the outcome counter in `slot`, fetching it with `label` on first use.
fn count_outcome(slot: &OnceLock<Counter>, label: &'static str) {
    slot.get_or_init(|| ::metrics::counter!(metric::IDENTIFY_OUTCOMES, "outcome" => label))
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Each outcome's counter slot is its place in [`Outcome::ALL`], so no two share one.
    #[test]
    fn outcome_slots_follow_the_declaration_order() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{outcome:?}");
        }
    }

    /// The borrowed key finds the owned one: same hash, and equal exactly when all three
    /// labels are.
    #[test]
    fn borrowed_keys_hash_and_compare_like_owned_ones() {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let owned = RouteKey {
            route: "/identify".to_owned(),
            method: "POST",
            status: 200,
        };
        let borrowed = RouteKeyRef("/identify", "POST", 200);
        assert_eq!(hasher.hash_one(&owned), hasher.hash_one(&borrowed));
        assert!(borrowed.equivalent(&owned));
        for other in [
            RouteKeyRef("/identities", "POST", 200),
            RouteKeyRef("/identify", "GET", 200),
            RouteKeyRef("/identify", "POST", 400),
        ] {
            assert!(!other.equivalent(&owned));
        }
        let mut map = HashMap::new();
        map.insert(owned, 1);
        assert_eq!(map.get(&borrowed), Some(&1));
        assert_eq!(map.get(&RouteKeyRef("/identify", "POST", 201)), None);
    }
}
