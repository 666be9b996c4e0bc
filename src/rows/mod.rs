//! Import and export of `Contact` rows: reading and validating a file of existing rows,
//! planning its import, and writing rows out (docs/behaviour.md §2 columns, §4 validation, §7
//! `idrecon import` / `idrecon export`).
//!
//! The pipeline of an import is three pure steps, none of which writes anything:
//!
//! 1. [`detect_format`] picks CSV or JSON Lines from the file name (or its first bytes);
//! 2. [`read_rows`] (`read.rs`) parses every row, normalizing and validating each value through
//!    the parsers of [`crate::contact`] ([`Email::parse`], [`Phone::parse`],
//!    [`Phone::from_u64`], [`Timestamp::parse`]), and stops at the first invalid row with its
//!    line number ([`read_rows_with_progress`] takes a
//!    [`Normalizer`](crate::phone_region::Normalizer), so `import --phone-region` canonicalizes
//!    phone numbers exactly as `serve --phone-region` does);
//! 3. [`plan_import`] (`plan.rs`) checks the rows as a whole (duplicate ids, dangling
//!    `linkedId`s, `linkedId` cycles), groups them into identities (link chains of any depth,
//!    or live rows sharing an email or phone), recomputes each identity's primary, and returns
//!    the [`NewContact`](crate::event::NewContact) events, in id order, that rebuild those
//!    identities.
//!
//! Export is [`write_rows`] (`write.rs`): the same eight columns, in CSV or JSON Lines, in a
//! form that [`read_rows`] accepts back unchanged.
//!
//! Every [`ImportError`] names the line of the file it concerns. The module sits beside the
//! store: it knows rows, contacts and events, never the log or the HTTP layer; the command
//! line applies a plan to a fresh store.

use std::path::Path;

use crate::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp};

mod plan;
mod read;
mod write;

pub use plan::{ImportPlan, plan_import};
pub use read::{read_rows, read_rows_with_progress};
pub use write::write_rows;

/// The eight columns of the `Contact` table (docs/behaviour.md §2), in table order: the CSV
/// header that export writes and the only column (and JSON key) names import accepts.
pub const COLUMNS: [&str; 8] = [
    "id",
    "phoneNumber",
    "email",
    "linkedId",
    "linkPrecedence",
    "createdAt",
    "updatedAt",
    "deletedAt",
];

// Indexes into `COLUMNS`.
const ID: usize = 0;
const PHONE: usize = 1;
const EMAIL: usize = 2;
const LINKED_ID: usize = 3;
const PRECEDENCE: usize = 4;
const CREATED_AT: usize = 5;
const UPDATED_AT: usize = 6;
const DELETED_AT: usize = 7;

/// The on-disk form of a file of rows (docs/behaviour.md §7): `psql \copy … CSV HEADER` style
/// CSV, or JSON Lines of row objects (one [`ContactRow`] JSON object per line).
///
/// Named `csv` and `jsonl` ([`RowFormat::as_str`], `Display`, `FromStr`); the command line turns
/// those names into its `--format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    /// Comma-separated values with the header [`COLUMNS`]; an empty field is null.
    Csv,
    /// One JSON object per line with the camelCase keys of [`COLUMNS`].
    Jsonl,
}

impl RowFormat {
    /// Every format, in the order help lists them.
    pub const ALL: [RowFormat; 2] = [RowFormat::Csv, RowFormat::Jsonl];

    /// The format's name: `csv` or `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            RowFormat::Csv => "csv",
            RowFormat::Jsonl => "jsonl",
        }
    }
}

impl std::fmt::Display for RowFormat {
    /// Writes [`RowFormat::as_str`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `csv` nor `jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown row format `{given}` (expected csv or jsonl)")]
pub struct ParseRowFormatError {
    /// The text that was given.
    pub given: String,
}

impl std::str::FromStr for RowFormat {
    type Err = ParseRowFormatError;

    /// Parses `csv` or `jsonl`.
    ///
    /// # Errors
    /// [`ParseRowFormatError`] for any other text, case included (`CSV` is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RowFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == s)
            .ok_or_else(|| ParseRowFormatError {
                given: s.to_owned(),
            })
    }
}

/// Chooses the format of an import file (docs/behaviour.md §7).
///
/// By extension first (ASCII case-insensitive): `.csv` → [`RowFormat::Csv`]; `.jsonl`,
/// `.ndjson`, `.json` → [`RowFormat::Jsonl`]. Otherwise by content: when the first byte that is
/// not white space (after an optional UTF-8 byte-order mark) is `{`, [`RowFormat::Jsonl`];
/// anything else, including an empty file, [`RowFormat::Csv`]. Never fails.
pub fn detect_format(path: &Path, first_bytes: &[u8]) -> RowFormat {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => return RowFormat::Csv,
        Some("jsonl" | "ndjson" | "json") => return RowFormat::Jsonl,
        _ => {}
    }
    let content = first_bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(first_bytes);
    match content.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => RowFormat::Jsonl,
        _ => RowFormat::Csv,
    }
}

