//! Fault-injection schedules (docs/behaviour.md §8): the Store runs on `storage::FaultFs`, an
//! in-memory file system with a live and a durable image per file. Each schedule fails one chosen
//! operation (the N-th write with EIO, ENOSPC or a short write; the N-th file fsync, directory
//! fsync, file creation, rename) or stops the world at the N-th mutating operation, drives
//! `/identify` requests from small email/phone pools (so merges happen) through four concurrent
//! tasks, then crashes (drops everything not fsynced), reopens a Store on the same FaultFs and
//! checks:
//!
//! (a) the recovered rows are exactly the rows after some prefix of the events the crashed
//!     store appended to its log (replayed into a fresh `IdentityGraph` prefix by prefix);
//! (b) every acknowledged answer is in the recovered state: its contact ids exist and are one
//!     identity, and its emails and phones belong to that identity;
//! (c) after a failed request the store reports itself unhealthy (`/healthz` 503) and stays so;
//!     and the reopened store is healthy and serves a new write.
//!
//! Each test prints how many schedules it ran and in how many a fault fired.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use idrecon::contact::{ContactId, ContactRow, Email, Phone};
use idrecon::event::Event;
use idrecon::graph::{IdentifyRequest, Identity, IdentityGraph};
use idrecon::storage::{Effect, FaultFs, OpKind, Storage};
use idrecon::store::{Store, StoreError, StoreOptions};
use idrecon::wal::FsyncMode;

const DIR: &str = "/data";
/// Requests per task; four tasks per schedule.
const REQUESTS: u64 = 16;
const TASKS: u64 = 4;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Fail(OpKind, u64, Effect),
    StopAt(u64),
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    fault: Fault,
    fsync: FsyncMode,
    snapshot_every: u64,
    segment_bytes: u64,
    seed: u64,
}

fn request(rng: &mut u64) -> IdentifyRequest {
    let mut next = |n: u64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng % n
    };
    let email = Email::parse(&format!("u{}@shop.test", next(6))).unwrap();
    let phone = Some(Phone::from_u64(5550000 + next(6)));
    match next(4) {
        0 => IdentifyRequest::new(email, None).unwrap(),
        1 => IdentifyRequest::new(None, phone).unwrap(),
        _ => IdentifyRequest::new(email, phone).unwrap(),
    }
}

/// Every event in the log segments of the (crashed) store, by LSN: the appended sequence.
fn appended_events(fs: &FaultFs) -> Vec<Event> {
    let mut events: BTreeMap<u64, Event> = BTreeMap::new();
    for path in fs.files(&Path::new(DIR).join("wal")) {
        if path.extension().is_none_or(|e| e != "wal") {
            continue;
        }
        let data = fs.contents(&path).unwrap_or_default();
        let mut off = 24;
        while off + 16 <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap());
            let lsn = u64::from_le_bytes(data[off + 8..off + 16].try_into().unwrap());
            let Some(payload) = data.get(off + 16..off + 16 + len) else {
                break;
            };
            let mut h = crc32fast::Hasher::new();
            h.update(&lsn.to_le_bytes());
            h.update(payload);
            if h.finalize() != crc {
                break;
            }
            events.insert(lsn, Event::decode(payload).expect("logged event decodes"));
            off += 16 + len;
        }
    }
    let lsns: Vec<u64> = events.keys().copied().collect();
    for (i, lsn) in lsns.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1, "appended LSNs are consecutive from 1");
    }
    events.into_values().collect()
}

fn rows(store: &Store) -> Vec<ContactRow> {
    store.with_graph(|g| g.all_contacts().collect())
}

/// (a): the index of the prefix of `events` whose state equals `recovered`.
fn matching_prefix(events: &[Event], recovered: &[ContactRow]) -> Option<usize> {
    let mut graph = IdentityGraph::new();
    let mut prefix: Vec<ContactRow> = Vec::new();
    for k in 0..=events.len() {
        if prefix == recovered {
            return Some(k);
        }
        if k < events.len() {
            graph
                .apply(&events[k])
                .expect("appended events apply in order");
            prefix = graph.all_contacts().collect();
        }
    }
    None
}

