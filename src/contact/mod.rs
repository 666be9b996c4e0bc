//! The Contact row and its value types (docs/behaviour.md §2 and §4).
//!
//! Every value that enters the service passes through a `parse` constructor here, so an
//! un-normalized email, an invalid phone number or an out-of-range timestamp cannot exist past
//! the edge of the system (the "parse, don't validate" habit of zero-to-production). The graph,
//! the log and the snapshot only ever see [`Email`], [`Phone`] and [`Timestamp`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// A contact's id: positive, assigned 1, 2, 3, … in insertion order and never reused
/// (docs/behaviour.md §2). Imported rows keep their ids, so ids may be sparse.
pub type ContactId = u64;

/// A point in time as milliseconds since the Unix epoch, UTC (docs/behaviour.md §2).
///
/// Serialized in JSON as RFC 3339 with millisecond precision and a `Z` suffix
/// (`2023-04-01T00:00:00.374Z`); inside the log and snapshots as the raw `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time, truncated to milliseconds (towards the past, as chrono's
    /// `timestamp_millis` does, for a clock set before 1970 too). Read from [`SystemTime`]
    /// directly: chrono's `Utc::now` builds a calendar date that `timestamp_millis` takes apart
    /// again, about 100 instructions of every `/identify` spent on nothing.
    pub fn now() -> Timestamp {
        Timestamp::since_epoch(SystemTime::now().duration_since(UNIX_EPOCH))
    }

    /// Milliseconds from a [`SystemTime::duration_since`] the epoch: `Ok` after it, `Err` (its
    /// duration) before it; saturating at the ends of `i64`.
    fn since_epoch(since: Result<Duration, std::time::SystemTimeError>) -> Timestamp {
        let millis = |d: Duration| {
            i64::try_from(d.as_secs())
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000)
        };
        match since {
            Ok(after) => Timestamp(millis(after).saturating_add(i64::from(after.subsec_millis()))),
            Err(before) => {
                let before = before.duration();
                // Towards the past: 1.5 ms before the epoch is -2 ms.
                let whole = millis(before)
                    .saturating_add(i64::from(before.subsec_nanos().div_ceil(1_000_000)));
                Timestamp(whole.saturating_neg())
            }
        }
    }

    /// Parses RFC 3339 (`2023-04-01T00:00:00.374Z`, any offset) or PostgreSQL's text form
    /// (`2023-04-01 00:00:00.374+00`, `…+05:30`, or without offset meaning UTC), as
    /// docs/behaviour.md §7 requires of imports. Sub-millisecond digits are truncated.
    ///
    /// # Errors
    /// [`ValidationError`] with code `invalid_timestamp` when the text is neither form or is
    /// outside the years 0–9999.
    pub fn parse(text: &str) -> Result<Timestamp, ValidationError> {
        let text = text.trim();
        let parsed = DateTime::parse_from_rfc3339(text)
            .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
            });
        match parsed {
            Ok(t) if (0..=9999).contains(&chrono::Datelike::year(&t)) => {
                Ok(Timestamp(t.timestamp_millis()))
            }
            _ => Err(ValidationError::new(
                "invalid_timestamp",
                format!(
                    "timestamp must be RFC 3339 or PostgreSQL text form, got {:?}",
                    truncate_for_message(text)
                ),
                None,
            )),
        }
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with milliseconds and `Z`; timestamps outside chrono's range print as the epoch
    /// (they cannot be constructed through [`Timestamp::parse`] or [`Timestamp::now`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = DateTime::<Utc>::from_timestamp_millis(self.0).unwrap_or_default();
        f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Timestamp::parse(&text).map_err(|e| serde::de::Error::custom(e.message))
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

/// A validation failure of one input value, rendered by the HTTP layer as
/// `{"error": {"code", "message", "field"}}` (docs/behaviour.md §4). The message never echoes
/// parser internals.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ValidationError {
    /// Stable machine-readable code, e.g. `invalid_email`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault, when there is one (`email`, `phoneNumber`, …).
    pub field: Option<&'static str>,
}

