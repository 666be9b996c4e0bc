//! Differential test of splits and run-time blocks (docs/behaviour.md §10) against a naive
//! model that recomputes identities from link reasons and the blocked set.
//!
//! The model is `common::model::Model` (docs/behaviour.md §3 in prose: scan everything, demote,
//! re-point, insert) plus the list of merges a request made (the contact carrying its email,
//! the contact carrying its phone, the two values). A split recomputes, by brute force over
//! every pair of members, the links of §10: two members carrying the same email or phone
//! number, and every recorded merge between two members; members that neither explains (rows
//! an import linked) are joined to the first member. The identity becomes the connected
//! components of the links whose values are all unblocked.
//!
//! Random histories over small pools of values mix `/identify` requests, deletions, erasures,
//! deleted rows linked as an import would, splits (of any row's identity by one to three pool
//! values) and blocks (retroactive or not). After every step every row must agree with the
//! model, every request's answer too, and the graph's invariants must hold. A chunked snapshot
//! capture runs across the steps and must equal a snapshot taken when it began. At the end the
//! graph is rebuilt from its snapshot and from its log of events, and both must equal it and
//! answer further requests alike.

use std::sync::atomic::{AtomicUsize, Ordering};

use idrecon::contact::{Email, Phone, Timestamp};
use idrecon::event::{BlockedValues, Event, NewContact};
use idrecon::graph::{IdentifyRequest, IdentityGraph};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::model::{Answer, Model, Row, answer_of, row_of};

const BASE_MS: i64 = 1_680_307_200_000;
const CASES: u32 = 256;

/// A value of the pool: an email (`true`) or a phone number, by index.
type Value = (bool, usize);

#[derive(Clone, Debug)]
enum Op {
    Identify(Option<usize>, Option<usize>),
    Delete(Index),
    Erase(Index),
    /// A deleted row joined to an existing row (as an import would), or alone.
    Deleted(Option<usize>, Option<usize>, Option<Index>),
    /// A split of a row's identity by values its members carry (picked by index), or by pool
    /// values when they carry none.
    Split(Index, Vec<Index>, Vec<Value>),
    Block(Vec<Value>, bool),
}

fn op(pool: usize) -> impl Strategy<Value = Op> {
    let values = proptest::collection::vec((any::<bool>(), 0..pool), 1..=2);
    let option = |n: usize| proptest::option::of(0..n);
    prop_oneof![
        3 => (0..pool).prop_map(|e| Op::Identify(Some(e), None)),
        3 => (0..pool).prop_map(|p| Op::Identify(None, Some(p))),
        12 => (0..pool, 0..pool).prop_map(|(e, p)| Op::Identify(Some(e), Some(p))),
        2 => any::<Index>().prop_map(Op::Delete),
        1 => any::<Index>().prop_map(Op::Erase),
        2 => (option(pool), option(pool), proptest::option::of(any::<Index>()))
            .prop_map(|(e, p, link)| Op::Deleted(e, p, link)),
        3 => (any::<Index>(), proptest::collection::vec(any::<Index>(), 1..=2), values.clone())
            .prop_map(|(at, picks, v)| Op::Split(at, picks, v)),
        1 => (values, any::<bool>()).prop_map(|(v, r)| Op::Block(v, r)),
    ]
}

/// A pool size, the history, and where a chunked snapshot capture begins (it then advances a
/// few entries per step while splits and blocks change the graph).
fn case() -> impl Strategy<Value = (usize, Vec<Op>, Index)> {
    (3usize..=10).prop_flat_map(|pool| {
        (
            Just(pool),
            proptest::collection::vec(op(pool), 30..=90),
            any::<Index>(),
        )
    })
}

fn email_text(i: usize) -> String {
    format!("user{i}@hillvalley.edu")
}

fn phone_text(i: usize) -> String {
    format!("55501{i}")
}

fn text((email, i): Value) -> String {
    if email { email_text(i) } else { phone_text(i) }
}

fn blocked_values(values: &[Value]) -> BlockedValues {
    let mut blocked = BlockedValues::default();
    for &(email, i) in values {
        if email {
            blocked
                .emails
                .push(Email::parse(&email_text(i)).unwrap().unwrap());
        } else {
            blocked
                .phones
                .push(Phone::parse(&phone_text(i)).unwrap().unwrap());
        }
    }
    blocked
}

