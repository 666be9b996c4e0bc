//! The graph's `apply` of logged events (bad events change nothing), deleted rows, and the
//! last possible id, through the public API of the identity graph (docs/behaviour.md §2–3,
//! §6.6).

use idrecon::contact::{ContactId, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::graph::{ApplyError, IdentityGraph};

use crate::graph_rules::{
    PRIMARY, T0, identify, identity, insert, link, new_contact, request, row, rows, secondary_of,
};

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

/// A bulk load settles its deferred links in batches; a row whose link is settled by its own
/// insert (the batch filled up at it) is no longer a root, and the invariant check after the
/// insert must look at its identity's root (docs/behaviour.md §8: snapshots load in bulk).
#[test]
fn a_bulk_load_that_settles_links_at_a_linked_row_keeps_its_invariants() {
    let mut g = IdentityGraph::default();
    for i in 0..1_500i64 {
        let phone = format!("{}", 100_000 + i);
        for (k, name) in ["a", "b", "c"].iter().enumerate() {
            let email = format!("{name}{i}@x.io");
            identify(&mut g, Some(&email), Some(&phone), T0 + i * 3 + k as i64);
        }
    }
    let mut loaded = IdentityGraph::default();
    loaded.begin_bulk_load();
    for entry in g.snapshot_entries() {
        loaded.load_snapshot_item(entry.as_item()).unwrap();
    }
    loaded.finish_bulk_load();
    assert_eq!(rows(&loaded), rows(&g));
}
