//! Differential test of [`IdentityGraph`] against a deliberately naive model of
//! docs/behaviour.md §3 (docs/design.md "Tests").
//!
//! The model (`tests/it/common/model.rs`, shared with `linearizability.rs`) is a `Vec` of rows with
//! exactly the columns of the `Contact` table, changed the way docs/behaviour.md §3 describes it in
//! prose: scan everything, collect identities through `linkedId`, demote, re-point, insert. It is
//! quadratic on purpose and shares no code with `src/graph/` (union-find, indexes, rings).
//!
//! Random request sequences over small pools of emails and phones make merges common; the wall
//! clock advances 0–3 ms per request (so ties in `createdAt` happen) and now and then jumps
//! backwards (the service clock is `max(previous createdAt, now)`, docs/behaviour.md §2). Rarely a
//! deleted row is inserted through `apply` (as an import would), so "deleted rows never match and
//! never appear in answers" is checked too. After every request the answers, the pure-read flag and
//! every column of every row must agree, and the graph's invariants must hold. Each case also
//! rebuilds the graph from `snapshot_contacts()` at a random point and drives the rebuilt graph in
//! lock step, and replays the returned events into a fresh graph at the end.
//!
//! Deletion, erasure and blocked values (docs/behaviour.md §6.6, §6.7, §3.6) are in the model too:
//! now and then a step deletes a row (`DELETE /contacts/{id}`, promotion of the oldest live member
//! when the primary goes) or erases an identity, and a third of the cases run with one email and
//! one phone of the pool blocked (stored on rows, never matched).

use std::sync::atomic::{AtomicUsize, Ordering};

use idrecon::contact::{Email, Phone, Timestamp};
use std::sync::Arc;

use idrecon::event::{Event, NewContact};
use idrecon::graph::BlockList;
use idrecon::graph::{GraphOptions, IdentifyRequest, IdentityGraph};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::model::{Answer, Model, Row, answer_of, row_of};

// ----- generated cases --------------------------------------------------------------------------

const BASE_MS: i64 = 1_680_307_200_000; // 2023-04-01T00:00:00Z

/// A deleted row recorded through `apply` (as an import would), before a request.
#[derive(Clone, Debug)]
struct DeletedRow {
    email: Option<usize>,
    phone: Option<usize>,
    /// Joins the identity of an existing row (any member, not only a primary).
    link: Option<Index>,
    /// How much older than the service clock its `createdAt` is.
    older_by: i64,
}

#[derive(Clone, Debug)]
struct Step {
    email: Option<usize>,
    phone: Option<usize>,
    /// Wall-clock change since the previous step, ms (negative: the clock jumped back).
    dt: i64,
    deleted: Option<DeletedRow>,
    /// After the request: delete a row (any row; deleting a deleted one must be refused).
    delete: Option<Index>,
    /// After the request: erase the identity of a row.
    erase: Option<Index>,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<Step>,
    /// Where the graph is rebuilt from its snapshot.
    snapshot_at: Index,
    /// Pool indexes of the email and the phone that are blocked, if any.
    blocked: Option<(usize, usize)>,
    /// Where a chunked snapshot capture begins (it then advances a few entries per step while
    /// the graph keeps changing).
    capture_at: Index,
}

