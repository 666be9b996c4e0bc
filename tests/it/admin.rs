//! The admin guard through a real server on 127.0.0.1:0: with an admin token, the routes that
//! read or change rows or identities (single rows included) need `Authorization: Bearer <token>`
//! (401 `unauthorized` with `WWW-Authenticate: Bearer` otherwise) while `/identify`, `/healthz`,
//! `/metrics` and `/openapi.json` stay open; without one, everything is open.

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

    // Health, metrics and the API document are not admin routes.
    for path in ["/healthz", "/openapi.json"] {
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

/// Ids are sequential, so an open `GET /contacts/{id}` would let a loop read every customer's
/// email and phone number, deleted rows included (docs/behaviour.md §6.1, §6.12).
#[tokio::test]
async fn a_single_row_needs_the_token_when_one_is_set() {
    let (_dir, app) = spawn(Some(TOKEN)).await;
    for email in ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"] {
        let (status, _) = app.identify(&json!({"email": email})).await;
        assert_eq!(status, 200);
    }
    let deleted = app
        .client
        .delete(format!("{}/contacts/2", app.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    for path in [
        "/contacts/1",
        "/contacts/2",
        "/contacts/99",
        "/contacts/abc",
    ] {
        for authorization in [None, Some("Bearer wrong"), Some(TOKEN)] {
            let (status, challenge, body) = get(&app, path, authorization).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{path} {authorization:?}: {body}"
            );
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, row) = get(&app, "/contacts/1", Some(&bearer)).await;
    assert_eq!(
        (status, &row["email"]),
        (200, &json!("lorraine@hillvalley.edu"))
    );
    let (status, _, row) = get(&app, "/contacts/2", Some(&bearer)).await;
    assert_eq!(status, 200);
    assert!(row["deletedAt"].is_string(), "{row}");
    let (status, _, _) = get(&app, "/contacts/99", Some(&bearer)).await;
    assert_eq!(status, 404);
    // The document says so: the bearer scheme only, and a documented 401.
    let (_, _, doc) = get(&app, "/openapi.json", None).await;
    let operation = &doc["paths"]["/contacts/{id}"]["get"];
    assert_eq!(operation["security"], json!([{"admin_token": []}]));
    assert!(operation["responses"]["401"].is_object(), "{operation}");
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
    let (status, _, _) = get(&app, "/contacts/1", None).await;
    assert_eq!(status, 404);
    let (_, _, doc) = get(&app, "/openapi.json", None).await;
    for path in ["/contacts", "/contacts/{id}"] {
        assert_eq!(
            doc["paths"][path]["get"]["security"],
            json!([{}, {"admin_token": []}]),
            "{path}"
        );
    }
    app.stop().await;
}
