//! Opt-in phone canonicalization (`--phone-region`, `src/phone_region.rs`): through a real
//! server on 127.0.0.1:0, through the real binary's `import` and `--print-config`, and a
//! property test of the canonicalizer (never panics; idempotent on its E.164 output).

use crate::common::{TestApp, idrecon, summary};
use idrecon::http::HttpOptions;
use idrecon::phone_region::{Normalizer, PhoneRegion};
use idrecon::store::StoreOptions;
use proptest::prelude::*;
use serde_json::json;

fn india() -> PhoneRegion {
    "IN".parse().expect("IN is a region")
}

async fn spawn_in_region(dir: &std::path::Path) -> TestApp {
    let http = HttpOptions {
        normalizer: Normalizer::new(Some(india())),
        ..HttpOptions::default()
    };
    TestApp::spawn_with(dir, StoreOptions::default(), http).await
}

#[tokio::test]
async fn three_spellings_of_one_number_are_one_identity_with_region_in() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_in_region(dir.path()).await;
    let (status, a) = app
        .identify(&json!({"email": "asha@example.in", "phoneNumber": "+91 98765 43210"}))
        .await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = app
        .identify(&json!({"email": "asha.work@example.in", "phoneNumber": "098765 43210"}))
        .await;
    assert_eq!(status, 200, "{b}");
    // As a JSON integer too (docs/behaviour.md §4: 9876543210 ≡ "9876543210").
    let (status, c) = app
        .identify(&json!({"email": "asha.home@example.in", "phoneNumber": 9876543210u64}))
        .await;
    assert_eq!(status, 200, "{c}");
    let (status, d) = app.identify(&json!({"phoneNumber": "9876543210"})).await;
    assert_eq!(status, 200, "{d}");
    let expected = (
        1,
        vec![
            "asha@example.in".to_owned(),
            "asha.work@example.in".to_owned(),
            "asha.home@example.in".to_owned(),
        ],
        vec!["+919876543210".to_owned()],
        vec![2, 3],
    );
    assert_eq!(summary(&d), expected);
    let rows = app.all_rows().await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["phoneNumber"], "+919876543210", "{row}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_number_that_does_not_parse_is_a_400_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_in_region(dir.path()).await;
    let (status, _) = app
        .identify(&json!({"email": "asha@example.in", "phoneNumber": "9876543210"}))
        .await;
    assert_eq!(status, 200);
    let before = app.all_rows().await;
    for phone in [
        json!("not a phone"),
        json!("123456"),
        json!("+999 1234567"),
        json!("98765 43210 ext. 12"),
        json!(123456),
        json!("+91 98765 43210 98765 43210 9876"),
    ] {
        let (status, body) = app
            .identify(&json!({"email": "new@example.in", "phoneNumber": phone}))
            .await;
        assert_eq!(status, 400, "{phone}: {body}");
        assert_eq!(body["error"]["code"], "invalid_phone_number", "{body}");
        assert_eq!(body["error"]["field"], "phoneNumber", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Absent and empty stay absent, as in docs/behaviour.md §4.
    let (status, body) = app
        .identify(&json!({"email": "asha@example.in", "phoneNumber": "  "}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.identify(&json!({"phoneNumber": null})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_contact");
    assert_eq!(app.all_rows().await, before);
    app.stop().await;
}

#[tokio::test]
async fn without_a_region_phone_numbers_stay_as_spec_section_4_has_them() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    for phone in ["+91 98765 43210", "098765 43210", "9876543210", "123456"] {
        let (status, a) = app.identify(&json!({"phoneNumber": phone})).await;
        assert_eq!(status, 200, "{a}");
        assert_eq!(a["contact"]["phoneNumbers"], json!([phone]));
    }
    assert_eq!(app.all_rows().await.len(), 4);
    app.stop().await;
}

/// `idrecon import --data-dir DATA --phone-region REGION FILE` through the real binary.
fn import_in_region(
    data: &std::path::Path,
    file: &std::path::Path,
    region: &str,
) -> std::process::Output {
    idrecon(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        "--phone-region",
        region,
        file.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn import_with_a_region_canonicalizes_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(
        &file,
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n\
         1,+91 98765 43210,asha@example.in,,primary,2023-04-01 00:00:00.000+00,2023-04-01 00:00:00.000+00,\n\
         2,098765 43210,asha.work@example.in,,primary,2023-04-02 00:00:00.000+00,2023-04-02 00:00:00.000+00,\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let output = import_in_region(&data, &file, "in");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 2 rows into 1 identities"),
        "{stderr}"
    );

    let app = spawn_in_region(&data).await;
    let (status, a) = app.identify(&json!({"phoneNumber": 9876543210u64})).await;
    assert_eq!(status, 200);
    assert_eq!(
        summary(&a),
        (
            1,
            vec![
                "asha@example.in".to_owned(),
                "asha.work@example.in".to_owned()
            ],
            vec!["+919876543210".to_owned()],
            vec![2]
        )
    );
    app.stop().await;

    // A phone that does not parse stops the import, naming its line, and writes nothing.
    std::fs::write(
        &file,
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n\
         1,123456,lorraine@hillvalley.edu,,primary,2023-04-01 00:00:00.000+00,2023-04-01 00:00:00.000+00,\n",
    )
    .unwrap();
    let fresh = dir.path().join("fresh");
    let output = import_in_region(&fresh, &file, "IN");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("phoneNumber"),
        "{stderr}"
    );
    assert!(std::fs::read_dir(&fresh).map_or(true, |mut d| d.next().is_none()));
}

#[test]
fn the_flag_comes_from_the_config_file_and_unknown_regions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idrecon.toml");
    std::fs::write(&config, "phone_region = \"in\"\n").unwrap();
    let output = idrecon(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--print-config",
    ]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed
            .lines()
            .any(|l| l == "phone_region = \"in\"  # config file"),
        "{printed}"
    );
    // Unset by default.
    let output = idrecon(&["serve", "--print-config"]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        !printed.lines().any(|l| l.starts_with("phone_region =")),
        "{printed}"
    );

    let output = idrecon(&["serve", "--phone-region", "XX", "--print-config"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown phone region"), "{stderr}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary text never panics the canonicalizer, and every number it accepts is E.164 that
    /// canonicalizes to itself.
    #[test]
    fn canonicalizer_never_panics_and_is_idempotent(
        raw in prop_oneof![
            any::<String>(),
            "[+]?[0-9 ().-]{0,24}",
            "(\\+91|0|\\+1|\\+44|00)?[ -]?[6-9][0-9]{4}[ -]?[0-9]{5}",
            "[+0-9a-zA-Z .()-]{0,40}",
        ],
        region in prop::sample::select(vec!["IN", "US", "GB", "DE", "IT", "BR"]),
    ) {
        let region: PhoneRegion = region.parse().unwrap();
        let normalizer = Normalizer::new(Some(region));
        if let Ok(Some(phone)) = normalizer.phone(&raw) {
            let text = phone.as_str();
            prop_assert!(text.starts_with('+'));
            prop_assert!(text[1..].bytes().all(|b| b.is_ascii_digit()));
            prop_assert!((3..=16).contains(&text.len()));
            let again = normalizer.phone(text);
            prop_assert_eq!(again, Ok(Some(phone.clone())));
            // Another region reads an E.164 number the same way.
            let elsewhere = Normalizer::new(Some("US".parse().unwrap()));
            prop_assert_eq!(elsewhere.phone(text), Ok(Some(phone)));
        }
    }

    /// Integers (JSON numbers) never panic either, and agree with their decimal text.
    #[test]
    fn integer_phone_numbers_agree_with_their_digits(n in any::<u64>()) {
        let normalizer = Normalizer::new(Some(india()));
        prop_assert_eq!(
            normalizer.phone_from_u64(n).ok(),
            normalizer.phone(&n.to_string()).ok().flatten()
        );
    }
}
