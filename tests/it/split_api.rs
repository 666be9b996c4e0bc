//! Splits and run-time blocked values through real HTTP (docs/behaviour.md §10): a junk phone
//! number that merged three customers, its links, the split and the answers before and after,
//! history on both sides, persistence across a restart and a snapshot, retroactive and plain
//! blocks, unblocking, the admin guard and bad input (a clear 4xx that changes nothing).

use crate::common::{TestApp, summary};
use idrecon::http::HttpOptions;
use idrecon::http::auth::AdminToken;
use idrecon::store::StoreOptions;
use reqwest::Method;
use serde_json::{Value, json};

const JUNK: &str = "0000000000";

async fn identify(app: &TestApp, email: Option<&str>, phone: Option<&str>) -> Value {
    let (status, body) = app
        .identify(&json!({"email": email, "phoneNumber": phone}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Sends `body` (raw text, JSON content type unless `content_type` says otherwise) with
/// `method` to `path`; returns status and parsed body.
async fn send(app: &TestApp, method: Method, path: &str, body: &str) -> (u16, Value) {
    send_as(app, method, path, body, "application/json", None).await
}

async fn send_as(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &str,
    content_type: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Ann, Bob and Carl check out with the shop's counter phone; Ann later with her own phone
/// too. Rows: 1 ann/junk, 2 bob/junk, 3 carl/junk (both secondaries of 1 through the junk
/// phone), 4 ann/5550001 (secondary through Ann's email).
async fn junk_phone_identity(app: &TestApp) {
    identify(app, Some("ann@example.com"), Some(JUNK)).await;
    identify(app, Some("bob@example.com"), Some(JUNK)).await;
    identify(app, Some("carl@example.com"), Some(JUNK)).await;
    let answer = identify(app, Some("ann@example.com"), Some("5550001")).await;
    assert_eq!(summary(&answer).0, 1);
    assert_eq!(summary(&answer).3, vec![2, 3, 4], "{answer}");
}

fn row(rows: &[Value], id: u64) -> &Value {
    rows.iter().find(|r| r["id"] == id).expect("row exists")
}

#[tokio::test]
async fn a_split_by_a_junk_phone_separates_the_customers_it_merged() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    junk_phone_identity(&app).await;
    let before = app.all_rows().await;
    // The split's time must differ from the rows' (milliseconds) to see who was touched.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let (status, links) = app.get("/identities/3/links").await;
    assert_eq!(status, 200, "{links}");
    let reasons: Vec<(String, Value)> = links["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap().to_owned(),
                l["contactIds"].clone(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("shared_email".to_owned(), json!([1, 4])),
            ("shared_phone_number".to_owned(), json!([1, 2])),
            ("shared_phone_number".to_owned(), json!([1, 3])),
        ]
    );
    assert!(
        links["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["blocked"] == false)
    );

    let (status, split) = send(
        &app,
        Method::POST,
        "/identities/2/split",
        &json!({"phoneNumbers": [JUNK]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{split}");
    assert_eq!(split["split"], true);
    assert_eq!(split["removedLinks"], 2);
    assert_eq!(
        split["blocked"],
        json!({"emails": [], "phoneNumbers": [JUNK]})
    );
    assert_eq!(
        split["identities"],
        json!([
            {"primaryContactId": 1, "emails": ["ann@example.com"],
                "phoneNumbers": [JUNK, "5550001"], "secondaryContactIds": [4]},
            {"primaryContactId": 2, "emails": ["bob@example.com"], "phoneNumbers": [JUNK],
                "secondaryContactIds": []},
            {"primaryContactId": 3, "emails": ["carl@example.com"], "phoneNumbers": [JUNK],
                "secondaryContactIds": []},
        ])
    );
    // Only rows whose link changed were touched; ids, values and createdAt never change.
    let after = app.all_rows().await;
    for id in [1, 4] {
        assert_eq!(row(&after, id), row(&before, id), "row {id}");
    }
    for id in [2, 3] {
        let (old, new) = (row(&before, id), row(&after, id));
        assert_eq!(new["linkPrecedence"], "primary");
        assert_eq!(new["linkedId"], Value::Null);
        assert_ne!(new["updatedAt"], old["updatedAt"]);
        for field in ["email", "phoneNumber", "createdAt", "deletedAt"] {
            assert_eq!(new[field], old[field], "row {id} {field}");
        }
    }
    // As if the junk phone had never linked anyone: it matches no one now.
    let answer = identify(&app, Some("bob@example.com"), Some(JUNK)).await;
    assert_eq!(summary(&answer).0, 2);
    let (status, found) = app.get(&format!("/identities?phoneNumber={JUNK}")).await;
    assert_eq!(
        (status, &found["error"]["code"]),
        (404, &json!("not_found"))
    );
    assert_eq!(
        app.all_rows().await,
        after,
        "a blocked value is not new information"
    );

    // History on both sides.
    let (_, history) = app.get("/identities/2/history").await;
    let splits: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "split")
        .collect();
    assert_eq!(splits.len(), 1, "{history}");
    assert_eq!(
        splits[0]["description"],
        "identity 2 split from identity 1: phone 0000000000 blocked"
    );
    let (_, history) = app.get("/identities/1/history").await;
    let splits = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "split")
        .count();
    assert_eq!(splits, 2, "{history}");

    // Links through the blocked phone are gone; what is left is marked unblocked.
    let (_, links) = app.get("/identities/1/links").await;
    assert_eq!(links["links"].as_array().unwrap().len(), 1, "{links}");

    // A request that brings two parts' unblocked values together merges them (§3.3).
    let answer = identify(&app, Some("bob@example.com"), Some("5550001")).await;
    assert_eq!(summary(&answer).0, 1);
    assert_eq!(summary(&answer).3, vec![2, 4], "{answer}");
    let (_, links) = app.get("/identities/2/links").await;
    assert!(
        links["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["reason"] == "request" && l["contactIds"] == json!([2, 4])),
        "{links}"
    );

    // Everything survives a restart (log replay) and a compaction (snapshot).
    let rows = app.all_rows().await;
    let (_, blocked) = app.get("/admin/blocked-values").await;
    assert_eq!(
        blocked["runTime"],
        json!({"emails": [], "phoneNumbers": [JUNK]})
    );
    let (_, history) = app.get("/identities/2/history").await;
    app.stop().await;
    for compact in [false, true] {
        let app = TestApp::spawn(dir.path()).await;
        assert_eq!(app.all_rows().await, rows, "compacted before: {compact}");
        assert_eq!(app.get("/admin/blocked-values").await.1, blocked);
        assert_eq!(app.get("/identities/2/history").await.1, history);
        let answer = identify(&app, Some("carl@example.com"), Some(JUNK)).await;
        assert_eq!(summary(&answer).0, 3);
        let (status, _) = send(&app, Method::POST, "/admin/compact", "").await;
        assert_eq!(status, 200);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_split_that_removes_no_link_blocks_the_values_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    junk_phone_identity(&app).await;
    let rows = app.all_rows().await;
    let (status, split) = send(
        &app,
        Method::POST,
        "/identities/1/split",
        r#"{"emails": ["Nobody@Example.com", "nobody@example.com"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{split}");
    assert_eq!(split["split"], false);
    assert_eq!(split["removedLinks"], 0);
    assert_eq!(split["blocked"]["emails"], json!(["nobody@example.com"]));
    assert_eq!(split["identities"].as_array().unwrap().len(), 1);
    assert_eq!(app.all_rows().await, rows);
    // Blocked all the same: a request with it alone matches no one, every time.
    for _ in 0..2 {
        let answer = identify(&app, Some("nobody@example.com"), None).await;
        assert_eq!(summary(&answer).3, Vec::<u64>::new());
    }
    app.stop().await;
}

#[tokio::test]
async fn blocks_split_retroactively_only_when_asked_and_unblocking_merges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    // Two customers joined by a placeholder email; two others by a shared landline.
    identify(&app, Some("noemail@shop.com"), Some("111")).await;
    identify(&app, Some("noemail@shop.com"), Some("222")).await;
    identify(&app, Some("dad@example.com"), Some("333")).await;
    identify(&app, Some("son@example.com"), Some("333")).await;

    let (status, report) = send(
        &app,
        Method::POST,
        "/admin/blocked-values",
        r#"{"phoneNumbers": ["333"]}"#,
    )
    .await;
    assert_eq!((status, &report["split"]), (200, &json!(false)), "{report}");
    assert_eq!(report["identities"], json!([]));
    // Without retroactive, links already made stay; the value stops matching.
    assert_eq!(summary(&app.get("/identities/4").await.1).0, 3);
    let answer = identify(&app, Some("mum@example.com"), Some("333")).await;
    assert_eq!(summary(&answer).0, 5, "a blocked value links no one new");

    let (status, report) = send(
        &app,
        Method::POST,
        "/admin/blocked-values?retroactive=true",
        r#"{"emails": ["noemail@shop.com"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["split"], true);
    let primaries: Vec<u64> = report["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["primaryContactId"].as_u64().unwrap())
        .collect();
    assert_eq!(primaries, vec![1, 2]);
    let (_, listed) = app.get("/admin/blocked-values").await;
    assert_eq!(
        listed["runTime"],
        json!({"emails": ["noemail@shop.com"], "phoneNumbers": ["333"]})
    );

    // Unblocking matches the value again at its oldest live carrier, and merges nothing.
    let rows = app.all_rows().await;
    let (status, body) = send(
        &app,
        Method::DELETE,
        "/admin/blocked-values",
        r#"{"phoneNumbers": ["333", "444"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["unblocked"]["phoneNumbers"],
        json!(["333"]),
        "444 was never blocked"
    );
    assert_eq!(app.all_rows().await, rows);
    let answer = identify(&app, None, Some("333")).await;
    assert_eq!(summary(&answer).0, 3);
    assert_eq!(summary(&app.get("/identities/5").await.1).0, 5);

    let (status, body) = send(
        &app,
        Method::POST,
        "/admin/blocked-values?retroactive=yes",
        r#"{"phoneNumbers": ["444"]}"#,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_query_parameter"))
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_split_requests_get_a_clear_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-admin";
    let http = HttpOptions {
        admin_token: Some(AdminToken::new(token).unwrap()),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    junk_phone_identity(&app).await;
    let lsn = app.store.lsn();
    let good = json!({"phoneNumbers": [JUNK]}).to_string();
    // (path, body, content type, admin token, status, error code)
    type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/identities/1/split",
            good.as_str(),
            "application/json",
            None,
            401,
            "unauthorized",
        ),
        (
            "/admin/blocked-values",
            good.as_str(),
            "application/json",
            None,
            401,
            "unauthorized",
        ),
        (
            "/identities/99/split",
            good.as_str(),
            "application/json",
            Some(token),
            404,
            "not_found",
        ),
        (
            "/identities/0/split",
            good.as_str(),
            "application/json",
            Some(token),
            400,
            "invalid_path_parameter",
        ),
        (
            "/identities/1/split",
            "{}",
            "application/json",
            Some(token),
            400,
            "missing_values",
        ),
        (
            "/identities/1/split",
            r#"{"phones": ["1"]}"#,
            "application/json",
            Some(token),
            400,
            "invalid_json",
        ),
        (
            "/identities/1/split",
            "[1]",
            "application/json",
            Some(token),
            400,
            "invalid_json",
        ),
        (
            "/identities/1/split",
            r#"{"emails": ["no-at-sign"]}"#,
            "application/json",
            Some(token),
            400,
            "invalid_email",
        ),
        (
            "/identities/1/split",
            r#"{"emails": ["  "]}"#,
            "application/json",
            Some(token),
            400,
            "invalid_email",
        ),
        (
            "/identities/1/split",
            r#"{"phoneNumbers": [true]}"#,
            "application/json",
            Some(token),
            400,
            "invalid_json",
        ),
        (
            "/identities/1/split",
            good.as_str(),
            "text/plain",
            Some(token),
            415,
            "unsupported_media_type",
        ),
        (
            "/admin/blocked-values",
            "{}",
            "application/json",
            Some(token),
            400,
            "missing_values",
        ),
    ];
    for (path, body, content_type, auth, status, code) in cases {
        let (got, answer) = send_as(&app, Method::POST, path, body, content_type, auth).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}"
        );
    }
    let (status, _) = app.get("/identities/1/links").await;
    assert_eq!(status, 401);
    assert_eq!(app.store.lsn(), lsn, "nothing was logged");
    let (status, answer) = send_as(
        &app,
        Method::POST,
        "/identities/3/split",
        &good,
        "application/json",
        Some(token),
    )
    .await;
    assert_eq!((status, &answer["split"]), (200, &json!(true)), "{answer}");
    app.stop().await;
}
