//! The OpenAPI 3.1 document at `GET /openapi.json`, through a real server on 127.0.0.1:0: it
//! lists exactly the routes the router serves, every error status of every route has the
//! error-envelope schema and an example, every example validates against its schema, and real
//! answers of the server validate against the documented schemas (JSON Schema 2020-12, the
//! dialect of OpenAPI 3.1).

use std::collections::BTreeSet;

use crate::common::TestApp;
use idrecon::http::{HttpOptions, ResponseKey};
use idrecon::store::StoreOptions;
use serde_json::{Value, json};

/// Whether this build serves `GET /metrics` (docs/behaviour.md §6.10); the document lists it
/// regardless. When true, `/metrics` is probed like every other route; when false, the test
/// below checks that it is indeed not served.
const METRICS_SERVED: bool = true;

/// Every route the router serves, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/identify"),
    ("get", "/contacts/{id}"),
    ("get", "/contacts"),
    ("get", "/healthz"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
    ("get", "/identities"),
    ("get", "/identities/{contactId}"),
    ("delete", "/identities/{contactId}"),
    ("get", "/identities/{contactId}/history"),
    ("delete", "/contacts/{id}"),
    ("post", "/admin/compact"),
    ("get", "/identities/{contactId}/links"),
    ("post", "/identities/{contactId}/split"),
    ("get", "/admin/blocked-values"),
    ("post", "/admin/blocked-values"),
    ("delete", "/admin/blocked-values"),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                found.insert((method.clone(), path.clone()));
            }
        }
    }
    found
}

async fn fetch_document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.expect("JSON document")
}

async fn spawn(key: ResponseKey) -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        response_key: key,
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    (dir, app)
}

#[tokio::test]
async fn document_lists_exactly_the_routes_the_router_serves() {
    let (_dir, app) = spawn(ResponseKey::PrimaryContactId).await;
    let doc = fetch_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    // The served document is the one generated from the router's own route list.
    assert_eq!(
        doc,
        idrecon::http::openapi_document(&HttpOptions::default())
    );
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected);
    // A 401 must carry a challenge (RFC 9110 §15.5.2), and the server sends one
    // (`admin.rs`): every documented 401 says so.
    let mut unauthorized = 0;
    for (method, path) in ROUTES {
        if let Some(response) = doc["paths"][path][method]["responses"].get("401") {
            unauthorized += 1;
            assert!(
                response["headers"].get("WWW-Authenticate").is_some(),
                "{method} {path}: 401 without WWW-Authenticate"
            );
        }
    }
    assert!(
        unauthorized >= 7,
        "only {unauthorized} routes document a 401"
    );

    // Contacts 1–3 exist (three identities), so every documented operation can answer 2xx:
    // reads use 1, the deletion 2, the erasure 3.
    for (email, phone) in [
        ("doc@brown.edu", "1955"),
        ("marty@mcfly.com", "1985"),
        ("biff@tannen.com", "2015"),
    ] {
        let (status, _) = app
            .identify(&json!({"email": email, "phoneNumber": phone}))
            .await;
        assert_eq!(status, 200);
    }
    for (method, path) in ROUTES {
        let concrete = match (*method, *path) {
            ("get", "/identities") => "/identities?email=doc@brown.edu".to_owned(),
            ("delete", "/contacts/{id}") => "/contacts/2".to_owned(),
            ("delete", "/identities/{contactId}") => "/identities/3?erase=true".to_owned(),
            _ => path.replace("{id}", "1").replace("{contactId}", "1"),
        };
        let url = format!("{}{}", app.url, concrete);
        // The routes that block values take lists of them (docs/behaviour.md §10).
        let body = if path.ends_with("/split") || *path == "/admin/blocked-values" {
            json!({"emails": ["doc@brown.edu"]})
        } else {
            json!({"email": "doc@brown.edu"})
        };
        let request = match *method {
            "post" => app.client.post(&url).json(&body),
            "delete" if *path == "/admin/blocked-values" => app.client.delete(&url).json(&body),
            "delete" => app.client.delete(&url),
            _ => app.client.get(&url),
        };
        let status = request.send().await.expect("request sent").status();
        if *path == "/metrics" && !METRICS_SERVED {
            assert_eq!(
                status, 404,
                "GET /metrics is served now: set METRICS_SERVED = true in tests/openapi.rs"
            );
            continue;
        }
        assert!(
            status.is_success(),
            "{method} {path} is documented but answered {status}"
        );
        // No undocumented method hides on a documented path.
        for other in METHODS {
            if doc["paths"][path].get(*other).is_none() {
                let response = app
                    .client
                    .request(other.to_uppercase().parse().unwrap(), &url)
                    .send()
                    .await
                    .expect("request sent");
                assert_eq!(response.status(), 405, "{other} {path}");
            }
        }
    }
    app.stop().await;
}

