//! Prometheus metrics: the names, help texts and buckets of every metric idrecon records, and the
//! process-wide recorder behind `GET /metrics` (docs/behaviour.md §6.10).
//!
//! Metrics are recorded with the [`metrics`] facade macros where things happen (the HTTP
//! middleware in [`crate::http`], the log writer thread in [`crate::wal`], snapshots in
//! [`crate::store`]) and rendered in the Prometheus text exposition format by
//! [`metrics_exporter_prometheus`]. The recorder is global to the process, so [`install`] sets it
//! up once (a [`OnceLock`]) however many servers a process starts. The binary installs it
//! (`idrecon serve`, before it opens the store) and `GET /metrics` renders [`installed`]; the
//! HTTP router never installs it. Tests that run several servers in one process share it, and
//! must compare values before and after, never absolute values. Until [`install`] runs,
//! recording goes to the facade's no-op recorder (e.g. in `idrecon import` and the unit tests of
//! the modules above).
//!
//! Names follow the Prometheus conventions: an `idrecon_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters. Histograms are real Prometheus histograms
//! (`_bucket`, `_sum`, `_count`) with the buckets below.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests answered, by `route` (the matched path template such as
/// `/contacts/{id}`, or `unmatched` for a path no route matches — never the raw path), `method`
/// (the standard methods, anything else `other`) and `status` (the numeric status code).
pub const HTTP_REQUESTS: &str = "idrecon_http_requests_total";
/// Histogram: time from receiving a request's head to its response's head, in seconds, by
/// `route` and `method` (body reading included, response body streaming not).
pub const HTTP_REQUEST_DURATION: &str = "idrecon_http_request_duration_seconds";
/// Counter: `/identify` answers by `outcome`: `new_primary`, `new_secondary`, `merge`,
/// `pure_read` (the `200`s, from the store's `Outcome`) and `rejected` (every `4xx`, timeouts
/// and oversized bodies included). `5xx` answers count in [`HTTP_REQUESTS`] only.
pub const IDENTIFY_OUTCOMES: &str = "idrecon_identify_outcomes_total";
/// Gauge: HTTP connections open now (docs/behaviour.md §7 `--max-connections`).
pub const HTTP_CONNECTIONS: &str = "idrecon_http_connections";
/// Gauge: the most HTTP connections open at once (`--max-connections`).
pub const HTTP_CONNECTIONS_MAX: &str = "idrecon_http_connections_max";
/// Counter: connections closed at once on accept because [`HTTP_CONNECTIONS_MAX`] were open.
pub const HTTP_CONNECTIONS_REFUSED: &str = "idrecon_http_connections_refused_total";
/// Counter: bytes the log writer wrote to log segments (records and segment headers).
pub const WAL_BYTES_WRITTEN: &str = "idrecon_wal_bytes_written_total";
/// Histogram: duration of one log segment fsync (`fdatasync`) by the writer thread, in seconds.
pub const WAL_FSYNC_DURATION: &str = "idrecon_wal_fsync_duration_seconds";
/// Histogram: records per write of the log writer (group-commit batch size; always 1 with
/// `--fsync always`).
pub const WAL_BATCH_RECORDS: &str = "idrecon_wal_batch_records";
/// Counter: snapshots attempted, by `result` (`ok` or `error`); a snapshot skipped because
/// nothing changed since the last one is not counted.
pub const SNAPSHOTS: &str = "idrecon_snapshots_total";
/// Histogram: duration of a successful snapshot (capture and streamed write with any pace waits,
/// fsyncs, durability wait, publication and log pruning), in seconds.
pub const SNAPSHOT_DURATION: &str = "idrecon_snapshot_duration_seconds";
/// Gauge: contacts (rows) in memory, deleted ones included; set on every scrape.
pub const CONTACTS: &str = "idrecon_contacts";
/// Gauge: identities (union-find roots) in memory; set on every scrape.
pub const IDENTITIES: &str = "idrecon_identities";
/// Gauge: contacts in the largest identity, deleted ones included; set on every scrape.
pub const LARGEST_IDENTITY: &str = "idrecon_largest_identity_contacts";
/// Gauge: the `--max-contacts` limit, 0 without one; set on every scrape.
pub const MAX_CONTACTS: &str = "idrecon_max_contacts";
/// Gauge: 1 once [`CONTACTS`] has reached [`MAX_CONTACTS`] (requests that would add a contact
/// are answered `507`), else 0; set on every scrape.
pub const CAPACITY_FULL: &str = "idrecon_capacity_full";
/// Gauge: the Raft term this cluster member is in (cluster mode, docs/behaviour.md §9).
pub const RAFT_TERM: &str = "idrecon_raft_term";
/// Gauge: the id of the leader this member knows, 0 when it knows none.
pub const RAFT_LEADER: &str = "idrecon_raft_leader_id";
/// Gauge: 1 for this member's role (`role` label: leader, follower, candidate, learner,
/// shutdown), 0 for the others.
pub const RAFT_ROLE: &str = "idrecon_raft_role";
/// Gauge: index of the last entry in this member's Raft log.
pub const RAFT_LAST_LOG_INDEX: &str = "idrecon_raft_last_log_index";
/// Gauge: the highest index this member knows committed.
pub const RAFT_COMMITTED_INDEX: &str = "idrecon_raft_committed_index";
/// Gauge: index of the last entry applied to this member's graph.
pub const RAFT_APPLIED_INDEX: &str = "idrecon_raft_applied_index";
/// Gauge, on the leader: entries each follower (`follower` label) is behind its log.
pub const RAFT_REPLICATION_LAG: &str = "idrecon_raft_replication_lag_entries";
/// Counter: snapshots this member built.
pub const RAFT_SNAPSHOT_BUILDS: &str = "idrecon_raft_snapshot_builds_total";
/// Counter: snapshots this member installed from the leader.
pub const RAFT_SNAPSHOT_INSTALLS: &str = "idrecon_raft_snapshot_installs_total";

