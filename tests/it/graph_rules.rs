//! The rules of docs/behaviour.md §2–3 and §5, one at a time, through the public API of the
//! identity graph: `IdentifyRequest::new`, `IdentityGraph::identify`, `contact`, `all_contacts`,
//! `identity_of` and `apply`.

use idrecon::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::graph::{ApplyError, IdentifyRequest, Identity, IdentityGraph};

// ----- helpers ----------------------------------------------------------------------------------

const T0: i64 = 1_680_307_200_000; // 2023-04-01T00:00:00Z

fn email(text: &str) -> Email {
    Email::parse(text).unwrap().unwrap()
}

fn phone(text: &str) -> Phone {
    Phone::parse(text).unwrap().unwrap()
}

fn request(e: Option<&str>, p: Option<&str>) -> IdentifyRequest {
    IdentifyRequest::new(e.map(email), p.map(phone)).unwrap()
}

/// `/identify` on the graph; merges come back as `IdentitiesMerged` with `at` set, their cause
/// (`by_email`/`by_phone` of `IdentitiesLinked`, checked in `merges_record_their_cause`)
/// dropped, so the tests below compare decisions only.
fn identify(
    g: &mut IdentityGraph,
    e: Option<&str>,
    p: Option<&str>,
    now: i64,
) -> (Identity, Vec<Event>) {
    let (identity, events) = g.identify(&request(e, p), Timestamp(now)).unwrap();
    let events = events
        .into_iter()
        .map(|event| match event {
            Event::IdentitiesLinked {
                winner, loser, at, ..
            } => Event::IdentitiesMerged {
                winner,
                loser,
                at: Some(at),
            },
            other => other,
        })
        .collect();
    (identity, events)
}

#[test]
fn merges_record_their_cause() {
    let mut g = IdentityGraph::new();
    identify(&mut g, Some("a@x.io"), Some("111"), T0); // 1
    identify(&mut g, Some("b@x.io"), Some("222"), T0 + 1); // 2
    identify(&mut g, Some("c@x.io"), Some("222"), T0 + 2); // 3 → 2
    let (_, events) = g
        .identify(&request(Some("c@x.io"), Some("111")), Timestamp(T0 + 3))
        .unwrap();
    assert_eq!(
        events,
        vec![Event::IdentitiesLinked {
            winner: 1,
            loser: 2,
            at: Timestamp(T0 + 3),
            by_email: 3,
            by_phone: 1,
        }]
    );
}

fn identity(
    primary: ContactId,
    emails: &[&str],
    phones: &[&str],
    secondaries: &[ContactId],
) -> Identity {
    Identity {
        primary_contact_id: primary,
        emails: emails.iter().map(|e| email(e)).collect(),
        phone_numbers: phones.iter().map(|p| phone(p)).collect(),
        secondary_contact_ids: secondaries.to_vec(),
    }
}

fn new_contact(
    id: ContactId,
    e: Option<&str>,
    p: Option<&str>,
    created_at: i64,
    link: Option<ContactId>,
) -> NewContact {
    NewContact {
        id,
        email: e.map(email),
        phone: p.map(phone),
        created_at: Timestamp(created_at),
        updated_at: Timestamp(created_at),
        deleted_at: None,
        link,
    }
}

fn insert(g: &mut IdentityGraph, contact: NewContact) {
    let id = contact.id;
    g.apply(&Event::ContactInserted(contact))
        .unwrap_or_else(|e| panic!("contact {id} rejected: {e}"));
}

fn rows(g: &IdentityGraph) -> Vec<ContactRow> {
    g.all_contacts().collect()
}

fn row(g: &IdentityGraph, id: ContactId) -> ContactRow {
    g.contact(id).unwrap_or_else(|| panic!("no contact {id}"))
}

/// `(linkPrecedence, linkedId)` of a row.
fn link(g: &IdentityGraph, id: ContactId) -> (LinkPrecedence, Option<ContactId>) {
    let r = row(g, id);
    (r.link_precedence, r.linked_id)
}

const PRIMARY: (LinkPrecedence, Option<ContactId>) = (LinkPrecedence::Primary, None);

fn secondary_of(primary: ContactId) -> (LinkPrecedence, Option<ContactId>) {
    (LinkPrecedence::Secondary, Some(primary))
}

fn ts(text: &str) -> i64 {
    Timestamp::parse(text).unwrap().0
}

/// A small deterministic generator (xorshift64*), so "random-ish" choices are reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

#[test]
fn a_request_needs_an_email_or_a_phone() {
    let err = IdentifyRequest::new(None, None).unwrap_err();
    assert_eq!(err.code, "missing_contact");
    assert!(IdentifyRequest::new(Some(email("a@x.io")), None).is_ok());
    assert!(IdentifyRequest::new(None, Some(phone("1"))).is_ok());
}

// ----- docs/behaviour.md §5 ---------------------------------------------------------------------

const LORRAINE: &str = "lorraine@hillvalley.edu";
const MCFLY: &str = "mcfly@hillvalley.edu";
const GEORGE: &str = "george@hillvalley.edu";
const BIFF: &str = "biffsucks@hillvalley.edu";

