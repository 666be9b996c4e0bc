//! Durability through restarts (docs/behaviour.md §8): same rows after a clean restart, after a
//! restart without the final snapshot, after a snapshot plus more log; a torn tail cut at every
//! byte offset of the last record; corruption in the middle of the log refused with file and
//! offset, by `serve` and by `idrecon check`.

use std::path::{Path, PathBuf};

use crate::common::{Binary, TestApp, idrecon};
use idrecon::http::HttpOptions;
use idrecon::store::{Store, StoreError, StoreOptions};
use serde_json::{Value, json};

/// A deterministic little workload with merges, secondaries and pure reads.
fn workload(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            // Pools that grow with i: new customers keep arriving, and merges keep happening.
            let e = format!("user{}@shop.io", (i * 7) % (13 + i / 4));
            let p = format!("555{}", (i * 5) % (11 + i / 5));
            match i % 3 {
                0 => json!({"email": e, "phoneNumber": p}),
                1 => json!({"email": e}),
                _ => json!({"phoneNumber": p, "email": format!("alt{}@shop.io", i % 17)}),
            }
        })
        .collect()
}

async fn run(app: &TestApp, requests: &[Value]) -> Vec<Value> {
    let mut answers = Vec::new();
    for r in requests {
        let (status, answer) = app.identify(r).await;
        assert_eq!(status, 200, "{r}");
        answers.push(answer);
    }
    answers
}

fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// Number of finished snapshot files (`*.snap`; temp files and set-aside ones excluded).
fn snapshots(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("snapshots")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap"))
        })
        .count()
    })
}

/// Start offsets of every record in a segment (header 24 bytes; record = len u32, crc u32,
/// lsn u64, payload), plus the end.
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = vec![];
    let mut at = 24;
    while at + 16 <= segment.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    assert_eq!(at, segment.len(), "test parses whole records");
    offsets.push(at);
    offsets
}

fn copy_dir(from: &Path, to: &Path) {
    for sub in ["wal", "snapshots"] {
        let src = from.join(sub);
        if !src.exists() {
            continue;
        }
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn same_rows_after_clean_restart_and_after_abandon() {
    let dir = tempfile::tempdir().unwrap();
    let requests = workload(60);
    let app = TestApp::spawn(dir.path()).await;
    run(&app, &requests).await;
    let answers = run(&app, &requests).await; // every request is a pure read now
    let rows = app.all_rows().await;
    app.abandon().await; // no final snapshot: recovery replays the log
    assert_eq!(snapshots(dir.path()), 0);

    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.all_rows().await, rows);
    assert!(
        run(&app, &requests).await == answers,
        "same answers after restart"
    );
    assert_eq!(app.all_rows().await, rows);
    app.stop().await; // final snapshot
    assert_eq!(snapshots(dir.path()), 1);

    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.all_rows().await, rows);
    let (_, a) = app.identify(&json!({"email": "fresh@shop.io"})).await;
    assert_eq!(
        a["contact"]["primaryContactId"],
        rows.len() as u64 + 1,
        "ids continue after restart"
    );
    app.stop().await;
}

#[tokio::test]
async fn snapshot_plus_more_log_recovers_and_prunes_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Only explicit snapshots here, so the log after the newest one is known to be non-empty.
    let options = StoreOptions {
        snapshot_every: 0,
        segment_bytes: 512,
        ..StoreOptions::default()
    };
    let requests = workload(300);
    let app = TestApp::spawn_with(dir.path(), options.clone(), HttpOptions::default()).await;
    run(&app, &requests[..100]).await;
    app.store.snapshot_blocking().unwrap();
    run(&app, &requests[100..200]).await;
    let newest = app.store.snapshot_blocking().unwrap().unwrap();
    run(&app, &requests[200..]).await;
    let rows = app.all_rows().await;
    let lsn = app.store.lsn();
    assert!(lsn > newest);
    app.abandon().await;
    assert_eq!(snapshots(dir.path()), 2, "two snapshots kept");
    let first_segment = wal_segments(dir.path())[0].clone();
    let first_lsn: u64 = first_segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_lsn > 1,
        "segments wholly below the older snapshot were removed"
    );

    let (store, recovery) = Store::open(dir.path(), options).unwrap();
    assert!(recovery.snapshot.is_some());
    assert_eq!(
        recovery.wal.records_replayed,
        lsn - newest,
        "exactly the log after the snapshot replayed"
    );
    assert_eq!(store.lsn(), lsn);
    let recovered: Vec<Value> = store.with_graph(|g| {
        g.all_contacts()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    });
    assert_eq!(recovered, rows);
    store.close().unwrap();
}

