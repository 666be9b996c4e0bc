//! Reading, validating and planning the import of existing `Contact` rows, and writing rows out
//! (SPEC.md §2 columns, §4 validation, §7 `idrecon import` / `idrecon export`).
//!
//! The pipeline of an import is three pure steps, none of which writes anything:
//!
//! 1. [`detect_format`] picks CSV or JSON Lines from the file name (or its first bytes);
//! 2. [`read_rows`] parses every row, normalizing and validating each value through the parsers
//!    of [`crate::contact`] ([`Email::parse`], [`Phone::parse`], [`Phone::from_u64`],
//!    [`Timestamp::parse`]), and stops at the first invalid row with its line number
//!    ([`read_rows_with_progress`] takes a [`Normalizer`], so `import --phone-region`
//!    canonicalizes phone numbers exactly as `serve --phone-region` does);
//! 3. [`plan_import`] checks the rows as a whole (duplicate ids, dangling `linkedId`s,
//!    `linkedId` cycles), groups them into identities (link chains of any depth, or live rows
//!    sharing an email or phone), recomputes each identity's primary, and returns the
//!    [`NewContact`] events, in id order, that rebuild those identities.
//!
//! Export is [`write_rows`]: the same eight columns, in CSV or JSON Lines, in a form that
//! [`read_rows`] accepts back unchanged.
//!
//! Every [`ImportError`] names the line of the file it concerns.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use serde_json::{Map, Value};

use crate::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp};
use crate::event::NewContact;
use crate::phone_region::Normalizer;

/// The eight columns of the `Contact` table (SPEC.md §2), in table order: the CSV header that
/// export writes and the only column (and JSON key) names import accepts.
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

/// The on-disk form of a file of rows (SPEC.md §7): `psql \copy … CSV HEADER` style CSV, or
/// JSON Lines of row objects (one [`ContactRow`] JSON object per line).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    /// Comma-separated values with the header [`COLUMNS`]; an empty field is null.
    Csv,
    /// One JSON object per line with the camelCase keys of [`COLUMNS`].
    Jsonl,
}

/// Chooses the format of an import file (SPEC.md §7).
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

/// One validated row of an import file (SPEC.md §2 columns, values normalized as §4).
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

    /// Age order key `(createdAt, id)` of SPEC.md §2: smaller is older.
    fn age(&self) -> (Timestamp, ContactId) {
        (self.created_at, self.id)
    }

    fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// Why an import stopped (SPEC.md §7: "stops the import with the line number and writes
/// nothing"). Every variant names the 1-based line of the file it concerns.
#[derive(thiserror::Error, Debug)]
pub enum ImportError {
    /// The file is malformed or a row breaks a rule: a bad or missing CSV header column, a line
    /// that is not a JSON object, an invalid value (SPEC.md §4), a row with neither email nor
    /// phone, a duplicate id, a dangling `linkedId`, or a `linkedId` cycle.
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

/// Reads every row of an import file (SPEC.md §7), normalizing and validating each value as
/// SPEC.md §4 requires.
///
/// * [`RowFormat::Csv`]: the first record is a header naming each of [`COLUMNS`] exactly once,
///   in any order (a UTF-8 byte-order mark before it is ignored). Every record must have as many
///   fields as the header. An empty field is null (that is how `psql \copy … CSV HEADER` writes
///   NULL; an empty email or phone is absent anyway). A file with only the header has no rows.
/// * [`RowFormat::Jsonl`]: every line that is not blank holds one JSON object with the keys of
///   [`COLUMNS`]; `id`, `linkPrecedence`, `createdAt` and `updatedAt` are required, the others
///   may be null or missing. `id` and `linkedId` are positive JSON integers; `phoneNumber` a
///   string or a non-negative integer that fits in 64 bits (SPEC.md §4); the others strings.
///
/// In both formats surrounding white space of a value is ignored; `linkPrecedence` must then be
/// exactly `primary` or `secondary`; timestamps are RFC 3339 or PostgreSQL's text form,
/// truncated to milliseconds.
///
/// # Errors
/// [`ImportError::Invalid`] at the first offending line: a header column missing, unknown or
/// repeated; a record with the wrong number of fields; text that is not UTF-8; a JSONL line that
/// is not a JSON object or has an unknown key; an invalid value; a row with neither email nor
/// phone (SPEC.md §4: both absent is invalid). [`ImportError::Io`] when reading fails.
pub fn read_rows(reader: impl Read, format: RowFormat) -> Result<Vec<ImportRow>, ImportError> {
    read_rows_with_progress(reader, format, &Normalizer::default(), |_| {})
}

/// [`read_rows`] with emails and phone numbers normalized by `normalizer` (so
/// `import --phone-region` stores E.164 phones, see [`crate::phone_region`]), calling
/// `on_row(n)` after each valid row with the number of rows parsed so far (for a progress
/// display).
///
/// # Errors
/// As [`read_rows`]; with a phone region, a phone number that does not canonicalize is an
/// invalid value of its line.
pub fn read_rows_with_progress(
    reader: impl Read,
    format: RowFormat,
    normalizer: &Normalizer,
    mut on_row: impl FnMut(u64),
) -> Result<Vec<ImportRow>, ImportError> {
    match format {
        RowFormat::Csv => read_csv(reader, normalizer, &mut on_row),
        RowFormat::Jsonl => read_jsonl(reader, normalizer, &mut on_row),
    }
}

/// The raw text of one row's eight fields (`None` = null), before validation.
struct RawRow<'a> {
    line: u64,
    fields: [Option<RawValue<'a>>; 8],
}

/// A field's raw value, by where it came from.
#[derive(Clone, Copy)]
enum RawValue<'a> {
    /// A non-empty CSV field.
    Field(&'a str),
    /// A JSON string.
    String(&'a str),
    /// A JSON number.
    Number(&'a serde_json::Number),
}

/// A reader that remembers the bytes the csv crate has read but not yet finished parsing, so
/// that the line where a record really starts can be found: `csv::Position::line()` of a
/// record is the line where the parser started looking for it, before the empty lines it skips.
struct LineTap<R> {
    inner: R,
    /// Bytes read from `inner`; `bytes[start..]` begin at stream offset `base`.
    bytes: Vec<u8>,
    start: usize,
    base: u64,
}

impl<R: Read> Read for LineTap<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes
            .extend_from_slice(out.get(..n).unwrap_or_default());
        Ok(n)
    }
}

impl<R> LineTap<R> {
    fn new(inner: R) -> Self {
        LineTap {
            inner,
            bytes: Vec::new(),
            start: 0,
            base: 0,
        }
    }