#[test]
fn spec_section_5_step_by_step() {
    let mut g = IdentityGraph::new();
    let t = |step: i64| T0 + step * 1000;

    // 1: a new customer.
    let (answer, events) = identify(&mut g, Some(LORRAINE), Some("123456"), t(1));
    assert_eq!(answer, identity(1, &[LORRAINE], &["123456"], &[]));
    assert_eq!(
        events,
        vec![Event::ContactInserted(new_contact(
            1,
            Some(LORRAINE),
            Some("123456"),
            t(1),
            None
        ))]
    );
    let row1 = ContactRow {
        id: 1,
        phone_number: Some(phone("123456")),
        email: Some(email(LORRAINE)),
        linked_id: None,
        link_precedence: LinkPrecedence::Primary,
        created_at: Timestamp(t(1)),
        updated_at: Timestamp(t(1)),
        deleted_at: None,
    };
    assert_eq!(rows(&g), vec![row1.clone()]);

    // 2: new email, known phone → a secondary linked to 1.
    let (answer, events) = identify(&mut g, Some(MCFLY), Some("123456"), t(2));
    let after_2 = identity(1, &[LORRAINE, MCFLY], &["123456"], &[2]);
    assert_eq!(answer, after_2);
    assert_eq!(events.len(), 1);
    let row2 = ContactRow {
        id: 2,
        phone_number: Some(phone("123456")),
        email: Some(email(MCFLY)),
        linked_id: Some(1),
        link_precedence: LinkPrecedence::Secondary,
        created_at: Timestamp(t(2)),
        updated_at: Timestamp(t(2)),
        deleted_at: None,
    };
    assert_eq!(rows(&g), vec![row1.clone(), row2.clone()]);

    // 3: three pure reads with the same answer; nothing is written.
    for (e, p) in [
        (None, Some("123456")),
        (Some(LORRAINE), None),
        (Some(MCFLY), None),
    ] {
        let (answer, events) = identify(&mut g, e, p, t(3));
        assert_eq!(answer, after_2, "{e:?} {p:?}");
        assert!(events.is_empty(), "{e:?} {p:?} wrote {events:?}");
        assert_eq!(rows(&g), vec![row1.clone(), row2.clone()]);
    }

    // 4 and 5: two more new customers.
    let (answer, _) = identify(&mut g, Some(GEORGE), Some("919191"), t(4));
    assert_eq!(answer, identity(3, &[GEORGE], &["919191"], &[]));
    assert_eq!(link(&g, 3), PRIMARY);
    let (answer, _) = identify(&mut g, Some(BIFF), Some("717171"), t(5));
    assert_eq!(answer, identity(4, &[BIFF], &["717171"], &[]));
    assert_eq!(link(&g, 4), PRIMARY);
    let row3 = row(&g, 3);
    let row4 = row(&g, 4);
    assert_eq!(
        (row4.created_at, row4.updated_at),
        (Timestamp(t(5)), Timestamp(t(5)))
    );

    // 6: george's email with biff's phone merges 4 into 3; no row is inserted.
    let (answer, events) = identify(&mut g, Some(GEORGE), Some("717171"), t(6));
    assert_eq!(
        answer,
        identity(3, &[GEORGE, BIFF], &["919191", "717171"], &[4])
    );
    assert_eq!(
        events,
        vec![Event::IdentitiesMerged {
            winner: 3,
            loser: 4,
            at: Some(Timestamp(t(6)))
        }]
    );
    assert_eq!(g.len(), 4);
    assert_eq!(g.contact(5), None);
    let row4_after = ContactRow {
        linked_id: Some(3),
        link_precedence: LinkPrecedence::Secondary,
        updated_at: Timestamp(t(6)),
        ..row4
    };
    assert_eq!(rows(&g), vec![row1, row2, row3, row4_after]);
    assert_eq!(g.identity_of(4), Some(answer.clone()));
    assert_eq!(g.identity_of(3), Some(answer));
    g.check_invariants().unwrap();
}

