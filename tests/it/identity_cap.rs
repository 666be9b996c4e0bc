//! The service's default identity size cap (docs/behaviour.md §3.6, §7): `serve` caps an
//! identity at 1 000 contacts unless told otherwise, `--max-identity-size 0` lifts the cap, and
//! an import that brings a larger identity imports it and says so.

use std::path::Path;
use std::time::Duration;

use crate::common::{Binary, idrecon};
use serde_json::json;

const HEADER: &str = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

/// A CSV of one identity of `n` contacts sharing the phone number `555000`.
fn one_identity_of(n: u64) -> String {
    let mut csv = format!("{HEADER}\n");
    for id in 1..=n {
        let (linked, precedence) = if id == 1 {
            (String::new(), "primary")
        } else {
            ("1".to_owned(), "secondary")
        };
        csv.push_str(&format!(
            "{id},555000,member{id}@example.com,{linked},{precedence},\
             2023-04-01 00:00:00+00,2023-04-01 00:00:00+00,\n"
        ));
    }
    csv
}

fn import(dir: &Path, file: &Path) -> std::process::Output {
    idrecon(&[
        "import",
        "--data-dir",
        dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ])
}

/// `/identify` with the identity's phone and a new email; returns the `x-idrecon-outcome`.
async fn grow(server: &Binary) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/identify", server.url))
        .json(&json!({"email": "newcomer@example.com", "phoneNumber": "555000"}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status().as_u16(), 200);
    response
        .headers()
        .get("x-idrecon-outcome")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn serve_caps_identities_at_1000_by_default_and_0_lifts_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.csv");
    std::fs::write(&file, one_identity_of(1_001)).unwrap();

    let capped = tmp.path().join("capped");
    let output = import(&capped, &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("warning: 1 identities have more than 1000 contacts (the largest has 1001)"),
        "{stderr}"
    );
    let server = Binary::start(&capped, &[]);
    assert_eq!(grow(&server).await, "refused");
    drop(server);

    let uncapped = tmp.path().join("uncapped");
    assert!(import(&uncapped, &file).status.success());
    let server = Binary::start(&uncapped, &["--max-identity-size", "0"]);
    assert_eq!(grow(&server).await, "new-secondary");
}

#[test]
fn an_import_within_the_default_cap_prints_no_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ok.csv");
    std::fs::write(&file, one_identity_of(1_000)).unwrap();
    let output = import(&tmp.path().join("data"), &file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