// ----- the model's side of §10 -------------------------------------------------------------------

/// The model plus the merges requests made: (email carrier, phone carrier, email, phone).
#[derive(Default)]
struct SplitModel {
    model: Model,
    merges: Vec<(u64, u64, String, String)>,
}

/// Connected components of `0..n` under `edges`, as a label per position (the smallest
/// position of its component).
fn components(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut label: Vec<usize> = (0..n).collect();
    // Relabel until nothing changes: naive on purpose.
    loop {
        let mut changed = false;
        for &(a, b) in edges {
            let low = label[a].min(label[b]);
            for x in [a, b] {
                if label[x] != low {
                    label[x] = low;
                    changed = true;
                }
            }
        }
        if !changed {
            return label;
        }
    }
}

impl SplitModel {
    fn blocked(&self, value: &str) -> bool {
        self.model.blocked.iter().any(|b| b == value)
    }

    /// `/identify`, recording the merge (if any) with the carriers of its two values.
    fn identify(&mut self, e: Option<&str>, p: Option<&str>, now: i64) -> Answer {
        fn usable<'a>(m: &SplitModel, v: Option<&'a str>) -> Option<&'a str> {
            v.filter(|v| !m.blocked(v))
        }
        let carrier = |email: bool, v: &str| {
            self.model
                .rows
                .iter()
                .filter(|r| r.deleted_at.is_none())
                .find(|r| {
                    let field = if email { &r.email } else { &r.phone };
                    field.as_deref() == Some(v)
                })
                .map(|r| (r.id, Model::identity(r)))
        };
        if let (Some(e), Some(p)) = (usable(self, e), usable(self, p))
            && let (Some((ce, ie)), Some((cp, ip))) = (carrier(true, e), carrier(false, p))
            && ie != ip
        {
            self.merges.push((ce, cp, e.to_owned(), p.to_owned()));
        }
        self.model.identify(e, p, now).0
    }

    /// Splits the identity containing `id` by the blocked set (already holding the split's
    /// values) at `at`, recomputing its links by brute force.
    fn split(&mut self, id: u64, at: i64) {
        let primary = Model::identity(self.model.get(id));
        let members: Vec<Row> = (self.model.rows.iter())
            .filter(|r| Model::identity(r) == primary)
            .cloned()
            .collect();
        let n = members.len();
        let position = |id: u64| members.iter().position(|r| r.id == id);
        let mut links: Vec<(usize, usize, Vec<String>)> = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (&members[i], &members[j]);
                for (x, y) in [(&a.email, &b.email), (&a.phone, &b.phone)] {
                    if let (Some(x), Some(y)) = (x, y)
                        && x == y
                    {
                        links.push((i, j, vec![x.clone()]));
                    }
                }
            }
        }
        for (ce, cp, e, p) in &self.merges {
            if let (Some(i), Some(j)) = (position(*ce), position(*cp)) {
                links.push((i, j, vec![e.clone(), p.clone()]));
            }
        }
        let all: Vec<(usize, usize)> = links.iter().map(|(i, j, _)| (*i, *j)).collect();
        let explained = components(n, &all);
        let mut kept: Vec<(usize, usize)> = (links.iter())
            .filter(|(_, _, values)| !values.iter().any(|v| self.blocked(v)))
            .map(|(i, j, _)| (*i, *j))
            .collect();
        for (i, &label) in explained.iter().enumerate() {
            if label == i && i != 0 {
                kept.push((0, i));
            }
        }
        let parts = components(n, &kept);
        for part in 0..n {
            let in_part: Vec<&Row> = (0..n)
                .filter(|&i| parts[i] == part)
                .map(|i| &members[i])
                .collect();
            let Some(best) = in_part
                .iter()
                .min_by_key(|r| (r.deleted_at.is_some(), r.created_at, r.id))
                .map(|r| r.id)
            else {
                continue;
            };
            if best == primary {
                continue;
            }
            let ids: Vec<u64> = in_part.iter().map(|r| r.id).collect();
            for r in &mut self.model.rows {
                if ids.contains(&r.id) {
                    r.primary = r.id == best;
                    r.linked_id = (r.id != best).then_some(best);
                    r.updated_at = at;
                }
            }
        }
    }

    /// Identities holding a row that carries one of `values`, as a row id each.
    fn carrying(&self, values: &[String]) -> Vec<u64> {
        let mut primaries: Vec<u64> = (self.model.rows.iter())
            .filter(|r| {
                [&r.email, &r.phone]
                    .into_iter()
                    .flatten()
                    .any(|v| values.contains(v))
            })
            .map(Model::identity)
            .collect();
        primaries.sort_unstable();
        primaries.dedup();
        primaries
    }
}