/// docs/behaviour.md §5: the original statement's rows (ids 1/23 and 11/27, its 2023 timestamps),
/// imported, give the same answers with those ids.
#[test]
fn spec_section_5_with_the_original_ids_and_timestamps() {
    let mut g = IdentityGraph::new();
    insert(
        &mut g,
        new_contact(
            1,
            Some(LORRAINE),
            Some("123456"),
            ts("2023-04-01 00:00:00.374+00"),
            None,
        ),
    );
    insert(
        &mut g,
        new_contact(
            11,
            Some(GEORGE),
            Some("919191"),
            ts("2023-04-11 00:00:00.374+00"),
            None,
        ),
    );
    insert(
        &mut g,
        new_contact(
            23,
            Some(MCFLY),
            Some("123456"),
            ts("2023-04-20 05:30:00.11+00"),
            Some(1),
        ),
    );
    insert(
        &mut g,
        new_contact(
            27,
            Some(BIFF),
            Some("717171"),
            ts("2023-04-21 05:30:00.11+00"),
            None,
        ),
    );
    let lorraine = identity(1, &[LORRAINE, MCFLY], &["123456"], &[23]);
    for (e, p) in [
        (Some(MCFLY), Some("123456")),
        (None, Some("123456")),
        (Some(LORRAINE), None),
        (Some(MCFLY), None),
    ] {
        let (answer, events) = identify(&mut g, e, p, ts("2023-04-28T06:40:00Z"));
        assert_eq!(answer, lorraine);
        assert!(events.is_empty());
    }
    let merge_at = ts("2023-04-28T06:40:00.230Z");
    let (answer, events) = identify(&mut g, Some(GEORGE), Some("717171"), merge_at);
    assert_eq!(
        answer,
        identity(11, &[GEORGE, BIFF], &["919191", "717171"], &[27])
    );
    assert_eq!(events.len(), 1);
    let row27 = row(&g, 27);
    assert_eq!((row27.link_precedence, row27.linked_id), secondary_of(11));
    assert_eq!(row27.updated_at, Timestamp(merge_at));
    assert_eq!(row27.updated_at.to_string(), "2023-04-28T06:40:00.230Z");
    // Ids are never reused: the next row gets 28.
    let (answer, _) = identify(&mut g, Some("doc@hillvalley.edu"), None, merge_at);
    assert_eq!(answer.primary_contact_id, 28);
    g.check_invariants().unwrap();
}

// ----- docs/behaviour.md §3.4 new information ---------------------------------------------------

#[test]
fn email_and_phone_known_on_different_rows_of_one_identity_write_nothing() {
    let mut g = IdentityGraph::new();
    identify(&mut g, Some("a@x.io"), Some("111"), T0);
    identify(&mut g, Some("b@x.io"), Some("111"), T0 + 1);
    identify(&mut g, Some("b@x.io"), Some("222"), T0 + 2);
    let before = rows(&g);
    assert_eq!(before.len(), 3);
    let whole = identity(1, &["a@x.io", "b@x.io"], &["111", "222"], &[2, 3]);
    // a@ only on row 1, 222 only on row 3.
    let (answer, events) = identify(&mut g, Some("a@x.io"), Some("222"), T0 + 3);
    assert_eq!(answer, whole);
    assert!(events.is_empty(), "wrote {events:?}");
    assert_eq!(rows(&g), before);
    // The same with both values on secondaries.
    identify(&mut g, Some("c@x.io"), Some("222"), T0 + 4);
    let before = rows(&g);
    let (answer, events) = identify(&mut g, Some("c@x.io"), Some("111"), T0 + 5);
    assert_eq!(answer.secondary_contact_ids, vec![2, 3, 4]);
    assert!(events.is_empty(), "wrote {events:?}");
    assert_eq!(rows(&g), before);
    // But one new value does write a secondary linked to the primary.
    let (answer, events) = identify(&mut g, Some("c@x.io"), Some("333"), T0 + 6);
    assert_eq!(events.len(), 1);
    assert_eq!(answer.secondary_contact_ids, vec![2, 3, 4, 5]);
    assert_eq!(
        answer.phone_numbers,
        vec![phone("111"), phone("222"), phone("333")]
    );
    assert_eq!(link(&g, 5), secondary_of(1));
}

// ----- docs/behaviour.md §3.3 merge -------------------------------------------------------------

/// Builds an identity of `size` rows through `/identify`: `{prefix}0@x.io` with phone `number`,
/// then secondaries `{prefix}i@x.io` sharing the phone. Returns the ids.
fn grow(
    g: &mut IdentityGraph,
    prefix: &str,
    number: &str,
    size: usize,
    now: &mut i64,
) -> Vec<ContactId> {
    let mut ids = Vec::new();
    for i in 0..size {
        *now += 1;
        let (answer, events) = identify(g, Some(&format!("{prefix}{i}@x.io")), Some(number), *now);
        assert_eq!(events.len(), 1);
        ids.push(g.next_id() - 1);
        assert_eq!(answer.primary_contact_id, ids[0]);
    }
    ids
}

