//! Parsing an `/identify` request body into an [`IdentifyRequest`] (docs/behaviour.md §3
//! request shape, §4 normalization and validation).
//!
//! The body must be a JSON object; `email` must be a string or null; `phoneNumber` a string, a
//! non-negative integer that fits in 64 bits written without fraction or exponent, or null.
//! Unknown keys are ignored; a duplicated known key is rejected (which of two values a client
//! meant is a guess this service does not make). Errors never echo parser internals.
//!
//! [`IdentifyRequestBody`] is the same shape for the OpenAPI document. The parser is a serde
//! visitor rather than a derive of that shape: it refuses a duplicated key, tells each field's
//! wrong type apart (for the error's code and field) and borrows text from the body. A field is
//! classified from its raw JSON text, so any valid JSON number, however large, is a wrong value
//! for its field rather than a body that is not JSON.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::contact::{Email, Phone, ValidationError};
use crate::graph::IdentifyRequest;
use crate::phone_region::Normalizer;

/// The JSON kind of one request field, as far as validation needs it. Text borrows the body
/// unless it had escapes (no allocation before normalization copies it).
#[derive(Debug, PartialEq, Eq)]
enum RawField<'de> {
    Null,
    Text(Cow<'de, str>),
    /// A non-negative integer literal that fits in `u64`.
    Integer(u64),
    /// Anything else: boolean, array, object, or a number that is negative, fractional, written
    /// with an exponent, or too large for `u64`.
    Other,
}

/// A field is taken as its raw JSON text and classified from that, rather than through
/// serde_json's number parsing: a valid JSON number too large for an `f64` (`1e400`, a
/// 400-digit phone number) is an error to that parser, which would make a valid body
/// `invalid_json` instead of a wrong value for its field.
impl<'de> Deserialize<'de> for RawField<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        RawField::classify(raw.get()).map_err(de::Error::custom)
    }
}

impl<'de> RawField<'de> {
    /// The kind of `text`, one JSON value as serde_json validated it while skipping it (no
    /// surrounding white space).
    ///
    /// # Errors
    /// Only if `text` is not a valid JSON string where it starts like one, which serde_json's
    /// validation rules out.
    fn classify(text: &'de str) -> Result<RawField<'de>, serde_json::Error> {
        Ok(match text.as_bytes().first() {
            Some(b'"') => match text.get(1..text.len() - 1) {
                Some(inner) if !inner.contains('\\') => RawField::Text(Cow::Borrowed(inner)),
                _ => RawField::Text(Cow::Owned(serde_json::from_str::<String>(text)?)),
            },
            Some(b'n') => RawField::Null,
            // Digits only, at most `u64::MAX`; a fraction, an exponent or more digits fail to
            // parse. A JSON number never starts with `+`, which `u64::from_str` would accept.
            Some(b'0'..=b'9') => text
                .parse::<u64>()
                .map_or(RawField::Other, RawField::Integer),
            _ => RawField::Other,
        })
    }
}

/// The body's two known fields; `None` when the key is absent.
#[derive(Debug, Default)]
struct RawBody<'de> {
    email: Option<RawField<'de>>,
    phone_number: Option<RawField<'de>>,
}

/// Messages of the data errors this module raises itself; anything else from serde_json is a
/// syntax error.
const NOT_AN_OBJECT: &str = "request body must be a JSON object";

impl<'de> Deserialize<'de> for RawBody<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = RawBody<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBody<'de>, A::Error> {
                let mut body = RawBody::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "email" => &mut body.email,
                        "phoneNumber" => &mut body.phone_number,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format!("duplicate key \"{key}\"")));
                    }
                    *slot = Some(map.next_value::<RawField>()?);
                }
                Ok(body)
            }
        }
        deserializer.deserialize_map(BodyVisitor)
    }
}

fn body_error(error: serde_json::Error) -> ValidationError {
    use serde_json::error::Category;
    let message = match error.classify() {
        Category::Data => {
            let text = error.to_string();
            if let Some(start) = text.find("duplicate key") {
                let end = text[start..]
                    .find(" at line")
                    .map_or(text.len(), |e| start + e);
                text[start..end].to_owned()
            } else {
                NOT_AN_OBJECT.to_owned()
            }
        }
        Category::Io | Category::Syntax | Category::Eof => return not_json(),
    };
    ValidationError::new("invalid_json", message, None)
}

fn not_json() -> ValidationError {
    ValidationError::new("invalid_json", "request body is not valid JSON", None)
}

fn email_field(
    raw: Option<RawField<'_>>,
    normalizer: &Normalizer,
) -> Result<Option<Email>, ValidationError> {
    match raw {
        None | Some(RawField::Null) => Ok(None),
        Some(RawField::Text(text)) => normalizer.email(&text),
        Some(RawField::Integer(_) | RawField::Other) => Err(ValidationError::new(
            "invalid_email",
            "email must be a string or null",
            Some("email"),
        )),
    }
}