    /// The line of the first byte at or after `position` that does not belong to an empty line.
    fn line_at(&self, position: &csv::Position) -> u64 {
        let skipped = position
            .byte()
            .checked_sub(self.base)
            .and_then(|offset| usize::try_from(offset).ok())
            .and_then(|offset| self.bytes.get(self.start.saturating_add(offset)..))
            .map_or(0, |rest| {
                rest.iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .filter(|b| **b == b'\n')
                    .count()
            });
        position.line() + skipped as u64
    }

    /// Forgets the bytes before stream offset `byte` (everything parsed so far).
    fn forget_before(&mut self, byte: u64) {
        let available = self.bytes.len() - self.start;
        let drop = usize::try_from(byte.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(available);
        self.start += drop;
        self.base += drop as u64;
        if self.start >= 1 << 16 && self.start * 2 >= self.bytes.len() {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }
}

fn read_csv(
    reader: impl Read,
    normalizer: &Normalizer,
    on_row: &mut dyn FnMut(u64),
) -> Result<Vec<ImportRow>, ImportError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(LineTap::new(reader));
    let header = match csv.headers() {
        Ok(header) => header.clone(),
        Err(e) => return Err(csv_error(e, csv.get_ref(), 1)),
    };
    let header_line = header.position().map_or(1, |p| csv.get_ref().line_at(p));
    if header.is_empty() {
        return Err(ImportError::invalid(
            header_line,
            format!("CSV header is missing; expected {}", COLUMNS.join(",")),
        ));
    }
    // column_of[field index] = index into COLUMNS.
    let mut column_of = Vec::with_capacity(header.len());
    let mut seen = [false; 8];
    for (i, name) in header.iter().enumerate() {
        let name = if i == 0 {
            name.strip_prefix('\u{feff}').unwrap_or(name)
        } else {
            name
        };
        let name = name.trim();
        let Some(column) = COLUMNS.iter().position(|c| *c == name) else {
            return Err(ImportError::invalid(
                header_line,
                format!(
                    "unknown CSV column {:?}; expected exactly {}",
                    shorten(name),
                    COLUMNS.join(",")
                ),
            ));
        };
        if seen[column] {
            return Err(ImportError::invalid(
                header_line,
                format!("CSV column {name:?} appears twice"),
            ));
        }
        seen[column] = true;
        column_of.push(column);
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(ImportError::invalid(
            header_line,
            format!("CSV header lacks the column {:?}", COLUMNS[missing]),
        ));
    }

    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut last_line = header_line;
    loop {
        let end = csv.position().byte();
        csv.get_mut().forget_before(end);
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(e, csv.get_ref(), last_line + 1)),
        }
        let line = record
            .position()
            .map_or(last_line + 1, |p| csv.get_ref().line_at(p));
        last_line = line;
        let mut raw = RawRow {
            line,
            fields: [None; 8],
        };
        for (field, &column) in record.iter().zip(&column_of) {
            raw.fields[column] = (!field.is_empty()).then_some(RawValue::Field(field));
        }
        rows.push(validate(&raw, normalizer)?);
        on_row(rows.len() as u64);
    }
    Ok(rows)
}

/// Converts a csv crate error into an [`ImportError`] at the record's line (or `fallback`).
fn csv_error<R>(error: csv::Error, tap: &LineTap<R>, fallback: u64) -> ImportError {
    let line = error.position().map_or(fallback, |p| tap.line_at(p));
    match error.into_kind() {
        csv::ErrorKind::Io(source) => ImportError::Io { line, source },
        csv::ErrorKind::Utf8 { .. } => ImportError::invalid(line, "text is not valid UTF-8"),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => ImportError::invalid(
            line,
            format!("record has {len} fields, the header has {expected_len}"),
        ),
        _ => ImportError::invalid(line, "malformed CSV"),
    }
}

fn read_jsonl(
    reader: impl Read,
    normalizer: &Normalizer,
    on_row: &mut dyn FnMut(u64),
) -> Result<Vec<ImportRow>, ImportError> {
    let mut reader = BufReader::new(reader);
    let mut rows = Vec::new();
    let mut buffer = Vec::new();
    let mut line: u64 = 0;
    loop {
        line += 1;
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(ImportError::Io { line, source }),
        }
        let mut bytes = buffer.as_slice();
        if line == 1 {
            bytes = bytes
                .strip_prefix(b"\xEF\xBB\xBF".as_slice())
                .unwrap_or(bytes);
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(ImportError::invalid(line, "text is not valid UTF-8"));
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(ImportError::invalid(line, "line is not a JSON object")),
            Err(_) => return Err(ImportError::invalid(line, "line is not valid JSON")),
        };
        rows.push(validate(&json_raw_row(line, &object)?, normalizer)?);
        on_row(rows.len() as u64);
    }
    Ok(rows)
}

fn json_raw_row<'a>(line: u64, object: &'a Map<String, Value>) -> Result<RawRow<'a>, ImportError> {
    let mut raw = RawRow {
        line,
        fields: [None; 8],
    };
    for (key, value) in object {
        let Some(column) = COLUMNS.iter().position(|c| c == key) else {
            return Err(ImportError::invalid(
                line,
                format!(
                    "unknown key {:?}; expected the keys {}",
                    shorten(key),
                    COLUMNS.join(",")
                ),
            ));
        };
        raw.fields[column] = match value {
            Value::Null => None,
            Value::String(text) => Some(RawValue::String(text)),
            Value::Number(number) => Some(RawValue::Number(number)),
            _ => {
                return Err(ImportError::invalid(
                    line,
                    format!("{key}: must be a string, a number or null"),
                ));
            }
        };
    }
    Ok(raw)
}

