//! `idrecon feed` through the real binary (docs/behaviour.md §7): its summary counts every
//! outcome, and a service that cannot be reached is named with the error.

use std::collections::BTreeMap;

use idrecon::graph::GraphOptions;
use idrecon::http::HttpOptions;
use idrecon::store::StoreOptions;

use crate::common::{TestApp, idrecon};

/// The `  name   count` lines of a feed summary.
fn counts(summary: &str) -> BTreeMap<String, u64> {
    summary
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| {
            let (name, count) = line.trim().rsplit_once(' ')?;
            Some((name.trim().to_owned(), count.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn the_summary_counts_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions {
        graph: GraphOptions {
            max_identity_size: Some(1),
            ..GraphOptions::default()
        },
        ..StoreOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), store, HttpOptions::default()).await;
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"email\":\"a@x.io\",\"phoneNumber\":\"1\"}\n",
            "{\"email\":\"b@x.io\",\"phoneNumber\":\"2\"}\n",
            // Merging two identities of one row each would pass the cap of 1: refused.
            "{\"email\":\"a@x.io\",\"phoneNumber\":\"2\"}\n",
            "{\"email\":\"a@x.io\"}\n",
            "{\"email\":\"not-an-email\"}\n",
        ),
    )
    .unwrap();
    let (url, path) = (app.url.clone(), file.to_str().unwrap().to_owned());
    let output = tokio::task::spawn_blocking(move || {
        idrecon(&["feed", "--url", &url, "--concurrency", "1", &path])
    })
    .await
    .unwrap();
    app.stop().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one request failed: {stdout}"
    );
    let counts = counts(&stdout);
    assert_eq!(counts.get("new-primary"), Some(&2), "{stdout}");
    assert_eq!(counts.get("refused"), Some(&1), "{stdout}");
    assert_eq!(counts.get("read"), Some(&1), "{stdout}");
    assert_eq!(counts.get("error 400 invalid_email"), Some(&1), "{stdout}");
    assert_eq!(
        counts.values().sum::<u64>(),
        5,
        "every request counted once: {stdout}"
    );
}

#[test]
fn feed_without_a_server_names_the_url_and_the_error() {
    // A port nothing listens on: bound, then released.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let refused = std::net::TcpStream::connect(address)
        .expect_err("nothing listens")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"email\":\"a@x.io\"}\n".repeat(3)).unwrap();
    let url = format!("http://{address}");
    let output = idrecon(&["feed", "--url", &url, file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "the URL named: {stderr}");
    assert!(
        stderr.contains(&refused),
        "the error named ({refused}): {stderr}"
    );
}