#[test]
fn merging_identities_that_have_secondaries() {
    // Sizes of the older (winning) and younger (losing) identity: the loser may be the larger
    // one, so union by size must not decide the primary. Both orientations of the request.
    for (older, younger) in [(1, 4), (4, 1), (3, 3), (1, 1), (2, 40)] {
        for email_from_younger in [false, true] {
            let ctx = format!("sizes {older}/{younger}, email from younger: {email_from_younger}");
            let mut g = IdentityGraph::new();
            let mut now = T0;
            let a = grow(&mut g, "a", "1000", older, &mut now);
            let b = grow(&mut g, "b", "2000", younger, &mut now);
            let before = rows(&g);
            now += 7;
            let (e, p) = if email_from_younger {
                (format!("b{}@x.io", younger - 1), "1000")
            } else {
                (format!("a{}@x.io", older - 1), "2000")
            };
            let (answer, events) = identify(&mut g, Some(&e), Some(p), now);
            assert_eq!(
                events,
                vec![Event::IdentitiesMerged {
                    winner: a[0],
                    loser: b[0],
                    at: Some(Timestamp(now))
                }],
                "{ctx}"
            );
            assert_eq!(
                g.len(),
                older + younger,
                "{ctx}: a merge alone inserts no row"
            );
            let mut emails: Vec<String> = (0..older).map(|i| format!("a{i}@x.io")).collect();
            emails.extend((0..younger).map(|i| format!("b{i}@x.io")));
            let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
            let everyone_else: Vec<ContactId> = a[1..].iter().chain(&b).copied().collect();
            assert_eq!(
                answer,
                identity(a[0], &emails, &["1000", "2000"], &everyone_else),
                "{ctx}"
            );
            for old in before {
                let new = row(&g, old.id);
                if old.id == b[0] {
                    // The demoted primary: precedence, linkedId and updatedAt change.
                    assert_eq!(old.link_precedence, LinkPrecedence::Primary);
                    assert_eq!(
                        new,
                        ContactRow {
                            link_precedence: LinkPrecedence::Secondary,
                            linked_id: Some(a[0]),
                            updated_at: Timestamp(now),
                            ..old
                        },
                        "{ctx}"
                    );
                } else if b.contains(&old.id) {
                    // The loser's secondaries: only linkedId changes.
                    assert_eq!(old.linked_id, Some(b[0]));
                    assert_eq!(
                        new,
                        ContactRow {
                            linked_id: Some(a[0]),
                            ..old
                        },
                        "{ctx}"
                    );
                } else {
                    assert_eq!(new, old, "{ctx}: the winner's rows do not change");
                }
            }
            for id in a.iter().chain(&b) {
                assert_eq!(g.identity_of(*id).as_ref(), Some(&answer), "{ctx}");
            }
            assert_eq!(g.identity_count(), 1);
            g.check_invariants().unwrap();
        }
    }
}

/// Merges `n` single-row identities (row `i` has email `u{i}@x.io` and phone `{i}`) pair by
/// pair in a random-ish order until one is left, and checks after every request that every
/// group has exactly one primary, its oldest row, that all others point straight at it, and that
/// each demoted row's `updatedAt` is the time of the request that demoted it.
fn chained_merges(g: &mut IdentityGraph, n: usize, seed: u64, mut now: i64) {
    let ids: Vec<ContactId> = g.all_contacts().map(|r| r.id).collect();
    assert_eq!(ids.len(), n);
    let age = |g: &IdentityGraph, id: ContactId| {
        let r = row(g, id);
        (r.created_at, r.id)
    };
    let mut group: Vec<usize> = (0..n).collect(); // the naive union: a label per row
    let mut updated: Vec<Timestamp> = ids.iter().map(|&id| row(g, id).updated_at).collect();
    let mut rng = Rng(seed);
    for k in 1..n {
        now += 1 + rng.below(3) as i64;
        // Two rows of different groups, joined through the email of one and the phone of the
        // other.
        let (x, y) = loop {
            let (x, y) = (rng.below(n), rng.below(n));
            if group[x] != group[y] {
                break (x, y);
            }
        };
        let (answer, events) = identify(g, Some(&format!("u{x}@x.io")), Some(&format!("{y}")), now);
        let members_x: Vec<usize> = (0..n).filter(|&i| group[i] == group[x]).collect();
        let members_y: Vec<usize> = (0..n).filter(|&i| group[i] == group[y]).collect();
        let oldest = |members: &[usize]| {
            members
                .iter()
                .copied()
                .min_by_key(|&i| age(g, ids[i]))
                .unwrap()
        };
        let (px, py) = (oldest(&members_x), oldest(&members_y));
        let (winner, loser) = if age(g, ids[px]) < age(g, ids[py]) {
            (px, py)
        } else {
            (py, px)
        };
        assert_eq!(
            events,
            vec![Event::IdentitiesMerged {
                winner: ids[winner],
                loser: ids[loser],
                at: Some(Timestamp(now))
            }],
            "merge {k}"
        );
        updated[loser] = Timestamp(now);
        let (gx, gy) = (group[x], group[y]);
        for label in &mut group {
            if *label == gy {
                *label = gx;
            }
        }
        assert_eq!(answer.primary_contact_id, ids[winner]);
        assert_eq!(
            answer.secondary_contact_ids.len(),
            members_x.len() + members_y.len() - 1
        );
        for i in 0..n {
            let members: Vec<usize> = (0..n).filter(|&j| group[j] == group[i]).collect();
            let primary = ids[oldest(&members)];
            let expected = if ids[i] == primary {
                PRIMARY
            } else {
                secondary_of(primary)
            };
            assert_eq!(link(g, ids[i]), expected, "merge {k}, contact {}", ids[i]);
            assert_eq!(
                row(g, ids[i]).updated_at,
                updated[i],
                "merge {k}, contact {}",
                ids[i]
            );
        }
        assert_eq!(g.identity_count(), n - k);
        let mut sizes = vec![0; n];
        for &label in &group {
            sizes[label] += 1;
        }
        assert_eq!(
            g.largest_identity(),
            sizes.iter().copied().max().unwrap_or(0)
        );
        g.check_invariants().unwrap();
    }
    let primaries: Vec<ContactRow> = rows(g)
        .into_iter()
        .filter(|r| r.linked_id.is_none())
        .collect();
    assert_eq!(primaries.len(), 1);
    let oldest = rows(g).into_iter().min_by_key(|r| r.age()).unwrap();
    assert_eq!(primaries[0].id, oldest.id);
    assert!(
        rows(g)
            .iter()
            .all(|r| r.id == oldest.id || r.linked_id == Some(oldest.id))
    );
    let answer = g.identity_of(ids[0]).unwrap();
    assert_eq!(answer.primary_contact_id, oldest.id);
    let mut by_age: Vec<ContactRow> = rows(g);
    by_age.sort_by_key(|r| r.age());
    let expected: Vec<Email> = by_age.iter().map(|r| r.email.clone().unwrap()).collect();
    assert_eq!(
        answer.emails, expected,
        "emails: the primary's first, then in age order"
    );
    let expected: Vec<ContactId> = by_age[1..].iter().map(|r| r.id).collect();
    assert_eq!(answer.secondary_contact_ids, expected);
    assert_eq!(g.len(), n, "merges insert no rows");
}

