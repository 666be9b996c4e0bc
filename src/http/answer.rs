//! The JSON of a consolidated identity: `/identify`'s answer (SPEC.md §3 step 5), also served by
//! `GET /identities` and, with the identity's rows, `GET /identities/{contactId}` (issue 5).
//!
//! The answer has one fixed shape, so it is written directly rather than through serde's map
//! machinery: the keys are constant bytes, ids are formatted with `itoa`, and a value is copied
//! between quotes when it is ASCII and none of its bytes needs escaping. A value that is not
//! (non-ASCII text, a quote or a backslash, both legal in an email's local part; control
//! characters are refused by the normalizer) and the optional `rows` go through serde_json.
//! The bytes are exactly serde_json's for the same shape, which the tests below check against
//! `serde_json::json!` for arbitrary values. On a pure-read `/identify` this saves about 1 500 instructions of ~35 000
//! in user space: serde_json looks every byte of every key and value up in its escape table
//! (issue 3, BENCHMARKS.md).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::options::ResponseKey;
use crate::contact::{ContactId, ContactRow};
use crate::graph::{Identity, IdentityParts, stored_text};

/// Bytes of the per-thread answer buffer kept between answers: room for a typical answer
/// (about 300 bytes) with no regrowth while writing.
const SCRATCH_KEPT: usize = 512;

/// `{"contact": {...}}` with the configured primary key spelling (SPEC.md §3 step 5), from an
/// owned [`Identity`] or from an [`crate::graph::IdentityView`] read in place.
pub struct IdentifyAnswer<'a, I: IdentityParts = Identity> {
    /// The identity to render.
    pub identity: &'a I,
    /// Which key spelling(s) to use.
    pub key: ResponseKey,
    /// With `Some`, a `rows` member follows `contact` (`GET /identities/{contactId}`).
    pub rows: Option<&'a [ContactRow]>,
}

impl<I: IdentityParts> IdentifyAnswer<'_, I> {
    /// The answer as compact JSON: `{"contact":{"primaryContactId":1,"emails":[...],
    /// "phoneNumbers":[...],"secondaryContactIds":[...]}}`, with `primaryContatctId` instead
    /// of or after `primaryContactId` as `key` says, and `,"rows":[...]` before the last brace
    /// when `rows` is set.
    ///
    /// The vector's capacity is its length: it is written into a per-thread scratch buffer and
    /// copied out at its exact size, so that `Bytes::from` takes it over as it is. A vector
    /// with spare capacity costs `Bytes` a second allocation for its shared header, and its
    /// drop a second free (issue 3: about 150 instructions per answer against a 150-byte copy,
    /// BENCHMARKS.md seventeenth pass).
    ///
    /// # Errors
    /// A serde_json error if serializing `rows` fails (it cannot for [`ContactRow`]s, whose
    /// fields are strings, numbers and nulls).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(SCRATCH_KEPT));
        }
        SCRATCH
            .try_with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut scratch) => {
                    scratch.clear();
                    let written = self.write_json(&mut scratch);
                    let json = scratch.as_slice().to_vec();
                    if scratch.capacity() > SCRATCH_KEPT {
                        // A large answer (an identity's rows) does not pin its memory.
                        *scratch = Vec::with_capacity(SCRATCH_KEPT);
                    }
                    written.map(|()| json)
                }
                Err(_) => self.to_json_unbuffered(),
            })
            .unwrap_or_else(|_| self.to_json_unbuffered())
    }

    /// [`IdentifyAnswer::to_json`] without the scratch buffer (when it is in use or gone:
    /// during the thread's exit).
    fn to_json_unbuffered(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(SCRATCH_KEPT);
        self.write_json(&mut out)?;
        Ok(out)
    }

    /// [`IdentifyAnswer::to_json`], appended to `out`.
    ///
    /// # Errors
    /// As [`IdentifyAnswer::to_json`]; `out` then holds a partial answer.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let identity = self.identity;
        let mut number = itoa::Buffer::new();
        let primary_id = number.format(identity.primary_contact_id()).as_bytes();
        out.extend_from_slice(b"{\"contact\":{");
        if self.key != ResponseKey::PrimaryContatctId {
            out.extend_from_slice(b"\"primaryContactId\":");
            out.extend_from_slice(primary_id);
            if self.key == ResponseKey::Both {
                out.push(b',');
            }
        }
        if self.key != ResponseKey::PrimaryContactId {
            out.extend_from_slice(b"\"primaryContatctId\":");
            out.extend_from_slice(primary_id);
        }
        out.extend_from_slice(b",\"emails\":");
        write_strings(out, identity.emails())?;
        out.extend_from_slice(b",\"phoneNumbers\":");
        write_strings(out, identity.phone_numbers())?;
        out.extend_from_slice(b",\"secondaryContactIds\":[");
        for (i, id) in identity.secondary_contact_ids().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(number.format(id).as_bytes());
        }
        out.extend_from_slice(b"]}");
        if let Some(rows) = self.rows {
            out.extend_from_slice(b",\"rows\":");
            serde_json::to_writer(&mut *out, rows)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// A JSON array of strings (RFC 8259 §7) from values' UTF-8 bytes ([`IdentityParts`]).
fn write_strings<'s>(
    out: &mut Vec<u8>,
    values: impl Iterator<Item = &'s [u8]>,
) -> Result<(), serde_json::Error> {
    out.push(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if is_plain(value) {
            out.push(b'"');
            out.extend_from_slice(value);
            out.push(b'"');
        } else {
            serde_json::to_writer(&mut *out, stored_text(value))?;
        }
    }
    out.push(b']');
    Ok(())
}