/// (b): `ack` is fully present in `recovered`.
fn check_ack(ack: &Identity, recovered: &[ContactRow], schedule: &Schedule) {
    let by_id: HashMap<ContactId, &ContactRow> = recovered.iter().map(|r| (r.id, r)).collect();
    let primary_of = |id: ContactId| {
        let row = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{schedule:?}: acknowledged contact {id} lost"));
        row.linked_id.unwrap_or(row.id)
    };
    let primary = primary_of(ack.primary_contact_id);
    for &id in &ack.secondary_contact_ids {
        assert_eq!(
            primary_of(id),
            primary,
            "{schedule:?}: acknowledged contact {id} left its identity"
        );
    }
    let members: Vec<&&ContactRow> = by_id
        .values()
        .filter(|r| r.linked_id.unwrap_or(r.id) == primary)
        .collect();
    for email in &ack.emails {
        assert!(
            members.iter().any(|r| r.email.as_ref() == Some(email)),
            "{schedule:?}: acknowledged email {email:?} lost"
        );
    }
    for phone in &ack.phone_numbers {
        assert!(
            members
                .iter()
                .any(|r| r.phone_number.as_ref() == Some(phone)),
            "{schedule:?}: acknowledged phone {phone:?} lost"
        );
    }
}

fn options(s: &Schedule) -> StoreOptions {
    StoreOptions {
        fsync: s.fsync,
        snapshot_every: s.snapshot_every,
        segment_bytes: s.segment_bytes,
        ..StoreOptions::default()
    }
}

/// Runs one schedule; returns whether its fault fired.
async fn run(s: Schedule) -> bool {
    let fs = FaultFs::new();
    match s.fault {
        Fault::Fail(kind, n, effect) => fs.fail(kind, n, effect),
        Fault::StopAt(n) => fs.stop_after(n),
    }
    let dir = PathBuf::from(DIR);
    let storage: Arc<dyn Storage> = Arc::new(fs.clone());
    let mut acks: Vec<Identity> = Vec::new();
    // Kept alive across the crash: dropping it first would close the log cleanly.
    let mut crashed = None;
    if let Ok((store, _)) = Store::open_with(&dir, options(&s), storage) {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let store = Arc::clone(&store);
            let mut rng = s.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t + 1);
            tasks.spawn(async move {
                let mut acks = Vec::new();
                let mut failed = false;
                for _ in 0..REQUESTS {
                    let req = request(&mut rng);
                    match store.identify(&req).await {
                        Ok((identity, _, _)) => acks.push(identity),
                        Err(StoreError::Unavailable) => {
                            // (c) a 503 means /healthz is 503 too, for good.
                            assert!(!store.healthy(), "{s:?}: 503 while healthy");
                            failed = true;
                        }
                        Err(e) => panic!("{s:?}: unexpected error {e}"),
                    }
                    if failed {
                        assert!(!store.healthy(), "{s:?}: healthy again after a failure");
                    }
                    tokio::task::yield_now().await;
                }
                acks
            });
        }
        while let Some(done) = tasks.join_next().await {
            acks.extend(done.expect("task"));
        }
        // A snapshot in the background may still be writing: let it finish (or fail).
        store.wait_for_maintenance();
        crashed = Some(store);
    }
    let fired = fs.injected() > 0;
    let events = appended_events(&fs);
    let fs2 = fs.crash();
    // Its file handles are dead now: closing does nothing to the disk.
    drop(crashed);
    let (store, _) = Store::open_with(&dir, options(&s), Arc::new(fs2.clone()))
        .unwrap_or_else(|e| panic!("{s:?}: reopening after the crash failed: {e}"));
    let recovered = rows(&store);
    store
        .with_graph(|g| g.check_invariants())
        .unwrap_or_else(|e| panic!("{s:?}: recovered graph broken: {e}"));
    assert!(
        matching_prefix(&events, &recovered).is_some(),
        "{s:?}: recovered rows ({}) are no prefix of the {} appended events",
        recovered.len(),
        events.len()
    );
    for ack in &acks {
        check_ack(ack, &recovered, &s);
    }
    // The restarted store is healthy and takes writes again.
    assert!(store.healthy(), "{s:?}: unhealthy after restart");
    let req = IdentifyRequest::new(Email::parse("after@restart.test").unwrap(), None).unwrap();
    store
        .identify(&req)
        .await
        .unwrap_or_else(|e| panic!("{s:?}: write after restart failed: {e}"));
    fired
}