/// A JSON Schema for `schema` inside `doc`: the schema itself with the document's `components`
/// beside it, so `$ref: "#/components/schemas/…"` resolves.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".into(), doc["components"].clone());
    }
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

fn assert_valid(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let validator = validator(doc, schema);
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: {instance} does not fit {schema}: {errors:?}"
    );
}

/// Every example of a media type object (`example` and `examples.*.value`).
fn media_examples(media: &Value) -> Vec<Value> {
    let mut examples: Vec<Value> = media.get("example").cloned().into_iter().collect();
    if let Some(named) = media.get("examples").and_then(Value::as_object) {
        examples.extend(named.values().filter_map(|e| e.get("value").cloned()));
    }
    examples
}

/// Validates every example of `doc` against its schema and checks that every error response
/// documents the error envelope. Returns how many examples were checked.
fn check_examples(doc: &Value) -> usize {
    let mut checked = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            assert_valid(doc, &reference, example, &format!("schema {name}"));
            checked += 1;
        }
    }
    for (method, path) in operations(doc) {
        let operation = &doc["paths"][&path][&method];
        let what = format!("{method} {path}");
        if let Some(content) = operation["requestBody"]["content"].as_object() {
            for media in content.values() {
                for example in media_examples(media) {
                    assert_valid(doc, &media["schema"], &example, &format!("{what} request"));
                    checked += 1;
                }
            }
        }
        let responses = operation["responses"].as_object().expect("responses");
        assert!(responses.contains_key("200"), "{what} documents no 200");
        assert!(
            responses.contains_key("408"),
            "{what} does not document the request timeout"
        );
        for (status, response) in responses {
            let content = response["content"].as_object().expect("content");
            if status.as_str() >= "400" {
                let media = &content["application/json"];
                assert_eq!(
                    media["schema"],
                    json!({"$ref": "#/components/schemas/ErrorEnvelope"}),
                    "{what} {status}"
                );
                assert!(
                    !media_examples(media).is_empty(),
                    "{what} {status} has no example"
                );
            }
            for media in content.values() {
                for example in media_examples(media) {
                    assert_valid(doc, &media["schema"], &example, &format!("{what} {status}"));
                    checked += 1;
                }
            }
        }
    }
    checked
}

#[tokio::test]
async fn every_example_validates_against_its_schema() {
    for key in [
        ResponseKey::PrimaryContactId,
        ResponseKey::PrimaryContatctId,
        ResponseKey::Both,
    ] {
        let (_dir, app) = spawn(key).await;
        let doc = fetch_document(&app).await;
        let checked = check_examples(&doc);
        assert!(checked >= 30, "only {checked} examples found");
        app.stop().await;
    }
}

fn response_schema(doc: &Value, method: &str, path: &str, status: &str) -> Value {
    doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"].clone()
}

