//! The rules of docs/behaviour.md §2–3 and §5, one at a time, through the public API of the
//! identity graph: `IdentifyRequest::new`, `IdentityGraph::identify`, `contact`, `all_contacts`,
//! `identity_of` and `apply`.

use idrecon::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::graph::{IdentifyRequest, Identity, IdentityGraph};

// ----- helpers ----------------------------------------------------------------------------------

pub(crate) const T0: i64 = 1_680_307_200_000; // 2023-04-01T00:00:00Z

fn email(text: &str) -> Email {
    Email::parse(text).unwrap().unwrap()
}

fn phone(text: &str) -> Phone {
    Phone::parse(text).unwrap().unwrap()
}

pub(crate) fn request(e: Option<&str>, p: Option<&str>) -> IdentifyRequest {
    IdentifyRequest::new(e.map(email), p.map(phone)).unwrap()
}

/// `/identify` on the graph; merges come back as `IdentitiesMerged` with `at` set, their cause
/// (`by_email`/`by_phone` of `IdentitiesLinked`, checked in `merges_record_their_cause`)
/// dropped, so the tests below compare decisions only.
pub(crate) fn identify(
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

pub(crate) fn identity(
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

pub(crate) fn new_contact(
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

pub(crate) fn insert(g: &mut IdentityGraph, contact: NewContact) {
    let id = contact.id;
    g.apply(&Event::ContactInserted(contact))
        .unwrap_or_else(|e| panic!("contact {id} rejected: {e}"));
}

pub(crate) fn rows(g: &IdentityGraph) -> Vec<ContactRow> {
    g.all_contacts().collect()
}

pub(crate) fn row(g: &IdentityGraph, id: ContactId) -> ContactRow {
    g.contact(id).unwrap_or_else(|| panic!("no contact {id}"))
}

/// `(linkPrecedence, linkedId)` of a row.
pub(crate) fn link(g: &IdentityGraph, id: ContactId) -> (LinkPrecedence, Option<ContactId>) {
    let r = row(g, id);
    (r.link_precedence, r.linked_id)
}

pub(crate) const PRIMARY: (LinkPrecedence, Option<ContactId>) = (LinkPrecedence::Primary, None);

pub(crate) fn secondary_of(primary: ContactId) -> (LinkPrecedence, Option<ContactId>) {
    (LinkPrecedence::Secondary, Some(primary))
}

fn ts(text: &str) -> i64 {
    Timestamp::parse(text).unwrap().0
}

/// A small deterministic generator (xorshift64*), so "random-ish" choices are reproducible.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: usize) -> usize {
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
