//! `GET /metrics` through a real server on 127.0.0.1:0: every `/identify` outcome and a
//! rejection move their counters by exactly one each, requests are labelled by route template
//! (never the raw path) and status, the state gauges show the graph, and the log writer and
//! snapshot metrics have samples.
//!
//! The metrics recorder is global to a process and every test of this binary shares one, so
//! exact counts are taken from the real binary in a process of its own ([`Binary`]).

use std::collections::BTreeMap;

use crate::common::{Binary, TestApp};
use serde_json::json;

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

async fn scrape(client: &reqwest::Client, url: &str) -> (Scrape, String) {
    let response = client
        .get(format!("{url}/metrics"))
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
async fn identify(client: &reqwest::Client, url: &str, body: serde_json::Value) -> (u16, String) {
    let response = client
        .post(format!("{url}/identify"))
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
    let dir = tempfile::tempdir().unwrap();
    // A snapshot after the fourth event, so its metrics can be checked too.
    let server = Binary::start(dir.path(), &["--snapshot-every", "4"]);
    let (client, url) = (reqwest::Client::new(), server.url.as_str());
    let (before, _) = scrape(&client, url).await;

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
        assert_eq!(
            identify(&client, url, body).await,
            (status, outcome.to_owned())
        );
    }
    for (path, status) in [
        ("/contacts/1", 200),
        ("/contacts/abc", 400),
        ("/no/such/route", 404),
    ] {
        let response = client.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
    }

    let (after, text) = scrape(&client, url).await;
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
    assert!(delta("idrecon_wal_fsync_duration_seconds_sum", &[]) > 0.0);
    assert!(delta("idrecon_wal_bytes_written_total", &[]) > 0.0);
    assert!(text.contains("idrecon_wal_fsync_duration_seconds_bucket{le=\"0.001\"}"));

    // The background snapshot after the fourth event counts once and records its duration.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let later = loop {
        let (later, _) = scrape(&client, url).await;
        if later.get("idrecon_snapshot_duration_seconds_count", &[]) >= 1.0
            || std::time::Instant::now() > deadline
        {
            break later;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        later.get("idrecon_snapshots_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        later.get("idrecon_snapshot_duration_seconds_count", &[]),
        1.0
    );
}

#[tokio::test]
async fn request_ids_are_honoured_or_generated() {
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
