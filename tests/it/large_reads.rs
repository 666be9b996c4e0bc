//! Turns of large reads (docs/behaviour.md §3.6): a pure read of an identity over
//! `LARGE_READ_MEMBERS` contacts waits for a turn, which its answer holds until rendered, while
//! reads of small identities and writes never wait for one.

use std::time::Duration;

use idrecon::contact::{Email, Phone};
use idrecon::graph::IdentifyRequest;
use idrecon::store::{LARGE_READ_MEMBERS, Outcome, Store, StoreOptions};

fn request(email: Option<&str>, phone: Option<&str>) -> IdentifyRequest {
    IdentifyRequest::new(
        email.and_then(|e| Email::parse(e).expect("email")),
        phone.and_then(|p| Phone::parse(p).expect("phone")),
    )
    .expect("a request")
}

#[tokio::test]
async fn large_reads_take_turns_and_nothing_else_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        large_read_turns: 1,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir.path(), options).expect("store opens");
    // One identity just over the bound (one phone, an email per contact), one small one.
    for i in 0..=LARGE_READ_MEMBERS {
        let email = format!("big{i}@example.com");
        store
            .identify(&request(Some(&email), Some("900000000")))
            .await
            .expect("grows");
    }
    store
        .identify(&request(Some("small@example.com"), Some("700000000")))
        .await
        .expect("a small identity");
    let big = request(None, Some("900000000"));
    // A read that waits for a turn would wait for ever here: 300 ms shows that it waits, 10 s
    // that one which must not wait did not.
    let wait = Duration::from_millis(300);
    let never = Duration::from_secs(10);

    let (identity, outcome, turn) = store.identify(&big).await.expect("first large read");
    assert_eq!(outcome, Outcome::PureRead);
    assert_eq!(identity.emails.len(), LARGE_READ_MEMBERS + 1);
    // While its turn is kept, a second large read waits ...
    let second = tokio::time::timeout(wait, store.identify(&big)).await;
    assert!(second.is_err(), "a second large read got a turn");
    // ... but a small read, and a write to the large identity, do not.
    let (small, _, _) =
        tokio::time::timeout(never, store.identify(&request(None, Some("700000000"))))
            .await
            .expect("a small read does not wait")
            .expect("answered");
    assert_eq!(small.emails.len(), 1);
    let (grown, outcome, _) = tokio::time::timeout(
        never,
        store.identify(&request(Some("new@example.com"), Some("900000000"))),
    )
    .await
    .expect("a write does not wait")
    .expect("answered");
    assert_eq!(outcome, Outcome::NewSecondary);
    assert_eq!(grown.emails.len(), LARGE_READ_MEMBERS + 2);
    // Once the turn is given back, the next large read is answered, with the new contact.
    drop(turn);
    let (identity, _, _turn) = tokio::time::timeout(never, store.identify(&big))
        .await
        .expect("a turn is free")
        .expect("answered");
    assert_eq!(identity, grown);
    store.close().expect("closes");
}
