//! `GET /metrics` through a real server on 127.0.0.1:0: every `/identify` outcome and a
//! rejection move their counters by exactly one each, requests are labelled by route template
//! (never the raw path) and status, the state gauges show the graph, and the log writer and
//! snapshot metrics have samples.
//!
//! The metrics recorder is global to the test process, so every check compares a scrape before
//! with a scrape after, and the tests of this file run one at a time (`SERIAL`).

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use serde_json::json;
use tokio::sync::Mutex;

/// Serializes the tests of this file: they share the process's metrics recorder.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One scrape: every sample as (name, sorted labels) → value.
#[derive(Debug)]
struct Scrape(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value.parse().expect("sample value is a number");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
                None => (series, Vec::new()),
            };
            samples.insert((name.to_owned(), labels), value);
        }
        Scrape(samples)
    }

    /// The value of `name` with exactly `labels` (0 when the series does not exist yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.0
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }
}

/// `a="x",b="y"` → sorted pairs (values here contain no escaped quotes).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label has a quoted value");
        let (value, after) = after.split_once('"').expect("closing quote");
        labels.push((key.to_owned(), value.to_owned()));
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels.sort();
    labels
}

async fn scrape(app: &TestApp) -> (Scrape, String) {
    let response = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("scrape sent");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("scrape body");
    (Scrape::parse(&text), text)
}

/// POST /identify; returns status and the outcome header.
async fn identify(app: &TestApp, body: serde_json::Value) -> (u16, String) {
    let response = app
        .client
        .post(format!("{}/identify", app.url))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let outcome = response
        .headers()
        .get("x-idrecon-outcome")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), outcome)
}

