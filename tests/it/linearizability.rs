//! Linearizability of `/identify` over real HTTP, checked against the write-ahead log and the
//! naive model of docs/behaviour.md §3 (`tests/it/common/model.rs`, which shares no code with
//! `src/graph/`).
//!
//! Many concurrent clients send requests over small pools of emails and phones (email only,
//! phone only, both), so merges and races on brand-new values are common. Every request is
//! recorded with its answer, its `x-idrecon-outcome` header and its real-time window: the store's
//! LSN just before it was sent and just after its answer arrived. The server is then abandoned
//! (no snapshot is ever taken: `snapshot_every: 0`) and the log is read back with
//! `wal::replay_read_only`. The check walks the log once, applying its events to the model:
//!
//! - **Writes** (outcome other than `read`): the events starting at the current point must be
//!   exactly what the model plans for one still-unmatched write request at that state (same ids,
//!   values, links and merges), inside the request's window; the model's answer just after them
//!   must equal the served answer, and the outcome header must name the last event's kind.
//! - **Pure reads** (`read`): at some state between two requests' events, inside the request's
//!   window, the model must plan nothing for it and answer exactly what was served.
//! - At the end every request is matched, the model's rows equal the served rows (`GET
//!   /contacts`, all pages) column for column, and no identity has two primaries.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::common::model::{Answer, Model, Planned, Row};
use crate::common::{TestApp, summary};
use idrecon::contact::Timestamp;
use idrecon::event::Event;
use idrecon::http::HttpOptions;
use idrecon::store::StoreOptions;
use idrecon::wal::FsyncMode;
use serde_json::{Value, json};

type Key = (Option<String>, Option<String>);

/// One request and what the service said.
#[derive(Clone, Debug)]
struct Record {
    client: usize,
    email: Option<String>,
    phone: Option<String>,
    /// `store.lsn()` just before the request was sent.
    before: u64,
    /// `store.lsn()` just after the answer arrived.
    after: u64,
    answer: Answer,
    outcome: String,
}

impl Record {
    fn key(&self) -> Key {
        (self.email.clone(), self.phone.clone())
    }

    fn describe(&self) -> String {
        format!(
            "client {} email {:?} phone {:?} window LSN {}..={} outcome {} answer {:?}",
            self.client, self.email, self.phone, self.before, self.after, self.outcome, self.answer
        )
    }
}

/// A small deterministic generator (splitmix64), so rounds are reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn answer_of(body: &Value) -> Answer {
    let (primary, emails, phones, secondaries) = summary(body);
    Answer {
        primary,
        emails,
        phones,
        secondaries,
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        // Every acknowledged write still reaches the log file before its answer; only the
        // fsync is skipped, which a test that never loses power does not need.
        fsync: FsyncMode::Never,
        snapshot_every: 0,
        ..StoreOptions::default()
    }
}

/// Sends one `/identify` and records it.
async fn send(
    app: &TestApp,
    client: usize,
    email: Option<String>,
    phone: Option<String>,
) -> Record {
    let before = app.store.lsn();
    let response = app
        .client
        .post(format!("{}/identify", app.url))
        .json(&json!({"email": email, "phoneNumber": phone}))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let outcome = response
        .headers()
        .get("x-idrecon-outcome")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = response.json().await.expect("JSON body");
    let after = app.store.lsn();
    assert_eq!(status, 200, "email {email:?} phone {phone:?}: {body}");
    Record {
        client,
        email,
        phone,
        before,
        after,
        answer: answer_of(&body),
        outcome,
    }
}

/// Runs each client's requests in order, all clients concurrently; returns every record.
async fn drive(app: &Arc<TestApp>, clients: Vec<Vec<Key>>) -> Vec<Record> {
    let mut tasks = Vec::new();
    for (client, requests) in clients.into_iter().enumerate() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut records = Vec::with_capacity(requests.len());
            for (email, phone) in requests {
                records.push(send(&app, client, email, phone).await);
            }
            records
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        records.extend(task.await.expect("client task"));
    }
    records
}