// ----- comparing ---------------------------------------------------------------------------------

fn rows_of(graph: &IdentityGraph) -> Vec<Row> {
    graph.all_contacts().map(row_of).collect()
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

fn request(e: Option<&str>, p: Option<&str>) -> IdentifyRequest {
    IdentifyRequest::new(
        e.map(|e| Email::parse(e).unwrap().unwrap()),
        p.map(|p| Phone::parse(p).unwrap().unwrap()),
    )
    .unwrap()
}

fn same_graph(what: &str, a: &IdentityGraph, b: &IdentityGraph) -> Result<(), TestCaseError> {
    prop_assert_eq!(rows_of(a), rows_of(b), "{}: rows", what);
    prop_assert_eq!(
        a.blocked_values(),
        b.blocked_values(),
        "{}: blocked values",
        what
    );
    prop_assert_eq!(
        a.identity_count(),
        b.identity_count(),
        "{}: identities",
        what
    );
    prop_assert_eq!(a.largest_identity(), b.largest_identity(), "{}", what);
    for row in rows_of(a) {
        prop_assert_eq!(a.history(row.id), b.history(row.id), "{}: history", what);
        prop_assert_eq!(a.links(row.id), b.links(row.id), "{}: links", what);
    }
    b.check_invariants()
        .map_err(|e| fail(format!("{what}: {e}")))
}

static SPLITS: AtomicUsize = AtomicUsize::new(0);
static PARTS: AtomicUsize = AtomicUsize::new(0);
static RETROACTIVE: AtomicUsize = AtomicUsize::new(0);
static SEPARATED: AtomicUsize = AtomicUsize::new(0);

fn run_case(pool: usize, ops: &[Op], capture_at: &Index) -> Result<(), TestCaseError> {
    let capture_at = capture_at.index(ops.len());
    // (cursor, entries so far, the entries a snapshot at the capture's start has)
    let mut capture = None;
    let mut m = SplitModel::default();
    let mut graph = IdentityGraph::new();
    let mut log: Vec<Event> = Vec::new();
    let mut now = BASE_MS;
    for (step, op) in ops.iter().enumerate() {
        if step == capture_at {
            let expected: Vec<_> = graph.snapshot_entries().collect();
            capture = Some((graph.begin_capture(), Vec::new(), expected));
        }
        if let Some((cursor, got, _)) = &mut capture {
            graph.capture_chunk(cursor, 3, got);
        }
        now += 1;
        match op {
            Op::Identify(e, p) => {
                let (e, p) = (e.map(email_text), p.map(phone_text));
                let expected = m.identify(e.as_deref(), p.as_deref(), now);
                let (identity, events) = graph
                    .identify(&request(e.as_deref(), p.as_deref()), Timestamp(now))
                    .map_err(fail)?;
                log.extend(events);
                prop_assert_eq!(answer_of(&identity), expected, "step {}: answer", step);
            }
            Op::Delete(at) if !m.model.rows.is_empty() => {
                let row = &m.model.rows[at.index(m.model.rows.len())];
                let (id, live) = (row.id, row.deleted_at.is_none());
                if live {
                    let at = graph.clock(Timestamp(now));
                    let event = Event::ContactDeleted { id, at };
                    graph.apply(&event).map_err(fail)?;
                    log.push(event);
                    m.model.delete(id, at.0);
                }
            }
            Op::Erase(at) if !m.model.rows.is_empty() => {
                let id = m.model.rows[at.index(m.model.rows.len())].id;
                let event = Event::IdentityErased {
                    id,
                    at: graph.clock(Timestamp(now)),
                };
                graph.apply(&event).map_err(fail)?;
                log.push(event);
                m.model.erase(id);
            }
            Op::Deleted(e, p, link) => {
                let (e, p) = (e.map(email_text), p.map(phone_text));
                let target = link
                    .as_ref()
                    .filter(|_| !m.model.rows.is_empty())
                    .map(|ix| {
                        let row = &m.model.rows[ix.index(m.model.rows.len())];
                        (row.id, Model::identity(row))
                    });
                let clock = m.model.clock(now);
                let event = Event::ContactInserted(NewContact {
                    id: graph.next_id(),
                    email: e.as_deref().map(|e| Email::parse(e).unwrap().unwrap()),
                    phone: p.as_deref().map(|p| Phone::parse(p).unwrap().unwrap()),
                    created_at: Timestamp(clock),
                    updated_at: Timestamp(clock),
                    deleted_at: Some(Timestamp(clock)),
                    link: target.map(|(id, _)| id),
                });
                graph.apply(&event).map_err(fail)?;
                log.push(event);
                let id = m.model.next_id();
                m.model.rows.push(Row {
                    id,
                    email: e,
                    phone: p,
                    linked_id: target.map(|(_, primary)| primary),
                    primary: target.is_none(),
                    created_at: clock,
                    updated_at: clock,
                    deleted_at: Some(clock),
                });
            }
            Op::Split(at, picks, pool_values) if !m.model.rows.is_empty() => {
                let id = m.model.rows[at.index(m.model.rows.len())].id;
                let primary = Model::identity(m.model.get(id));
                let carried: Vec<Value> = (m.model.rows.iter())
                    .filter(|r| Model::identity(r) == primary)
                    .flat_map(|r| {
                        let email = r.email.as_ref().map(|e| (true, e));
                        let phone = r.phone.as_ref().map(|p| (false, p));
                        email.into_iter().chain(phone)
                    })
                    .map(|(is_email, v)| {
                        let i = (0..pool).find(|&i| {
                            (if is_email {
                                email_text(i)
                            } else {
                                phone_text(i)
                            }) == *v
                        });
                        (is_email, i.unwrap_or(0))
                    })
                    .collect();
                let values: Vec<Value> = if carried.is_empty() {
                    pool_values.clone()
                } else {
                    picks
                        .iter()
                        .map(|p| carried[p.index(carried.len())])
                        .collect()
                };
                let values = &values;
                let (event, outcome) = graph
                    .split(id, blocked_values(values), Timestamp(now))
                    .map_err(fail)?
                    .ok_or_else(|| fail(format!("step {step}: split of known {id} refused")))?;
                let report = graph.split_report(&outcome);
                let Event::IdentitySplit { at, .. } = &event else {
                    return Err(fail("split decided another event"));
                };
                for v in values {
                    m.model.blocked.push(text(*v));
                }
                m.split(id, at.0);
                SPLITS.fetch_add(1, Ordering::Relaxed);
                if report.split {
                    SEPARATED.fetch_add(1, Ordering::Relaxed);
                }
                PARTS.fetch_add(report.identities.len(), Ordering::Relaxed);
                let mut parts: Vec<Answer> = (m.model.rows.iter())
                    .filter(|r| r.primary)
                    .filter(|r| {
                        report
                            .identities
                            .iter()
                            .any(|i| i.primary_contact_id == r.id)
                    })
                    .map(|r| m.model.answer(r.id))
                    .collect();
                parts.sort_by_key(|a| m.model.age(a.primary));
                let got: Vec<Answer> = report.identities.iter().map(answer_of).collect();
                prop_assert_eq!(got, parts, "step {}: split answer", step);
                prop_assert_eq!(report.split, report.identities.len() > 1);
                log.push(event);
            }
            Op::Block(values, retroactive) => {
                let texts: Vec<String> = values.iter().map(|v| text(*v)).collect();
                let affected = if *retroactive {
                    m.carrying(&texts)
                } else {
                    Vec::new()
                };
                let (event, outcome) = graph
                    .block_values(blocked_values(values), *retroactive, Timestamp(now))
                    .map_err(fail)?;
                let Event::ValuesBlocked { at, .. } = &event else {
                    return Err(fail("block decided another event"));
                };
                m.model.blocked.extend(texts);
                let mut parts_after = 0;
                for primary in &affected {
                    let members: Vec<u64> = (m.model.rows.iter())
                        .filter(|r| Model::identity(r) == *primary)
                        .map(|r| r.id)
                        .collect();
                    m.split(*primary, at.0);
                    let mut parts: Vec<u64> = members
                        .iter()
                        .map(|&id| Model::identity(m.model.get(id)))
                        .collect();
                    parts.sort_unstable();
                    parts.dedup();
                    if parts.len() > 1 {
                        parts_after += parts.len();
                    }
                }
                // The answer lists the parts of exactly the identities the block split.
                let report = graph.split_report(&outcome);
                prop_assert_eq!(report.identities.len(), parts_after, "step {}", step);
                prop_assert_eq!(report.split, parts_after > 0, "step {}", step);
                for identity in &report.identities {
                    let expected = m.model.answer(identity.primary_contact_id);
                    prop_assert_eq!(answer_of(identity), expected, "step {}", step);
                }
                if *retroactive {
                    RETROACTIVE.fetch_add(1, Ordering::Relaxed);
                }
                log.push(event);
            }
            _ => {}
        }
        prop_assert_eq!(
            rows_of(&graph),
            m.model.rows.clone(),
            "step {}: rows after {:?}",
            step,
            op
        );
        graph
            .check_invariants()
            .map_err(|e| fail(format!("step {step}: {e}")))?;
    }
    // The chunked capture, interleaved with every change since it began, equals a snapshot
    // taken when it began.
    let (mut cursor, mut got, expected) = capture.ok_or_else(|| fail("capture never began"))?;
    while !graph.capture_chunk(&mut cursor, 3, &mut got) {}
    graph.end_capture();
    prop_assert!(
        got == expected,
        "chunked capture differs from the snapshot at its start"
    );
    // Snapshot, then log replay: the same graph, and the same answers from here on.
    let mut from_snapshot = IdentityGraph::new();
    from_snapshot.begin_bulk_load();
    for entry in graph.snapshot_entries() {
        from_snapshot
            .load_snapshot_item(entry.as_item())
            .map_err(fail)?;
    }
    from_snapshot.reserve_ids_below(graph.next_id());
    from_snapshot.finish_bulk_load();
    same_graph("rebuilt from snapshot", &graph, &from_snapshot)?;
    let mut replayed = IdentityGraph::new();
    replayed.begin_bulk_load();
    for event in &log {
        replayed.apply(event).map_err(fail)?;
    }
    replayed.finish_bulk_load();
    same_graph("replayed", &graph, &replayed)?;
    for e in 0..pool {
        for p in 0..pool {
            let r = request(Some(&email_text(e)), Some(&phone_text((p + e) % pool)));
            let t = Timestamp(now + 1);
            let answers = [&mut graph, &mut from_snapshot, &mut replayed]
                .map(|g| g.identify(&r, t).map(|(i, _)| i).map_err(fail));
            let [a, b, c] = answers;
            let (a, b, c) = (a?, b?, c?);
            prop_assert_eq!(&a, &b, "snapshot answers differently");
            prop_assert_eq!(&a, &c, "replay answers differently");
        }
    }
    Ok(())
}

#[test]
fn splits_match_a_model_that_recomputes_identities_from_link_reasons() {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&case(), |(pool, ops, capture_at)| {
            run_case(pool, &ops, &capture_at)
        })
        .unwrap();
    let (splits, parts) = (
        SPLITS.load(Ordering::Relaxed),
        PARTS.load(Ordering::Relaxed),
    );
    let separated = SEPARATED.load(Ordering::Relaxed);
    eprintln!(
        "split_model: {CASES} cases, {splits} splits ({separated} separated something) into \
         {parts} identities, {} retroactive blocks",
        RETROACTIVE.load(Ordering::Relaxed)
    );
    // The property must have exercised real splits, not only splits that changed nothing.
    assert!(
        separated >= CASES as usize / 2,
        "only {separated} splits separated anything"
    );
}