#[tokio::test]
async fn snapshots_are_taken_automatically_every_n_events() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        snapshot_every: 20,
        segment_bytes: 512,
        ..StoreOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), options.clone(), HttpOptions::default()).await;
    run(&app, &workload(200)).await;
    let rows = app.all_rows().await;
    // The snapshot thread runs in the background; give it a bounded time.
    for _ in 0..200 {
        if snapshots(dir.path()) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(snapshots(dir.path()), 2);
    app.abandon().await;
    let app = TestApp::spawn_with(dir.path(), options, HttpOptions::default()).await;
    assert_eq!(app.all_rows().await, rows);
    app.stop().await;
}

#[tokio::test]
async fn torn_tail_cut_at_every_byte_offset_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let requests = workload(12);
    run(&app, &requests).await;
    let rows = app.all_rows().await;
    app.abandon().await;

    let segment = wal_segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&bytes);
    let last_start = offsets[offsets.len() - 2];
    let records = offsets.len() - 1;

    // The rows with the last event undone: recover once from a log without it.
    let expected_dir = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), expected_dir.path());
    let expected_segment = expected_dir
        .path()
        .join("wal")
        .join(segment.file_name().unwrap());
    std::fs::write(&expected_segment, &bytes[..last_start]).unwrap();
    let (store, report) = Store::open(expected_dir.path(), StoreOptions::default()).unwrap();
    assert!(report.wal.torn_tail.is_none());
    assert_eq!(report.wal.records_replayed as usize, records - 1);
    let expected_rows = store.with_graph(|g| g.all_contacts().collect::<Vec<_>>());
    drop(store);
    assert!(expected_rows.len() <= rows.len());

    for cut in last_start + 1..bytes.len() {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), trial.path());
        let trial_segment = trial.path().join("wal").join(segment.file_name().unwrap());
        std::fs::write(&trial_segment, &bytes[..cut]).unwrap();
        let (store, recovery) = Store::open(trial.path(), StoreOptions::default()).unwrap();
        let torn = recovery
            .wal
            .torn_tail
            .as_ref()
            .unwrap_or_else(|| panic!("cut at {cut}: no torn tail"));
        assert_eq!(torn.offset as usize, last_start, "cut at {cut}");
        assert_eq!(torn.file.file_name(), segment.file_name());
        assert_eq!(
            store.with_graph(|g| g.all_contacts().collect::<Vec<_>>()),
            expected_rows,
            "cut at {cut}"
        );
        drop(store);
        assert_eq!(
            std::fs::metadata(&trial_segment).unwrap().len() as usize,
            last_start,
            "tail was cut"
        );
    }
}

#[tokio::test]
async fn corruption_in_the_middle_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    run(&app, &workload(10)).await;
    app.abandon().await;
    let segment = wal_segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&bytes);
    let victim = offsets[2];
    bytes[victim + 20] ^= 0x10; // inside record 3's payload
    std::fs::write(&segment, &bytes).unwrap();

    match Store::open(dir.path(), StoreOptions::default()) {
        Err(error @ StoreError::Wal(_)) => {
            let text = error.to_string();
            assert!(text.contains(&segment.display().to_string()), "{text}");
            assert!(text.contains(&format!("offset {victim}")), "{text}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("corrupt log accepted"),
    }
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "refusal changes no file"
    );

    let output = idrecon(&["check", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("offset {victim}")), "{stdout}");
}

#[tokio::test]
async fn check_passes_a_healthy_dir_and_warns_on_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    run(&app, &workload(10)).await;
    app.abandon().await;
    let d = dir.path().to_str().unwrap();
    let output = idrecon(&["check", "--data-dir", d]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    let segment = wal_segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 3).unwrap();
    let output = idrecon(&["check", "--data-dir", d]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("torn tail"), "{stdout}");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        len - 3,
        "check changes nothing"
    );
}

