//! `serve --max-contacts` (docs/behaviour.md §3.6, §6.9, §6.10): at the limit a request that
//! would add a contact is answered `507 capacity_exceeded` and logs nothing, while reads, merges
//! and requests that add nothing keep working, and `/healthz` and `/metrics` say the store is
//! full.

use crate::common::{Binary, TestApp};
use idrecon::http::HttpOptions;
use idrecon::store::StoreOptions;
use serde_json::{Value, json};

fn limited(max_contacts: u64) -> StoreOptions {
    StoreOptions {
        max_contacts: Some(max_contacts),
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn at_the_limit_new_contacts_get_507_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir.path(), limited(3), HttpOptions::default()).await;
    for body in [
        json!({"email": "a@x.io", "phoneNumber": "111"}),
        json!({"email": "b@x.io", "phoneNumber": "111"}),
        json!({"email": "c@x.io", "phoneNumber": "222"}),
    ] {
        assert_eq!(app.identify(&body).await.0, 200);
    }
    let (_, health) = app.get("/healthz").await;
    assert_eq!(
        health,
        json!({"status": "ok", "contacts": 3, "max_contacts": 3, "capacity": "full"})
    );
    let lsn = app.store.lsn();
    let rows = app.all_rows().await;

    // A new customer, and new information for a known one, would each add a contact.
    for body in [
        json!({"email": "d@x.io", "phoneNumber": "333"}),
        json!({"email": "new@x.io", "phoneNumber": "111"}),
        json!({"phoneNumber": "444"}),
    ] {
        let (status, answer) = app.identify(&body).await;
        assert_eq!(status, 507, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "capacity_exceeded", "{answer}");
    }
    assert_eq!(app.store.lsn(), lsn, "a refused request logged an event");
    assert_eq!(app.all_rows().await, rows);

    // Reads and requests that add nothing still work.
    let (status, answer) = app.identify(&json!({"email": "a@x.io"})).await;
    assert_eq!(
        (status, answer["contact"]["primaryContactId"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(app.get("/contacts/2").await.0, 200);
    assert_eq!(app.get("/identities?email=c@x.io").await.0, 200);
    // A merge adds no contact.
    let (status, answer) = app
        .identify(&json!({"email": "a@x.io", "phoneNumber": "222"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["contact"]["secondaryContactIds"], json!([2, 3]));
    assert_eq!(app.store.with_graph(|g| g.len()), 3);
    app.stop().await;
}

#[tokio::test]
async fn healthz_has_no_capacity_fields_without_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.get("/healthz").await, (200, json!({"status": "ok"})));
    app.stop().await;
}

/// The value of an unlabelled metric in a Prometheus text payload.
fn metric(payload: &str, name: &str) -> Option<f64> {
    payload.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[tokio::test]
async fn the_flag_sets_the_limit_and_metrics_show_when_it_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path(), &["--max-contacts", "1"]);
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("{}{path}", server.url));
        async move { request.send().await.expect("request sent") }
    };
    let scrape = || async { get("/metrics").await.text().await.expect("text") };
    let payload = scrape().await;
    assert_eq!(metric(&payload, "idrecon_max_contacts"), Some(1.0));
    assert_eq!(metric(&payload, "idrecon_capacity_full"), Some(0.0));
    let health: Value = get("/healthz").await.json().await.unwrap();
    assert_eq!(health["capacity"], "ok");

    let identify = |body: Value| {
        let request = client.post(format!("{}/identify", server.url)).json(&body);
        async move {
            request
                .send()
                .await
                .expect("request sent")
                .status()
                .as_u16()
        }
    };
    assert_eq!(identify(json!({"email": "a@x.io"})).await, 200);
    assert_eq!(identify(json!({"email": "b@x.io"})).await, 507);
    let payload = scrape().await;
    assert_eq!(metric(&payload, "idrecon_capacity_full"), Some(1.0));
    assert_eq!(metric(&payload, "idrecon_contacts"), Some(1.0));
    let health: Value = get("/healthz").await.json().await.unwrap();
    assert_eq!(
        health,
        json!({"status": "ok", "contacts": 1, "max_contacts": 1, "capacity": "full"})
    );
}