impl ValidationError {
    /// Builds an error from its three parts.
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        field: Option<&'static str>,
    ) -> Self {
        ValidationError {
            code,
            message: message.into(),
            field,
        }
    }
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The longest email accepted, in bytes of UTF-8 (docs/behaviour.md §4, after RFC 5321's path
/// limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// The longest phone number accepted, in characters (docs/behaviour.md §4).
pub const MAX_PHONE_CHARS: usize = 32;

/// A normalized, valid email address (docs/behaviour.md §4): trimmed, in Unicode Normalization
/// Form C and Unicode-lowercased, exactly one `@` with a non-empty part on each side, no white
/// space, control or format (Cf) characters, at most [`MAX_EMAIL_BYTES`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(Box<str>);

impl Email {
    /// Normalizes and validates `raw`. Returns `Ok(None)` when it is empty after trimming
    /// (docs/behaviour.md §4: empty → absent).
    ///
    /// # Errors
    /// `invalid_email` (field `email`) when the normalized text breaks a rule of
    /// docs/behaviour.md §4.
    pub fn parse(raw: &str) -> Result<Option<Email>, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.len() <= MAX_EMAIL_BYTES && trimmed.is_ascii() {
            return Email::parse_ascii(trimmed);
        }
        Email::parse_general(trimmed)
    }

    /// [`Email::parse_general`] for trimmed ASCII text of at most [`MAX_EMAIL_BYTES`] bytes, the
    /// usual case, in two tight passes instead of six: the general path took about 400 of the ~900
    /// instructions of a pure-read `/identify`. ASCII text is already in NFC and has no format
    /// characters, and ASCII lowercasing keeps every length and position, so the rules are checked
    /// on the text as given, in the same order and with the same messages as the general path (a
    /// property test below compares the two).
    fn parse_ascii(trimmed: &str) -> Result<Option<Email>, ValidationError> {
        let bytes = trimmed.as_bytes();
        // The ASCII white space characters are the space and controls (U+0000–U+001F, U+007F).
        let mut spaced = false;
        let mut ats = 0usize;
        for &b in bytes {
            spaced |= b <= b' ' || b == 0x7f;
            ats += usize::from(b == b'@');
        }
        let fail = |message: &str| Err(invalid_email(message));
        if spaced {
            return fail("email must not contain white space or control characters");
        }
        if ats != 1 {
            return fail("email must contain exactly one '@'");
        }
        if bytes.first() == Some(&b'@') || bytes.last() == Some(&b'@') {
            return fail("email must have a non-empty part on each side of '@'");
        }
        Ok(Some(Email(trimmed.to_ascii_lowercase().into_boxed_str())))
    }

    /// The rules of docs/behaviour.md §4 on any trimmed, non-empty text, Unicode included.
    fn parse_general(trimmed: &str) -> Result<Option<Email>, ValidationError> {
        let fail = |message: &str| Err(invalid_email(message));
        // Byte length is checked before normalizing too, so a huge value is not copied. Neither
        // NFC nor lowercasing shrinks text to a quarter of its bytes.
        if trimmed.len() > MAX_EMAIL_BYTES * 4 {
            return fail("email must be at most 254 bytes");
        }
        let lowered = if trimmed.is_ascii() {
            // ASCII text is already NFC, and ASCII lowercasing equals Unicode lowercasing on
            // it, without the tables.
            trimmed.to_ascii_lowercase()
        } else {
            nfc_lowercase(trimmed)
        };
        if lowered.len() > MAX_EMAIL_BYTES {
            return fail("email must be at most 254 bytes");
        }
        let (spaced, format) = if lowered.is_ascii() {
            // The ASCII white space characters are the space and controls; ASCII has no Cf.
            let spaced = lowered.bytes().any(|b| b == b' ' || b.is_ascii_control());
            (spaced, false)
        } else {
            let spaced = lowered.chars().any(|c| c.is_whitespace() || c.is_control());
            (spaced, lowered.chars().any(is_format_char))
        };
        if spaced {
            return fail("email must not contain white space or control characters");
        }
        if format {
            return fail(
                "email must not contain invisible format characters (zero-width characters, \
                 byte order marks, soft hyphens, bidirectional controls)",
            );
        }
        let mut parts = lowered.split('@');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => {
                if local.is_empty() || domain.is_empty() {
                    return fail("email must have a non-empty part on each side of '@'");
                }
            }
            _ => return fail("email must contain exactly one '@'"),
        }
        Ok(Some(Email(lowered.into_boxed_str())))
    }

    /// The normalized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An email read back from the graph's value arena, where only values that passed
    /// [`Email::parse`] are stored: not validated again.
    pub(crate) fn from_stored(text: &str) -> Email {
        Email(text.into())
    }

    /// Overwrites the text with zeros before freeing it (docs/behaviour.md §6.7: an erased
    /// value must not linger in freed heap memory).
    pub fn wipe(self) {
        zeroize::Zeroize::zeroize(&mut *self.0.into_boxed_bytes());
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `text` in Unicode Normalization Form C, then lowercased with Unicode case rules
/// (docs/behaviour.md §4), then in NFC again when lowercasing left it otherwise: `H` followed by
/// U+0331 (combining macron below) is NFC, but its lowercase `h` + U+0331 composes to U+1E96
/// `ẖ`. So the result is NFC, canonically equivalent spellings give the same result, and
/// normalizing a result again changes nothing (an export imported again keeps its values).
fn nfc_lowercase(text: &str) -> String {
    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
    let nfc = |text: &str| -> Option<String> {
        match is_nfc_quick(text.chars()) {
            IsNormalized::Yes => None,
            IsNormalized::No | IsNormalized::Maybe => Some(text.nfc().collect()),
        }
    };
    let composed = nfc(text);
    let lowered = composed.as_deref().unwrap_or(text).to_lowercase();
    nfc(&lowered).unwrap_or(lowered)
}

/// Whether `c` is a format character (Unicode General Category Cf: zero-width spaces and
/// joiners, the byte order mark, the soft hyphen, bidirectional controls, …), which
/// docs/behaviour.md §4 refuses in an email: invisible, they make look-alike identities.
fn is_format_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !c.is_ascii() && c.general_category() == GeneralCategory::Format
}