#[tokio::test]
async fn real_answers_validate_against_the_documented_schemas() {
    let (_dir, app) = spawn(ResponseKey::PrimaryContactId).await;
    let doc = fetch_document(&app).await;
    let identify = response_schema(&doc, "post", "/identify", "200");
    let mut answers = Vec::new();
    for body in [
        json!({"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"email": "mcfly@hillvalley.edu", "phoneNumber": 123456}),
        json!({"phoneNumber": "123456"}),
    ] {
        let (status, answer) = app.identify(&body).await;
        assert_eq!(status, 200);
        assert_valid(&doc, &identify, &answer, "identify answer");
        answers.push(answer);
    }
    let row_schema = response_schema(&doc, "get", "/contacts/{id}", "200");
    for id in [1, 2] {
        let (status, row) = app.get(&format!("/contacts/{id}")).await;
        assert_eq!(status, 200);
        assert_valid(&doc, &row_schema, &row, "contact row");
    }
    let (status, page) = app.get("/contacts?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(page["next"], 1);
    assert_valid(
        &doc,
        &response_schema(&doc, "get", "/contacts", "200"),
        &page,
        "page",
    );
    let (_, health) = app.get("/healthz").await;
    assert_valid(
        &doc,
        &response_schema(&doc, "get", "/healthz", "200"),
        &health,
        "health",
    );
    for (path, status) in [("/contacts/abc", "400"), ("/contacts/99", "404")] {
        let (code, error) = app.get(path).await;
        assert_eq!(code.to_string(), status);
        assert_valid(
            &doc,
            &response_schema(&doc, "get", "/contacts/{id}", status),
            &error,
            path,
        );
    }
    // The identity routes (docs/behaviour.md §6.3–§6.7).
    let (status, found) = app.get("/identities?phoneNumber=123456").await;
    assert_eq!(status, 200);
    assert_valid(
        &doc,
        &response_schema(&doc, "get", "/identities", "200"),
        &found,
        "lookup",
    );
    let (status, identity) = app.get("/identities/1").await;
    assert_eq!(status, 200);
    assert_valid(
        &doc,
        &response_schema(&doc, "get", "/identities/{contactId}", "200"),
        &identity,
        "identity with rows",
    );
    let response = app
        .client
        .delete(format!("{}/contacts/2", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deleted: Value = response.json().await.unwrap();
    assert_valid(
        &doc,
        &response_schema(&doc, "delete", "/contacts/{id}", "200"),
        &deleted,
        "deleted contact",
    );
    let (status, history) = app.get("/identities/1/history").await;
    assert_eq!(status, 200);
    assert_eq!(history["events"].as_array().unwrap().len(), 3);
    assert_valid(
        &doc,
        &response_schema(&doc, "get", "/identities/{contactId}/history", "200"),
        &history,
        "history",
    );
    for (method, path, status) in [
        ("delete", "/identities/{contactId}", "200"),
        ("post", "/admin/compact", "200"),
    ] {
        let url = format!("{}{}", app.url, path.replace("{contactId}", "1?erase=true"));
        let request = if method == "post" {
            app.client.post(&url)
        } else {
            app.client.delete(&url)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_str(), status, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_valid(
            &doc,
            &response_schema(&doc, method, path, status),
            &body,
            path,
        );
    }
    let (_, error) = app.identify(&json!({"email": "doc@"})).await;
    assert_valid(
        &doc,
        &response_schema(&doc, "post", "/identify", "400"),
        &error,
        "identify error",
    );
    // The schema is strict enough to catch a wrong answer.
    let mut wrong = answers[0].clone();
    wrong["contact"]["emails"] = json!([null]);
    assert!(!validator(&doc, &identify).is_valid(&wrong));
    app.stop().await;
}

#[tokio::test]
async fn the_document_follows_the_configured_response_key() {
    let default_doc = idrecon::http::openapi_document(&HttpOptions::default());
    for key in [ResponseKey::PrimaryContatctId, ResponseKey::Both] {
        let (_dir, app) = spawn(key).await;
        let doc = fetch_document(&app).await;
        let (status, answer) = app
            .identify(&json!({"email": "a@b.c", "phoneNumber": "1"}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(answer["contact"]["primaryContatctId"], 1);
        let schema = response_schema(&doc, "post", "/identify", "200");
        assert_valid(&doc, &schema, &answer, "identify answer");
        let required = &doc["components"]["schemas"]["IdentifiedContact"]["required"];
        assert!(
            required
                .as_array()
                .unwrap()
                .contains(&json!("primaryContatctId"))
        );
        if key == ResponseKey::PrimaryContatctId {
            // The default document requires `primaryContactId`, which this server does not send.
            assert!(!validator(&default_doc, &schema).is_valid(&answer));
        }
        app.stop().await;
    }
}