/// Email only, phone only, or both (`both` times as likely as each of the others).
fn pair(pool: usize, both: u32) -> impl Strategy<Value = (Option<usize>, Option<usize>)> {
    prop_oneof![
        1 => (0..pool).prop_map(|e| (Some(e), None)),
        1 => (0..pool).prop_map(|p| (None, Some(p))),
        both => (0..pool, 0..pool).prop_map(|(e, p)| (Some(e), Some(p))),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    // Mostly small pools with every kind of request (merges everywhere); sometimes large pools
    // with mostly two-value requests and longer runs, so that one identity grows past the size
    // where the graph switches to hash sets for distinct values (32 live members).
    let shape = prop_oneof![
        4 => (2usize..=8, Just(1u32), Just(50usize)),
        1 => (24usize..=40, Just(8u32), Just(100usize)),
    ];
    shape
        .prop_flat_map(|(pool, both, min_len)| {
            let deleted = (pair(pool, 1), any::<Option<Index>>(), 0i64..=40).prop_map(
                |((email, phone), link, older_by)| DeletedRow {
                    email,
                    phone,
                    link,
                    older_by,
                },
            );
            let step = (
                pair(pool, both),
                prop_oneof![12 => 0i64..=3, 1 => -30i64..=-1],
                proptest::option::weighted(0.04, deleted),
                proptest::option::weighted(0.06, any::<Index>()),
                proptest::option::weighted(0.01, any::<Index>()),
            )
                .prop_map(|((email, phone), dt, deleted, delete, erase)| Step {
                    email,
                    phone,
                    dt,
                    deleted,
                    delete,
                    erase,
                });
            let steps = proptest::collection::vec(step, min_len..=min_len + 50);
            let blocked = proptest::option::weighted(0.33, (0..pool, 0..pool));
            (steps, any::<Index>(), blocked, any::<Index>())
        })
        .prop_map(|(steps, snapshot_at, blocked, capture_at)| Case {
            steps,
            snapshot_at,
            blocked,
            capture_at,
        })
}

fn email_text(i: usize) -> String {
    format!("user{i}@hillvalley.edu")
}

fn phone_text(i: usize) -> String {
    format!("55501{i}")
}

// ----- comparing --------------------------------------------------------------------------------

fn rows_of(graph: &IdentityGraph) -> Vec<Row> {
    graph.all_contacts().map(row_of).collect()
}

/// `find` leads every row to its identity's primary and knows no id beyond the last.
fn check_find(graph: &IdentityGraph, rows: &[Row], ctx: &str) -> Result<(), TestCaseError> {
    for row in rows {
        let primary = row.linked_id.unwrap_or(row.id);
        prop_assert_eq!(
            graph.find(row.id),
            Some(primary),
            "{}: find({})",
            ctx,
            row.id
        );
    }
    let beyond = rows.last().map_or(1, |r| r.id + 1);
    prop_assert_eq!(graph.find(beyond), None, "{}: find({})", ctx, beyond);
    Ok(())
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

fn rebuild_from_snapshot(graph: &IdentityGraph) -> Result<IdentityGraph, TestCaseError> {
    // As recovery does: indexes built once at the end.
    let mut fresh = IdentityGraph::with_options(graph.options().clone());
    fresh.begin_bulk_load();
    for entry in graph.snapshot_entries() {
        fresh
            .load_snapshot_item(entry.as_item())
            .map_err(|e| fail(format!("snapshot entry {entry:?} does not apply: {e}")))?;
    }
    fresh.reserve_ids_below(graph.next_id());
    fresh.finish_bulk_load();
    Ok(fresh)
}

fn same_state(what: &str, a: &IdentityGraph, b: &IdentityGraph) -> Result<(), TestCaseError> {
    prop_assert_eq!(rows_of(a), rows_of(b), "{}: rows differ", what);
    prop_assert_eq!(a.next_id(), b.next_id(), "{}: next id differs", what);
    prop_assert_eq!(
        a.max_created_at(),
        b.max_created_at(),
        "{}: clock differs",
        what
    );
    prop_assert_eq!(a.identity_count(), b.identity_count(), "{}", what);
    prop_assert_eq!(a.largest_identity(), b.largest_identity(), "{}", what);
    // History survives snapshots and replays: every identity's history is the same.
    for row in rows_of(a) {
        prop_assert_eq!(
            a.history(row.id),
            b.history(row.id),
            "{}: history of {}",
            what,
            row.id
        );
    }
    b.check_invariants()
        .map_err(|e| fail(format!("{what}: {e}")))?;
    Ok(())
}

/// Requests driven through `IdentityGraph::identify` (all runs of the property, shrinking
/// included).
static REQUESTS: AtomicUsize = AtomicUsize::new(0);
/// Deletions and erasures both sides accepted, and requests run with a block list.
static DELETIONS: AtomicUsize = AtomicUsize::new(0);
static ERASURES: AtomicUsize = AtomicUsize::new(0);
static BLOCKED_REQUESTS: AtomicUsize = AtomicUsize::new(0);
static CAPTURES: AtomicUsize = AtomicUsize::new(0);

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut options = GraphOptions::default();
    if let Some((e, p)) = case.blocked {
        model.blocked = vec![email_text(e), phone_text(p)];
        options.blocked =
            Arc::new(BlockList::new(model.blocked.clone(), Vec::new()).map_err(fail)?);
    }
    let mut graph = IdentityGraph::with_options(options.clone());
    let mut log: Vec<Event> = Vec::new();
    let mut rebuilt: Option<IdentityGraph> = None;
    let snapshot_at = case.snapshot_at.index(case.steps.len() + 1);
    let capture_at = case.capture_at.index(case.steps.len());
    // (cursor, entries so far, the entries a snapshot at the capture's start has)
    let mut capture = None;
    let mut now = BASE_MS;

    for (i, step) in case.steps.iter().enumerate() {
        if i == capture_at {
            let expected: Vec<_> = graph.snapshot_entries().collect();
            capture = Some((graph.begin_capture(), Vec::new(), expected));
        }
        if let Some((cursor, got, _)) = &mut capture {
            graph.capture_chunk(cursor, 3, got);
        }
        if i == snapshot_at {
            let fresh = rebuild_from_snapshot(&graph)?;
            same_state("rebuilt from snapshot", &graph, &fresh)?;
            rebuilt = Some(fresh);
        }
        now += step.dt;

        if let Some(d) = &step.deleted {
            // A deleted row joins the identity of an existing row, or stands alone. Its
            // createdAt may be older than the clock unless that would make it the oldest row
            // of an identity without live rows: the naive model, like `/identify`, adds a
            // linked row as a secondary and never elects a new primary on insert.
            let email = d.email.map(email_text);
            let phone = d.phone.map(phone_text);
            let target = d
                .link
                .as_ref()
                .filter(|_| !model.rows.is_empty())
                .map(|ix| {
                    let row = &model.rows[ix.index(model.rows.len())];
                    (row.id, Model::identity(row))
                });
            let clock = model.clock(now);
            let primary_live = target.is_none_or(|(_, p)| model.get(p).deleted_at.is_none());
            let created_at = if primary_live {
                clock - d.older_by
            } else {
                clock
            };
            let event = Event::ContactInserted(NewContact {
                id: graph.next_id(),
                email: email.as_deref().map(|e| Email::parse(e).unwrap().unwrap()),
                phone: phone.as_deref().map(|p| Phone::parse(p).unwrap().unwrap()),
                created_at: Timestamp(created_at),
                updated_at: Timestamp(clock),
                deleted_at: Some(Timestamp(clock)),
                link: target.map(|(id, _)| id),
            });
            graph
                .apply(&event)
                .map_err(|e| fail(format!("step {i}: deleted row rejected: {e}")))?;
            if let Some(r) = &mut rebuilt {
                r.apply(&event)
                    .map_err(|e| fail(format!("step {i}: rebuilt graph rejects: {e}")))?;
            }
            log.push(event);
            let id = model.next_id();
            model.rows.push(Row {
                id,
                email,
                phone,
                linked_id: target.map(|(_, p)| p),
                primary: target.is_none(),
                created_at,
                updated_at: clock,
                deleted_at: Some(clock),
            });
            prop_assert_eq!(
                rows_of(&graph),
                model.rows.clone(),
                "step {}: deleted row",
                i
            );
        }

        let email = step.email.map(email_text);
        let phone = step.phone.map(phone_text);
        let request = IdentifyRequest::new(
            email.as_deref().map(|e| Email::parse(e).unwrap().unwrap()),
            phone.as_deref().map(|p| Phone::parse(p).unwrap().unwrap()),
        )
        .map_err(fail)?;
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if !model.blocked.is_empty() {
            BLOCKED_REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        let (identity, events) = graph
            .identify(&request, Timestamp(now))
            .map_err(|e| fail(format!("step {i}: identify failed: {e}")))?;
        let (expected, wrote) = model.identify(email.as_deref(), phone.as_deref(), now);
        let ctx = format!("step {i}: email {email:?} phone {phone:?} now {now}");
        prop_assert_eq!(answer_of(&identity), expected, "{}: answer", ctx);
        prop_assert_eq!(!events.is_empty(), wrote, "{}: events {:?}", ctx, events);
        prop_assert_eq!(rows_of(&graph), model.rows.clone(), "{}: rows", ctx);
        check_find(&graph, &model.rows, &ctx)?;
        prop_assert_eq!(graph.next_id(), model.next_id(), "{}: next id", ctx);
        graph
            .check_invariants()
            .map_err(|e| fail(format!("{ctx}: invariant: {e}")))?;

        if let Some(r) = &mut rebuilt {
            let (again, again_events) = r
                .identify(&request, Timestamp(now))
                .map_err(|e| fail(format!("{ctx}: rebuilt graph: {e}")))?;
            prop_assert_eq!(
                &again,
                &identity,
                "{}: rebuilt graph answers differently",
                ctx
            );
            prop_assert_eq!(&again_events, &events, "{}: rebuilt graph events", ctx);
        }
        log.extend(events);

        // A deletion or an erasure after the request, as the store would log it.
        let ops = [(false, &step.delete), (true, &step.erase)];
        for (erase, ix) in ops {
            let Some(ix) = ix else { continue };
            if model.rows.is_empty() {
                continue;
            }
            let id = model.rows[ix.index(model.rows.len())].id;
            let at = model.clock(now);
            let (event, accepted) = if erase {
                let event = Event::IdentityErased {
                    id,
                    at: Timestamp(at),
                };
                (event, model.erase(id))
            } else {
                let event = Event::ContactDeleted {
                    id,
                    at: Timestamp(at),
                };
                (event, model.delete(id, at))
            };
            let ctx = format!("step {i}: {event:?}");
            let applied = graph.apply(&event);
            prop_assert_eq!(applied.is_ok(), accepted, "{}: {:?}", ctx, applied);
            if applied.is_ok() {
                if erase { &ERASURES } else { &DELETIONS }.fetch_add(1, Ordering::Relaxed);
                if let Some(r) = &mut rebuilt {
                    r.apply(&event)
                        .map_err(|e| fail(format!("{ctx}: rebuilt graph rejects: {e}")))?;
                }
                log.push(event);
            }
            prop_assert_eq!(rows_of(&graph), model.rows.clone(), "{}: rows", ctx);
            check_find(&graph, &model.rows, &ctx)?;
            graph
                .check_invariants()
                .map_err(|e| fail(format!("{ctx}: invariant: {e}")))?;
        }
    }

    // The chunked capture, interleaved with every change since it began, equals a snapshot
    // taken when it began.
    let (mut cursor, mut got, expected) = capture.ok_or_else(|| fail("capture never began"))?;
    while !graph.capture_chunk(&mut cursor, 3, &mut got) {}
    graph.end_capture();
    prop_assert_eq!(
        got,
        expected,
        "chunked capture differs from the snapshot at its start"
    );
    CAPTURES.fetch_add(1, Ordering::Relaxed);

    // The snapshot point may be the very end.
    let rebuilt = match rebuilt {
        Some(r) => r,
        None => rebuild_from_snapshot(&graph)?,
    };
    same_state("rebuilt from snapshot, at the end", &graph, &rebuilt)?;

    // Replaying the returned events in order rebuilds the same rows.
    // Replayed twice: indexing as it goes, and as recovery does (indexes built at the end).
    let mut replayed = IdentityGraph::with_options(options.clone());
    let mut bulk = IdentityGraph::with_options(options);
    bulk.begin_bulk_load();
    for (n, event) in log.iter().enumerate() {
        replayed
            .apply(event)
            .map_err(|e| fail(format!("event {n} {event:?} does not replay: {e}")))?;
        bulk.apply(event)
            .map_err(|e| fail(format!("event {n} {event:?} does not bulk-replay: {e}")))?;
    }
    bulk.finish_bulk_load();
    same_state("bulk-replayed from events", &graph, &bulk)?;
    for row in model.rows.iter().filter(|r| r.deleted_at.is_none()) {
        // Both indexes lead every live value to the same identity.
        let probe = IdentifyRequest::new(
            row.email
                .as_deref()
                .map(|e| Email::parse(e).unwrap().unwrap()),
            row.phone
                .as_deref()
                .map(|p| Phone::parse(p).unwrap().unwrap()),
        )
        .map_err(fail)?;
        prop_assert_eq!(
            graph.lookup(&probe),
            bulk.lookup(&probe),
            "lookup of row {}",
            row.id
        );
    }
    same_state("replayed from events", &graph, &replayed)?;
    graph.check_invariants().map_err(fail)?;
    Ok(())
}

#[test]
fn graph_agrees_with_naive_model_of_spec_section_3() {
    const CASES: u32 = 1000;
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let before = REQUESTS.load(Ordering::Relaxed);
    if let Err(e) = runner.run(&case(), |c| run_case(&c)) {
        panic!("{e}");
    }
    let requests = REQUESTS.load(Ordering::Relaxed) - before;
    let (deletions, erasures, blocked) = (
        DELETIONS.load(Ordering::Relaxed),
        ERASURES.load(Ordering::Relaxed),
        BLOCKED_REQUESTS.load(Ordering::Relaxed),
    );
    eprintln!(
        "graph_model: {CASES} cases, {requests} requests ({blocked} with blocked values), \
         {deletions} deletions, {erasures} erasures"
    );
    assert!(requests >= 10_000, "only {requests} requests generated");
    assert!(deletions >= 1_000 && erasures >= 100 && blocked >= 2_000);
    assert!(CAPTURES.load(Ordering::Relaxed) >= CASES as usize);
}

/// The model itself reproduces docs/behaviour.md §5, so a disagreement above is the graph's.
#[test]
fn model_reproduces_spec_section_5() {
    let mut m = Model::default();
    let (lorraine, mcfly, george, biff) = (
        "lorraine@hillvalley.edu",
        "mcfly@hillvalley.edu",
        "george@hillvalley.edu",
        "biffsucks@hillvalley.edu",
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(m.identify(Some(lorraine), Some("123456"), 10).0.primary, 1);
    let two = m.identify(Some(mcfly), Some("123456"), 11);
    assert_eq!(
        two,
        (
            Answer {
                primary: 1,
                emails: s(&[lorraine, mcfly]),
                phones: s(&["123456"]),
                secondaries: vec![2]
            },
            true
        )
    );
    assert_eq!(m.identify(None, Some("123456"), 12), (two.0.clone(), false));
    assert_eq!(m.identify(Some(lorraine), None, 12), (two.0.clone(), false));
    assert_eq!(m.identify(Some(mcfly), None, 12), (two.0, false));
    m.identify(Some(george), Some("919191"), 13);
    m.identify(Some(biff), Some("717171"), 14);
    let six = m.identify(Some(george), Some("717171"), 15);
    assert_eq!(
        six,
        (
            Answer {
                primary: 3,
                emails: s(&[george, biff]),
                phones: s(&["919191", "717171"]),
                secondaries: vec![4]
            },
            true
        )
    );
    assert_eq!(m.rows.len(), 4);
    let row4 = m.get(4);
    assert_eq!(
        (row4.primary, row4.linked_id, row4.updated_at),
        (false, Some(3), 15)
    );
}
