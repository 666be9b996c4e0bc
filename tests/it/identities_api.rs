//! The routes of docs/behaviour.md §6.3–§6.8 and the guards of §3.6 through real HTTP: read-only
//! lookup, an identity with its rows, history (across snapshots, clean restarts and crashes),
//! deletion with promotion, erasure with a byte-level search of the data directory after
//! compaction (the over-merge guards are in `merge_guards.rs`).

use std::path::Path;
use std::sync::Arc;

use crate::common::{TestApp, summary};
use idrecon::graph::BlockList;
use idrecon::graph::GraphOptions;
use idrecon::http::HttpOptions;
use idrecon::http::auth::AdminToken;
use idrecon::store::StoreOptions;
use reqwest::Method;
use serde_json::{Value, json};

fn guarded(blocked: BlockList, cap: Option<u32>) -> StoreOptions {
    StoreOptions {
        graph: GraphOptions {
            blocked: Arc::new(blocked),
            max_identity_size: cap,
        },
        ..StoreOptions::default()
    }
}

pub(crate) async fn spawn_guarded(dir: &Path, blocked: BlockList, cap: Option<u32>) -> TestApp {
    TestApp::spawn_with(dir, guarded(blocked, cap), HttpOptions::default()).await
}

pub(crate) async fn identify(app: &TestApp, email: Option<&str>, phone: Option<&str>) -> Value {
    let (status, body) = app
        .identify(&json!({"email": email, "phoneNumber": phone}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The worked examples of docs/behaviour.md §5: identities {1: lorraine/mcfly, 123456} and
/// {3: george/biff, 919191/717171}.
async fn spec_section_5(app: &TestApp) {
    identify(app, Some("lorraine@hillvalley.edu"), Some("123456")).await;
    identify(app, Some("mcfly@hillvalley.edu"), Some("123456")).await;
    identify(app, Some("george@hillvalley.edu"), Some("919191")).await;
    identify(app, Some("biffsucks@hillvalley.edu"), Some("717171")).await;
    identify(app, Some("george@hillvalley.edu"), Some("717171")).await;
}

#[tokio::test]
async fn lookup_answers_like_identify_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    spawn_scenario_and_check(&app).await;
    app.stop().await;
}

async fn spawn_scenario_and_check(app: &TestApp) {
    spec_section_5(app).await;
    let lsn = app.store.lsn();
    let rows = app.all_rows().await;
    let expected = identify(app, Some("mcfly@hillvalley.edu"), None).await;
    for query in [
        "email=mcfly@hillvalley.edu",
        "email=%20McFly@HillValley.EDU%20",
        "phoneNumber=123456",
        "email=lorraine@hillvalley.edu&phoneNumber=123456",
        "email=mcfly@hillvalley.edu&unknown=1",
    ] {
        let (status, body) = app.get(&format!("/identities?{query}")).await;
        assert_eq!((status, &body), (200, &expected), "{query}");
    }
    let (status, body) = app.get("/identities?phoneNumber=717171").await;
    assert_eq!((status, summary(&body).0), (200, 3));

    let (status, body) = app.get("/identities?email=nobody@hillvalley.edu").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // Values of two identities: a lookup never merges them.
    let (status, body) = app
        .get("/identities?email=mcfly@hillvalley.edu&phoneNumber=919191")
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "identities_conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("identity 1") && message.contains("identity 3"),
        "{message}"
    );
    for (query, code) in [
        ("", "missing_contact"),
        ("email=", "missing_contact"),
        ("email=no-at-sign", "invalid_email"),
        ("phoneNumber=12%2F34", "invalid_phone_number"),
        ("email=a@b.c&email=d@e.f", "invalid_query_parameter"),
    ] {
        let (status, body) = app.get(&format!("/identities?{query}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    // Nothing was written by any of it.
    assert_eq!(app.store.lsn(), lsn);
    assert_eq!(app.all_rows().await, rows);
}

#[tokio::test]
async fn identity_rows_and_history_survive_snapshots_restarts_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    spec_section_5(&app).await;
    // Merge the two identities: george's email with lorraine's phone.
    identify(&app, Some("george@hillvalley.edu"), Some("123456")).await;
    let (status, _, deleted) = app.send(Method::DELETE, "/contacts/1").await;
    assert_eq!(status, 200, "{deleted}");

    let (status, identity) = app.get("/identities/4").await;
    assert_eq!(status, 200, "{identity}");
    // Row 1 (deleted) stays in the rows, leaves the answer; 2 was promoted.
    assert_eq!(identity["contact"]["primaryContactId"], 2);
    let ids: Vec<u64> = identity["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert!(identity["rows"][0]["deletedAt"].is_string());
    assert_eq!(identity["rows"][1]["linkPrecedence"], "primary");
    assert_eq!(identity["rows"][2]["linkedId"], 2);

    let (status, history) = app.get("/identities/3/history").await;
    assert_eq!(status, 200, "{history}");
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "contact_inserted",
            "contact_inserted",
            "contact_inserted",
            "contact_inserted",
            "merged",
            "merged",
            "deleted"
        ]
    );
    let events = &history["events"];
    assert_eq!(events[0]["email"], "lorraine@hillvalley.edu");
    assert_eq!(events[0]["phoneNumber"], "123456");
    // 4 was demoted into 3 by george's email and biff's phone …
    assert_eq!(
        (
            &events[4]["primaryContactId"],
            &events[4]["demotedContactId"],
            &events[4]["email"],
            &events[4]["phoneNumber"]
        ),
        (
            &json!(3),
            &json!(4),
            &json!("george@hillvalley.edu"),
            &json!("717171")
        )
    );
    // … then 3 into 1 by george's email and lorraine's phone; then 1 was deleted, 2 promoted.
    assert_eq!(
        (
            &events[5]["primaryContactId"],
            &events[5]["demotedContactId"]
        ),
        (&json!(1), &json!(3))
    );
    assert_eq!(events[5]["phoneNumber"], "123456");
    assert_eq!(
        (&events[6]["contactId"], &events[6]["promotedContactId"]),
        (&json!(1), &json!(2))
    );
    // Every contact of the identity sees the same history.
    for id in [1, 2, 4] {
        let (_, other) = app.get(&format!("/identities/{id}/history")).await;
        assert_eq!(other["events"], history["events"]);
    }
    for (path, status) in [
        ("/identities/99", 404),
        ("/identities/99/history", 404),
        ("/identities/abc", 400),
        ("/identities/0/history", 400),
    ] {
        assert_eq!(app.get(path).await.0, status, "{path}");
    }

    // After a snapshot and a clean restart (history from the snapshot) …
    app.store.snapshot_blocking().unwrap();
    app.stop().await;
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.get("/identities/3/history").await.1, history);
    assert_eq!(app.get("/identities/4").await.1, identity);
    // … and after a crash with more history in the log only.
    identify(&app, Some("doc@hillvalley.edu"), Some("555")).await; // 5
    identify(&app, Some("doc@hillvalley.edu"), Some("123456")).await; // merges 5 into 2
    let (_, history) = app.get("/identities/5/history").await;
    assert_eq!(history["events"].as_array().unwrap().len(), 9);
    app.abandon().await;
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.get("/identities/5/history").await.1, history);
    app.stop().await;
}

