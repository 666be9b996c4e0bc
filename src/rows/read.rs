//! Reading CSV and JSON Lines files of rows, with the line number of every row, each value
//! validated and normalized through [`Normalizer`].

use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::{
    COLUMNS, CREATED_AT, DELETED_AT, EMAIL, ID, ImportError, ImportRow, LINKED_ID, PHONE,
    PRECEDENCE, RowFormat, UPDATED_AT,
};
use crate::contact::{LinkPrecedence, Timestamp};
use crate::phone_region::Normalizer;

/// Reads every row of an import file (docs/behaviour.md §7), normalizing and validating each
/// value as docs/behaviour.md §4 requires.
///
/// * [`RowFormat::Csv`]: the first record is a header naming each of [`COLUMNS`] exactly once,
///   in any order (a UTF-8 byte-order mark before it is ignored). Every record must have as many
///   fields as the header. An empty field is null (that is how `psql \copy … CSV HEADER` writes
///   NULL; an empty email or phone is absent anyway). A file with only the header has no rows.
/// * [`RowFormat::Jsonl`]: every line that is not blank holds one JSON object with the keys of
///   [`COLUMNS`]; `id`, `linkPrecedence`, `createdAt` and `updatedAt` are required, the others
///   may be null or missing. `id` and `linkedId` are positive JSON integers; `phoneNumber` a
///   string or a non-negative integer that fits in 64 bits (docs/behaviour.md §4); the others
///   strings.
///
/// In both formats surrounding white space of a value is ignored; `linkPrecedence` must then be
/// exactly `primary` or `secondary`; timestamps are RFC 3339 or PostgreSQL's text form,
/// truncated to milliseconds.
///
/// # Errors
/// [`ImportError::Invalid`] at the first offending line: a header column missing, unknown or
/// repeated; a record with the wrong number of fields; text that is not UTF-8; a JSONL line that
/// is not a JSON object or has an unknown key; an invalid value; a row with neither email nor
/// phone (docs/behaviour.md §4: both absent is invalid). [`ImportError::Io`] when reading fails.
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

/// Validates one row's raw fields into an [`ImportRow`] (docs/behaviour.md §4 values).
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rows::detect_format;

    const HEADER: &str =
        "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt";

    fn err_line(result: Result<impl std::fmt::Debug, ImportError>) -> (u64, String) {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("line {}: ", err.line())),
            "{text}"
        );
        (err.line(), text)
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
        }
    }
}
