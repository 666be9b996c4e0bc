//! After an erasure and its compaction, the server process's memory holds no copy of an erased
//! value that never passed through an HTTP buffer of that process (docs/behaviour.md §6.7):
//! values it read from an import's snapshot, or at start-up from a snapshot and the log
//! (segment and chunk buffers, the arena, the indexes, merge and refusal history records).

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use crate::common::{Binary, idrecon};

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

/// Occurrences of `needle` in the readable memory of process `pid`, or `None` when this process
/// may not read it (ptrace not permitted).
fn occurrences_in_memory(pid: u32, needle: &[u8]) -> Option<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut count = 0;
    let mut readable = false;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let mut buffer = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buffer).is_err() {
            continue; // [vvar] and guard pages cannot be read
        }
        readable = true;
        count += buffer
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count();
    }
    readable.then_some(count)
}

fn metric(payload: &str, name: &str) -> f64 {
    payload
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn erased_values_are_not_left_in_the_server_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let email = "scrub-me-5c2e07d1@example.com";
    let phone = "4155550199";
    let mut csv = format!("{HEADER}\n");
    csv.push_str(&format!(
        "1,{phone},{email},,primary,2023-04-01 00:00:00+00,2023-04-01 00:00:00+00,\n"
    ));
    for id in 2..=150_000u64 {
        csv.push_str(&format!(
            "{id},{},filler{id}@example.com,,primary,2023-04-01 00:00:00+00,2023-04-01 00:00:00+00,\n",
            700_000_000 + id
        ));
    }
    let file = tmp.path().join("rows.csv");
    std::fs::write(&file, csv).unwrap();
    let data = tmp.path().join("data");
    assert!(
        idrecon(&[
            "import",
            "--data-dir",
            data.to_str().unwrap(),
            file.to_str().unwrap()
        ])
        .status
        .success()
    );
    std::fs::remove_file(&file).unwrap();

    let server = Binary::start(&data, &[]);
    let pid = server.child.id();
    let Some(before) = occurrences_in_memory(pid, email.as_bytes()) else {
        eprintln!("skipped: this process may not read /proc/{pid}/mem (ptrace not permitted)");
        return;
    };
    assert!(
        before > 0,
        "the value should be in memory before the erasure"
    );
    let client = reqwest::Client::new();
    let erased = client
        .delete(format!("{}/identities/1?erase=true", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status().as_u16(), 200);
    // Wait for the compaction (counted as a snapshot) and for the marker to go.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let payload = client
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&payload, "idrecon_snapshots_total{result=\"ok\"}") >= 1.0
            && !data.join("ERASING").exists()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the compaction did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        occurrences_in_memory(pid, email.as_bytes()),
        Some(0),
        "email"
    );
    assert_eq!(
        occurrences_in_memory(pid, phone.as_bytes()),
        Some(0),
        "phone"
    );
}

/// Waits (up to 30 s) until the server at `url` has written `snapshots` snapshots (a compaction
/// counts as one) and the erasure marker under `data` is gone.
async fn wait_for_compaction(
    client: &reqwest::Client,
    url: &str,
    data: &std::path::Path,
    snapshots: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let payload = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&payload, "idrecon_snapshots_total{result=\"ok\"}") >= snapshots
            && !data.join("ERASING").exists()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the compaction did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Values created over HTTP by one process, then served by a second one that read them at
/// start-up from a snapshot and from log records after it: the rows' values, a merge (its
/// history record) and a refusal by the size cap (its record holds the request's values).
#[tokio::test]
async fn erased_values_read_at_start_up_are_not_left_in_the_server_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cap = ["--max-identity-size", "3"];
    let (e1, e2, e3, e4) = (
        "scrub-one-7f3a91c2@example.com",
        "scrub-two-7f3a91c2@example.com",
        "scrub-three-7f3a91c2@example.com",
        "scrub-four-7f3a91c2@example.com",
    );
    let (p1, p3) = ("41555501017f3a", "41555503037f3a");
    let client = reqwest::Client::new();
    let identify = |url: &str, email: &str, phone: &str| {
        let request = client
            .post(format!("{url}/identify"))
            .json(&serde_json::json!({"email": email, "phoneNumber": phone}));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    {
        let first = Binary::start(&data, &cap);
        identify(&first.url, e1, p1).await; // 1
        identify(&first.url, e2, p1).await; // 2, secondary of 1
        // A snapshot holds 1 and 2; the rest is only in the log after it.
        let compacted = client
            .post(format!("{}/admin/compact", first.url))
            .send()
            .await
            .unwrap();
        assert_eq!(compacted.status().as_u16(), 200);
        identify(&first.url, e3, p3).await; // 3
        let merged = identify(&first.url, e1, p3).await; // merges 3 into 1
        assert_eq!(
            merged["contact"]["secondaryContactIds"],
            serde_json::json!([2, 3])
        );
        identify(&first.url, e4, p3).await; // a fourth row would pass the cap: refused
        // Read in this process only: the next one never holds the values in an HTTP buffer.
        let history = client
            .get(format!("{}/identities/1/history", first.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            history.contains(e4),
            "the refusal record holds the request's email"
        );
        // Dropped: SIGKILL, no snapshot at shutdown, so the next start replays the log.
    }

    let server = Binary::start(&data, &cap);
    let pid = server.child.id();
    let values = [e1, e2, e3, e4, p1, p3];
    let mut before = Vec::new();
    for value in values {
        let Some(count) = occurrences_in_memory(pid, value.as_bytes()) else {
            eprintln!("skipped: this process may not read /proc/{pid}/mem (ptrace not permitted)");
            return;
        };
        before.push(count);
    }
    assert!(
        before.iter().all(|&n| n > 0),
        "every value is in memory before the erasure: {before:?}"
    );
    // A snapshot taken while the values are live (as the periodic ones are): its capture and
    // chunk buffers held them.
    let compacted = client
        .post(format!("{}/admin/compact", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(compacted.status().as_u16(), 200);
    let erased = client
        .delete(format!("{}/identities/1?erase=true", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status().as_u16(), 200);
    wait_for_compaction(&client, &server.url, &data, 2.0).await;
    let after: Vec<(&str, Option<usize>)> = values
        .iter()
        .map(|value| (*value, occurrences_in_memory(pid, value.as_bytes())))
        .collect();
    assert!(
        after.iter().all(|(_, n)| *n == Some(0)),
        "copies left in memory (before the erasure: {before:?}): {after:?}"
    );
}