fn phone_field(
    raw: Option<RawField<'_>>,
    normalizer: &Normalizer,
) -> Result<Option<Phone>, ValidationError> {
    match raw {
        None | Some(RawField::Null) => Ok(None),
        Some(RawField::Text(text)) => normalizer.phone(&text),
        Some(RawField::Integer(n)) => normalizer.phone_from_u64(n).map(Some),
        Some(RawField::Other) => Err(ValidationError::new(
            "invalid_phone_number",
            "phoneNumber must be a string, a non-negative integer or null",
            Some("phoneNumber"),
        )),
    }
}

/// Parses and validates an `/identify` body (docs/behaviour.md §3, §4), normalizing its values with
/// `normalizer` (docs/behaviour.md §4 alone with [`Normalizer::default`]; E.164 phones with a
/// `--phone-region`, see [`crate::phone_region`]).
///
/// # Errors
/// - `invalid_json`: not valid JSON, not a JSON object, or a duplicated `email`/`phoneNumber`;
/// - `invalid_email` / `invalid_phone_number` (with `field`): a wrong type or a value breaking
///   docs/behaviour.md §4 (or, with a phone region, a phone number that does not canonicalize);
/// - `missing_contact`: both values absent after normalization.
pub fn parse_identify_body(
    body: &[u8],
    normalizer: &Normalizer,
) -> Result<IdentifyRequest, ValidationError> {
    // One UTF-8 check of the whole body, then serde_json's `str` reader, which checks no string
    // again (its slice reader validates every key and value separately).
    let text = std::str::from_utf8(body).map_err(|_| not_json())?;
    let raw: RawBody = serde_json::from_str(text).map_err(body_error)?;
    let email = email_field(raw.email, normalizer)?;
    let phone = phone_field(raw.phone_number, normalizer)?;
    IdentifyRequest::new(email, phone)
}

/// The body of `POST /identify` (docs/behaviour.md §3, §4). Documentation shape: the service parses bodies
/// with its own strict parser (`parse_identify_body`), which also refuses duplicated
/// keys. At least one of the two values must be given and non-empty after trimming.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}))]
pub struct IdentifyRequestBody {
    /// An email: trimmed, lowercased; exactly one `@` with text on both sides, no whitespace
    /// or control characters, at most 254 bytes of UTF-8. Null, absent or empty: not given.
    #[serde(default)]
    #[schema(nullable, example = "mcfly@hillvalley.edu")]
    pub email: Option<String>,
    /// A phone number: a string of 1–32 digits, ASCII letters, spaces and `+ - ( ) .`, or a
    /// non-negative integer that fits in 64 bits (`123456` ≡ `"123456"`). Null, absent or
    /// empty: not given. On a server started with `--phone-region`, it must also be a valid
    /// number (read as a number of that region when it has no `+` country code) and is matched
    /// and stored in E.164 form (`+919876543210`).
    #[serde(default)]
    #[schema(nullable)]
    pub phone_number: Option<PhoneNumberInput>,
}