/// The `invalid_email` error (field `email`) with `message` (docs/behaviour.md §4).
fn invalid_email(message: &str) -> ValidationError {
    ValidationError::new("invalid_email", message, Some("email"))
}

/// A normalized, valid phone number (docs/behaviour.md §4): trimmed, 1–[`MAX_PHONE_CHARS`]
/// characters drawn only from ASCII digits, ASCII letters, space and `+ - ( ) .`. No canonical form
/// (E.164) is imposed by default.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(Box<str>);

impl Phone {
    /// Normalizes and validates a phone number given as text. Returns `Ok(None)` when it is empty
    /// after trimming.
    ///
    /// # Errors
    /// `invalid_phone_number` (field `phoneNumber`) when the trimmed text is longer than 32
    /// characters or has a character outside the allowed set.
    pub fn parse(raw: &str) -> Result<Option<Phone>, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        // Every allowed character is one byte, so text of at most 32 bytes that are all allowed
        // is valid; anything else takes the character-wise checks, which pick the message.
        if trimmed.len() <= MAX_PHONE_CHARS && trimmed.bytes().all(is_phone_byte) {
            return Ok(Some(Phone(trimmed.into())));
        }
        Phone::parse_general(trimmed)
    }

    /// The rules of docs/behaviour.md §4 on any trimmed, non-empty text, character by character.
    fn parse_general(trimmed: &str) -> Result<Option<Phone>, ValidationError> {
        if trimmed.chars().count() > MAX_PHONE_CHARS {
            return Err(ValidationError::new(
                "invalid_phone_number",
                "phoneNumber must be at most 32 characters",
                Some("phoneNumber"),
            ));
        }
        let allowed = |c: char| u8::try_from(c).is_ok_and(is_phone_byte);
        if !trimmed.chars().all(allowed) {
            return Err(ValidationError::new(
                "invalid_phone_number",
                "phoneNumber may contain only digits, letters, spaces and + - ( ) .",
                Some("phoneNumber"),
            ));
        }
        Ok(Some(Phone(trimmed.into())))
    }

    /// A phone number given as a non-negative JSON integer: stored as its decimal digits
    /// (docs/behaviour.md §4: `123456` ≡ `"123456"`). Always valid (a `u64` has at most 20 digits).
    pub fn from_u64(number: u64) -> Phone {
        Phone(number.to_string().into_boxed_str())
    }

    /// The normalized text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A phone read back from the graph's value arena (see [`Email::from_stored`]).
    pub(crate) fn from_stored(text: &str) -> Phone {
        Phone(text.into())
    }

    /// Overwrites the text with zeros before freeing it (see [`Email::wipe`]).
    pub fn wipe(self) {
        zeroize::Zeroize::zeroize(&mut *self.0.into_boxed_bytes());
    }
}