/// Validates one row's raw fields into an [`ImportRow`] (SPEC.md §4 values).
fn validate<'a>(raw: &RawRow<'a>, normalizer: &Normalizer) -> Result<ImportRow, ImportError> {
    let line = raw.line;
    let fail = |column: usize, message: &str| {
        ImportError::invalid(line, format!("{}: {message}", COLUMNS[column]))
    };
    let required = |column: usize| raw.fields[column].ok_or_else(|| fail(column, "is required"));
    // A CSV field of only white space in a numeric or timestamp column is null too.
    let optional = |column: usize| match raw.fields[column] {
        Some(RawValue::Field(text)) if text.trim().is_empty() => None,
        other => other,
    };
    fn text_of(value: RawValue<'_>) -> Option<&str> {
        match value {
            RawValue::Field(text) | RawValue::String(text) => Some(text),
            RawValue::Number(_) => None,
        }
    }
    let text =
        |column: usize, value| text_of(value).ok_or_else(|| fail(column, "must be a string"));
    let id_value = |column: usize, value: RawValue<'a>| {
        let id = match value {
            RawValue::Field(text) => {
                let text = text.trim();
                if text.bytes().all(|b| b.is_ascii_digit()) {
                    text.parse::<u64>().ok()
                } else {
                    None
                }
            }
            RawValue::String(_) => None,
            RawValue::Number(number) => number.as_u64(),
        };
        match id {
            // PostgreSQL's bigint bound: larger ids cannot come from a Contact table and would
            // leave the service no id to assign next.
            Some(id) if id > 0 && id <= crate::snapshot::MAX_COUNTER => Ok(id),
            Some(id) if id > 0 => Err(fail(column, "must be at most 9223372036854775807")),
            _ => Err(fail(column, "must be a positive integer")),
        }
    };
    let timestamp = |column: usize, value: RawValue<'a>| {
        Timestamp::parse(text(column, value)?).map_err(|e| fail(column, &e.message))
    };

    let id = id_value(ID, required(ID)?)?;
    let phone = match raw.fields[PHONE] {
        None => None,
        Some(RawValue::Field(text) | RawValue::String(text)) => normalizer
            .phone(text)
            .map_err(|e| fail(PHONE, &e.message))?,
        Some(RawValue::Number(number)) => match number.as_u64() {
            Some(n) => Some(
                normalizer
                    .phone_from_u64(n)
                    .map_err(|e| fail(PHONE, &e.message))?,
            ),
            None => {
                return Err(fail(
                    PHONE,
                    "a number must be a non-negative integer that fits in 64 bits, \
                     without fraction or exponent",
                ));
            }
        },
    };
    let email = match raw.fields[EMAIL] {
        None => None,
        Some(value) => normalizer
            .email(text(EMAIL, value)?)
            .map_err(|e| fail(EMAIL, &e.message))?,
    };
    if email.is_none() && phone.is_none() {
        return Err(ImportError::invalid(
            line,
            "row has neither email nor phoneNumber",
        ));
    }
    let linked_id = match optional(LINKED_ID) {
        None => None,
        Some(value) => Some(id_value(LINKED_ID, value)?),
    };
    let precedence = match text(PRECEDENCE, required(PRECEDENCE)?)?.trim() {
        "primary" => LinkPrecedence::Primary,
        "secondary" => LinkPrecedence::Secondary,
        _ => return Err(fail(PRECEDENCE, "must be \"primary\" or \"secondary\"")),
    };
    let created_at = timestamp(CREATED_AT, required(CREATED_AT)?)?;
    let updated_at = timestamp(UPDATED_AT, required(UPDATED_AT)?)?;
    let deleted_at = match optional(DELETED_AT) {
        None => None,
        Some(value) => Some(timestamp(DELETED_AT, value)?),
    };
    Ok(ImportRow {
        line,
        id,
        email,
        phone,
        linked_id,
        precedence,
        created_at,
        updated_at,
        deleted_at,
    })
}

/// At most 40 characters of a value, for error messages.
fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// What an import will write (SPEC.md §7), computed by [`plan_import`] without writing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPlan {
    /// One [`NewContact`] per row, sorted by id ascending. `link` is the smallest id of the
    /// row's identity when that is smaller than the row's own id, else `None` (the smallest-id
    /// row of each identity), so replaying the events in order keeps the graph's invariants after
    /// every event: each row joins its identity's first row.
    pub contacts: Vec<NewContact>,
    /// Number of rows read.
    pub rows: usize,
    /// Number of identities after grouping by links and by shared values.
    pub identities: usize,
    /// Number of identities joined because live rows share an email or phone (racy duplicate
    /// primaries repaired): identities by `linkedId` chains alone minus [`Self::identities`].
    pub identities_joined_by_values: usize,
    /// Number of rows whose `linkPrecedence` the import changed (promoted to primary or demoted
    /// to secondary); each of them is touched (`updatedAt` = `max(file updatedAt, now)`).
    pub primaries_changed: usize,
}

/// Plans an import (SPEC.md §7): checks the rows as a whole, groups them into identities and
/// recomputes each identity's primary. Pure: writes nothing. Iterative throughout, so chains of
/// any depth cannot overflow the stack.
///
/// * **Identities.** Rows join one identity when a `linkedId` chain of any depth connects them
///   (a deleted row still carries its link), or when live rows (`deletedAt` null) share an email
///   or a phone number. The file's `linkPrecedence` plays no part in grouping (a primary with a
///   `linkedId` still joins through it; a secondary without one is grouped by values only).
/// * **Primary.** Each identity's primary is its oldest live row by age order
///   `(createdAt, id)`; an identity with no live row has its oldest row as primary.
/// * **Touch.** A row whose precedence the import changes is touched, like a merge would:
///   its `updatedAt` becomes `max(file updatedAt, now)`. Every other row keeps the file's
///   `updatedAt`, including a secondary whose `linkedId` the import re-points (re-pointing does
///   not touch rows, SPEC.md §3).
///
/// # Errors
/// [`ImportError::Invalid`], checked in this order:
/// 1. a duplicate id, at the later of the two lines (the message names the first line);
/// 2. a dangling `linkedId` (no row has that id), at the row's line;
/// 3. a `linkedId` cycle (a self-link included), at the smallest line among the rows on the
///    cycle (the message lists the cycle's ids).
pub fn plan_import(rows: Vec<ImportRow>, now: Timestamp) -> Result<ImportPlan, ImportError> {
    let n = rows.len();

    // 1. Duplicate ids.
    let mut index_of: HashMap<ContactId, usize> = HashMap::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        match index_of.entry(row.id) {
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
            Entry::Occupied(slot) => {
                let other = &rows[*slot.get()];
                let (first, later) = if other.line <= row.line {
                    (other.line, row.line)
                } else {
                    (row.line, other.line)
                };
                return Err(ImportError::invalid(
                    later,
                    format!("duplicate id {} (first at line {first})", row.id),
                ));
            }
        }
    }

    // 2. Dangling links; `target[i]` = index of the row that row i links to.
    let mut target: Vec<Option<usize>> = Vec::with_capacity(n);
    for row in &rows {
        target.push(match row.linked_id {
            None => None,
            Some(linked) => match index_of.get(&linked) {
                Some(&j) => Some(j),
                None => {
                    return Err(ImportError::invalid(
                        row.line,
                        format!("linkedId {linked} does not match the id of any row"),
                    ));
                }
            },
        });
    }
    drop(index_of);

    // 3. Cycles: every row has at most one outgoing link, so walk each chain once.
    find_cycle(&rows, &target)?;

    // Groups by links.
    let mut sets = DisjointSets::new(n);
    for (i, t) in target.iter().enumerate() {
        if let Some(j) = *t {
            sets.union(i, j);
        }
    }
    let link_groups = sets.count;

    // Groups by shared values of live rows.
    let mut by_email: HashMap<&Email, usize> = HashMap::with_capacity(n);
    let mut by_phone: HashMap<&Phone, usize> = HashMap::with_capacity(n);
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.is_live()) {
        if let Some(email) = &row.email {
            let first = *by_email.entry(email).or_insert(i);
            sets.union(i, first);
        }
        if let Some(phone) = &row.phone {
            let first = *by_phone.entry(phone).or_insert(i);
            sets.union(i, first);
        }
    }
    drop((by_email, by_phone));
    let identities = sets.count;

    // Per identity root: its primary (oldest live, else oldest) and its smallest id.
    let mut oldest_live: Vec<Option<usize>> = vec![None; n];
    let mut oldest: Vec<Option<usize>> = vec![None; n];
    let mut smallest_id: Vec<ContactId> = vec![ContactId::MAX; n];
    let mut root_of = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        let root = sets.find(i);
        root_of.push(root);
        let older = |best: Option<usize>| best.is_none_or(|b| row.age() < rows[b].age());
        if row.is_live() && older(oldest_live[root]) {
            oldest_live[root] = Some(i);
        }
        if older(oldest[root]) {
            oldest[root] = Some(i);
        }
        smallest_id[root] = smallest_id[root].min(row.id);
    }

    let mut primaries_changed = 0;
    let mut contacts = Vec::with_capacity(n);
    for (i, row) in rows.into_iter().enumerate() {
        let root = root_of[i];
        let primary = oldest_live[root].or(oldest[root]);
        let precedence = if primary == Some(i) {
            LinkPrecedence::Primary
        } else {
            LinkPrecedence::Secondary
        };
        let updated_at = if precedence == row.precedence {
            row.updated_at
        } else {
            primaries_changed += 1;
            row.updated_at.max(now)
        };
        let first = smallest_id[root];
        contacts.push(NewContact {
            id: row.id,
            email: row.email,
            phone: row.phone,
            created_at: row.created_at,
            updated_at,
            deleted_at: row.deleted_at,
            link: (first < row.id).then_some(first),
        });
    }
    if !contacts.is_sorted_by_key(|c| c.id) {
        contacts.sort_unstable_by_key(|c| c.id);
    }

    Ok(ImportPlan {
        contacts,
        rows: n,
        identities,
        identities_joined_by_values: link_groups - identities,
        primaries_changed,
    })
}