/// Every event of the log, in LSN order (LSNs must run 1, 2, 3, … with no snapshot).
fn read_log(dir: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    idrecon::wal::replay_read_only(&dir.join("wal"), 0, |lsn, payload| {
        if lsn != events.len() as u64 + 1 {
            return Err(format!("LSN {lsn} after {} events", events.len()));
        }
        events.push(Event::decode(payload).map_err(|e| format!("LSN {lsn}: {e}"))?);
        Ok::<(), String>(())
    })
    .expect("log reads back");
    events
}

fn row_of(v: &Value) -> Row {
    let ts = |v: &Value| {
        Timestamp::parse(v.as_str().expect("timestamp"))
            .expect("valid")
            .0
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Row {
        id: v["id"].as_u64().expect("id"),
        email: text(&v["email"]),
        phone: text(&v["phoneNumber"]),
        linked_id: v["linkedId"].as_u64(),
        primary: match v["linkPrecedence"].as_str() {
            Some("primary") => true,
            Some("secondary") => false,
            other => panic!("linkPrecedence {other:?}"),
        },
        created_at: ts(&v["createdAt"]),
        updated_at: ts(&v["updatedAt"]),
        deleted_at: v["deletedAt"].as_str().map(|_| ts(&v["deletedAt"])),
    }
}

/// Every secondary points at a primary and every primary points nowhere: no identity has two
/// primaries (nor none).
fn one_primary_per_identity(rows: &[Row]) -> Result<(), String> {
    for r in rows {
        match (r.primary, r.linked_id) {
            (true, None) => {}
            (false, Some(p)) if rows.iter().any(|q| q.id == p && q.primary) => {}
            _ => return Err(format!("row {r:?} breaks one primary per identity")),
        }
    }
    Ok(())
}

fn kind(planned: &Planned) -> &'static str {
    match planned {
        Planned::Insert { link: None, .. } => "new-primary",
        Planned::Insert { .. } => "new-secondary",
        Planned::Merge { .. } => "merge",
        // Only /identify requests are driven here; these would be a bug of their own.
        Planned::Delete { .. } => "delete",
        Planned::Erase { .. } => "erase",
        Planned::Refuse { .. } => "refused",
        Planned::Repair => "repair",
    }
}

/// Merges of one request may be logged in any order; the insert comes last.
fn normalized(mut planned: Vec<Planned>) -> Vec<Planned> {
    let insert = planned
        .iter()
        .position(|p| matches!(p, Planned::Insert { .. }));
    let insert = insert.map(|i| planned.remove(i));
    planned.sort();
    planned.extend(insert);
    planned
}

/// What the checker covered.
#[derive(Debug, Default)]
struct Checked {
    requests: usize,
    writes: usize,
    reads: usize,
    events: usize,
    merges: usize,
    rows: usize,
}

