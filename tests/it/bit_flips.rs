//! Random single-bit flips anywhere in the log segments and snapshots of a real data directory
//! (docs/behaviour.md §8): every flip is detected, and none yields a silently different state.
//!
//! "Detected" means what `serve` and `idrecon check` do with it: recovery refuses and names
//! the file; or it cuts a torn tail (reported) and the state is exactly a prefix of the log; or
//! it skips a damaged snapshot (reported) and rebuilds the same state from an older one plus
//! the log; or the flipped file is a snapshot that `check` reports as corrupt.
//!
//! A second test checks the last fallback rule: with no older snapshot to fall back to, a
//! damaged snapshot makes recovery refuse with a clear message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idrecon::contact::{ContactRow, Email, Phone};
use idrecon::event::Event;
use idrecon::graph::{IdentifyRequest, IdentityGraph};
use idrecon::snapshot::SnapshotDir;
use idrecon::store::{self, Store, StoreError, StoreOptions};
use idrecon::wal::{self, Lsn};

const FLIPS: usize = 1200;

fn request(i: u64) -> IdentifyRequest {
    let email = Email::parse(&format!("u{}@flip.io", (i * 7) % (11 + i / 3))).unwrap();
    let phone = Phone::parse(&format!("7{}", (i * 5) % (9 + i / 4))).unwrap();
    match i % 3 {
        0 => IdentifyRequest::new(email, phone),
        1 => IdentifyRequest::new(email, None),
        _ => IdentifyRequest::new(None, phone),
    }
    .unwrap()
}

/// Builds a data directory with two snapshots and several log segments after the older one.
async fn build(dir: &Path) {
    let options = StoreOptions {
        snapshot_every: 0,
        segment_bytes: 1024,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir, options).unwrap();
    let mut i = 0;
    for batch in [120, 120, 120] {
        for _ in 0..batch {
            store.identify(&request(i)).await.unwrap();
            i += 1;
        }
        if i < 360 {
            store.snapshot_blocking().unwrap();
        }
    }
    store.wait_for_maintenance();
    drop(store); // no final snapshot: the newest snapshot is followed by log
}

/// Every data file of the directory (segments and snapshots), with its bytes.
fn data_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["wal", "snapshots"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            files.insert(
                path.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&path).unwrap(),
            );
        }
    }
    files
}

