//! The over-merge guards of docs/behaviour.md §3.6 through real HTTP: blocked values never link,
//! the identity size cap refuses merges and new secondaries (and history shows it), and changing
//! either configuration never rewrites a link made before.

use crate::common::{TestApp, summary};
use crate::identities_api::{identify, spawn_guarded};
use idrecon::graph::BlockList;
use serde_json::{Value, json};

#[tokio::test]
async fn blocked_values_never_link_and_a_config_change_rewrites_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = || {
        BlockList::new(vec!["test@test.com".into()], vec![r"9+".into()])
            .unwrap()
            .union(&BlockList::recommended())
            .unwrap()
    };
    let app = spawn_guarded(dir.path(), blocked(), None).await;
    let one = identify(&app, Some("test@test.com"), Some("5550111")).await;
    let two = identify(&app, Some("TEST@test.com"), Some("5550222")).await;
    assert_eq!(
        (summary(&one).0, summary(&two).0),
        (1, 2),
        "a blocked email links no one"
    );
    // Stored on the row and shown in answers all the same.
    assert_eq!(summary(&two).1, vec!["test@test.com".to_owned()]);
    assert!(!BlockList::recommended().blocks("5550111"));
    // A known phone with the blocked email again: nothing new, no row.
    let (status, again) = app
        .identify(&json!({"email": "test@test.com", "phoneNumber": "5550111"}))
        .await;
    assert_eq!((status, &again), (200, &one));
    // A pattern ("9+") and the recommended list ("0000000000") block phones too.
    let a = identify(&app, Some("a@x.io"), Some("99999")).await;
    let b = identify(&app, Some("b@x.io"), Some("99999")).await;
    let c = identify(&app, Some("c@x.io"), Some("0000000000")).await;
    let d = identify(&app, Some("d@x.io"), Some("0000000000")).await;
    let primaries: Vec<u64> = [&a, &b, &c, &d].iter().map(|x| summary(x).0).collect();
    assert_eq!(primaries, vec![3, 4, 5, 6]);
    // Only blocked values: a new row each time (it matches no one, not even itself).
    let e1 = identify(&app, Some("test@test.com"), None).await;
    let e2 = identify(&app, Some("test@test.com"), None).await;
    assert_eq!((summary(&e1).0, summary(&e2).0), (7, 8));
    assert_eq!(app.get("/identities?email=test@test.com").await.0, 404);
    // A link made while a value was allowed …
    identify(&app, Some("shared@x.io"), Some("5550333")).await; // 9
    identify(&app, Some("shared@x.io"), Some("5550444")).await; // 10 → 9
    let rows = app.all_rows().await;
    app.stop().await;

    // … and links not made while it was blocked, both survive a restart without the list.
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.all_rows().await, rows);
    // The formerly blocked email now matches its first carrier.
    let (status, body) = app.get("/identities?email=test@test.com").await;
    assert_eq!((status, summary(&body).0), (200, 1));
    app.stop().await;

    // Blocking a value that already linked two rows leaves them linked, and stops new links.
    let list = BlockList::new(vec!["shared@x.io".into()], Vec::new()).unwrap();
    let app = spawn_guarded(dir.path(), list, None).await;
    assert_eq!(app.all_rows().await, rows);
    assert_eq!(app.get("/contacts/10").await.1["linkedId"], 9);
    let fresh = identify(&app, Some("shared@x.io"), Some("5550555")).await;
    assert_eq!(summary(&fresh).0, 11);
    app.stop().await;
}

#[tokio::test]
async fn the_size_cap_refuses_merges_and_new_secondaries_and_history_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_guarded(dir.path(), BlockList::none(), Some(2)).await;
    identify(&app, Some("a@x.io"), Some("111")).await; // 1
    identify(&app, Some("b@x.io"), Some("111")).await; // 2 → 1 (size 2)
    let full = identify(&app, Some("a@x.io"), None).await;
    // A new secondary would make 3.
    let (status, body) = app
        .identify(&json!({"email": "c@x.io", "phoneNumber": "111"}))
        .await;
    assert_eq!((status, &body), (200, &full));
    let lone = identify(&app, Some("d@x.io"), Some("999")).await; // 3
    // A merge would make 3: answered from the email's identity …
    let response = app
        .client
        .post(format!("{}/identify", app.url))
        .json(&json!({"email": "a@x.io", "phoneNumber": "999"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-idrecon-outcome"], "refused");
    assert_eq!(response.json::<Value>().await.unwrap(), full);
    // … or, lacking one, its phone.
    let (_, body) = app
        .identify(&json!({"email": "d@x.io", "phoneNumber": "111"}))
        .await;
    assert_eq!(body, lone);
    assert_eq!(app.all_rows().await.len(), 3, "no row was written");

    let refusals = |history: &Value| -> Vec<(Value, Value)> {
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "merge_refused")
            .map(|e| {
                (
                    e["primaryContactId"].clone(),
                    e["otherPrimaryContactId"].clone(),
                )
            })
            .collect()
    };
    let (_, history) = app.get("/identities/1/history").await;
    assert_eq!(
        refusals(&history),
        vec![
            (json!(1), Value::Null),
            (json!(1), json!(3)),
            (json!(3), json!(1))
        ]
    );
    let event = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "merge_refused")
        .unwrap()
        .clone();
    assert_eq!(
        (&event["email"], &event["phoneNumber"], &event["limit"]),
        (&json!("c@x.io"), &json!("111"), &json!(2))
    );
    let (_, other) = app.get("/identities/3/history").await;
    assert_eq!(
        refusals(&other),
        vec![(json!(1), json!(3)), (json!(3), json!(1))]
    );
    app.stop().await;

    // Refusals are history: they survive a restart. Without the cap the merge goes through.
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.get("/identities/1/history").await.1, history);
    let merged = identify(&app, Some("a@x.io"), Some("999")).await;
    assert_eq!(summary(&merged).3, vec![2, 3]);
    app.stop().await;
}