/// One validated row of an import file (docs/behaviour.md §2 columns, values normalized as §4).
///
/// `linked_id` and `precedence` are what the file says; [`plan_import`] recomputes both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRow {
    /// The 1-based line of the file where the row starts (for CSV the record's first line; a
    /// quoted field may span several lines).
    pub line: u64,
    /// `id`: a positive integer.
    pub id: ContactId,
    /// `email`, normalized; `None` when null or empty.
    pub email: Option<Email>,
    /// `phoneNumber`, normalized; `None` when null or empty.
    pub phone: Option<Phone>,
    /// `linkedId`: a positive integer, or `None` when null/empty.
    pub linked_id: Option<ContactId>,
    /// `linkPrecedence` as written in the file.
    pub precedence: LinkPrecedence,
    /// `createdAt`, truncated to milliseconds.
    pub created_at: Timestamp,
    /// `updatedAt`, truncated to milliseconds.
    pub updated_at: Timestamp,
    /// `deletedAt`, or `None` for a live row.
    pub deleted_at: Option<Timestamp>,
}

impl ImportRow {
    /// The row with the file's own `linkedId` and `linkPrecedence` (nothing recomputed), as a
    /// [`ContactRow`]; the inverse of reading what [`write_rows`] wrote.
    pub fn to_contact_row(&self) -> ContactRow {
        ContactRow {
            id: self.id,
            phone_number: self.phone.clone(),
            email: self.email.clone(),
            linked_id: self.linked_id,
            link_precedence: self.precedence,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        }
    }

    /// Age order key `(createdAt, id)` of docs/behaviour.md §2: smaller is older.
    fn age(&self) -> (Timestamp, ContactId) {
        (self.created_at, self.id)
    }

    /// Whether the row is live (`deletedAt` null): only live rows match by value.
    fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// Why an import stopped: the import then writes nothing (docs/behaviour.md §7). Every variant
/// names the 1-based line of the file it concerns.
#[derive(thiserror::Error, Debug)]
pub enum ImportError {
    /// The file is malformed or a row breaks a rule: a bad or missing CSV header column, a line
    /// that is not a JSON object, an invalid value (docs/behaviour.md §4), a row with neither
    /// email nor phone, a duplicate id, a dangling `linkedId`, or a `linkedId` cycle.
    #[error("line {line}: {message}")]
    Invalid {
        /// The line the problem was found on.
        line: u64,
        /// What is wrong, without parser internals.
        message: String,
    },
    /// Reading the input failed (not a problem of its content).
    #[error("line {line}: read error: {source}")]
    Io {
        /// The line being read when the error happened.
        line: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ImportError {
    /// The line of the file the error concerns.
    pub fn line(&self) -> u64 {
        match self {
            ImportError::Invalid { line, .. } | ImportError::Io { line, .. } => *line,
        }
    }

    fn invalid(line: u64, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            line,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_format_by_extension_then_content() {
        let p = Path::new;
        assert_eq!(detect_format(p("a.csv"), b"{"), RowFormat::Csv);
        assert_eq!(detect_format(p("a.CSV"), b""), RowFormat::Csv);
        assert_eq!(detect_format(p("a.jsonl"), b"id,"), RowFormat::Jsonl);
        assert_eq!(detect_format(p("a.ndjson"), b""), RowFormat::Jsonl);
        assert_eq!(detect_format(p("a.json"), b""), RowFormat::Jsonl);
        assert_eq!(
            detect_format(p("dump"), b"  \n {\"id\":1}"),
            RowFormat::Jsonl
        );
        assert_eq!(
            detect_format(p("dump.txt"), b"\xEF\xBB\xBF{\"id\":1}"),
            RowFormat::Jsonl
        );
        assert_eq!(
            detect_format(p("dump"), COLUMNS.join(",").as_bytes()),
            RowFormat::Csv
        );
        assert_eq!(detect_format(p("dump"), b""), RowFormat::Csv);
        assert_eq!(detect_format(p("-"), b"\xff\xfe"), RowFormat::Csv);
    }

    #[test]
    fn format_names_round_trip() {
        for format in RowFormat::ALL {
            assert_eq!(format.to_string().parse::<RowFormat>(), Ok(format));
        }
        assert!("CSV".parse::<RowFormat>().is_err());
        assert!("xml".parse::<RowFormat>().is_err());
    }
}