/// Whether `bytes` can be written between quotes as they are: all ASCII and none that must be
/// escaped in a JSON string ([`needs_escape`]). Anything else (non-ASCII text, whose UTF-8 is
/// checked, and values with a quote or a backslash) goes through serde_json. Eight bytes at a
/// time: a word has a byte with its high bit set when `x & 0x80…80` is non-zero; in a word
/// without one, a byte below 0x20 when `(x - 0x20…20) & !x & 0x80…80` is non-zero, and a byte
/// equal to `c` when the same test for "below 1" holds for `x ^ c…c` (the classic "has less
/// than" / "has zero byte" word tests, exact about whether such a byte exists). One pass
/// replaces the separate ASCII check of reading the value as text and the escape test (issue
/// 3, BENCHMARKS.md fifteenth and seventeenth passes).
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            return false;
        };
        let x = u64::from_ne_bytes(word);
        if x & HIGHS != 0
            || has_less(x, 0x20)
            || has_less(x ^ (ONES * u64::from(b'"')), 1)
            || has_less(x ^ (ONES * u64::from(b'\\')), 1)
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&byte| byte.is_ascii() && !needs_escape(byte))
}

/// Whether `byte` must be escaped in a JSON string (RFC 8259 §7: the quote, the backslash and
/// the control characters U+0000 to U+001F); serde_json escapes exactly these.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The `200` answer of `POST /identify` (SPEC.md §3 step 5): `{"contact": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"contact": {
    "primaryContactId": 1,
    "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
    "phoneNumbers": ["123456"],
    "secondaryContactIds": [23]
}}))]
pub struct IdentifyResponse {
    /// The consolidated identity.
    pub contact: IdentifiedContact,
}