/// Buckets of the latency histograms, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets of the snapshot duration histogram, in seconds: 10 ms to 5 minutes.
const SNAPSHOT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 300.0,
];
/// Buckets of the batch size histogram, in records: powers of two up to 4096.
const BATCH_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// How often histogram samples recorded between scrapes are folded into their buckets, so
/// memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global `metrics` recorder (first call
/// only), describes every metric, starts a background upkeep thread, and returns the handle
/// that renders the scrape payload. Later calls return the same handle.
///
/// Never fails: when another global recorder was installed first (not by idrecon), a warning
/// is logged and the returned handle renders only the descriptions; the service keeps working.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = buckets().unwrap_or_else(|error| {
            // Only an empty bucket list fails, which the constants above never are.
            tracing::warn!(%error, "histogram buckets rejected; histograms become summaries");
            PrometheusBuilder::new()
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "another metrics recorder is installed; /metrics stays empty");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("idrecon-metrics".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            // Rendering drains the samples too, so scrapes alone keep memory bounded.
            tracing::warn!(%error, "cannot start the metrics upkeep thread");
        }
        handle
    })
}

/// The handle of the recorder [`install`] installed, or `None` before it ran in this process:
/// what `GET /metrics` renders ([`PrometheusHandle::render`]: every metric in the Prometheus
/// text exposition format, version 0.0.4).
pub fn installed() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// A builder with the buckets of every histogram, so each renders as a Prometheus histogram.
fn buckets() -> Result<PrometheusBuilder, BuildError> {
    let histograms: [(&str, &[f64]); 4] = [
        (HTTP_REQUEST_DURATION, &LATENCY_BUCKETS),
        (WAL_FSYNC_DURATION, &LATENCY_BUCKETS),
        (WAL_BATCH_RECORDS, &BATCH_BUCKETS),
        (SNAPSHOT_DURATION, &SNAPSHOT_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in histograms {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), values)?;
    }
    Ok(builder)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for (name, help) in [
        (RAFT_TERM, "Raft term of this cluster member."),
        (RAFT_LEADER, "Id of the leader this member knows (0: none)."),
        (
            RAFT_ROLE,
            "1 for this member's role (label role), 0 for the others.",
        ),
        (
            RAFT_LAST_LOG_INDEX,
            "Index of the last entry in this member's Raft log.",
        ),
        (
            RAFT_COMMITTED_INDEX,
            "Highest index this member knows committed.",
        ),
        (
            RAFT_APPLIED_INDEX,
            "Index of the last entry applied to this member's graph.",
        ),
        (
            RAFT_REPLICATION_LAG,
            "On the leader: entries a follower (label follower) is behind.",
        ),
    ] {
        describe_gauge!(name, Unit::Count, help);
    }
    describe_counter!(
        RAFT_SNAPSHOT_BUILDS,
        Unit::Count,
        "Cluster snapshots this member built."
    );
    describe_counter!(
        RAFT_SNAPSHOT_INSTALLS,
        Unit::Count,
        "Cluster snapshots this member installed from the leader."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by matched route template, method and status code."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by matched route template and method."
    );
    describe_counter!(
        IDENTIFY_OUTCOMES,
        Unit::Count,
        "/identify answers by outcome: new_primary, new_secondary, merge, pure_read, rejected (4xx)."
    );
    describe_gauge!(HTTP_CONNECTIONS, Unit::Count, "HTTP connections open.");
    describe_gauge!(
        HTTP_CONNECTIONS_MAX,
        Unit::Count,
        "Most HTTP connections open at once (--max-connections)."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        Unit::Count,
        "HTTP connections closed at once because --max-connections were open."
    );
    describe_counter!(
        WAL_BYTES_WRITTEN,
        Unit::Bytes,
        "Bytes written to write-ahead log segments."
    );
    describe_histogram!(
        WAL_FSYNC_DURATION,
        Unit::Seconds,
        "Duration of one write-ahead log segment fsync."
    );
    describe_histogram!(
        WAL_BATCH_RECORDS,
        Unit::Count,
        "Records per write-ahead log write (group-commit batch size)."
    );
    describe_counter!(
        SNAPSHOTS,
        Unit::Count,
        "Snapshots attempted, by result (ok, error)."
    );
    describe_histogram!(
        SNAPSHOT_DURATION,
        Unit::Seconds,
        "Duration of a successful snapshot, capture to log pruning."
    );
    describe_gauge!(
        CONTACTS,
        Unit::Count,
        "Contacts (rows) in memory, deleted ones included."
    );
    describe_gauge!(IDENTITIES, Unit::Count, "Identities in memory.");
    describe_gauge!(
        LARGEST_IDENTITY,
        Unit::Count,
        "Contacts in the largest identity, deleted ones included."
    );
    describe_gauge!(
        MAX_CONTACTS,
        Unit::Count,
        "The --max-contacts limit; 0 without one."
    );
    describe_gauge!(
        CAPACITY_FULL,
        Unit::Count,
        "1 once the contacts reached --max-contacts (new contacts are refused), else 0."
    );
}

