//! Unit tests of `contact`.

use super::*;

/// The clock reads like chrono's `Utc::now().timestamp_millis()`: between two chrono readings,
/// and truncated towards the past on both sides of the epoch.
#[test]
fn now_reads_milliseconds_like_chrono() {
    let before = Utc::now().timestamp_millis();
    let now = Timestamp::now().0;
    let after = Utc::now().timestamp_millis();
    assert!(
        before <= now && now <= after,
        "{before} <= {now} <= {after}"
    );
    let instants = [
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_nanos(1_999_999),
        UNIX_EPOCH + Duration::new(1_680_307_200, 374_900_000),
        UNIX_EPOCH - Duration::from_nanos(1),
        UNIX_EPOCH - Duration::from_micros(1_500),
        UNIX_EPOCH - Duration::from_millis(1_000),
        UNIX_EPOCH - Duration::new(86_400, 1),
    ];
    for instant in instants {
        let chrono = DateTime::<Utc>::from(instant).timestamp_millis();
        let ours = Timestamp::since_epoch(instant.duration_since(UNIX_EPOCH));
        assert_eq!(ours, Timestamp(chrono), "{instant:?}");
    }
}

#[test]
fn email_is_trimmed_and_lowercased() {
    let e = Email::parse("  Lorraine@HillValley.EDU \n")
        .unwrap()
        .unwrap();
    assert_eq!(e.as_str(), "lorraine@hillvalley.edu");
    let e = Email::parse("ÉMILE@Exemple.FR").unwrap().unwrap();
    assert_eq!(e.as_str(), "émile@exemple.fr");
}

#[test]
fn email_empty_is_absent() {
    assert_eq!(Email::parse("   ").unwrap(), None);
    assert_eq!(Email::parse("").unwrap(), None);
}

#[test]
fn email_rules() {
    for bad in ["a", "a@b@c", "@b", "a@", "a b@c", "a\u{7}@b", "a@b\u{a0}c"] {
        let err = Email::parse(bad).unwrap_err();
        assert_eq!(err.code, "invalid_email", "{bad:?}");
        assert_eq!(err.field, Some("email"));
    }
    let long = format!("{}@b.co", "a".repeat(249));
    assert_eq!(long.len(), 254);
    assert!(Email::parse(&long).unwrap().is_some());
    let too_long = format!("{}@b.co", "a".repeat(250));
    assert!(Email::parse(&too_long).is_err());
}

/// docs/behaviour.md §4: NFC before lowercasing, so a composed `é` and `e` + U+0301 are one
/// email, in any case.
#[test]
fn email_nfc_and_nfd_spellings_are_one_value() {
    let composed = "jos\u{e9}@x.fr";
    for spelling in [
        composed,
        "jose\u{301}@x.fr",
        "JOSE\u{301}@X.FR",
        "JOS\u{c9}@x.fr",
    ] {
        let email = Email::parse(spelling).unwrap().unwrap();
        assert_eq!(email.as_str(), composed, "{spelling:?}");
    }
    // Lowercasing can undo NFC (`H` + U+0331 has no composed capital): composed again.
    for spelling in ["H\u{331}@x.io", "h\u{331}@x.io", "\u{1e96}@x.io"] {
        let email = Email::parse(spelling).unwrap().unwrap();
        assert_eq!(email.as_str(), "\u{1e96}@x.io", "{spelling:?}");
    }
}

/// docs/behaviour.md §4: format characters (Cf) are refused anywhere in an email.
#[test]
fn email_format_characters_are_refused() {
    let format = [
        '\u{200b}',  // zero-width space
        '\u{200c}',  // zero-width non-joiner
        '\u{200d}',  // zero-width joiner
        '\u{2060}',  // word joiner
        '\u{feff}',  // byte order mark
        '\u{ad}',    // soft hyphen
        '\u{200e}',  // left-to-right mark
        '\u{202e}',  // right-to-left override
        '\u{2066}',  // left-to-right isolate
        '\u{e0041}', // tag letter A
    ];
    for c in format {
        for email in [
            format!("jo{c}e@x.fr"),
            format!("{c}joe@x.fr"),
            format!("joe@x.fr{c}"),
            format!("jos\u{e9}@{c}x.fr"),
        ] {
            let err = Email::parse(&email).unwrap_err();
            assert_eq!(err.code, "invalid_email", "{email:?}");
            assert_eq!(err.field, Some("email"));
            assert!(err.message.contains("format characters"), "{email:?}");
        }
    }
}

