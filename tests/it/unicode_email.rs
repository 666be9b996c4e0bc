//! Unicode emails (docs/behaviour.md §4): NFC before lowercasing, so composed and decomposed
//! spellings are one email, and format characters (Cf) refused with `invalid_email`; through
//! `/identify`, the `GET /identities` lookup, and the real binary's `import`.

use crate::common::{TestApp, idrecon, summary};
use serde_json::json;

/// `josé@x.fr` with a composed `é` (U+00E9): Normalization Form C.
const NFC: &str = "jos\u{e9}@x.fr";
/// The same email with `e` + U+0301 (combining acute accent): Normalization Form D.
const NFD: &str = "jose\u{301}@x.fr";

/// Format characters (General Category Cf) that make look-alike emails.
const FORMAT_CHARACTERS: [(char, &str); 6] = [
    ('\u{200b}', "zero-width space"),
    ('\u{200d}', "zero-width joiner"),
    ('\u{feff}', "byte order mark"),
    ('\u{ad}', "soft hyphen"),
    ('\u{202e}', "right-to-left override"),
    ('\u{2066}', "left-to-right isolate"),
];

/// Percent-encodes every byte outside the URL's unreserved characters (and `@`).
fn query_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn nfc_and_nfd_spellings_are_one_identity() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    let (status, first) = app
        .identify(&json!({"email": NFC, "phoneNumber": "111"}))
        .await;
    assert_eq!(status, 200, "{first}");
    // The decomposed spelling, in upper case too, with a new phone: new information for the
    // same identity, not a new customer.
    for (email, phone) in [(NFD, "222"), ("JOSE\u{301}@X.FR", "333")] {
        let (status, answer) = app
            .identify(&json!({"email": email, "phoneNumber": phone}))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(summary(&answer).0, 1, "{email:?}: {answer}");
        assert_eq!(summary(&answer).1, vec![NFC.to_owned()], "{email:?}");
    }
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row["email"] == NFC), "{rows:?}");
    // The lookup normalizes its query the same way.
    let (status, found) = app
        .get(&format!("/identities?email={}", query_value(NFD)))
        .await;
    assert_eq!((status, summary(&found).0), (200, 1), "{found}");
    app.stop().await;
}

#[tokio::test]
async fn format_characters_inside_an_email_are_invalid_email() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    app.identify(&json!({"email": "joe@x.fr", "phoneNumber": "1"}))
        .await;
    let lsn = app.store.lsn();
    let rows = app.all_rows().await;
    for (c, name) in FORMAT_CHARACTERS {
        for email in [format!("jo{c}e@x.fr"), format!("joe@{c}x.fr")] {
            let (status, body) = app
                .identify(&json!({"email": email, "phoneNumber": "2"}))
                .await;
            assert_eq!(status, 400, "{name}: {body}");
            assert_eq!(body["error"]["code"], "invalid_email", "{name}: {body}");
            assert_eq!(body["error"]["field"], "email", "{name}");
            let (status, body) = app
                .get(&format!("/identities?email={}", query_value(&email)))
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("invalid_email")),
                "lookup, {name}: {body}"
            );
        }
    }
    assert_eq!(app.store.lsn(), lsn, "a refused email wrote nothing");
    assert_eq!(app.all_rows().await, rows);
    app.stop().await;
}

#[test]
fn import_normalizes_emails_the_same_way() {
    const HEADER: &str =
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";
    let t = "2024-01-01T00:00:00Z";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(
        &file,
        format!(
            "{HEADER}\n1,111,{NFC},,primary,{t},{t},\n2,222,{NFD},,primary,{t},{t},\n\
             3,333,JOSE\u{301}@X.FR,,primary,{t},{t},\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let output = idrecon(&["import", "--data-dir", data_arg, file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 3 rows into 1 identities (2 joined"),
        "the three spellings share one email: {stderr}"
    );
    let output = idrecon(&["export", "--data-dir", data_arg]);
    let csv = String::from_utf8(output.stdout).unwrap();
    let emails: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(emails, [NFC; 3], "{csv}");

    for (c, name) in FORMAT_CHARACTERS {
        let file = dir.path().join("format.csv");
        std::fs::write(
            &file,
            format!(
                "{HEADER}\n1,111,joe@x.fr,,primary,{t},{t},\n2,,jo{c}e@x.fr,,primary,{t},{t},\n"
            ),
        )
        .unwrap();
        let data = dir.path().join("refused");
        let output = idrecon(&[
            "import",
            "--data-dir",
            data.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} accepted");
        assert!(
            stderr.contains("line 3: email") && stderr.contains("format characters"),
            "{name}: {stderr}"
        );
        assert!(
            !data.join("snapshots").exists(),
            "{name}: something written"
        );
    }
}