/// `phoneNumber` in a request: text, or a non-negative integer written without fraction or
/// exponent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PhoneNumberInput {
    /// The number as text, e.g. `"+1 (555) 010-0199"`.
    #[schema(example = "123456")]
    Text(String),
    /// The number as a JSON integer, stored as its decimal digits.
    #[schema(example = 123456)]
    Digits(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> (Option<String>, Option<String>) {
        let r = parse_identify_body(body.as_bytes(), &Normalizer::default()).unwrap();
        (
            r.email().map(|e| e.to_string()),
            r.phone().map(|p| p.to_string()),
        )
    }

    fn err(body: &str) -> ValidationError {
        parse_identify_body(body.as_bytes(), &Normalizer::default()).unwrap_err()
    }

    #[test]
    fn accepts_the_spec_shapes() {
        assert_eq!(
            ok(r#"{"email":"A@B.c","phoneNumber":"123456"}"#),
            (Some("a@b.c".into()), Some("123456".into()))
        );
        assert_eq!(
            ok(r#"{"email":null,"phoneNumber":123456}"#),
            (None, Some("123456".into()))
        );
        assert_eq!(ok(r#"{"email":"a@b.c"}"#), (Some("a@b.c".into()), None));
        // Escaped text is unescaped (serde_json hands it over owned, not borrowed).
        assert_eq!(
            ok(r#"{"email":"A\u0040b.c","phoneNumber":"12\u00333"}"#),
            (Some("a@b.c".into()), Some("1233".into()))
        );
        assert_eq!(
            ok(r#"{"email":"a@b.c","phoneNumber":"  ","extra":[1,{"x":2}]}"#),
            (Some("a@b.c".into()), None)
        );
        assert_eq!(
            ok(r#"{"phoneNumber":18446744073709551615}"#).1.as_deref(),
            Some("18446744073709551615")
        );
    }

    #[test]
    fn rejects_wrong_types_and_numbers() {
        for body in [
            r#"{"phoneNumber":1e5}"#,
            r#"{"phoneNumber":123456.0}"#,
            r#"{"phoneNumber":-1}"#,
            r#"{"phoneNumber":-0}"#,
            r#"{"phoneNumber":18446744073709551616}"#,
            r#"{"phoneNumber":1e400}"#,
            r#"{"phoneNumber":-1e400}"#,
            r#"{"phoneNumber":1.7976931348623157e309}"#,
            r#"{"phoneNumber":0.5}"#,
            r#"{"phoneNumber":1E2}"#,
            r#"{"phoneNumber":true}"#,
            r#"{"phoneNumber":[1]}"#,
            r#"{"phoneNumber":{"n":1}}"#,
        ] {
            let e = err(body);
            assert_eq!(
                (e.code, e.field),
                ("invalid_phone_number", Some("phoneNumber")),
                "{body}"
            );
        }
        for body in [
            r#"{"email":1}"#,
            r#"{"email":1e400}"#,
            r#"{"email":false}"#,
            r#"{"email":["a@b.c"]}"#,
        ] {
            let e = err(body);
            assert_eq!(
                (e.code, e.field),
                ("invalid_email", Some("email")),
                "{body}"
            );
        }
    }

    /// A valid JSON number of any size is a wrong phone number, not bad JSON: a 400-digit
    /// integer, with the other field valid and keys after it; the body is still checked whole.
    #[test]
    fn huge_numbers_are_wrong_values_not_bad_json() {
        let digits = "9".repeat(400);
        for body in [
            format!(r#"{{"phoneNumber":{digits}}}"#),
            format!(r#"{{"email":"a@b.c","phoneNumber":{digits},"x":1}}"#),
            format!(r#"{{"phoneNumber": -{digits} , "x":[1e999]}}"#),
        ] {
            let e = err(&body);
            assert_eq!(
                (e.code, e.field),
                ("invalid_phone_number", Some("phoneNumber")),
                "{body}"
            );
        }
        assert_eq!(ok(r#"{"phoneNumber":0}"#).1.as_deref(), Some("0"));
        assert_eq!(ok(r#"{"phoneNumber": 7 }"#).1.as_deref(), Some("7"));
        assert_eq!(
            ok(r#"{"email":"a@b.c","x":1e400}"#),
            (Some("a@b.c".into()), None)
        );
        assert_eq!(
            err(&format!(r#"{{"phoneNumber":{digits}"#)).code,
            "invalid_json"
        );
        assert_eq!(err(r#"{"phoneNumber":01}"#).code, "invalid_json");
    }

    #[test]
    fn rejects_bad_bodies_without_internals() {
        for body in [
            "",
            "nul",
            "[]",
            r#"["a@b.c","1"]"#,
            "\"x\"",
            "1",
            "{",
            r#"{"email":"a@b.c"} x"#,
        ] {
            let e = err(body);
            assert_eq!(e.code, "invalid_json", "{body}");
            assert!(!e.message.contains("line"), "{}", e.message);
        }
        let e = err(r#"{"email":"a@b.c","email":"c@d.e"}"#);
        assert_eq!(e.code, "invalid_json");
        assert_eq!(e.message, "duplicate key \"email\"");
        // Deep nesting never overflows the stack: under an ignored key it is skipped, as a value
        // it is a type error, at the top level it is not an object.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(err(&format!("{{\"x\":{deep}}}")).code, "missing_contact");
        assert_eq!(err(&format!("{{\"email\":{deep}}}")).code, "invalid_email");
        assert_eq!(err(&deep).code, "invalid_json");
        // A body that is not UTF-8 is not JSON (RFC 8259 §8.1), wherever the bad bytes are,
        // an ignored value included.
        for body in [
            &b"{\"email\":\"\xff@b.c\"}"[..],
            b"{\"x\":\"\xff\",\"email\":\"a@b.c\"}",
            b"{\"email\":\"a@b.c\"}\xc3",
        ] {
            let e = parse_identify_body(body, &Normalizer::default()).unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str()),
                ("invalid_json", "request body is not valid JSON")
            );
        }
    }

    #[test]
    fn both_absent_is_missing_contact() {
        for body in [
            "{}",
            r#"{"email":null,"phoneNumber":null}"#,
            r#"{"email":"  ","phoneNumber":""}"#,
        ] {
            assert_eq!(err(body).code, "missing_contact", "{body}");
        }
    }
}
