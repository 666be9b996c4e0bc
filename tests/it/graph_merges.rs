//! Merges (docs/behaviour.md §3.3) through the public API of the identity graph: secondaries
//! re-pointed, chained merges keeping exactly one primary, and age order (`createdAt`, then id).

use idrecon::contact::{ContactId, ContactRow, Email, LinkPrecedence, Timestamp};
use idrecon::event::Event;
use idrecon::graph::IdentityGraph;

use crate::graph_rules::{
    PRIMARY, Rng, T0, identify, identity, insert, link, new_contact, row, rows, secondary_of,
};

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