fn write_dir(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for sub in ["wal", "snapshots"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (rel, bytes) in files {
        std::fs::write(dir.join(rel), bytes).unwrap();
    }
}

/// Rows after every LSN from the older snapshot on: the only states a torn tail may leave.
fn prefix_states(dir: &Path) -> BTreeMap<Lsn, Vec<ContactRow>> {
    let snapshot_dir = SnapshotDir::on_disk(dir.join("snapshots"));
    let snapshots = snapshot_dir.list().unwrap();
    let (older_lsn, older_path) = snapshots.first().unwrap().clone();
    let mut graph = IdentityGraph::new();
    let info = snapshot_dir
        .read(&older_path, |e| graph.load_snapshot_item(e))
        .unwrap();
    graph.reserve_ids_below(info.next_id);
    let mut states = BTreeMap::new();
    states.insert(older_lsn, graph.all_contacts().collect());
    wal::replay_read_only(&dir.join("wal"), older_lsn, |lsn, payload| {
        let event = Event::decode(payload).map_err(|e| e.to_string())?;
        graph.apply(&event).map_err(|e| e.to_string())?;
        states.insert(lsn, graph.all_contacts().collect::<Vec<_>>());
        Ok::<(), String>(())
    })
    .unwrap();
    states
}

#[tokio::test]
async fn every_random_bit_flip_is_detected_and_never_silent() {
    let original = tempfile::tempdir().unwrap();
    build(original.path()).await;
    let files = data_files(original.path());
    let snapshots = files.keys().filter(|p| p.starts_with("snapshots")).count();
    let segments = files.keys().filter(|p| p.starts_with("wal")).count();
    assert_eq!(snapshots, 2);
    assert!(segments >= 3, "{segments} segments");
    let states = prefix_states(original.path());
    let full = store::inspect(original.path()).unwrap();
    let final_rows: Vec<ContactRow> = full.graph.all_contacts().collect();
    assert_eq!(states.values().last(), Some(&final_rows));

    let total: usize = files.values().map(Vec::len).sum();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for flip in 0..FLIPS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (mut at, bit) = ((rng % total as u64) as usize, (rng >> 40) % 8);
        let mut damaged = files.clone();
        let mut target = PathBuf::new();
        for (path, bytes) in damaged.iter_mut() {
            if at < bytes.len() {
                bytes[at] ^= 1 << bit;
                target = path.clone();
                break;
            }
            at -= bytes.len();
        }
        let trial = tempfile::tempdir().unwrap();
        write_dir(trial.path(), &damaged);
        let what = format!(
            "flip {flip}: bit {bit} of byte {at} in {}",
            target.display()
        );
        let outcome = match store::inspect(trial.path()) {
            Err(
                error @ (StoreError::Wal(_)
                | StoreError::Snapshot(_)
                | StoreError::NoUsableSnapshot(_)),
            ) => {
                let text = error.to_string();
                let name = target.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    text.contains(&name),
                    "{what}: refusal does not name the file: {text}"
                );
                "refused, naming the file"
            }
            Err(other) => panic!("{what}: unexpected error {other}"),
            Ok(inspection) => {
                let rows: Vec<ContactRow> = inspection.graph.all_contacts().collect();
                if let Some(torn) = &inspection.wal.torn_tail {
                    assert!(
                        torn.file.ends_with(&target),
                        "{what}: torn tail reported in another file"
                    );
                    assert_eq!(
                        Some(&rows),
                        states.get(&inspection.wal.last_lsn),
                        "{what}: not a log prefix"
                    );
                    "torn tail cut, state is a log prefix"
                } else if !inspection.skipped_snapshots.is_empty() {
                    assert_eq!(rows, final_rows, "{what}: fallback gave another state");
                    "damaged snapshot skipped, same state from older snapshot + log"
                } else {
                    assert_eq!(rows, final_rows, "{what}: silently different state");
                    // Recovery never read the flipped bytes (the older snapshot, unused while
                    // the newer verifies): `check` verifies every snapshot and reports it.
                    assert!(
                        target.starts_with("snapshots"),
                        "{what}: flip went unnoticed"
                    );
                    let verified = SnapshotDir::on_disk(trial.path().join("snapshots"))
                        .verify(&trial.path().join(&target));
                    assert!(verified.is_err(), "{what}: check would not report it");
                    "unused older snapshot, reported by check"
                }
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!(
        "{FLIPS} single-bit flips over {total} bytes in {} files: {outcomes:#?}",
        files.len()
    );
    assert!(
        outcomes.len() >= 3,
        "flips reached every kind of file: {outcomes:?}"
    );
}

#[tokio::test]
async fn a_damaged_only_snapshot_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        snapshot_every: 0,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), options.clone()).unwrap();
    for i in 0..30 {
        store.identify(&request(i)).await.unwrap();
    }
    store.close().unwrap(); // one snapshot, the log before it kept
    drop(store);
    let snapshots = SnapshotDir::on_disk(dir.path().join("snapshots"))
        .list()
        .unwrap();
    assert_eq!(snapshots.len(), 1);
    let path = &snapshots[0].1;
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
    match Store::open(dir.path(), options) {
        Err(error @ StoreError::NoUsableSnapshot(_)) => {
            let text = error.to_string();
            assert!(text.contains("no snapshot can be loaded"), "{text}");
            assert!(
                text.contains(&path.file_name().unwrap().to_string_lossy().into_owned()),
                "{text}"
            );
            assert!(text.contains("byte offset"), "{text}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a damaged only snapshot was accepted"),
    }
    assert!(
        path.exists(),
        "the damaged snapshot is left in place for the operator"
    );
}
