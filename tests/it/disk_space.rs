//! `/healthz` and the free space of the data directory's file system (docs/behaviour.md §6.9):
//! `503 disk_full` below one preallocation step of the log, `200` again once space is freed.
//! The store runs on `FaultFs`, which reports whatever free space the test sets.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idrecon::http::HttpOptions;
use idrecon::storage::{FaultFs, Storage};
use idrecon::store::{DISK_FULL_BELOW_BYTES, Store, StoreOptions};
use serde_json::{Value, json};

use crate::common::{Binary, TestApp, idrecon};

/// Polls `/healthz` until it answers `status` (the free-space reading is reused for a second),
/// for at most 10 s; returns the body.
async fn healthz_becomes(app: &TestApp, status: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = app.get("/healthz").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {got}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn healthz_reports_a_full_disk_and_recovers_when_space_is_freed() {
    idrecon::metrics::install();
    let fs = FaultFs::new();
    let dir = Path::new("/data");
    let (store, _) =
        Store::open_with(dir, StoreOptions::default(), Arc::new(fs.clone())).expect("store opens");
    let app = TestApp::serve(Arc::clone(&store), dir, HttpOptions::default()).await;
    assert_eq!(app.get("/healthz").await, (200, json!({"status": "ok"})));

    fs.set_available_space(Some(DISK_FULL_BELOW_BYTES - 1));
    let body = healthz_becomes(&app, 503).await;
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    assert!(store.healthy(), "a full disk alone does not fail the log");
    // Writes that still fit are not refused because of it.
    let (status, _) = app
        .identify(&json!({"email": "a@example.com", "phoneNumber": "123"}))
        .await;
    assert_eq!(status, 200);

    fs.set_available_space(Some(DISK_FULL_BELOW_BYTES));
    assert_eq!(healthz_becomes(&app, 200).await, json!({"status": "ok"}));
    assert!(fs.available_space(dir).is_ok());
    app.stop().await;
}

/// `--disk-full-below-bytes` through the real binary on the real file system: a threshold no
/// file system reaches makes `/healthz` answer `503 disk_full` while writes are still
/// acknowledged; one below the log's preallocation step is refused at start-up.
#[tokio::test]
async fn the_threshold_is_a_flag_of_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Binary::start(
        dir.path(),
        &["--disk-full-below-bytes", &u64::MAX.to_string()],
    );
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let write = client
        .post(format!("{}/identify", server.url))
        .json(&json!({"email": "a@example.com"}))
        .send()
        .await
        .expect("identify");
    assert_eq!(write.status(), 200, "a write that fits is not refused");
    drop(server);

    let refused = idrecon(&[
        "serve",
        "--data-dir",
        &dir.path().display().to_string(),
        "--disk-full-below-bytes",
        &(DISK_FULL_BELOW_BYTES - 1).to_string(),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--disk-full-below-bytes"), "{stderr}");
}
