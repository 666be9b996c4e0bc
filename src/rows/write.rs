//! Writing rows out, in a form the readers accept back.

use std::io::{BufWriter, Write};

use super::{COLUMNS, RowFormat};
use crate::contact::{ContactRow, Email, Phone, Timestamp};

/// Writes rows out (docs/behaviour.md §7 `idrecon export`) and returns how many were written.
///
/// * [`RowFormat::Csv`]: the header [`COLUMNS`]
///   (`id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt`), then one
///   record per row; null is an empty field; timestamps RFC 3339 with milliseconds
///   (`2023-04-01T00:00:00.374Z`); fields quoted only when needed.
/// * [`RowFormat::Jsonl`]: one [`ContactRow`] JSON object per line (the `GET /contacts/{id}`
///   shape), each line ending in `\n`.
///
/// The output is buffered and flushed before returning; [`read_rows`](super::read_rows) reads
/// it back to the same rows.
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