/// Finds a `linkedId` cycle, iteratively. `target[i]` is the row that row `i` links to.
fn find_cycle(rows: &[ImportRow], target: &[Option<usize>]) -> Result<(), ImportError> {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNSEEN; rows.len()];
    let mut path = Vec::new();
    for start in 0..rows.len() {
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                UNSEEN => {
                    state[i] = ON_PATH;
                    path.push(i);
                    at = target[i];
                }
                ON_PATH => {
                    // `i` is on the current path: the cycle is the path from `i` on.
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    return Err(cycle_error(rows, &path[from..]));
                }
                _ => break,
            }
        }
        for &p in &path {
            state[p] = DONE;
        }
        path.clear();
    }
    Ok(())
}

fn cycle_error(rows: &[ImportRow], cycle: &[usize]) -> ImportError {
    let line = cycle.iter().map(|&i| rows[i].line).min().unwrap_or(0);
    let mut ids: Vec<String> = cycle
        .iter()
        .take(10)
        .map(|&i| rows[i].id.to_string())
        .collect();
    if cycle.len() > 10 {
        ids.push("…".into());
    }
    if let Some(&first) = cycle.first() {
        ids.push(rows[first].id.to_string());
    }
    ImportError::invalid(
        line,
        format!(
            "linkedId cycle of {} row(s): {}",
            cycle.len(),
            ids.join(" → ")
        ),
    )
}

/// A small union-find over `0..n` (union by size, path halving; no recursion).
struct DisjointSets {
    parent: Vec<usize>,
    size: Vec<usize>,
    /// Number of disjoint sets.
    count: usize,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        DisjointSets {
            parent: (0..n).collect(),
            size: vec![1; n],
            count: n,
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Joins the sets of `a` and `b`; returns whether they were separate.
    fn union(&mut self, a: usize, b: usize) -> bool {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return false;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
        self.count -= 1;
        true
    }
}

/// Writes rows out (SPEC.md §7 `idrecon export`) and returns how many were written.
///
/// * [`RowFormat::Csv`]: the header [`COLUMNS`]
///   (`id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt`), then one
///   record per row; null is an empty field; timestamps RFC 3339 with milliseconds
///   (`2023-04-01T00:00:00.374Z`); fields quoted only when needed.
/// * [`RowFormat::Jsonl`]: one [`ContactRow`] JSON object per line (the `GET /contacts/{id}`
///   shape), each line ending in `\n`.
///
/// The output is buffered and flushed before returning; [`read_rows`] reads it back to the same
/// rows.
///
/// # Errors
/// Any I/O error of `out`.
pub fn write_rows(
    out: impl Write,
    format: RowFormat,
    rows: impl IntoIterator<Item = ContactRow>,
) -> Result<u64, std::io::Error> {
    let mut count = 0;
    match format {
        RowFormat::Csv => {
            let mut csv = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            csv.write_record(COLUMNS)?;
            for row in rows {
                let text = |t: Option<Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
                csv.write_record([
                    row.id.to_string().as_str(),
                    row.phone_number.as_ref().map_or("", Phone::as_str),
                    row.email.as_ref().map_or("", Email::as_str),
                    &row.linked_id.map(|l| l.to_string()).unwrap_or_default(),
                    row.link_precedence.as_str(),
                    &row.created_at.to_string(),
                    &row.updated_at.to_string(),
                    &text(row.deleted_at),
                ])?;
                count += 1;
            }
            csv.flush()?;
        }
        RowFormat::Jsonl => {
            let mut out = BufWriter::new(out);
            for row in rows {
                serde_json::to_writer(&mut out, &row)?;
                out.write_all(b"\n")?;
                count += 1;
            }
            out.flush()?;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn now() -> Timestamp {
        ts("2030-01-01T00:00:00.000Z")
    }

    fn csv_rows(body: &str) -> Result<Vec<ImportRow>, ImportError> {
        read_rows(format!("{HEADER}\n{body}").as_bytes(), RowFormat::Csv)
    }

    fn plan_csv(body: &str) -> Result<ImportPlan, ImportError> {
        plan_import(csv_rows(body)?, now())
    }

    fn err_line(result: Result<impl std::fmt::Debug, ImportError>) -> (u64, String) {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("line {}: ", err.line())),
            "{text}"
        );
        (err.line(), text)
    }

    fn links(plan: &ImportPlan) -> Vec<(ContactId, Option<ContactId>)> {
        plan.contacts.iter().map(|c| (c.id, c.link)).collect()
    }

    fn contact(plan: &ImportPlan, id: ContactId) -> &NewContact {
        plan.contacts.iter().find(|c| c.id == id).unwrap()
    }

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
        assert_eq!(detect_format(p("dump"), HEADER.as_bytes()), RowFormat::Csv);
        assert_eq!(detect_format(p("dump"), b""), RowFormat::Csv);
        assert_eq!(detect_format(p("-"), b"\xff\xfe"), RowFormat::Csv);
    }