#[test]
fn chained_merges_keep_exactly_one_primary_the_oldest() {
    // Rows created by /identify: age order is id order.
    for seed in [1, 2, 3, 0x5eed] {
        let mut g = IdentityGraph::new();
        for i in 0..50 {
            identify(
                &mut g,
                Some(&format!("u{i}@x.io")),
                Some(&format!("{i}")),
                T0 + i as i64,
            );
        }
        chained_merges(&mut g, 50, seed, T0 + 100);
    }
}

#[test]
fn chained_merges_of_imported_rows_follow_age_order_not_ids() {
    // Imported rows whose createdAt is unrelated to their ids, with many ties.
    for seed in [7, 8, 9, 0xfeed] {
        let mut g = IdentityGraph::new();
        let mut rng = Rng(seed);
        for i in 0..50 {
            let created = T0 + rng.below(10) as i64;
            let (e, p) = (format!("u{i}@x.io"), format!("{i}"));
            insert(
                &mut g,
                new_contact(i as u64 + 1, Some(&e), Some(&p), created, None),
            );
        }
        chained_merges(&mut g, 50, seed, T0 + 100);
    }
}

#[test]
fn equal_created_at_smaller_id_wins() {
    for email_from_smaller in [true, false] {
        let mut g = IdentityGraph::new();
        let t = T0 + 500;
        // Two identities with the same createdAt and sparse ids; the larger id's identity is
        // the bigger one.
        insert(&mut g, new_contact(5, Some("a@x.io"), Some("111"), t, None));
        insert(&mut g, new_contact(7, Some("b@x.io"), Some("222"), t, None));
        insert(
            &mut g,
            new_contact(8, Some("c@x.io"), Some("222"), t, Some(7)),
        );
        insert(
            &mut g,
            new_contact(9, Some("d@x.io"), Some("222"), t, Some(8)),
        );
        assert_eq!(link(&g, 7), PRIMARY);
        assert_eq!(link(&g, 9), secondary_of(7));
        let (e, p) = if email_from_smaller {
            ("a@x.io", "222")
        } else {
            ("d@x.io", "111")
        };
        let (answer, events) = identify(&mut g, Some(e), Some(p), t);
        assert_eq!(
            events,
            vec![Event::IdentitiesMerged {
                winner: 5,
                loser: 7,
                at: Some(Timestamp(t))
            }]
        );
        assert_eq!(
            answer,
            identity(
                5,
                &["a@x.io", "b@x.io", "c@x.io", "d@x.io"],
                &["111", "222"],
                &[7, 8, 9]
            )
        );
        assert_eq!(link(&g, 5), PRIMARY);
        for id in [7, 8, 9] {
            assert_eq!(link(&g, id), secondary_of(5));
        }
        g.check_invariants().unwrap();
    }
}

#[test]
fn older_created_at_wins_over_smaller_id() {
    let mut g = IdentityGraph::new();
    insert(
        &mut g,
        new_contact(1, Some("a@x.io"), Some("111"), T0 + 10, None),
    );
    insert(
        &mut g,
        new_contact(2, Some("b@x.io"), Some("222"), T0, None),
    );
    let (answer, events) = identify(&mut g, Some("a@x.io"), Some("222"), T0 + 20);
    assert_eq!(
        events,
        vec![Event::IdentitiesMerged {
            winner: 2,
            loser: 1,
            at: Some(Timestamp(T0 + 20))
        }]
    );
    assert_eq!(
        answer,
        identity(2, &["b@x.io", "a@x.io"], &["222", "111"], &[1])
    );
    assert_eq!(link(&g, 1), secondary_of(2));
    assert_eq!(row(&g, 1).updated_at, Timestamp(T0 + 20));
}