/// The whole check of the module docs: `records` against `log` and the final `served` rows.
fn check(records: &[Record], log: &[Event], served: &[Row]) -> Result<Checked, String> {
    let (writes, reads): (Vec<&Record>, Vec<&Record>) =
        records.iter().partition(|r| r.outcome != "read");
    let mut unmatched_writes: Vec<&Record> = writes.clone();
    // Reads not yet matched, by window start.
    let mut pending: Vec<&Record> = reads.clone();
    pending.sort_by_key(|r| r.before);
    let mut model = Model::default();
    let mut at = 0usize; // events applied
    loop {
        // Pure reads whose window holds this state.
        let mut cache: HashMap<Key, Option<Answer>> = HashMap::new();
        let mut still = Vec::with_capacity(pending.len());
        for r in pending {
            if (r.before as usize) > at {
                still.push(r);
                continue;
            }
            if (r.after as usize) < at {
                return Err(format!(
                    "pure read matches no state of its window: {}",
                    r.describe()
                ));
            }
            let expected = cache.entry(r.key()).or_insert_with(|| {
                let (e, p) = (r.email.as_deref(), r.phone.as_deref());
                if model.plan(e, p).is_empty() {
                    model.read(e, p)
                } else {
                    None
                }
            });
            if expected.as_ref() != Some(&r.answer) {
                still.push(r);
            }
        }
        pending = still;
        if at == log.len() {
            break;
        }
        // The write whose events start here.
        let mut found = None;
        let mut tried = Vec::new();
        for (n, r) in unmatched_writes.iter().enumerate() {
            if (r.before as usize) > at {
                continue;
            }
            let planned = model.plan(r.email.as_deref(), r.phone.as_deref());
            let end = at + planned.len();
            if planned.is_empty() || end > log.len() || end > r.after as usize {
                continue;
            }
            let logged: Vec<Planned> = log[at..end].iter().map(Planned::of).collect();
            if normalized(logged.clone()) != normalized(planned.clone())
                || logged.last() != planned.last()
            {
                tried.push(format!("{}: plans {planned:?}", r.describe()));
                continue;
            }
            // Earliest deadline first among equals.
            if found.is_none_or(|(m, _): (usize, usize)| unmatched_writes[m].after > r.after) {
                found = Some((n, end));
            }
        }
        let Some((n, end)) = found else {
            return Err(format!(
                "event {} (LSN {}) {:?} was planned by no unmatched write request in its \
                 window; candidates: {tried:#?}",
                at,
                at + 1,
                log[at]
            ));
        };
        let r = unmatched_writes.swap_remove(n);
        let clock = model.clock(i64::MIN);
        for event in &log[at..end] {
            let stamp = match event {
                Event::ContactInserted(c) => {
                    if c.updated_at != c.created_at || c.deleted_at.is_some() {
                        return Err(format!("LSN {}: odd timestamps {event:?}", at + 1));
                    }
                    Some(c.created_at.0)
                }
                Event::IdentitiesMerged { at: stamp, .. } => stamp.map(|t| t.0),
                Event::IdentitiesLinked { at: stamp, .. }
                | Event::ContactDeleted { at: stamp, .. }
                | Event::IdentityErased { at: stamp, .. } => Some(stamp.0),
                Event::MergeRefused(r) => Some(r.at.0),
                Event::IdentitySplit { at: stamp, .. } | Event::ValuesBlocked { at: stamp, .. } => {
                    Some(stamp.0)
                }
                Event::ValuesUnblocked { .. } => None,
            };
            match stamp {
                Some(t) if t >= clock => {}
                _ => return Err(format!("LSN {}: clock went back in {event:?}", at + 1)),
            }
            model
                .apply_event(event)
                .map_err(|e| format!("LSN {}: {e}", at + 1))?;
        }
        let expected = model.read(r.email.as_deref(), r.phone.as_deref());
        if expected.as_ref() != Some(&r.answer) {
            return Err(format!(
                "write answered differently from the state its events made ({expected:?}): {}",
                r.describe()
            ));
        }
        let last = kind(&Planned::of(&log[end - 1]));
        if r.outcome != last {
            return Err(format!(
                "outcome header is not {last}, the last event's kind: {}",
                r.describe()
            ));
        }
        at = end;
    }
    if let Some(r) = unmatched_writes.first() {
        return Err(format!(
            "{} write requests match no events, e.g. {}",
            unmatched_writes.len(),
            r.describe()
        ));
    }
    if let Some(r) = pending.first() {
        return Err(format!(
            "{} pure reads match no state of their window, e.g. {}",
            pending.len(),
            r.describe()
        ));
    }
    if model.rows != served {
        return Err(format!(
            "the log replayed into the model gives {:#?}\nbut the server serves {served:#?}",
            model.rows
        ));
    }
    one_primary_per_identity(&model.rows)?;
    Ok(Checked {
        requests: records.len(),
        writes: writes.len(),
        reads: reads.len(),
        events: log.len(),
        merges: log
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::IdentitiesMerged { .. } | Event::IdentitiesLinked { .. }
                )
            })
            .count(),
        rows: served.len(),
    })
}

/// Serves a fresh directory, runs the clients, abandons the server and checks everything.
async fn run_and_check(clients: Vec<Vec<Key>>) -> (Checked, Vec<Record>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = Arc::new(TestApp::spawn_with(dir.path(), options(), HttpOptions::default()).await);
    let records = drive(&app, clients).await;
    let served: Vec<Row> = app.all_rows().await.iter().map(row_of).collect();
    let app = Arc::try_unwrap(app).ok().expect("sole owner");
    app.abandon().await;
    let log = read_log(dir.path());
    match check(&records, &log, &served) {
        Ok(checked) => (checked, records),
        Err(e) => panic!("not linearizable: {e}"),
    }
}

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 16;
const ROUNDS: u64 = 64;