#[tokio::test]
async fn deletion_promotes_the_oldest_live_contact_and_keeps_links() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    identify(&app, Some("a@x.io"), Some("111")).await; // 1
    identify(&app, Some("b@x.io"), Some("111")).await; // 2 → 1
    identify(&app, Some("c@x.io"), Some("222")).await; // 3
    identify(&app, Some("c@x.io"), Some("111")).await; // merge: 3 → 1

    let (status, outcome, body) = app.send(Method::DELETE, "/contacts/1").await;
    assert_eq!((status, outcome), (200, None));
    let row = &body["contact"];
    assert_eq!(row["id"], 1);
    assert!(row["deletedAt"].is_string());
    assert_eq!(row["updatedAt"], row["deletedAt"]);
    assert_eq!(row["linkPrecedence"], "secondary");
    assert_eq!(row["linkedId"], 2);

    // 2 (the oldest live) is primary, 3 re-pointed to it, 1 gone from answers.
    let (_, two) = app.get("/contacts/2").await;
    assert_eq!(
        (two["linkPrecedence"].as_str(), &two["linkedId"]),
        (Some("primary"), &Value::Null)
    );
    assert_eq!(
        two["updatedAt"], row["deletedAt"],
        "the promoted row is touched"
    );
    assert_eq!(app.get("/contacts/3").await.1["linkedId"], 2);
    let answer = identify(&app, Some("c@x.io"), None).await;
    assert_eq!(
        summary(&answer),
        (
            2,
            vec!["b@x.io".into(), "c@x.io".into()],
            vec!["111".into(), "222".into()],
            vec![3]
        )
    );
    // The deleted row's email no longer matches: a new customer.
    let answer = identify(&app, Some("a@x.io"), None).await;
    assert_eq!(summary(&answer).0, 4);
    // Twice → 409, unknown → 404, bad id → 400; none of them writes.
    let lsn = app.store.lsn();
    let (status, _, body) = app.send(Method::DELETE, "/contacts/1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_deleted"))
    );
    let (status, _, body) = app.send(Method::DELETE, "/contacts/77").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, body) = app.send(Method::DELETE, "/contacts/-1").await;
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("id")));
    assert_eq!(app.store.lsn(), lsn);
    app.stop().await;

    // The same after a restart.
    let app = TestApp::spawn(dir.path()).await;
    assert_eq!(app.get("/contacts/3").await.1["linkedId"], 2);
    assert_eq!(app.send(Method::DELETE, "/contacts/1").await.0, 409);
    app.stop().await;
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` that contain `needle` anywhere.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .map(|path| path.display().to_string())
        .collect()
}

#[tokio::test]
async fn erasure_leaves_no_byte_of_the_values_in_the_data_directory() {
    const ERASED_EMAIL: &str = "forget-me-4f1c@example.org";
    const ERASED_EMAIL_2: &str = "forget-me-too-9a2e@example.org";
    const ERASED_PHONE: &str = "5550104444";
    const KEPT_EMAIL: &str = "keep-me-77d0@example.org";
    let dir = tempfile::tempdir().unwrap();
    // Cap 2, so a refusal record (which carries the request's values) is in the history too.
    let app = spawn_guarded(dir.path(), BlockList::none(), Some(2)).await;
    identify(&app, Some(KEPT_EMAIL), Some("5550109999")).await; // 1
    identify(&app, Some(ERASED_EMAIL), Some(ERASED_PHONE)).await; // 2
    app.store.snapshot_blocking().unwrap(); // an older snapshot holding the values
    identify(&app, Some(ERASED_EMAIL_2), Some(ERASED_PHONE)).await; // 3 → 2
    let (_, refused) = app
        .identify(&json!({"email": "third@example.org", "phoneNumber": ERASED_PHONE}))
        .await;
    assert_eq!(summary(&refused).0, 2);
    app.store.snapshot_blocking().unwrap();
    identify(&app, Some(KEPT_EMAIL), Some("5550108888")).await; // 4 → 1, in the log only
    let kept = identify(&app, Some(KEPT_EMAIL), None).await;
    for needle in [ERASED_EMAIL, ERASED_EMAIL_2, ERASED_PHONE] {
        assert!(
            !files_containing(dir.path(), needle).is_empty(),
            "{needle} on disk before"
        );
    }

    let (status, _, body) = app.send(Method::DELETE, "/identities/3?erase=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"primaryContactId": 2, "erasedContactIds": [2, 3]})
    );
    // Gone from memory and every index at once.
    for path in [
        "/contacts/2",
        "/contacts/3",
        "/identities/2",
        "/identities/3/history",
    ] {
        assert_eq!(app.get(path).await.0, 404, "{path}");
    }
    let (status, _) = app.get(&format!("/identities?email={ERASED_EMAIL}")).await;
    assert_eq!(status, 404);
    let ids: Vec<u64> = app
        .all_rows()
        .await
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 4]);
    assert_eq!(
        app.send(Method::DELETE, "/identities/3?erase=true").await.0,
        404
    );
    assert_eq!(app.send(Method::DELETE, "/identities/1").await.0, 400);

    // The compaction that the erasure started removes every byte of the values.
    app.store.wait_for_maintenance();
    for needle in [
        ERASED_EMAIL,
        ERASED_EMAIL_2,
        ERASED_PHONE,
        "third@example.org",
    ] {
        assert_eq!(
            files_containing(dir.path(), needle),
            Vec::<String>::new(),
            "{needle}"
        );
    }
    // Other identities untouched, in memory and on disk.
    assert_eq!(identify(&app, Some(KEPT_EMAIL), None).await, kept);
    assert!(!files_containing(dir.path(), KEPT_EMAIL).is_empty());

    // The same value seen again is a new customer; an explicit compaction removes it too.
    identify(&app, Some(ERASED_EMAIL), None).await; // 5
    let (status, _, body) = app.send(Method::DELETE, "/identities/5?erase=true").await;
    assert_eq!(status, 200, "{body}");
    app.store.wait_for_maintenance();
    let (status, _, report) = app.send(Method::POST, "/admin/compact").await;
    assert_eq!(status, 200, "{report}");
    assert!(report["lsn"].as_u64().unwrap() >= 7, "{report}");
    assert_eq!(
        files_containing(dir.path(), ERASED_EMAIL),
        Vec::<String>::new()
    );

    // A restart (from the compacted directory) and a crash agree.
    app.stop().await;
    let app = spawn_guarded(dir.path(), BlockList::none(), Some(2)).await;
    assert_eq!(app.get("/contacts/2").await.0, 404);
    assert_eq!(identify(&app, Some(KEPT_EMAIL), None).await, kept);
    let next = identify(&app, Some("new@example.org"), None).await;
    assert_eq!(
        summary(&next).0,
        6,
        "ids of erased contacts are never reused"
    );
    app.abandon().await;
    let app = spawn_guarded(dir.path(), BlockList::none(), Some(2)).await;
    assert_eq!(app.get("/identities/1").await.1["contact"], kept["contact"]);
    app.stop().await;
    for needle in [ERASED_EMAIL, ERASED_EMAIL_2, ERASED_PHONE] {
        assert_eq!(
            files_containing(dir.path(), needle),
            Vec::<String>::new(),
            "{needle}"
        );
    }
}

#[tokio::test]
async fn the_new_routes_are_admin_routes() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        admin_token: Some(AdminToken::new("s3cret").unwrap()),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    identify(&app, Some("a@x.io"), Some("111")).await;
    for (method, path) in [
        (Method::GET, "/contacts/1"),
        (Method::GET, "/identities?email=a@x.io"),
        (Method::GET, "/identities/1"),
        (Method::GET, "/identities/1/history"),
        (Method::DELETE, "/contacts/1"),
        (Method::DELETE, "/identities/1?erase=true"),
        (Method::POST, "/admin/compact"),
    ] {
        let (status, _, body) = app.send(method.clone(), path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "{method} {path} with the token"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn lookup_normalizes_phones_like_identify_with_a_region() {
    use idrecon::phone_region::{Normalizer, PhoneRegion};
    let dir = tempfile::tempdir().unwrap();
    let region: PhoneRegion = "IN".parse().unwrap();
    let http = HttpOptions {
        normalizer: Normalizer::new(Some(region)),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    let stored = identify(&app, Some("raj@example.in"), Some("+91 98765 43210")).await;
    assert_eq!(summary(&stored).2, vec!["+919876543210".to_owned()]);
    for query in [
        "phoneNumber=098765%2043210",
        "phoneNumber=9876543210",
        "phoneNumber=%2B919876543210",
    ] {
        let (status, body) = app.get(&format!("/identities?{query}")).await;
        assert_eq!((status, &body), (200, &stored), "{query}");
    }
    let (status, body) = app.get("/identities?phoneNumber=12").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_phone_number"))
    );
    app.stop().await;
}