// ----- docs/behaviour.md §2: the clock ----------------------------------------------------------

#[test]
fn the_clock_never_goes_backwards_for_new_rows() {
    let mut g = IdentityGraph::new();
    identify(&mut g, Some("a@x.io"), None, T0 + 1000);
    // The wall clock jumps back: the new primary is stamped with the latest createdAt.
    identify(&mut g, Some("b@x.io"), None, T0 + 400);
    let r2 = row(&g, 2);
    assert_eq!(
        (r2.created_at, r2.updated_at),
        (Timestamp(T0 + 1000), Timestamp(T0 + 1000))
    );
    // And a secondary, too; age order stays id order.
    identify(&mut g, Some("b@x.io"), Some("222"), T0 + 700);
    let r3 = row(&g, 3);
    assert_eq!(
        (r3.created_at, r3.updated_at),
        (Timestamp(T0 + 1000), Timestamp(T0 + 1000))
    );
    assert_eq!(link(&g, 3), secondary_of(2));
    // Once the wall clock passes the latest createdAt again, it is used as is.
    identify(&mut g, Some("c@x.io"), None, T0 + 1001);
    assert_eq!(row(&g, 4).created_at, Timestamp(T0 + 1001));

    // An imported row from the future holds the clock there.
    insert(
        &mut g,
        new_contact(5, Some("d@x.io"), None, T0 + 9000, None),
    );
    identify(&mut g, Some("e@x.io"), None, T0 + 2000);
    assert_eq!(row(&g, 6).created_at, Timestamp(T0 + 9000));
    // A merge at an earlier wall clock stamps the demoted row with the service clock too, so
    // no row is updated before it was created.
    let (_, events) = identify(&mut g, Some("a@x.io"), Some("222"), T0 + 3000);
    assert_eq!(
        events,
        vec![Event::IdentitiesMerged {
            winner: 1,
            loser: 2,
            at: Some(Timestamp(T0 + 9000))
        }]
    );
    assert_eq!(row(&g, 2).updated_at, Timestamp(T0 + 9000));
    // Rows created by /identify (all but the imported 5) are in id order by createdAt.
    let all = rows(&g);
    let own: Vec<&ContactRow> = all.iter().filter(|r| r.id != 5).collect();
    assert!(own.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    assert!(all.iter().all(|r| r.updated_at >= r.created_at));
    g.check_invariants().unwrap();
}

// ----- apply: bad events change nothing ---------------------------------------------------------

#[test]
fn apply_rejects_bad_events_without_changing_the_graph() {
    let mut g = IdentityGraph::new();
    identify(&mut g, Some("a@x.io"), Some("111"), T0); // 1 primary
    identify(&mut g, Some("b@x.io"), Some("111"), T0 + 1); // 2 → 1
    identify(&mut g, Some("c@x.io"), Some("333"), T0 + 2); // 3 primary
    identify(&mut g, Some("d@x.io"), Some("444"), T0 + 3); // 4 primary
    let insert_event = |id, e: Option<&str>, p: Option<&str>, link| {
        Event::ContactInserted(new_contact(id, e, p, T0 + 10, link))
    };
    let merge = |winner, loser| Event::IdentitiesMerged {
        winner,
        loser,
        at: Some(Timestamp(T0 + 10)),
    };
    let not_increasing = |id| ApplyError::IdNotIncreasing { id, next: 5 };
    let bad_merge = |winner, loser| ApplyError::BadMerge { winner, loser };
    let cases: Vec<(&str, Event, ApplyError)> = vec![
        (
            "id equal to the last",
            insert_event(4, Some("z@x.io"), None, None),
            not_increasing(4),
        ),
        (
            "id below the last",
            insert_event(2, Some("z@x.io"), None, None),
            not_increasing(2),
        ),
        (
            "id zero",
            insert_event(0, Some("z@x.io"), None, None),
            not_increasing(0),
        ),
        (
            "link to an unknown id",
            insert_event(5, Some("z@x.io"), None, Some(99)),
            ApplyError::UnknownContact(99),
        ),
        (
            "merge whose winner is a secondary",
            merge(2, 3),
            bad_merge(2, 3),
        ),
        (
            "merge whose loser is a secondary",
            merge(1, 2),
            bad_merge(1, 2),
        ),
        (
            "merge of a primary with itself",
            merge(1, 1),
            bad_merge(1, 1),
        ),
        ("merge in the wrong age order", merge(4, 3), bad_merge(4, 3)),
        (
            "merge in the wrong age order, far apart",
            merge(3, 1),
            bad_merge(3, 1),
        ),
        (
            "merge with an unknown winner",
            merge(99, 3),
            ApplyError::UnknownContact(99),
        ),
        (
            "merge with an unknown loser",
            merge(1, 99),
            ApplyError::UnknownContact(99),
        ),
        (
            "deletion of an unknown id",
            Event::ContactDeleted {
                id: 99,
                at: Timestamp(T0 + 10),
            },
            ApplyError::UnknownContact(99),
        ),
        (
            "erasure of an unknown id",
            Event::IdentityErased {
                id: 99,
                at: Timestamp(T0 + 10),
            },
            ApplyError::UnknownContact(99),
        ),
        (
            "linked merge whose cause is unknown",
            Event::IdentitiesLinked {
                winner: 3,
                loser: 4,
                at: Timestamp(T0 + 10),
                by_email: 3,
                by_phone: 99,
            },
            ApplyError::UnknownContact(99),
        ),
        (
            "refusal naming an unknown primary",
            Event::MergeRefused(idrecon::event::Refusal {
                primary: 1,
                other: Some(99),
                email: None,
                phone: None,
                at: Timestamp(T0 + 10),
                limit: 2,
            }),
            ApplyError::UnknownContact(99),
        ),
    ];
    let pristine = g.clone();
    let probe = |g: &mut IdentityGraph| {
        let mut out = Vec::new();
        for (e, p) in [
            (Some("a@x.io"), Some("333")),
            (Some("z@x.io"), None),
            (Some("c@x.io"), Some("444")),
            (Some("b@x.io"), Some("555")),
        ] {
            out.push(identify(g, e, p, T0 + 20));
        }
        (out, rows(g))
    };
    for (what, event, expected) in cases {
        assert_eq!(g.apply(&event), Err(expected), "{what}");
        assert_eq!(rows(&g), rows(&pristine), "{what}: rows changed");
        assert_eq!(g.next_id(), 5, "{what}");
        assert_eq!(g.max_created_at(), pristine.max_created_at(), "{what}");
        assert_eq!(g.identity_count(), 3, "{what}");
        g.check_invariants()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // A deleted row cannot be deleted again.
    let mut twice = g.clone();
    let delete = Event::ContactDeleted {
        id: 4,
        at: Timestamp(T0 + 10),
    };
    twice.apply(&delete).unwrap();
    assert_eq!(twice.apply(&delete), Err(ApplyError::AlreadyDeleted(4)));
    twice.check_invariants().unwrap();
    // The rejected events left nothing behind that a later request could notice.
    assert_eq!(probe(&mut g.clone()), probe(&mut pristine.clone()));

    // Ids reserved by a snapshot cannot be taken either.
    let mut reserved = g.clone();
    reserved.reserve_ids_below(10);
    assert_eq!(
        reserved.apply(&insert_event(7, Some("z@x.io"), None, None)),
        Err(ApplyError::IdNotIncreasing { id: 7, next: 10 })
    );
    assert_eq!(rows(&reserved), rows(&pristine));
    let (answer, _) = identify(&mut reserved, Some("z@x.io"), None, T0 + 30);
    assert_eq!(answer.primary_contact_id, 10);

    // The same kinds of event are accepted when they fit.
    g.apply(&insert_event(5, Some("a@x.io"), Some("111"), Some(2)))
        .unwrap();
    assert_eq!(link(&g, 5), secondary_of(1));
    let mut deleted = new_contact(6, Some("c@x.io"), Some("111"), T0 + 10, None);
    deleted.deleted_at = Some(Timestamp(T0 + 10));
    g.apply(&Event::ContactInserted(deleted)).unwrap(); // deleted rows carry no live values
    g.apply(&merge(3, 4)).unwrap();
    assert_eq!(link(&g, 4), secondary_of(3));
    assert_eq!(row(&g, 4).updated_at, Timestamp(T0 + 10));
    g.apply(&Event::IdentitiesMerged {
        winner: 1,
        loser: 3,
        at: None,
    })
    .unwrap();
    assert_eq!(link(&g, 4), secondary_of(1));
    assert_eq!(
        row(&g, 3).updated_at,
        Timestamp(T0 + 2),
        "at: None keeps updatedAt"
    );
    g.check_invariants().unwrap();

    // A value another identity already carries (possible when it was blocked when one of the
    // rows was written, and is not any more) is accepted: the first carrier keeps matching, and
    // no link is made or rewritten by replaying it.
    let before = g.identity_count();
    g.apply(&insert_event(7, Some("d@x.io"), Some("777"), None))
        .unwrap();
    assert_eq!(g.identity_count(), before + 1);
    let (answer, events) = identify(&mut g, Some("d@x.io"), None, T0 + 40);
    assert_eq!((answer.primary_contact_id, events), (1, vec![]));
    g.check_invariants().unwrap();
}

// ----- deleted rows -----------------------------------------------------------------------------

fn deleted(
    id: ContactId,
    e: Option<&str>,
    p: Option<&str>,
    created_at: i64,
    link: Option<ContactId>,
) -> NewContact {
    NewContact {
        deleted_at: Some(Timestamp(created_at + 5)),
        updated_at: Timestamp(created_at + 5),
        ..new_contact(id, e, p, created_at, link)
    }
}

#[test]
fn deleted_rows_never_match_and_never_appear_in_answers() {
    let mut g = IdentityGraph::new();
    insert(
        &mut g,
        new_contact(1, Some("a@x.io"), Some("111"), T0 + 10, None),
    );
    // A deleted secondary of 1, older than 1 and with values of its own.
    insert(
        &mut g,
        deleted(2, Some("gone@x.io"), Some("999"), T0, Some(1)),
    );
    // A deleted row on its own, carrying a value that 1 also carries.
    insert(
        &mut g,
        deleted(3, Some("lone@x.io"), Some("111"), T0 + 20, None),
    );
    insert(
        &mut g,
        new_contact(4, Some("b@x.io"), Some("222"), T0 + 30, None),
    );
    assert_eq!(
        link(&g, 1),
        PRIMARY,
        "a deleted row never becomes primary over a live one"
    );
    assert_eq!(link(&g, 2), secondary_of(1));
    assert_eq!(link(&g, 3), PRIMARY);

    let one = identity(1, &["a@x.io"], &["111"], &[]);
    for (e, p) in [
        (Some("a@x.io"), None),
        (None, Some("111")),
        (Some("a@x.io"), Some("111")),
    ] {
        let (answer, events) = identify(&mut g, e, p, T0 + 40);
        assert_eq!(answer, one, "{e:?} {p:?}");
        assert!(events.is_empty());
    }
    assert_eq!(g.identity_of(2), Some(one.clone()));

    // Values carried only by deleted rows are unknown: a new primary, not a match.
    let (answer, events) = identify(&mut g, Some("gone@x.io"), None, T0 + 50);
    assert_eq!(events.len(), 1);
    assert_eq!(answer, identity(5, &["gone@x.io"], &[], &[]));
    let (answer, _) = identify(&mut g, None, Some("999"), T0 + 51);
    assert_eq!(answer, identity(6, &[], &["999"], &[]));
    let (answer, _) = identify(&mut g, Some("lone@x.io"), None, T0 + 52);
    assert_eq!(answer, identity(7, &["lone@x.io"], &[], &[]));

    // A known phone with an email known only from a deleted row: a secondary of 1.
    let (answer, _) = identify(&mut g, Some("gone2@x.io"), Some("111"), T0 + 53);
    assert_eq!(
        answer,
        identity(1, &["a@x.io", "gone2@x.io"], &["111"], &[8])
    );

    // Merging 4 into 1 re-points the deleted secondary's identity too, yet it stays hidden.
    insert(
        &mut g,
        deleted(9, Some("old4@x.io"), None, T0 + 60, Some(4)),
    );
    assert_eq!(link(&g, 9), secondary_of(4));
    let (answer, events) = identify(&mut g, Some("b@x.io"), Some("111"), T0 + 70);
    assert_eq!(events.len(), 1);
    assert_eq!(
        answer,
        identity(
            1,
            &["a@x.io", "b@x.io", "gone2@x.io"],
            &["111", "222"],
            &[4, 8]
        )
    );
    assert_eq!(link(&g, 9), secondary_of(1));
    assert_eq!(link(&g, 2), secondary_of(1));
    assert_eq!(row(&g, 9).updated_at, Timestamp(T0 + 65));
    assert!(row(&g, 2).deleted_at.is_some() && row(&g, 9).deleted_at.is_some());
    // An identity whose only row is deleted reports that row as its primary and nothing else.
    assert_eq!(g.identity_of(3), Some(identity(3, &[], &[], &[])));
    g.check_invariants().unwrap();
}

/// Id `u64::MAX` leaves no successor: accepting it would make `next_id` `u64::MAX + 1` (a panic
/// in debug builds; 0 in release, after which every new customer fails with
/// `IdNotIncreasing { id: 0 }`). Such an id is rejected like any full graph, and the largest id
/// that leaves a successor is still accepted.
#[test]
fn the_last_possible_id_leaves_the_graph_usable() {
    let mut g = IdentityGraph::new();
    identify(&mut g, Some("a@x.io"), None, T0);
    let before = rows(&g);
    let huge = new_contact(u64::MAX, Some("b@x.io"), None, T0, None);
    assert_eq!(
        g.apply(&Event::ContactInserted(huge)),
        Err(ApplyError::Full)
    );
    assert_eq!(rows(&g), before);
    assert_eq!(g.next_id(), 2);
    let (answer, _) = identify(&mut g, Some("c@x.io"), None, T0);
    assert_eq!(answer.primary_contact_id, 2);

    insert(
        &mut g,
        new_contact(u64::MAX - 1, Some("d@x.io"), None, T0, None),
    );
    assert_eq!(g.next_id(), u64::MAX);
    // No id is left for a new row: /identify reports a full graph and changes nothing; reads
    // still work.
    let before = rows(&g);
    let full = g.identify(&request(Some("e@x.io"), None), Timestamp(T0));
    assert_eq!(full, Err(ApplyError::Full));
    assert_eq!(rows(&g), before);
    let (answer, events) = identify(&mut g, Some("d@x.io"), None, T0);
    assert_eq!((answer.primary_contact_id, events.len()), (u64::MAX - 1, 0));
    g.check_invariants().unwrap();
}