/// Email only, phone only or both over pools of 8; how often both depends on the seed (1 in 2
/// to 1 in 8), so that some rounds keep many identities apart long enough to merge them late.
fn random_clients(seed: u64) -> Vec<Vec<Key>> {
    let both_one_in = 2 + (seed % 4) as usize * 2;
    let mut rng = Rng(seed);
    let email = |i: usize| Some(format!("user{i}@lin{seed}.test"));
    let phone = |i: usize| Some(format!("7{seed}0{i}"));
    (0..CLIENTS)
        .map(|_| {
            (0..PER_CLIENT)
                .map(|_| {
                    let (e, p) = (rng.below(8), rng.below(8));
                    if rng.below(both_one_in) == 0 {
                        (email(e), phone(p))
                    } else if rng.below(2) == 0 {
                        (email(e), None)
                    } else {
                        (None, phone(p))
                    }
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identify_is_linearizable() {
    let started = Instant::now();
    let mut total = Checked::default();
    for seed in 1..=ROUNDS {
        let (checked, _) = run_and_check(random_clients(seed)).await;
        assert!(checked.writes > 0 && checked.events >= checked.writes);
        total.requests += checked.requests;
        total.writes += checked.writes;
        total.reads += checked.reads;
        total.events += checked.events;
        total.merges += checked.merges;
        total.rows += checked.rows;
    }
    eprintln!(
        "linearizability: {ROUNDS} rounds, {total:?}, {:?}",
        started.elapsed()
    );
    assert_eq!(total.requests, ROUNDS as usize * CLIENTS * PER_CLIENT);
    assert!(total.merges > 0, "no merges: {total:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_identical_new_requests_in_parallel_create_one_row() {
    let same = (Some("same@new.test".to_owned()), Some("4242".to_owned()));
    let (checked, records) = run_and_check(vec![vec![same]; 64]).await;
    assert_eq!((checked.rows, checked.events, checked.writes), (1, 1, 1));
    let first = &records[0].answer;
    assert!(records.iter().all(|r| &r.answer == first));
    assert_eq!(
        *first,
        Answer {
            primary: 1,
            emails: vec!["same@new.test".into()],
            phones: vec!["4242".into()],
            secondaries: vec![],
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brand_new_combinations_in_parallel_end_as_one_identity() {
    // 32 requests, half (e, p1) and half (e, p2): one primary and one secondary, whoever wins.
    let e = Some("mixed@new.test".to_owned());
    let clients: Vec<Vec<Key>> = (0..32)
        .map(|i| vec![(e.clone(), Some(format!("90{}", i % 2)))])
        .collect();
    let (checked, records) = run_and_check(clients).await;
    assert_eq!((checked.rows, checked.events, checked.writes), (2, 2, 2));
    let last = records.iter().map(|r| r.answer.secondaries.len()).max();
    assert_eq!(last, Some(1), "the second combination joins the first");
    // 48 requests over (e, -), (-, p) and (e, p): brand-new halves may become two primaries
    // that (e, p) must merge; either way one identity remains.
    let (e, p) = (Some("halves@new.test".to_owned()), Some("31337".to_owned()));
    let clients: Vec<Vec<Key>> = (0..48)
        .map(|i| match i % 3 {
            0 => vec![(e.clone(), None)],
            1 => vec![(None, p.clone())],
            _ => vec![(e.clone(), p.clone())],
        })
        .collect();
    let (checked, more) = run_and_check(clients).await;
    assert!((1..=2).contains(&checked.rows), "{checked:?}");
    for r in more
        .iter()
        .filter(|r| r.email.is_some() && r.phone.is_some())
    {
        assert_eq!(r.answer.primary, 1, "{}", r.describe());
        assert_eq!(r.answer.emails, vec!["halves@new.test".to_owned()]);
        assert_eq!(r.answer.phones, vec!["31337".to_owned()]);
    }
}