/// Whether `b` is one of the characters docs/behaviour.md §4 allows in a phone number: an ASCII
/// digit or letter, the space, or one of `+ - ( ) .`.
fn is_phone_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')' | b'.')
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `linkPrecedence` of a row (docs/behaviour.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkPrecedence {
    /// The oldest live contact of its identity; `linkedId` is null.
    Primary,
    /// Any other contact; `linkedId` is the identity's primary.
    Secondary,
}

impl LinkPrecedence {
    /// `"primary"` or `"secondary"`, as in the `Contact` table.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPrecedence::Primary => "primary",
            LinkPrecedence::Secondary => "secondary",
        }
    }
}

/// One row of the `Contact` table exactly as readers see it (docs/behaviour.md §2): the JSON shape
/// of `GET /contacts/{id}`, of export, and of JSONL import. Field order follows the table. Every
/// key is always present; the nullable ones are `null` when they have no value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": 4,
    "phoneNumber": "717171",
    "email": "biffsucks@hillvalley.edu",
    "linkedId": 3,
    "linkPrecedence": "secondary",
    "createdAt": "2023-04-20T05:30:00.110Z",
    "updatedAt": "2023-04-20T05:31:00.221Z",
    "deletedAt": null
}))]
pub struct ContactRow {
    /// Positive id, never reused.
    #[schema(value_type = u64, minimum = 1, example = 4)]
    pub id: ContactId,
    /// Normalized phone, or null.
    #[schema(value_type = Option<String>, required = true, example = "717171")]
    pub phone_number: Option<Phone>,
    /// Normalized email, or null.
    #[schema(value_type = Option<String>, required = true, example = "biffsucks@hillvalley.edu")]
    pub email: Option<Email>,
    /// For a secondary, the id of its identity's primary (one hop); null for a primary.
    #[schema(value_type = Option<u64>, required = true, minimum = 1, example = 3)]
    pub linked_id: Option<ContactId>,
    /// Primary or secondary.
    pub link_precedence: LinkPrecedence,
    /// When the row was recorded (UTC, RFC 3339 with milliseconds).
    #[schema(value_type = String, format = DateTime, example = "2023-04-20T05:30:00.110Z")]
    pub created_at: Timestamp,
    /// Last change to the row's own record (precedence, deletion); UTC, RFC 3339 with
    /// milliseconds.
    #[schema(value_type = String, format = DateTime, example = "2023-04-20T05:31:00.221Z")]
    pub updated_at: Timestamp,
    /// When the row was deleted, or null; UTC, RFC 3339 with milliseconds.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub deleted_at: Option<Timestamp>,
}

impl ContactRow {
    /// Age order key `(createdAt, id)` of docs/behaviour.md §2: smaller is older.
    pub fn age(&self) -> (Timestamp, ContactId) {
        (self.created_at, self.id)
    }
}

#[cfg(test)]
mod tests;
