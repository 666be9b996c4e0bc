//! Small input rules of docs/behaviour.md §4 through a real server on 127.0.0.1:0: one spelling
//! per path id, UTF-8 as the only accepted charset, and any valid JSON number as a wrong phone
//! number rather than bad JSON; and every JSON answer ending in a newline (§6).

use crate::common::TestApp;
use serde_json::{Value, json};

/// `method path` with an optional `Content-Type` and body: status and parsed body.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.url))
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn path_ids_with_a_leading_zero_or_a_sign_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let (status, _) = app.identify(&json!({"email": "one@x.io"})).await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/contacts/1").await.0, 200);
    for (method, path, field) in [
        (reqwest::Method::GET, "/contacts/01", "id"),
        (reqwest::Method::GET, "/contacts/001", "id"),
        (reqwest::Method::GET, "/contacts/+1", "id"),
        (reqwest::Method::GET, "/contacts/%2B1", "id"),
        (reqwest::Method::DELETE, "/contacts/01", "id"),
        (reqwest::Method::GET, "/identities/01", "contactId"),
        (reqwest::Method::GET, "/identities/+1/history", "contactId"),
        (
            reqwest::Method::DELETE,
            "/identities/01?erase=true",
            "contactId",
        ),
    ] {
        let (status, _, body) = app.send(method.clone(), path).await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["field"].as_str()
            ),
            (400, Some("invalid_path_parameter"), Some(field)),
            "{method} {path}: {body}"
        );
    }
    // Nothing was deleted or erased.
    assert_eq!(app.get("/contacts/1").await.1["deletedAt"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn only_utf8_json_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let body = r#"{"email":"jos\u00e9@x.io"}"#;
    for content_type in [
        "application/json; charset=latin1",
        "application/json; charset=ISO-8859-1",
        "application/json; charset=utf-16",
        "application/json;charset=utf-8;charset=latin1",
    ] {
        let (status, answer) = send(
            &app,
            reqwest::Method::POST,
            "/identify",
            Some(content_type),
            body,
        )
        .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (415, Some("unsupported_media_type")),
            "{content_type}: {answer}"
        );
    }
    assert!(app.all_rows().await.is_empty(), "a refused body wrote");
    for content_type in [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "Application/JSON;Charset=\"Utf-8\"",
    ] {
        let (status, answer) = send(
            &app,
            reqwest::Method::POST,
            "/identify",
            Some(content_type),
            body,
        )
        .await;
        assert_eq!(status, 200, "{content_type}: {answer}");
        assert_eq!(answer["contact"]["emails"], json!(["josé@x.io"]));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_json_number_that_is_no_u64_is_an_invalid_phone_number() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let digits = "9".repeat(400);
    for body in [
        format!(r#"{{"phoneNumber":{digits}}}"#),
        format!(r#"{{"email":"a@b.c","phoneNumber":{digits}}}"#),
        r#"{"phoneNumber":18446744073709551616}"#.to_owned(),
        r#"{"phoneNumber":1e400}"#.to_owned(),
        r#"{"phoneNumber":-5}"#.to_owned(),
        r#"{"phoneNumber":12.5}"#.to_owned(),
        r#"{"phoneNumber":1e3}"#.to_owned(),
    ] {
        let (status, answer) = send(
            &app,
            reqwest::Method::POST,
            "/identify",
            Some("application/json"),
            &body,
        )
        .await;
        assert_eq!(
            (
                status,
                answer["error"]["code"].as_str(),
                answer["error"]["field"].as_str()
            ),
            (400, Some("invalid_phone_number"), Some("phoneNumber")),
            "{}: {answer}",
            &body[..body.len().min(60)]
        );
    }
    assert!(app.all_rows().await.is_empty(), "a refused body wrote");
    let (status, answer) = app
        .identify(&json!({"phoneNumber": 18446744073709551615u64}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["contact"]["phoneNumbers"],
        json!(["18446744073709551615"])
    );
    app.stop().await;
}

/// Every JSON answer, success or error, from a handler, the fallbacks, the body limit or the
/// OpenAPI document, ends in `\n` and still parses as JSON.
#[tokio::test]
async fn every_json_answer_ends_in_a_newline() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let json = Some("application/json");
    let big = " ".repeat(17 * 1024);
    let cases: Vec<(Method, &str, Option<&str>, &str, u16)> = vec![
        (
            Method::POST,
            "/identify",
            json,
            r#"{"email":"nl@x.io"}"#,
            200,
        ),
        (Method::POST, "/identify", json, r#"{"email":"x"}"#, 400),
        (Method::POST, "/identify", json, "{", 400),
        (Method::POST, "/identify", Some("text/plain"), "{}", 415),
        (Method::POST, "/identify", json, &big, 413),
        (Method::GET, "/identify", None, "", 405),
        (Method::GET, "/no/such/route", None, "", 404),
        (Method::GET, "/contacts/1", None, "", 200),
        (Method::GET, "/contacts/01", None, "", 400),
        (Method::GET, "/contacts?limit=2", None, "", 200),
        (Method::GET, "/identities/1", None, "", 200),
        (Method::GET, "/identities/1/history", None, "", 200),
        (Method::GET, "/identities?email=nl@x.io", None, "", 200),
        (Method::GET, "/healthz", None, "", 200),
        (Method::GET, "/openapi.json", None, "", 200),
        (Method::POST, "/admin/compact", None, "", 200),
    ];
    for (method, path, content_type, body, status) in cases {
        let mut request = app
            .client
            .request(method.clone(), format!("{}{path}", app.url))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("request sent");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let text = response.text().await.expect("body");
        assert!(text.ends_with('\n'), "{method} {path}: {text:?}");
        assert!(
            !text[..text.len() - 1].contains('\n'),
            "{method} {path}: one line"
        );
        let parsed: Result<Value, _> = serde_json::from_str(&text);
        assert!(parsed.is_ok(), "{method} {path}: not JSON: {text:?}");
    }
    app.stop().await;
}
