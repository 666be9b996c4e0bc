//! The admin guard through a real server on 127.0.0.1:0: with an admin token, bulk routes need
//! `Authorization: Bearer <token>` (401 `unauthorized` with `WWW-Authenticate: Bearer`
//! otherwise) while the other routes stay open; without one, everything is open.

use crate::common::TestApp;
use idrecon::http::HttpOptions;
use idrecon::http::auth::AdminToken;
use idrecon::store::StoreOptions;
use serde_json::{Value, json};

const TOKEN: &str = "op3n-s3same_token";

async fn spawn(token: Option<&str>) -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        admin_token: token.map(|t| AdminToken::new(t).unwrap()),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    (dir, app)
}

/// GET `path` with an optional `Authorization` value: status, `WWW-Authenticate`, body.
async fn get(app: &TestApp, path: &str, authorization: Option<&str>) -> (u16, String, Value) {
    let mut request = app.client.get(format!("{}{path}", app.url));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn bulk_routes_need_the_token_when_one_is_set() {
    let (_dir, app) = spawn(Some(TOKEN)).await;
    let (status, _) = app
        .identify(&json!({"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}))
        .await;
    assert_eq!(status, 200, "/identify stays open");

    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer op3n-s3same_tokeN"),
        Some("Bearer op3n-s3same_token-and-more"),
        Some("Bearer "),
        Some("Basic b3BlbjpzZXNhbWU="),
        Some(TOKEN),
    ] {
        let (status, challenge, body) = get(&app, "/contacts", authorization).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(body["error"]["message"].is_string());
        if authorization.is_some() {
            assert!(challenge.contains("invalid_token"), "{challenge}");
        }
    }

    for authorization in [format!("Bearer {TOKEN}"), format!("bearer {TOKEN}")] {
        let (status, _, page) = get(&app, "/contacts", Some(&authorization)).await;
        assert_eq!(status, 200);
        assert_eq!(page["contacts"][0]["email"], "lorraine@hillvalley.edu");
    }

    // Single rows, health and the API document are not bulk routes.
    for path in ["/contacts/1", "/healthz", "/openapi.json"] {
        let (status, _, _) = get(&app, path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    // The document of a guarded server requires the token on admin routes.
    let (_, _, doc) = get(&app, "/openapi.json", None).await;
    assert_eq!(
        doc["paths"]["/contacts"]["get"]["security"],
        json!([{"admin_token": []}])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_token_bulk_routes_are_open() {
    let (_dir, app) = spawn(None).await;
    let (status, _, page) = get(&app, "/contacts", None).await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"contacts": [], "next": null}));
    // A client that sends a token anyway is not refused.
    let (status, _, _) = get(&app, "/contacts", Some("Bearer anything")).await;
    assert_eq!(status, 200);
    let (_, _, doc) = get(&app, "/openapi.json", None).await;
    assert_eq!(
        doc["paths"]["/contacts"]["get"]["security"],
        json!([{}, {"admin_token": []}])
    );
    app.stop().await;
}