/// A consolidated identity (SPEC.md §3 step 5).
///
/// The primary id's key is configurable (`--response-key`): `primaryContactId` by default,
/// `primaryContatctId` (the original task statement's spelling), or both with the same value.
/// The document served by a server marks its configured spelling(s) as required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentifiedContact {
    /// Id of the identity's primary (its oldest live contact). The default spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false, minimum = 1, example = 1)]
    pub primary_contact_id: Option<ContactId>,
    /// The same id under the original task statement's spelling; sent only with
    /// `--response-key primaryContatctId` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false, minimum = 1, example = 1)]
    pub primary_contatct_id: Option<ContactId>,
    /// Distinct emails of the identity's live contacts: the primary's first, then in the age
    /// order of the contact that first carried them. Never null entries.
    #[schema(example = json!(["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"]))]
    pub emails: Vec<String>,
    /// Distinct phone numbers, ordered like `emails`.
    #[schema(example = json!(["123456"]))]
    pub phone_numbers: Vec<String>,
    /// Every live secondary of the identity, in age order.
    #[schema(value_type = Vec<u64>, example = json!([23]))]
    pub secondary_contact_ids: Vec<ContactId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{ContactId, Email, Phone, Timestamp};
    use crate::graph::Identity;
    use proptest::prelude::*;
    use serde_json::json;

    /// The answer with every value written by serde_json, keys in the documented order: the
    /// reference the direct encoder must match byte for byte.
    fn expected(
        parts: (ContactId, &[String], &[String], &[ContactId]),
        key: ResponseKey,
        rows: Option<&[ContactRow]>,
    ) -> String {
        let (primary, emails, phones, secondaries) = parts;
        let text = |value: serde_json::Value| serde_json::to_string(&value).unwrap();
        let mut members = Vec::new();
        if key != ResponseKey::PrimaryContatctId {
            members.push(format!("\"primaryContactId\":{}", text(json!(primary))));
        }
        if key != ResponseKey::PrimaryContactId {
            members.push(format!("\"primaryContatctId\":{}", text(json!(primary))));
        }
        members.push(format!("\"emails\":{}", text(json!(emails))));
        members.push(format!("\"phoneNumbers\":{}", text(json!(phones))));
        members.push(format!(
            "\"secondaryContactIds\":{}",
            text(json!(secondaries))
        ));
        let rows = rows.map_or(String::new(), |rows| {
            format!(",\"rows\":{}", serde_json::to_string(rows).unwrap())
        });
        format!("{{\"contact\":{{{}}}{rows}}}", members.join(","))
    }

    /// An identity whose values are taken as stored, unchecked, like the arena's.
    fn owned(
        primary: ContactId,
        emails: &[String],
        phones: &[String],
        secondaries: &[ContactId],
    ) -> Identity {
        Identity {
            primary_contact_id: primary,
            emails: emails.iter().map(|e| Email::from_stored(e)).collect(),
            phone_numbers: phones.iter().map(|p| Phone::from_stored(p)).collect(),
            secondary_contact_ids: secondaries.to_vec(),
        }
    }

    const KEYS: [ResponseKey; 3] = [
        ResponseKey::PrimaryContactId,
        ResponseKey::PrimaryContatctId,
        ResponseKey::Both,
    ];

    #[test]
    fn writes_serde_json_bytes_for_every_key_spelling_with_and_without_rows() {
        let emails = [
            "lorraine@hillvalley.edu".to_owned(),
            "a\"b\\c\u{1}é".to_owned(),
        ];
        let phones = ["123456".to_owned()];
        let identity = owned(1, &emails, &phones, &[23, 24]);
        let row = ContactRow {
            id: 23,
            phone_number: None,
            email: Some(Email::from_stored("x@y.z")),
            linked_id: Some(1),
            link_precedence: crate::contact::LinkPrecedence::Secondary,
            created_at: Timestamp(5),
            updated_at: Timestamp(6),
            deleted_at: None,
        };
        for key in KEYS {
            for rows in [None, Some(std::slice::from_ref(&row))] {
                let answer = IdentifyAnswer {
                    identity: &identity,
                    key,
                    rows,
                };
                let written = String::from_utf8(answer.to_json().unwrap()).unwrap();
                assert_eq!(
                    written,
                    expected((1, &emails, &phones, &[23, 24]), key, rows)
                );
            }
        }
        let empty = owned(7, &[], &[], &[]);
        let answer = IdentifyAnswer {
            identity: &empty,
            key: ResponseKey::PrimaryContactId,
            rows: None,
        };
        assert_eq!(
            answer.to_json().unwrap(),
            br#"{"contact":{"primaryContactId":7,"emails":[],"phoneNumbers":[],"secondaryContactIds":[]}}"#
        );
    }

    /// The per-thread buffer is cleared between answers and given up after a large one:
    /// answers written after a large answer are byte-identical to fresh ones, and every answer
    /// comes out at its exact size.
    #[test]
    fn answers_after_a_large_one_are_unchanged() {
        let emails: Vec<String> = (0..40)
            .map(|i| format!("customer{i}@example.com"))
            .collect();
        let large = owned(
            9,
            &emails,
            &["123".to_owned()],
            &(10..50).collect::<Vec<_>>(),
        );
        let small = owned(1, &["a@b.c".to_owned()], &[], &[]);
        let answer = |identity| IdentifyAnswer {
            identity,
            key: ResponseKey::PrimaryContactId,
            rows: None,
        };
        let before = answer(&small).to_json().unwrap();
        let big = answer(&large).to_json().unwrap();
        assert!(big.len() > SCRATCH_KEPT);
        assert_eq!(
            String::from_utf8(big.clone()).unwrap(),
            expected(
                (
                    9,
                    &emails,
                    &["123".to_owned()],
                    &(10..50).collect::<Vec<_>>()
                ),
                ResponseKey::PrimaryContactId,
                None
            )
        );
        let after = answer(&small).to_json().unwrap();
        assert_eq!(before, after);
        assert_eq!(
            after,
            br#"{"contact":{"primaryContactId":1,"emails":["a@b.c"],"phoneNumbers":[],"secondaryContactIds":[]}}"#
        );
        for json in [&before, &big, &after] {
            assert_eq!(json.len(), json.capacity());
        }
    }

    /// The word-at-a-time test agrees with the byte-wise rule (ASCII and no escape) for every
    /// byte value at every position of the first two words and the tail, among plain bytes.
    #[test]
    fn rendered_answers_fit_the_documentation_shape() {
        let identity = Identity {
            primary_contact_id: 1,
            emails: vec![Email::parse("a@b.c").unwrap().unwrap()],
            phone_numbers: vec![Phone::parse("1").unwrap().unwrap()],
            secondary_contact_ids: vec![2],
        };
        for key in [
            ResponseKey::PrimaryContactId,
            ResponseKey::PrimaryContatctId,
            ResponseKey::Both,
        ] {
            let text = IdentifyAnswer {
                identity: &identity,
                key,
                rows: None,
            }
            .to_json()
            .unwrap();
            let parsed: IdentifyResponse = serde_json::from_slice(&text).unwrap();
            let id = Some(1);
            let (default, original) = match key {
                ResponseKey::PrimaryContactId => (id, None),
                ResponseKey::PrimaryContatctId => (None, id),
                ResponseKey::Both => (id, id),
            };
            assert_eq!(parsed.contact.primary_contact_id, default);
            assert_eq!(parsed.contact.primary_contatct_id, original);
            assert_eq!(parsed.contact.secondary_contact_ids, vec![2]);
        }
    }

    #[test]
    fn word_test_finds_every_byte_that_is_not_plain() {
        for len in [1, 7, 8, 9, 16, 19] {
            for position in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[position] = byte;
                    assert_eq!(
                        is_plain(&text),
                        byte.is_ascii() && !needs_escape(byte),
                        "byte {byte:#x} at {position} of {len}"
                    );
                }
            }
        }
        assert!(is_plain(b""));
        assert!(is_plain(b"\x7f~ !#[]abcdefgh@example.com"));
        assert!(!is_plain("lorraine.é@hillvalley.edu".as_bytes()));
    }

    proptest! {
        #[test]
        fn any_values_are_written_as_serde_json_writes_them(
            primary in any::<u64>(),
            emails in proptest::collection::vec(any::<String>(), 0..4),
            phones in proptest::collection::vec("[ -~\u{0}-\u{1f}\u{80}-\u{10ffff}]{0,12}", 0..4),
            secondaries in proptest::collection::vec(any::<u64>(), 0..4),
            key in 0..3usize,
        ) {
            let identity = owned(primary, &emails, &phones, &secondaries);
            let answer = IdentifyAnswer { identity: &identity, key: KEYS[key], rows: None };
            let written = String::from_utf8(answer.to_json().unwrap()).unwrap();
            prop_assert_eq!(
                written,
                expected((primary, &emails, &phones, &secondaries), KEYS[key], None)
            );
        }
    }
}
