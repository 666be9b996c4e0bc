//! An erasure leaves no trace on disk even when the process dies right after answering it
//! (docs/behaviour.md §6.7, §8): recovery finishes the compaction the erasure started.

use std::path::Path;

use crate::common::{Binary, idrecon};
use serde_json::{Value, json};

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

/// How many times `needle` occurs in the files under `dir` (recursively).
fn occurrences(dir: &Path, needle: &[u8]) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            count += occurrences(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            count += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    count
}

#[tokio::test]
async fn an_erasure_killed_before_its_compaction_leaves_no_file_with_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    // Enough rows that the compaction's snapshot takes far longer than the kill below.
    let mut csv = format!("{HEADER}\n");
    for id in 1..=150_000u64 {
        csv.push_str(&format!(
            "{id},{},filler{id}@example.com,,primary,2023-04-01 00:00:00+00,\
             2023-04-01 00:00:00+00,\n",
            700_000_000 + id
        ));
    }
    let file = tmp.path().join("rows.csv");
    std::fs::write(&file, csv).unwrap();
    let data = tmp.path().join("data");
    let imported = idrecon(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{imported:?}");

    let email = "erase-me-7f3a91@example.com";
    let mut server = Binary::start(&data, &[]);
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/identify", server.url))
        .json(&json!({"email": email, "phoneNumber": "5550001"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["contact"]["primaryContactId"].as_u64().unwrap();
    let erased = client
        .delete(format!("{}/identities/{id}?erase=true", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status().as_u16(), 200);
    // kill -9 at once: the compaction the erasure queued has not finished.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = Binary::start(&data, &[]);
    // Recovery compacts before the server listens.
    assert_eq!(occurrences(&data, email.as_bytes()), 0);
    let found = client
        .get(format!("{}/contacts/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(found.status().as_u16(), 404);
    assert!(!data.join("ERASING").exists());
}