/// docs/behaviour.md §8: the newest log segment losing its header, or vanishing, after
/// acknowledged writes is not a torn tail. `serve` (the store) and `idrecon check` refuse,
/// naming the file, and change nothing.
#[tokio::test]
async fn a_newest_segment_without_its_header_or_deleted_is_refused_by_serve_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    run(&app, &workload(10)).await;
    app.abandon().await;
    let d = dir.path().to_str().unwrap();
    let segment = wal_segments(dir.path()).pop().unwrap();
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    let refused = |what: &str| {
        match Store::open(dir.path(), StoreOptions::default()) {
            Err(error) => assert!(error.to_string().contains(&name), "{what}: {error}"),
            Ok(_) => panic!("{what}: serve would start"),
        }
        let output = idrecon(&["check", "--data-dir", d]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{what}: {stdout}");
        assert!(stdout.contains(&name), "{what}: {stdout}");
    };
    for keep in [0, 10] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(keep).unwrap();
        refused(&format!("cut to {keep} bytes"));
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), keep);
    }
    std::fs::remove_file(&segment).unwrap();
    refused("deleted");
    assert!(wal_segments(dir.path()).is_empty(), "nothing was recreated");
}

#[tokio::test]
async fn a_second_server_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StoreError::Locked(_))
    ));
    store.close().unwrap();
}

/// Runs `idrecon serve` on `dir` as a second process and waits (up to 60 s) for it to exit;
/// returns its exit status and stderr. A server that keeps running fails the test.
fn second_serve(dir: &Path) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second server starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second server on {} kept running", dir.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    (status, stderr)
}

/// docs/behaviour.md §8 "One process per data directory": the lock is on the directory itself,
/// so removing `DIR/LOCK` under a running server does not let a second one in (two writers
/// would hand out the same ids and overwrite each other's log).
#[tokio::test]
async fn deleting_the_lock_file_does_not_let_a_second_server_in() {
    let dir = tempfile::tempdir().unwrap();
    let first = Binary::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let identify = |email: &'static str| {
        client
            .post(format!("{}/identify", first.url))
            .json(&json!({ "email": email }))
            .send()
    };
    assert_eq!(identify("first@x.io").await.unwrap().status(), 200);
    let lock = dir.path().join("LOCK");
    if lock.exists() {
        std::fs::remove_file(&lock).unwrap();
    }

    let (status, stderr) = second_serve(dir.path());
    assert!(!status.success(), "second server exited with {status}");
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "the refusal names the directory: {stderr}"
    );

    // The first server keeps serving and writing.
    let health = client
        .get(format!("{}/healthz", first.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let answer: Value = identify("second@x.io").await.unwrap().json().await.unwrap();
    assert_eq!(answer["contact"]["primaryContactId"], 2, "{answer}");
}

#[tokio::test]
async fn a_corrupt_newest_snapshot_falls_back_to_the_older_one_plus_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        snapshot_every: 0,
        ..StoreOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), options.clone(), HttpOptions::default()).await;
    run(&app, &workload(40)).await;
    app.store.snapshot_blocking().unwrap();
    run(&app, &workload(80)[40..]).await;
    let newest = app.store.snapshot_blocking().unwrap().unwrap();
    let rows = app.all_rows().await;
    app.abandon().await;

    let newest_path = dir
        .path()
        .join("snapshots")
        .join(format!("{newest:020}.snap"));
    let mut bytes = std::fs::read(&newest_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&newest_path, &bytes).unwrap();

    let output = idrecon(&["check", "--data-dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("CORRUPT") && stdout.contains("falls back"),
        "{stdout}"
    );

    let (store, recovery) = Store::open(dir.path(), options.clone()).unwrap();
    assert_eq!(recovery.skipped_snapshots.len(), 1);
    let recovered: Vec<Value> = store.with_graph(|g| {
        g.all_contacts()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    });
    assert_eq!(recovered, rows, "older snapshot + log give the same rows");
    assert!(!newest_path.exists(), "the damaged snapshot was set aside");
    assert!(
        dir.path()
            .join("snapshots")
            .join(format!("{newest:020}.snap.corrupt"))
            .exists()
    );
    store.close().unwrap();
    drop(store);
    let (store, recovery) = Store::open(dir.path(), options).unwrap();
    assert!(
        recovery.skipped_snapshots.is_empty(),
        "the set-aside file is not retried"
    );
    store.close().unwrap();
}

#[tokio::test]
async fn nothing_is_revealed_after_the_log_refuses_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    app.identify(&json!({"email": "kept@x.io"})).await;
    // Closing the log makes it refuse appends, the same path as a failed write.
    app.store.close().unwrap();
    let (status, body) = app.identify(&json!({"email": "ghost@x.io"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    let (status, _) = app.identify(&json!({"email": "ghost@x.io"})).await;
    assert_eq!(status, 503, "the unlogged contact is never answered");
    let (status, _) = app.get("/contacts/2").await;
    assert_eq!(status, 503);
    app.abandon().await;
    let app = TestApp::spawn(dir.path()).await;
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["email"], "kept@x.io");
    app.stop().await;
}