    /// SPEC.md §5: the original task statement's rows, as `psql \copy … CSV HEADER` writes them.
    const ORIGINAL: &str = "\
1,123456,lorraine@hillvalley.edu,,primary,2023-04-01 00:00:00.374+00,2023-04-01 00:00:00.374+00,
23,123456,mcfly@hillvalley.edu,1,secondary,2023-04-20 05:30:00.11+00,2023-04-20 05:30:00.11+00,
11,919191,george@hillvalley.edu,,primary,2023-04-11 00:00:00.374+00,2023-04-11 00:00:00.374+00,
27,717171,biffsucks@hillvalley.edu,,primary,2023-04-21 05:30:00.11+00,2023-04-21 05:30:00.11+00,
";

    #[test]
    fn original_task_rows_import_as_two_identities() {
        let rows = csv_rows(ORIGINAL).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].id, 23);
        assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "123456");
        assert_eq!(
            rows[1].email.as_ref().unwrap().as_str(),
            "mcfly@hillvalley.edu"
        );
        assert_eq!(rows[1].linked_id, Some(1));
        assert_eq!(rows[1].precedence, LinkPrecedence::Secondary);
        assert_eq!(rows[1].created_at, ts("2023-04-20T05:30:00.110Z"));
        assert_eq!(rows[0].deleted_at, None);

        let plan = plan_import(rows, now()).unwrap();
        assert_eq!(plan.rows, 4);
        assert_eq!(plan.identities, 3);
        assert_eq!(plan.identities_joined_by_values, 0);
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(
            links(&plan),
            vec![(1, None), (11, None), (23, Some(1)), (27, None)]
        );
        // Nothing is touched: every row keeps its timestamps.
        assert_eq!(
            contact(&plan, 23).updated_at,
            ts("2023-04-20T05:30:00.110Z")
        );
        assert_eq!(contact(&plan, 1).created_at, ts("2023-04-01T00:00:00.374Z"));
    }

    #[test]
    fn original_rows_after_request_six_are_two_identities() {
        // SPEC.md §5 #6 with the original ids: 27 became a secondary of 11.
        let body = ORIGINAL.replace(
            "27,717171,biffsucks@hillvalley.edu,,primary",
            "27,717171,biffsucks@hillvalley.edu,11,secondary",
        );
        let plan = plan_csv(&body).unwrap();
        assert_eq!(plan.identities, 2);
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(
            links(&plan),
            vec![(1, None), (11, None), (23, Some(1)), (27, Some(11))]
        );
    }

    #[test]
    fn csv_columns_in_any_order_and_nulls_as_empty_fields() {
        let text = "\u{feff}deletedAt,updatedAt,createdAt,linkPrecedence,linkedId,email,phoneNumber,id\n\
                    ,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,primary,,\" Lorraine@HillValley.EDU \",,1\n\
                    \n\
                    2024-01-01 00:00:00.123456+00,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,secondary,1,\"\",\"+1 (555) 010\",2\n";
        let rows = read_rows(text.as_bytes(), RowFormat::Csv).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].email.as_ref().unwrap().as_str(),
            "lorraine@hillvalley.edu"
        );
        assert_eq!(rows[0].phone, None);
        assert_eq!(rows[0].linked_id, None);
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].email, None);
        assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "+1 (555) 010");
        assert_eq!(rows[1].deleted_at, Some(ts("2024-01-01T00:00:00.123Z")));
        // Header only: no rows.
        assert!(
            read_rows(HEADER.as_bytes(), RowFormat::Csv)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn csv_line_numbers_count_blank_lines_crlf_and_multi_line_fields() {
        let good = "1,123456,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,";
        // Header on line 3 (after two blank lines), CRLF endings, a quoted field spanning
        // lines 5-6, a blank line 7, and a bad row on line 8.
        let text = format!(
            "\r\n\n{HEADER}\r\n{good}\r\n\"2\",\"1\r\n\",x@y,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\r\n\r\n\
             3,1,x@y,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,never\r\n"
        );
        let (line, message) = err_line(read_rows(text.as_bytes(), RowFormat::Csv));
        assert_eq!(line, 8, "{message}");
        assert!(message.contains("deletedAt"), "{message}");
        let text = text.replace(",never", ",");
        let rows = read_rows(text.as_bytes(), RowFormat::Csv).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![4, 5, 8]
        );
        // A newline inside a phone number is invalid: reported at the record's first line.
        let bad = text.replace("\"1\r\n\"", "\"1\r\n2\"");
        let (line, message) = err_line(read_rows(bad.as_bytes(), RowFormat::Csv));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("phoneNumber"), "{message}");

        // Many rows with blank lines in between: line numbers stay exact far into the file.
        let mut text = format!("{HEADER}\n");
        for id in 1..=30_000 {
            text.push_str(&format!(
                "{id},{id},,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n"
            ));
            if id % 7 == 0 {
                text.push_str("\n\r\n");
            }
        }
        let rows = read_rows(text.as_bytes(), RowFormat::Csv).unwrap();
        assert_eq!(rows.len(), 30_000);
        for row in &rows {
            let blank_lines = 2 * ((row.id - 1) / 7);
            assert_eq!(row.line, 1 + row.id + blank_lines, "id {}", row.id);
        }
        text.push_str("\n\n30001,x#y,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n");
        let expected = 1 + 30_000 + 2 * (30_000 / 7) + 2 + 1;
        assert_eq!(
            err_line(read_rows(text.as_bytes(), RowFormat::Csv)).0,
            expected
        );
    }

    #[test]
    fn csv_header_errors() {
        let missing = "id,phoneNumber,email,linkPrecedence,createdAt,updatedAt,deletedAt\n";
        let (line, text) = err_line(read_rows(missing.as_bytes(), RowFormat::Csv));
        assert_eq!(line, 1);
        assert!(text.contains("\"linkedId\""), "{text}");

        let unknown = format!("{HEADER},extra\n");
        let (_, text) = err_line(read_rows(unknown.as_bytes(), RowFormat::Csv));
        assert!(text.contains("unknown CSV column \"extra\""), "{text}");

        let twice = format!("{HEADER},id\n");
        let (_, text) = err_line(read_rows(twice.as_bytes(), RowFormat::Csv));
        assert!(text.contains("twice"), "{text}");

        let (line, text) = err_line(read_rows(&b""[..], RowFormat::Csv));
        assert_eq!(line, 1);
        assert!(text.contains("header is missing"), "{text}");

        let short = "1,123456,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n2,1\n";
        let (line, text) = err_line(csv_rows(short));
        assert_eq!(line, 3);
        assert!(text.contains("2 fields"), "{text}");
    }

    #[test]
    fn invalid_values_name_their_line() {
        let good = "1,123456,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n";
        let cases = [
            (
                "2,1,a@b.c,,primary,yesterday,2023-04-01T00:00:00Z,",
                "createdAt",
            ),
            (
                "2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-13-01T00:00:00Z,",
                "updatedAt",
            ),
            (
                "2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,soon",
                "deletedAt",
            ),
            (
                "2,1,a@@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "email",
            ),
            (
                "2,1,a b@c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "email",
            ),
            (
                "2,12#3,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "phoneNumber",
            ),
            (
                "2,1,a@b.c,,Primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "linkPrecedence",
            ),
            (
                "2,1,a@b.c,,,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "linkPrecedence",
            ),
            (
                "0,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "id",
            ),
            (
                "-2,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "id",
            ),
            (
                "x,1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "id",
            ),
            (
                ",1,a@b.c,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "id",
            ),
            (
                "2,1,a@b.c,0,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "linkedId",
            ),
            (
                "2,1,a@b.c,1.5,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "linkedId",
            ),
            (
                "2,,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "neither",
            ),
            (
                "2, , ,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,",
                "neither",
            ),
        ];
        for (row, needle) in cases {
            let (line, text) = err_line(csv_rows(&format!("{good}{row}\n")));
            assert_eq!(line, 3, "{row}: {text}");
            assert!(text.contains(needle), "{row}: {text}");
        }
        // Not UTF-8.
        let mut bytes = format!("{HEADER}\n{good}").into_bytes();
        bytes
            .extend_from_slice(b"2,1,\xff@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n");
        let (line, text) = err_line(read_rows(bytes.as_slice(), RowFormat::Csv));
        assert_eq!(line, 3, "{text}");
    }

    fn jsonl_line(fields: &str) -> String {
        format!(
            "{{\"id\":2,\"linkPrecedence\":\"primary\",\"createdAt\":\"2023-04-01T00:00:00Z\",\
             \"updatedAt\":\"2023-04-01 00:00:00+00\"{fields}}}"
        )
    }

    #[test]
    fn jsonl_values() {
        let text = format!(
            "\u{feff}{}\n\n  \r\n{}\r\n",
            jsonl_line(r#","phoneNumber":123456,"email":null,"linkedId":null"#),
            jsonl_line(r#","phoneNumber":" 717171 ","email":"Biff@X.org","deletedAt":"2024-01-01T00:00:00.5Z""#)
                .replace("\"id\":2", "\"id\":3")
        );
        let rows = read_rows(text.as_bytes(), RowFormat::Jsonl).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 1);
        assert_eq!(rows[0].phone.as_ref().unwrap().as_str(), "123456");
        assert_eq!(rows[0].email, None);
        assert_eq!(rows[1].line, 4);
        assert_eq!(rows[1].id, 3);
        assert_eq!(rows[1].phone.as_ref().unwrap().as_str(), "717171");
        assert_eq!(rows[1].email.as_ref().unwrap().as_str(), "biff@x.org");
        assert_eq!(rows[1].deleted_at, Some(ts("2024-01-01T00:00:00.500Z")));
        assert!(
            read_rows(&b"\n\n"[..], RowFormat::Jsonl)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn jsonl_errors_name_their_line() {
        let good = jsonl_line(r#","phoneNumber":"1""#);
        let cases = [
            (r#","phoneNumber":1e5"#.to_owned(), "phoneNumber"),
            (r#","phoneNumber":123456.0"#.into(), "phoneNumber"),
            (r#","phoneNumber":-1"#.into(), "phoneNumber"),
            (
                r#","phoneNumber":18446744073709551616"#.into(),
                "phoneNumber",
            ),
            (r#","phoneNumber":true"#.into(), "phoneNumber"),
            (r#","phoneNumber":["1"]"#.into(), "phoneNumber"),
            (r#","email":5"#.into(), "email"),
            (r#","email":"nope""#.into(), "email"),
            (r#","phoneNumber":"1","linkedId":"1""#.into(), "linkedId"),
            (r#","phoneNumber":"1","linkedId":-1"#.into(), "linkedId"),
            (r#","phoneNumber":"1","linkedID":1"#.into(), "unknown key"),
            (r#","phoneNumber":"1","deletedAt":12"#.into(), "deletedAt"),
            (r#","email":null"#.into(), "neither"),
        ];
        for (fields, needle) in cases {
            let text = format!("{good}\n\n{}\n", jsonl_line(&fields));
            let (line, message) = err_line(read_rows(text.as_bytes(), RowFormat::Jsonl));
            assert_eq!(line, 3, "{fields}: {message}");
            assert!(message.contains(needle), "{fields}: {message}");
        }
        let no_id = format!(
            "{good}\n{}\n",
            jsonl_line(r#","phoneNumber":"1""#).replace("\"id\":2,", "")
        );
        let (line, message) = err_line(read_rows(no_id.as_bytes(), RowFormat::Jsonl));
        assert_eq!(
            (line, message.contains("id: is required")),
            (2, true),
            "{message}"
        );
        let float_id = good.replace("\"id\":2", "\"id\":2.0");
        assert_eq!(
            err_line(read_rows(float_id.as_bytes(), RowFormat::Jsonl)).0,
            1
        );
        for junk in ["[1,2]", "{\"id\":", "nope", "\"row\""] {
            let text = format!("{good}\n{junk}\n");
            assert_eq!(
                err_line(read_rows(text.as_bytes(), RowFormat::Jsonl)).0,
                2,
                "{junk}"
            );
        }
        let mut bytes = format!("{good}\n").into_bytes();
        bytes.extend_from_slice(b"{\"id\":\xff}\n");
        assert_eq!(err_line(read_rows(bytes.as_slice(), RowFormat::Jsonl)).0, 2);
    }

    fn row(
        line: u64,
        id: ContactId,
        email: &str,
        phone: &str,
        link: Option<ContactId>,
    ) -> ImportRow {
        ImportRow {
            line,
            id,
            email: Email::parse(email).unwrap(),
            phone: Phone::parse(phone).unwrap(),
            linked_id: link,
            precedence: if link.is_some() {
                LinkPrecedence::Secondary
            } else {
                LinkPrecedence::Primary
            },
            created_at: Timestamp(1_000 * id as i64),
            updated_at: Timestamp(1_000 * id as i64),
            deleted_at: None,
        }
    }

    #[test]
    fn deep_chain_plans_without_recursion() {
        const N: u64 = 100_000;
        // Each row links to the previous one; listed newest first for good measure.
        let rows: Vec<ImportRow> = (1..=N)
            .rev()
            .map(|id| row(id, id, &format!("u{id}@x.y"), "", (id > 1).then(|| id - 1)))
            .collect();
        let plan = plan_import(rows, now()).unwrap();
        assert_eq!(plan.rows, N as usize);
        assert_eq!(plan.identities, 1);
        assert_eq!(plan.identities_joined_by_values, 0);
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(plan.contacts.len(), N as usize);
        assert!(plan.contacts.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(plan.contacts[0].link, None);
        assert!(plan.contacts[1..].iter().all(|c| c.link == Some(1)));
    }

    #[test]
    fn cycles_are_found_with_a_line_on_the_cycle() {
        // 5 → 3 → 4 → 2 → 3: a cycle of length 3 reached from row 5.
        let rows = vec![
            row(2, 1, "a@b", "", None),
            row(3, 5, "e@b", "", Some(3)),
            row(4, 3, "c@b", "", Some(4)),
            row(5, 4, "d@b", "", Some(2)),
            row(6, 2, "f@b", "", Some(3)),
        ];
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 4, "{text}");
        assert!(text.contains("cycle of 3 row(s)"), "{text}");

        let rows = vec![row(2, 1, "a@b", "", None), row(3, 7, "a@b", "", Some(7))];
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 3);
        assert!(text.contains("7 → 7"), "{text}");

        // A long cycle through deep chains.
        let mut rows: Vec<ImportRow> = (1..=100_000)
            .map(|id| row(id + 1, id, "", &format!("{id}"), Some(id % 100_000 + 1)))
            .collect();
        rows.push(row(100_002, 100_001, "", "1", Some(5)));
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 2, "{text}");
        assert!(text.contains("cycle of 100000 row(s)"), "{text}");
    }

    #[test]
    fn dangling_and_duplicate_ids_name_their_line() {
        let (line, text) = err_line(plan_csv(
            "1,1,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             2,2,b@b,9,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
        ));
        assert_eq!(line, 3);
        assert!(text.contains("linkedId 9"), "{text}");

        let (line, text) = err_line(plan_csv(
            "1,1,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             2,2,b@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             1,3,c@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
        ));
        assert_eq!(line, 4);
        assert!(text.contains("duplicate id 1 (first at line 2)"), "{text}");
    }

    #[test]
    fn racy_duplicate_primaries_are_joined_by_values() {
        let plan = plan_csv(
            "1,555,a@x.y,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             2,555,b@x.y,,primary,2023-04-01T00:00:01Z,2023-04-01T00:00:01Z,\n\
             3,777,C@X.Y,2,secondary,2023-04-01T00:00:02Z,2023-04-01T00:00:02Z,\n",
        )
        .unwrap();
        assert_eq!(plan.identities, 1);
        assert_eq!(plan.identities_joined_by_values, 1);
        assert_eq!(plan.primaries_changed, 1);
        assert_eq!(links(&plan), vec![(1, None), (2, Some(1)), (3, Some(1))]);
        // The younger primary is demoted and touched; the re-pointed secondary is not.
        assert_eq!(contact(&plan, 2).updated_at, now());
        assert_eq!(contact(&plan, 1).updated_at, ts("2023-04-01T00:00:00Z"));
        assert_eq!(contact(&plan, 3).updated_at, ts("2023-04-01T00:00:02Z"));
        // A file updatedAt later than `now` is kept (never goes backwards).
        let later = plan_import(
            csv_rows(
                "1,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
                 2,555,,,primary,2023-04-01T00:00:01Z,2031-01-01T00:00:00Z,\n",
            )
            .unwrap(),
            now(),
        )
        .unwrap();
        assert_eq!(contact(&later, 2).updated_at, ts("2031-01-01T00:00:00Z"));
    }

    #[test]
    fn primary_is_oldest_live_row_and_smaller_id_breaks_ties() {
        // Row 9 is older by createdAt than row 4, so 9 is the primary; 4 is demoted, 9 promoted.
        let plan = plan_csv(
            "4,555,,,primary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n\
             9,,a@b,4,secondary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
        )
        .unwrap();
        assert_eq!(plan.primaries_changed, 2);
        assert_eq!(contact(&plan, 4).updated_at, now());
        assert_eq!(contact(&plan, 9).updated_at, now());
        // Links still point at the smallest id: the graph derives the primary by age itself.
        assert_eq!(links(&plan), vec![(4, None), (9, Some(4))]);

        // Equal createdAt: the smaller id stays primary.
        let plan = plan_csv(
            "8,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n\
             3,555,,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,\n",
        )
        .unwrap();
        assert_eq!(plan.identities_joined_by_values, 1);
        assert_eq!(plan.primaries_changed, 1);
        assert_eq!(contact(&plan, 8).updated_at, now());
        assert_eq!(contact(&plan, 3).updated_at, ts("2023-04-01T00:00:00Z"));
        assert_eq!(links(&plan), vec![(3, None), (8, Some(3))]);
    }

    #[test]
    fn deleted_rows_join_by_link_but_not_by_value() {
        let plan = plan_csv(
            "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
             2,,a@b,,primary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n",
        )
        .unwrap();
        assert_eq!(plan.identities, 2);
        assert_eq!(plan.identities_joined_by_values, 0);
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(links(&plan), vec![(1, None), (2, None)]);

        // Linked: one identity, whose primary is the live row 2 although deleted row 1 is older.
        let plan = plan_csv(
            "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
             2,,a@b,1,secondary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,\n",
        )
        .unwrap();
        assert_eq!(plan.identities, 1);
        assert_eq!(plan.identities_joined_by_values, 0);
        assert_eq!(plan.primaries_changed, 2);
        assert_eq!(links(&plan), vec![(1, None), (2, Some(1))]);
        assert_eq!(contact(&plan, 1).updated_at, now());

        // An identity with no live row: its oldest row is primary, nothing changes.
        let plan = plan_csv(
            "1,,a@b,,primary,2023-04-01T00:00:00Z,2023-04-01T00:00:00Z,2023-05-01T00:00:00Z\n\
             2,,c@b,1,secondary,2023-04-02T00:00:00Z,2023-04-02T00:00:00Z,2023-05-01T00:00:00Z\n",
        )
        .unwrap();
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(contact(&plan, 1).updated_at, ts("2023-04-01T00:00:00Z"));
    }

    fn sample_rows() -> Vec<ContactRow> {
        let mut rows: Vec<ContactRow> = csv_rows(ORIGINAL)
            .unwrap()
            .iter()
            .map(ImportRow::to_contact_row)
            .collect();
        rows.push(ContactRow {
            id: 40,
            phone_number: None,
            email: Email::parse("\"odd,one\"@x.y").unwrap(),
            linked_id: Some(11),
            link_precedence: LinkPrecedence::Secondary,
            created_at: ts("2024-01-01T00:00:00.001Z"),
            updated_at: ts("2024-01-02T00:00:00.002Z"),
            deleted_at: Some(ts("2024-01-03T00:00:00.003Z")),
        });
        rows.push(ContactRow {
            id: 41,
            phone_number: Phone::parse("+1 (555) 010-9999").unwrap(),
            email: None,
            linked_id: None,
            link_precedence: LinkPrecedence::Primary,
            created_at: ts("2024-01-01T00:00:00Z"),
            updated_at: ts("2024-01-01T00:00:00Z"),
            deleted_at: None,
        });
        rows
    }

    #[test]
    fn export_round_trips_through_read_rows() {
        for format in [RowFormat::Csv, RowFormat::Jsonl] {
            let rows = sample_rows();
            let mut out = Vec::new();
            assert_eq!(write_rows(&mut out, format, rows.clone()).unwrap(), 6);
            let back: Vec<ContactRow> = read_rows(out.as_slice(), format)
                .unwrap()
                .iter()
                .map(ImportRow::to_contact_row)
                .collect();
            assert_eq!(back, rows, "{format:?}");
            assert_eq!(detect_format(Path::new("export"), &out), format);
        }
    }

    #[test]
    fn export_shapes() {
        let rows = sample_rows();
        let mut out = Vec::new();
        write_rows(&mut out, RowFormat::Csv, rows.clone()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "1,123456,lorraine@hillvalley.edu,,primary,2023-04-01T00:00:00.374Z,2023-04-01T00:00:00.374Z,"
        );
        assert_eq!(
            lines[5],
            "40,,\"\"\"odd,one\"\"@x.y\",11,secondary,2024-01-01T00:00:00.001Z,2024-01-02T00:00:00.002Z,2024-01-03T00:00:00.003Z"
        );

        let mut out = Vec::new();
        write_rows(&mut out, RowFormat::Jsonl, rows.into_iter().take(2)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1).unwrap(),
            r#"{"id":23,"phoneNumber":"123456","email":"mcfly@hillvalley.edu","linkedId":1,"linkPrecedence":"secondary","createdAt":"2023-04-20T05:30:00.110Z","updatedAt":"2023-04-20T05:30:00.110Z","deletedAt":null}"#
        );
        assert!(text.ends_with("}\n"));
        assert_eq!(write_rows(Vec::new(), RowFormat::Csv, []).unwrap(), 0);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = read_rows(bytes.as_slice(), RowFormat::Csv);
                let _ = read_rows(bytes.as_slice(), RowFormat::Jsonl);
                let mut with_header = format!("{HEADER}\n").into_bytes();
                with_header.extend_from_slice(&bytes);
                let _ = read_rows(with_header.as_slice(), RowFormat::Csv);
                let _ = detect_format(Path::new("x"), &bytes);
            }

            #[test]
            fn plans_match_a_naive_grouping(
                specs in proptest::collection::vec(
                    (0u8..4, 0u8..4, 0u8..12, any::<bool>(), 0i64..5, any::<bool>()),
                    1..12,
                ),
            ) {
                // Row k has id 2k+1 (sparse ids); links point at another row's id or nowhere.
                let n = specs.len();
                let rows: Vec<ImportRow> = specs
                    .iter()
                    .enumerate()
                    .map(|(k, &(e, p, link, deleted, created, primary))| ImportRow {
                        line: k as u64 + 2,
                        id: 2 * k as u64 + 1,
                        email: (e > 0).then(|| Email::parse(&format!("e{e}@x")).unwrap().unwrap()),
                        phone: Phone::parse(&format!("{p}")).unwrap(),
                        linked_id: ((link as usize) < n).then(|| 2 * link as u64 + 1),
                        precedence: if primary { LinkPrecedence::Primary } else { LinkPrecedence::Secondary },
                        created_at: Timestamp(created),
                        updated_at: Timestamp(created),
                        deleted_at: deleted.then_some(Timestamp(9)),
                    })
                    .collect();
                // Naive: grow groups until nothing changes.
                let mut group: Vec<usize> = (0..n).collect();
                let joined = |a: &ImportRow, b: &ImportRow| {
                    a.linked_id == Some(b.id)
                        || b.linked_id == Some(a.id)
                        || (a.is_live() && b.is_live()
                            && ((a.email.is_some() && a.email == b.email)
                                || (a.phone.is_some() && a.phone == b.phone)))
                };
                let mut changed = true;
                while changed {
                    changed = false;
                    for i in 0..n {
                        for j in 0..n {
                            if joined(&rows[i], &rows[j]) && group[i] != group[j] {
                                let (from, to) = (group[i].max(group[j]), group[i].min(group[j]));
                                group.iter_mut().filter(|g| **g == from).for_each(|g| *g = to);
                                changed = true;
                            }
                        }
                    }
                }
                let has_cycle = (0..n).any(|start| {
                    let mut at = start;
                    for _ in 0..=n {
                        match rows[at].linked_id {
                            Some(id) => at = (id as usize - 1) / 2,
                            None => return false,
                        }
                        if at == start {
                            return true;
                        }
                    }
                    false
                });
                let result = plan_import(rows.clone(), Timestamp(100));
                prop_assert_eq!(result.is_err(), has_cycle);
                let Ok(plan) = result else { return Ok(()) };
                let mut groups = group.clone();
                groups.sort_unstable();
                groups.dedup();
                prop_assert_eq!(plan.identities, groups.len());
                prop_assert_eq!(plan.contacts.iter().filter(|c| c.link.is_none()).count(), groups.len());
                for (k, c) in plan.contacts.iter().enumerate() {
                    prop_assert_eq!(c.id, 2 * k as u64 + 1);
                    let first = (0..n).find(|&j| group[j] == group[k]).unwrap();
                    let expected = (first != k).then_some(2 * first as u64 + 1);
                    prop_assert_eq!(c.link, expected);
                    // Touched exactly when the precedence changed.
                    let members: Vec<usize> = (0..n).filter(|&j| group[j] == group[k]).collect();
                    let live: Vec<usize> = members.iter().copied().filter(|&j| rows[j].is_live()).collect();
                    let pool = if live.is_empty() { &members } else { &live };
                    let primary = pool.iter().copied().min_by_key(|&j| rows[j].age()).unwrap();
                    let is_primary = rows[k].precedence == LinkPrecedence::Primary;
                    let touched = is_primary != (primary == k);
                    prop_assert_eq!(c.updated_at, if touched { Timestamp(100) } else { rows[k].updated_at });
                }
            }
        }
    }
}