proptest::proptest! {
    /// Canonically equivalent spellings normalize alike, the result is NFC, and normalizing
    /// it again changes nothing (so an export imports back unchanged).
    #[test]
    fn email_normalization_is_canonical_and_idempotent(
        raw in "[a-zA-Z\u{c0}-\u{17f}\u{130}\u{131}\u{1e96}\u{1e9e}\u{300}-\u{36f}\u{1100}-\u{1112}\u{1161}-\u{1175}\u{ac00}-\u{ac10}]{1,8}@[a-zA-Z\u{e9}\u{301}\u{331}.]{1,6}|\
               [HJTWYIhjtwyi\u{130}\u{301}\u{307}\u{308}\u{30a}\u{30c}\u{316}\u{331}\u{344}]{1,6}@x\\.io",
    ) {
        use unicode_normalization::{UnicodeNormalization, is_nfc};
        let nfc: String = raw.nfc().collect();
        let nfd: String = raw.nfd().collect();
        let parsed = |text: &str| Email::parse(text).map(|e| e.map(|e| e.as_str().to_owned()));
        let from_raw = parsed(&raw);
        proptest::prop_assert_eq!(&parsed(&nfc), &from_raw);
        proptest::prop_assert_eq!(&parsed(&nfd), &from_raw);
        if let Ok(Some(email)) = &from_raw {
            proptest::prop_assert!(is_nfc(email));
            proptest::prop_assert_eq!(&parsed(email), &from_raw);
        }
    }

    /// The ASCII fast path of `Email::parse` decides exactly as the general rules do:
    /// the same normalized value, or the same error message.
    #[test]
    fn email_fast_path_matches_the_general_rules(
        raw in "[ -~\t\n\u{0}\u{7f}@]{0,40}|[a-zA-Z@. \u{e9}\u{a0}]{0,12}|[a@]{250,258}",
    ) {
        let trimmed = raw.trim();
        proptest::prop_assume!(!trimmed.is_empty());
        let general = Email::parse_general(trimmed);
        let parsed = Email::parse(&raw);
        proptest::prop_assert_eq!(
            parsed.as_ref().map(|e| e.as_ref().map(Email::as_str)).map_err(|e| &e.message),
            general.as_ref().map(|e| e.as_ref().map(Email::as_str)).map_err(|e| &e.message)
        );
    }

    /// The byte-wise fast path of `Phone::parse` decides exactly as the character-wise
    /// rules do.
    #[test]
    fn phone_fast_path_matches_the_general_rules(
        raw in "[ -~\t\u{0}]{0,36}|[0-9+ \u{661}\u{e9}]{0,34}",
    ) {
        let trimmed = raw.trim();
        proptest::prop_assume!(!trimmed.is_empty());
        let general = Phone::parse_general(trimmed);
        let parsed = Phone::parse(&raw);
        proptest::prop_assert_eq!(
            parsed.as_ref().map(|p| p.as_ref().map(Phone::as_str)).map_err(|e| &e.message),
            general.as_ref().map(|p| p.as_ref().map(Phone::as_str)).map_err(|e| &e.message)
        );
    }
}

#[test]
fn phone_rules() {
    assert_eq!(
        Phone::parse(" +1 (555) 010-9999 ")
            .unwrap()
            .unwrap()
            .as_str(),
        "+1 (555) 010-9999"
    );
    assert_eq!(
        Phone::parse("1-800-FLOWERS").unwrap().unwrap().as_str(),
        "1-800-FLOWERS"
    );
    assert_eq!(Phone::parse("  ").unwrap(), None);
    assert_eq!(
        Phone::parse(&"1".repeat(32))
            .unwrap()
            .unwrap()
            .as_str()
            .len(),
        32
    );
    for bad in ["1".repeat(33), "12#3".into(), "١٢٣".into(), "12\t3".into()] {
        let err = Phone::parse(&bad).unwrap_err();
        assert_eq!(err.code, "invalid_phone_number", "{bad:?}");
    }
    assert_eq!(Phone::from_u64(123456).as_str(), "123456");
    assert_eq!(Phone::from_u64(u64::MAX).as_str(), "18446744073709551615");
}

#[test]
fn timestamps_parse_both_forms_and_print_rfc3339_millis() {
    let a = Timestamp::parse("2023-04-01T00:00:00.374Z").unwrap();
    let b = Timestamp::parse("2023-04-01 00:00:00.374+00").unwrap();
    let c = Timestamp::parse("2023-04-01 05:30:00.374999+05:30").unwrap();
    let d = Timestamp::parse("2023-04-01 00:00:00.374").unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, d);
    assert_eq!(a.to_string(), "2023-04-01T00:00:00.374Z");
    assert!(Timestamp::parse("yesterday").is_err());
    assert!(Timestamp::parse("2023-13-01T00:00:00Z").is_err());
}

#[test]
fn row_json_uses_table_column_names() {
    let row = ContactRow {
        id: 1,
        phone_number: Phone::parse("123456").unwrap(),
        email: Email::parse("lorraine@hillvalley.edu").unwrap(),
        linked_id: None,
        link_precedence: LinkPrecedence::Primary,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        deleted_at: None,
    };
    let json = serde_json::to_string(&row).unwrap();
    assert_eq!(
        json,
        r#"{"id":1,"phoneNumber":"123456","email":"lorraine@hillvalley.edu","linkedId":null,"linkPrecedence":"primary","createdAt":"1970-01-01T00:00:00.000Z","updatedAt":"1970-01-01T00:00:00.000Z","deletedAt":null}"#
    );
    let back: ContactRow = serde_json::from_str(&json).unwrap();
    assert_eq!(back, row);
}
