//! The HTTP API through a real server on 127.0.0.1:0: docs/behaviour.md §3 answers, §4 errors, §6
//! endpoints, the response key setting, and the parallel brand-new request rule.

use crate::common::{TestApp, data_file, summary};
use idrecon::http::{HttpOptions, ResponseKey};
use idrecon::store::StoreOptions;
use serde_json::{Value, json};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test]
async fn spec_worked_examples_from_the_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let requests = std::fs::read_to_string(data_file("spec-requests.jsonl")).unwrap();
    let expected = std::fs::read_to_string(data_file("spec-expected.jsonl")).unwrap();
    let pairs: Vec<(&str, &str)> = requests.lines().zip(expected.lines()).collect();
    assert_eq!(pairs.len(), 8);
    for (request, expected) in pairs {
        let request: Value = serde_json::from_str(request).unwrap();
        let expected: Value = serde_json::from_str(expected).unwrap();
        let (status, answer) = app.identify(&request).await;
        assert_eq!(status, 200, "{request}");
        assert_eq!(answer, expected, "{request}");
    }
    app.stop().await;
}

#[tokio::test]
async fn spec_table_step_by_step_with_rows() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let lorraine = "lorraine@hillvalley.edu";
    let mcfly = "mcfly@hillvalley.edu";

    let (_, a) = app
        .identify(&json!({"email": lorraine, "phoneNumber": "123456"}))
        .await;
    assert_eq!(summary(&a), (1, s(&[lorraine]), s(&["123456"]), vec![]));
    let (_, a) = app
        .identify(&json!({"email": mcfly, "phoneNumber": "123456"}))
        .await;
    assert_eq!(
        summary(&a),
        (1, s(&[lorraine, mcfly]), s(&["123456"]), vec![2])
    );
    for body in [
        json!({"email": null, "phoneNumber": "123456"}),
        json!({"email": lorraine}),
        json!({"email": mcfly, "phoneNumber": null}),
    ] {
        let (_, a) = app.identify(&body).await;
        assert_eq!(
            summary(&a),
            (1, s(&[lorraine, mcfly]), s(&["123456"]), vec![2]),
            "{body}"
        );
    }
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["linkedId"], 1);
    assert_eq!(rows[1]["linkPrecedence"], "secondary");

    let (_, a) = app
        .identify(&json!({"email": "george@hillvalley.edu", "phoneNumber": "919191"}))
        .await;
    assert_eq!(summary(&a).0, 3);
    let (_, a) = app
        .identify(&json!({"email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"}))
        .await;
    assert_eq!(summary(&a).0, 4);
    let (_, before) = app.get("/contacts/4").await;
    assert_eq!(before["linkPrecedence"], "primary");
    let (_, a) = app
        .identify(&json!({"email": "george@hillvalley.edu", "phoneNumber": "717171"}))
        .await;
    assert_eq!(
        summary(&a),
        (
            3,
            s(&["george@hillvalley.edu", "biffsucks@hillvalley.edu"]),
            s(&["919191", "717171"]),
            vec![4]
        )
    );
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 4, "a merge alone inserts no row");
    let (_, row4) = app.get("/contacts/4").await;
    assert_eq!(row4["linkPrecedence"], "secondary");
    assert_eq!(row4["linkedId"], 3);
    assert_eq!(row4["createdAt"], before["createdAt"]);
    assert!(row4["updatedAt"].as_str().unwrap() >= before["updatedAt"].as_str().unwrap());
    assert_ne!(row4["updatedAt"], Value::Null);
    // Columns come in the Contact table's order (checked on the raw text: Value sorts keys).
    let text = app
        .client
        .get(format!("{}/contacts/4", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let columns = [
        "id",
        "phoneNumber",
        "email",
        "linkedId",
        "linkPrecedence",
        "createdAt",
        "updatedAt",
        "deletedAt",
    ];
    let positions: Vec<usize> = columns
        .iter()
        .map(|c| text.find(&format!("\"{c}\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn normalization_matches_variants_as_one_value() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let (_, a) = app
        .identify(&json!({"email": "  Doc@Brown.COM ", "phoneNumber": 5551234}))
        .await;
    assert_eq!(
        summary(&a),
        (1, s(&["doc@brown.com"]), s(&["5551234"]), vec![])
    );
    let (_, b) = app
        .identify(&json!({"email": "doc@brown.com", "phoneNumber": " 5551234 "}))
        .await;
    assert_eq!(a, b);
    assert_eq!(app.all_rows().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn response_key_spellings() {
    for (key, present, absent) in [
        (
            ResponseKey::PrimaryContactId,
            vec!["primaryContactId"],
            vec!["primaryContatctId"],
        ),
        (
            ResponseKey::PrimaryContatctId,
            vec!["primaryContatctId"],
            vec!["primaryContactId"],
        ),
        (
            ResponseKey::Both,
            vec!["primaryContactId", "primaryContatctId"],
            vec![],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let http = HttpOptions {
            response_key: key,
            ..HttpOptions::default()
        };
        let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
        let (_, a) = app.identify(&json!({"email": "a@b.c"})).await;
        for k in present {
            assert_eq!(a["contact"][k], 1, "{key:?}");
        }
        for k in absent {
            assert!(a["contact"].get(k).is_none(), "{key:?}");
        }
        app.stop().await;
    }
}

async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url))
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body {text:?} for {path}"));
    (status, body)
}

/// The body limit (16 KiB by default, docs/behaviour.md §4) counts the whole body: a body of
/// exactly the limit is read, one byte more is `413` (`hostile_input.rs` sends a chunked one).
#[tokio::test]
async fn the_body_limit_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let padded = |len: usize| {
        let mut body = br#"{"email":"limit@example.com"}"#.to_vec();
        body.resize(len, b' ');
        body
    };
    let json_ct = Some("application/json");
    let (status, answer) = raw(&app, "POST", "/identify", json_ct, padded(16 * 1024)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = raw(&app, "POST", "/identify", json_ct, padded(16 * 1024 + 1)).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (413, &json!("payload_too_large"))
    );
}

#[tokio::test]
async fn errors_are_json_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    app.identify(&json!({"email": "keep@me.com", "phoneNumber": "1"}))
        .await;
    let json_ct = Some("application/json");
    // (method, path, content type, body, expected status, expected error code)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/identify",
            json_ct,
            b"{".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            b"[]".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            b"{}".to_vec(),
            400,
            "missing_contact",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            br#"{"email":"no-at"}"#.to_vec(),
            400,
            "invalid_email",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            br#"{"email":"a@b","phoneNumber":1e5}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            br#"{"phoneNumber":-5}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            br#"{"phoneNumber":"12#"}"#.to_vec(),
            400,
            "invalid_phone_number",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            b"{\"email\":\"\xff@x.y\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/identify",
            None,
            br#"{"email":"a@b.c"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/identify",
            Some("text/plain"),
            br#"{"email":"a@b.c"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/identify",
            json_ct,
            vec![b' '; 17 * 1024],
            413,
            "payload_too_large",
        ),
        ("GET", "/identify", None, vec![], 405, "method_not_allowed"),
        ("GET", "/nope", None, vec![], 404, "not_found"),
        (
            "GET",
            "/contacts/abc",
            None,
            vec![],
            400,
            "invalid_path_parameter",
        ),
        (
            "GET",
            "/contacts/0",
            None,
            vec![],
            400,
            "invalid_path_parameter",
        ),
        (
            "GET",
            "/contacts/%FF",
            None,
            vec![],
            400,
            "invalid_path_parameter",
        ),
        (
            "GET",
            "/contacts/-1",
            None,
            vec![],
            400,
            "invalid_path_parameter",
        ),
        ("GET", "/contacts/99", None, vec![], 404, "not_found"),
        (
            "GET",
            "/contacts?limit=0",
            None,
            vec![],
            400,
            "invalid_query_parameter",
        ),
        (
            "GET",
            "/contacts?limit=10001",
            None,
            vec![],
            400,
            "invalid_query_parameter",
        ),
        (
            "GET",
            "/contacts?after=x",
            None,
            vec![],
            400,
            "invalid_query_parameter",
        ),
    ];
    for (method, path, ct, body, status, code) in cases {
        let (got, answer) = raw(&app, method, path, ct, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{method} {path}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, answer) = raw(
        &app,
        "POST",
        "/identify",
        json_ct,
        br#"{"email":"a@@b"}"#.to_vec(),
    )
    .await;
    assert_eq!(answer["error"]["field"], "email");
    // The error shape of docs/behaviour.md §4, keys in its order: code, message, field.
    let text = app
        .client
        .post(format!("{}/identify", app.url))
        .header("content-type", "application/json")
        .body(r#"{"email":"a@@b"}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        "{\"error\":{\"code\":\"invalid_email\",\"message\":\"email must contain exactly one '@'\",\"field\":\"email\"}}\n"
    );
    let (status, _) = raw(
        &app,
        "POST",
        "/identify",
        Some("application/json; charset=utf-8"),
        br#"{"email":"keep@me.com"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "charset parameter is fine");
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 1, "no error changed anything");
    app.stop().await;
}

#[tokio::test]
async fn listing_pages_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    for i in 0..25 {
        app.identify(&json!({"email": format!("c{i}@x.io")})).await;
    }
    let (status, page) = app.get("/contacts?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(page["contacts"].as_array().unwrap().len(), 10);
    assert_eq!(page["next"], 10);
    let (_, page) = app.get("/contacts?after=20").await;
    let ids: Vec<u64> = page["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![21, 22, 23, 24, 25]);
    assert_eq!(page["next"], Value::Null);
    let (_, page) = app.get("/contacts?after=20&limit=5").await;
    assert_eq!(
        page["next"],
        Value::Null,
        "an exactly full last page has no next"
    );
    assert_eq!(app.all_rows().await.len(), 25);
    let (status, health) = app.get("/healthz").await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_identical_new_requests_in_parallel_create_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(TestApp::spawn(dir.path()).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.identify(&json!({"email": "same@new.com", "phoneNumber": "42"}))
                .await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200);
        answers.push(answer);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        summary(&answers[0]),
        (1, s(&["same@new.com"]), s(&["42"]), vec![])
    );
    assert_eq!(app.all_rows().await.len(), 1);
    let app = std::sync::Arc::try_unwrap(app).ok().expect("sole owner");
    app.stop().await;
}