/// Sets the state gauges ([`CONTACTS`], [`IDENTITIES`], [`LARGEST_IDENTITY`]) from counts.
pub fn set_state_gauges(contacts: usize, identities: usize, largest_identity: usize) {
    metrics::gauge!(CONTACTS).set(contacts as f64);
    metrics::gauge!(IDENTITIES).set(identities as f64);
    metrics::gauge!(LARGEST_IDENTITY).set(largest_identity as f64);
}

/// Sets [`MAX_CONTACTS`] and [`CAPACITY_FULL`] from the contacts held and the `--max-contacts`
/// limit (`None`: no limit, never full) (docs/behaviour.md §6.10).
pub fn set_capacity_gauges(contacts: usize, max_contacts: Option<u64>) {
    let limit = max_contacts.unwrap_or(0);
    let full = max_contacts.is_some_and(|max| contacts as u64 >= max);
    metrics::gauge!(MAX_CONTACTS).set(limit as f64);
    metrics::gauge!(CAPACITY_FULL).set(if full { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_buckets_and_install_is_idempotent() {
        let first = install() as *const PrometheusHandle;
        let second = install() as *const PrometheusHandle;
        assert_eq!(first, second);
        metrics::histogram!(WAL_BATCH_RECORDS).record(3.0);
        metrics::histogram!(SNAPSHOT_DURATION).record(0.2);
        let text = install().render();
        assert!(text.contains("idrecon_wal_batch_records_bucket{le=\"4\"}"));
        assert!(text.contains("idrecon_snapshot_duration_seconds_bucket{le=\"0.25\"}"));
        assert!(text.contains("# HELP idrecon_wal_batch_records"));
    }
}