fn run_all(name: &str, schedules: Vec<Schedule>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let total = schedules.len();
    let mut fired = 0;
    for s in schedules {
        if rt.block_on(run(s)) {
            fired += 1;
        }
    }
    println!("fault_injection {name}: {total} schedules run, the fault fired in {fired}");
    assert!(fired > 0, "{name}: no fault ever fired");
}

/// Storage layouts each fault is tried under: plain group commit; fsync always with small
/// segments (rotation); group commit with frequent snapshots (snapshot files, renames,
/// pruning).
fn layouts() -> [(FsyncMode, u64, u64); 3] {
    [
        (FsyncMode::Batch, 0, 64 << 20),
        (FsyncMode::Always, 0, 300),
        (FsyncMode::Batch, 5, 64 << 20),
    ]
}

/// For N in `1..=max_n`, every fault `faults(N)` under every layout with `seeds` request
/// streams each.
fn schedules(faults: impl Fn(u64) -> Vec<Fault>, max_n: u64, seeds: u64) -> Vec<Schedule> {
    let mut out = Vec::new();
    for n in 1..=max_n {
        for fault in faults(n) {
            for (fsync, snapshot_every, segment_bytes) in layouts() {
                for seed in 0..seeds {
                    out.push(Schedule {
                        fault,
                        fsync,
                        snapshot_every,
                        segment_bytes,
                        seed: n * 1_000 + seed,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn failed_writes_never_acknowledge_and_recover() {
    let s = schedules(
        |n| {
            vec![
                Fault::Fail(OpKind::Write, n, Effect::Eio),
                Fault::Fail(OpKind::Write, n, Effect::Enospc),
                Fault::Fail(OpKind::Write, n, Effect::ShortWrite),
            ]
        },
        30,
        6,
    );
    run_all("write (EIO, ENOSPC, short write)", s);
}

#[test]
fn failed_fsyncs_never_acknowledge_and_recover() {
    let s = schedules(
        |n| {
            vec![
                Fault::Fail(OpKind::Sync, n, Effect::Eio),
                Fault::Fail(OpKind::DirSync, n, Effect::Eio),
            ]
        },
        30,
        6,
    );
    run_all("fsync (file, directory)", s);
}

#[test]
fn failed_namespace_operations_recover() {
    let s = schedules(
        |n| {
            vec![
                Fault::Fail(OpKind::Create, n, Effect::Enospc),
                Fault::Fail(OpKind::Rename, n, Effect::Eio),
                Fault::Fail(OpKind::Remove, n, Effect::Eio),
            ]
        },
        12,
        2,
    );
    run_all("create (ENOSPC), rename, remove", s);
}

#[test]
fn crash_at_every_operation_recovers_a_prefix() {
    let s = schedules(|n| vec![Fault::StopAt(n)], 80, 6);
    run_all("crash at op N", s);
}

/// The log alone, for every fsync-failure point of a few dozen records: the failed fsync is
/// never retried (no file fsync happens after it), nothing past the durable LSN is ever
/// acknowledged, appends and close report the failure, and a reopen recovers every record
/// that was acknowledged and nothing that is not a prefix of what was appended.
#[test]
fn wal_never_retries_a_failed_fsync() {
    use idrecon::wal::{Wal, WalError, WalOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = Path::new("/log");
    let mut runs = 0;
    for effect in [Effect::Eio, Effect::Enospc, Effect::ShortWrite] {
        for (kind, n) in (1..=24).flat_map(|n| [(OpKind::Sync, n), (OpKind::Write, n)]) {
            let fs = FaultFs::new();
            let opts = WalOptions {
                fsync: FsyncMode::Always,
                segment_bytes: 200,
                ..WalOptions::default()
            };
            let (wal, _) = Wal::open_with(Arc::new(fs.clone()), dir, opts, 0, |_, _| {
                Ok::<(), String>(())
            })
            .unwrap();
            fs.fail(kind, n, effect);
            let mut acked = 0;
            for i in 0..20u64 {
                let Ok(lsn) = wal.append(&i.to_le_bytes()) else {
                    break;
                };
                match rt.block_on(wal.durable(lsn)) {
                    Ok(()) => {
                        assert!(!wal.is_failed());
                        acked = lsn;
                    }
                    Err(WalError::Failed) => break,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            if fs.injected() > 0 {
                assert!(wal.is_failed(), "{kind:?} #{n} {effect:?}: log not failed");
                let syncs = fs.ops(OpKind::Sync);
                assert!(matches!(wal.append(b"late"), Err(WalError::Failed)));
                assert!(matches!(wal.close(), Err(WalError::Failed)));
                assert_eq!(fs.ops(OpKind::Sync), syncs, "fsync retried after a failure");
                assert_eq!(wal.durable_lsn(), acked);
            }
            let fs2 = fs.crash();
            drop(wal);
            let mut seen = Vec::new();
            let (wal, report) = Wal::open_with(Arc::new(fs2), dir, opts, 0, |lsn, payload| {
                seen.push((lsn, payload.to_vec()));
                Ok::<(), String>(())
            })
            .unwrap();
            assert!(
                report.last_lsn >= acked,
                "{kind:?} #{n}: acknowledged record lost"
            );
            for (i, (lsn, payload)) in seen.iter().enumerate() {
                assert_eq!(*lsn, i as u64 + 1);
                assert_eq!(payload, &(i as u64).to_le_bytes());
            }
            wal.close().unwrap();
            runs += 1;
        }
    }
    println!("fault_injection wal fsync policy: {runs} schedules run");
}

/// The log alone, with a crash at every operation of a segment roll (docs/format.md, "The head
/// file"): before the new segment exists, between its header and the head file that names it,
/// and after. Every record acknowledged before the crash is recovered, recovery never mistakes
/// the half-created segment for a damaged one, and the reopened log accepts writes.
#[test]
fn a_crash_anywhere_in_a_segment_roll_recovers_every_acknowledged_record() {
    use idrecon::wal::{Wal, WalOptions};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = Path::new("/log");
    let opts = WalOptions {
        fsync: FsyncMode::Batch,
        ..WalOptions::default()
    };
    let (mut runs, mut fired) = (0, 0);
    for n in 1..=30 {
        let fs = FaultFs::new();
        let (wal, _) = Wal::open_with(Arc::new(fs.clone()), dir, opts, 0, |_, _| {
            Ok::<(), String>(())
        })
        .unwrap();
        for i in 1..=5u64 {
            rt.block_on(wal.durable(wal.append(&i.to_le_bytes()).unwrap()))
                .unwrap();
        }
        let mut acked = 5;
        fs.stop_after(n);
        if wal.roll_segment().is_ok()
            && let Ok(lsn) = wal.append(&6u64.to_le_bytes())
            && rt.block_on(wal.durable(lsn)).is_ok()
        {
            acked = lsn;
        }
        fired += fs.injected();
        let fs2 = fs.crash();
        drop(wal);
        let mut seen = Vec::new();
        let (wal, report) = Wal::open_with(Arc::new(fs2), dir, opts, 0, |lsn, payload| {
            seen.push((lsn, payload.to_vec()));
            Ok::<(), String>(())
        })
        .unwrap_or_else(|e| panic!("crash at op {n} of the roll: {e}"));
        assert!(report.last_lsn >= acked, "op {n}: acknowledged record lost");
        for (i, (lsn, payload)) in seen.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1);
            assert_eq!(payload, &(i as u64 + 1).to_le_bytes());
        }
        let lsn = wal.append(b"after").unwrap();
        rt.block_on(wal.durable(lsn)).unwrap();
        wal.close().unwrap();
        runs += 1;
    }
    assert!(fired > 0 && fired < runs, "{fired} of {runs} crashes fired");
    println!("fault_injection segment roll: {runs} schedules run, {fired} crashed in the roll");
}

/// Erasure and compaction under a crash at every operation (docs/behaviour.md §6.7, §6.8): four
/// tasks write while one identity is erased and the store compacts (rolls the log, writes a
/// snapshot, removes every other snapshot and every covered segment). After the crash the store
/// reopens, its invariants hold, every acknowledged answer of the other identities is present, an
/// acknowledged erasure stays erased, and when the compaction finished no durable file holds the
/// erased values.
#[test]
fn crash_during_erasure_and_compaction_recovers() {
    const ERASED: &str = "erase-me@shop.test";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut runs, mut fired, mut compacted) = (0, 0, 0);
    for n in 1..=130u64 {
        for (fsync, snapshot_every, segment_bytes) in layouts() {
            let s = Schedule {
                fault: Fault::StopAt(n),
                fsync,
                snapshot_every,
                segment_bytes,
                seed: n,
            };
            runs += 1;
            let fs = FaultFs::new();
            fs.stop_after(n);
            let dir = PathBuf::from(DIR);
            let (acks, erased, done, crashed) = rt.block_on(async {
                let Ok((store, _)) = Store::open_with(&dir, options(&s), Arc::new(fs.clone()))
                else {
                    return (Vec::new(), false, false, None);
                };
                let mut acks = Vec::new();
                let target = IdentifyRequest::new(
                    Email::parse(ERASED).unwrap(),
                    Some(Phone::from_u64(5_559_999)),
                )
                .unwrap();
                let target_id = match store.identify(&target).await {
                    Ok((identity, _, _)) => Some(identity.primary_contact_id),
                    Err(_) => None,
                };
                let mut rng = s.seed ^ 0x5EED;
                for _ in 0..12 {
                    if let Ok((identity, _, _)) = store.identify(&request(&mut rng)).await {
                        acks.push(identity);
                    }
                }
                let erased = match target_id {
                    Some(id) => matches!(store.erase_identity(id).await, Ok(Some(_))),
                    None => false,
                };
                for _ in 0..6 {
                    if let Ok((identity, _, _)) = store.identify(&request(&mut rng)).await {
                        acks.push(identity);
                    }
                }
                store.wait_for_maintenance();
                let done = erased && store.compact_blocking().is_ok();
                (acks, erased, done, Some(store))
            });
            if fs.injected() > 0 {
                fired += 1;
            }
            let fs2 = fs.crash();
            // Its file handles are dead now: closing does nothing to the disk.
            drop(crashed);
            if done {
                compacted += 1;
                for path in fs2
                    .files(&dir.join("wal"))
                    .into_iter()
                    .chain(fs2.files(&dir.join("snapshots")))
                {
                    let bytes = fs2.contents(&path).unwrap_or_default();
                    assert!(
                        !bytes.windows(ERASED.len()).any(|w| w == ERASED.as_bytes()),
                        "{s:?}: {} holds the erased email after compaction",
                        path.display()
                    );
                }
            }
            let (store, _) = Store::open_with(&dir, options(&s), Arc::new(fs2))
                .unwrap_or_else(|e| panic!("{s:?}: reopening after the crash failed: {e}"));
            store
                .with_graph(|g| g.check_invariants())
                .unwrap_or_else(|e| panic!("{s:?}: recovered graph broken: {e}"));
            let recovered = rows(&store);
            for ack in &acks {
                check_ack(ack, &recovered, &s);
            }
            if erased {
                assert!(
                    recovered
                        .iter()
                        .all(|r| r.email.as_ref().is_none_or(|e| e.as_str() != ERASED)),
                    "{s:?}: an acknowledged erasure came back"
                );
            }
            rt.block_on(async {
                let req = IdentifyRequest::new(Email::parse("after@restart.test").unwrap(), None)
                    .unwrap();
                store
                    .identify(&req)
                    .await
                    .unwrap_or_else(|e| panic!("{s:?}: write after restart failed: {e}"));
            });
        }
    }
    println!(
        "fault_injection erasure+compaction: {runs} schedules, crash fired in {fired}, \
         compaction completed before the crash in {compacted}"
    );
    assert!(
        fired > 100 && compacted > 10,
        "{fired} fired, {compacted} compacted"
    );
}