#[tokio::test]
async fn counters_move_by_exactly_the_requests_made() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let (before, _) = scrape(&app).await;

    let requests = [
        (
            json!({"email": "a@x.io", "phoneNumber": "111"}),
            200,
            "new-primary",
        ),
        (
            json!({"email": "b@x.io", "phoneNumber": "111"}),
            200,
            "new-secondary",
        ),
        (json!({"email": "a@x.io"}), 200, "read"),
        (
            json!({"email": "c@x.io", "phoneNumber": "222"}),
            200,
            "new-primary",
        ),
        (
            json!({"email": "a@x.io", "phoneNumber": "222"}),
            200,
            "merge",
        ),
        (json!({"email": "doc@"}), 400, ""),
    ];
    for (body, status, outcome) in requests {
        assert_eq!(identify(&app, body).await, (status, outcome.to_owned()));
    }
    assert_eq!(app.get("/contacts/1").await.0, 200);
    assert_eq!(app.get("/contacts/abc").await.0, 400);
    assert_eq!(app.get("/no/such/route").await.0, 404);

    let (after, text) = scrape(&app).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    let outcomes = "idrecon_identify_outcomes_total";
    for (outcome, n) in [
        ("new_primary", 2.0),
        ("new_secondary", 1.0),
        ("merge", 1.0),
        ("pure_read", 1.0),
        ("rejected", 1.0),
    ] {
        assert_eq!(delta(outcomes, &[("outcome", outcome)]), n, "{outcome}");
    }

    let requests = "idrecon_http_requests_total";
    for (route, method, status, n) in [
        ("/identify", "POST", "200", 5.0),
        ("/identify", "POST", "400", 1.0),
        ("/contacts/{id}", "GET", "200", 1.0),
        ("/contacts/{id}", "GET", "400", 1.0),
        ("unmatched", "GET", "404", 1.0),
        ("/metrics", "GET", "200", 1.0),
    ] {
        let labels = [("route", route), ("method", method), ("status", status)];
        assert_eq!(delta(requests, &labels), n, "{labels:?}");
    }
    assert!(
        !text.contains("/contacts/1\""),
        "raw path in labels:\n{text}"
    );
    assert!(
        !text.contains("/no/such/route"),
        "raw path in labels:\n{text}"
    );
    let latency = [("route", "/identify"), ("method", "POST")];
    assert_eq!(
        delta("idrecon_http_request_duration_seconds_count", &latency),
        6.0
    );
    assert!(delta("idrecon_http_request_duration_seconds_sum", &latency) > 0.0);

    // Rows 1, 2, 3 in one identity after the merge.
    assert_eq!(after.get("idrecon_contacts", &[]), 3.0);
    assert_eq!(after.get("idrecon_identities", &[]), 1.0);
    assert_eq!(after.get("idrecon_largest_identity_contacts", &[]), 3.0);

    // Four events logged (two new primaries, a secondary, a merge), in one or more batches.
    assert_eq!(delta("idrecon_wal_batch_records_sum", &[]), 4.0);
    let batches = delta("idrecon_wal_batch_records_count", &[]);
    assert!((1.0..=4.0).contains(&batches), "{batches} batches");
    let fsyncs = delta("idrecon_wal_fsync_duration_seconds_count", &[]);
    assert!(fsyncs >= 1.0, "{fsyncs} fsyncs");
    // The long commit delay's gauge is exported once the log is open: 0 or 1.
    assert!(text.contains("# TYPE idrecon_wal_commit_delay_busy gauge"));
    let busy = after.get("idrecon_wal_commit_delay_busy", &[]);
    assert!(busy == 0.0 || busy == 1.0, "{busy}");
    assert!(delta("idrecon_wal_fsync_duration_seconds_sum", &[]) > 0.0);
    assert!(delta("idrecon_wal_bytes_written_total", &[]) > 0.0);
    assert!(text.contains("idrecon_wal_fsync_duration_seconds_bucket{le=\"0.001\"}"));

    // A snapshot counts once and records its duration.
    assert!(app.store.snapshot_blocking().unwrap().is_some());
    let (later, _) = scrape(&app).await;
    let ok = [("result", "ok")];
    assert_eq!(
        later.get("idrecon_snapshots_total", &ok) - after.get("idrecon_snapshots_total", &ok),
        1.0
    );
    assert_eq!(
        later.get("idrecon_snapshot_duration_seconds_count", &[])
            - after.get("idrecon_snapshot_duration_seconds_count", &[]),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn several_servers_in_one_process_share_the_recorder() {
    let _serial = SERIAL.lock().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestApp::spawn(dir_a.path()).await;
    let b = TestApp::spawn(dir_b.path()).await;
    let (before, _) = scrape(&a).await;
    assert_eq!(identify(&b, json!({"email": "z@x.io"})).await.0, 200);
    assert_eq!(identify(&b, json!({"phoneNumber": "9"})).await.0, 200);
    // One recorder: b's requests show in a's scrape, while the gauges are a's own state.
    let (after, text) = scrape(&a).await;
    let labels = [("outcome", "new_primary")];
    assert_eq!(
        after.get("idrecon_identify_outcomes_total", &labels)
            - before.get("idrecon_identify_outcomes_total", &labels),
        2.0
    );
    assert_eq!(after.get("idrecon_contacts", &[]), 0.0);
    assert!(text.contains("# HELP idrecon_identify_outcomes_total"));
    let (from_b, _) = scrape(&b).await;
    assert_eq!(from_b.get("idrecon_contacts", &[]), 2.0);
    assert_eq!(from_b.get("idrecon_identities", &[]), 2.0);
    assert_eq!(from_b.get("idrecon_largest_identity_contacts", &[]), 1.0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn request_ids_are_honoured_or_generated() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let sent = app
        .client
        .get(format!("{}/healthz", app.url))
        .header("x-request-id", "client-chosen-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        sent.headers().get("x-request-id").unwrap(),
        "client-chosen-id-1"
    );
    let generated = app
        .client
        .get(format!("{}/no/such/route", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.status(), 404);
    let id = generated
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // A UUID v4: 8-4-4-4-12 hex digits, version nibble 4.
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(groups[2].starts_with('4'), "{id}");
    app.stop().await;
}
