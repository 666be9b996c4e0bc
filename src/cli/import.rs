//! `idrecon import` (docs/behaviour.md §7): loads a CSV or JSON Lines file of Contact rows into
//! a new, empty data directory as one snapshot at LSN 0. Reading, validation and planning are
//! [`crate::rows`]'s, writing the data directory is [`crate::store::import`]'s; this module
//! opens the file, shows progress and reports.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::DataDir;
use super::progress::Progress;
use crate::contact::Timestamp;
use crate::phone_region::{Normalizer, PhoneRegion};
use crate::rows::{self, RowFormat};
use crate::store::{self, StoreError};

/// Flags of `idrecon import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The data directory it imports into (`--data-dir`).
    #[command(flatten)]
    pub data: DataDir,
    /// Input format; by default from the file name or its first byte.
    #[arg(long, env = "IDRECON_FORMAT", value_parser = super::row_format_parser())]
    pub format: Option<RowFormat>,
    /// Canonicalize phone numbers to E.164 as `serve --phone-region` does (ISO 3166-1 alpha-2,
    /// e.g. IN); a row whose phone number does not parse stops the import.
    #[arg(long, env = "IDRECON_PHONE_REGION", value_name = "ISO")]
    pub phone_region: Option<PhoneRegion>,
    /// CSV (`psql \copy … CSV HEADER`) or JSON Lines file of Contact rows.
    pub file: PathBuf,
}

/// Runs `idrecon import` (docs/behaviour.md §7): everything is parsed, validated and planned
/// before the first byte is written, so a bad file writes nothing. The result is one snapshot
/// at LSN 0. Rows parsed and applied are shown as progress on stderr ([`super::progress`]).
///
/// # Errors
/// The data directory is not empty (an interrupted import's directory is reused) or cannot be
/// read, or another process holds it; the file cannot be opened or read; a row
/// is malformed or invalid, or the rows are inconsistent (a duplicate id, a dangling or cyclic
/// `linkedId`), naming the file and line; or the snapshot cannot be written.
pub(super) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    store::check_import_target(dir)?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let format = match args.format {
        Some(format) => format,
        None => {
            let head = std::io::BufRead::fill_buf(&mut reader)?;
            rows::detect_format(&args.file, head)
        }
    };
    let started = Instant::now();
    let parsing = Progress::stderr("import: parsed", "rows", None);
    let normalizer = Normalizer::new(args.phone_region);
    let parsed =
        rows::read_rows_with_progress(&mut reader, format, &normalizer, |n| parsing.set(n));
    parsing.finish();
    let parsed = parsed.with_context(|| format!("{}", args.file.display()))?;
    let plan = rows::plan_import(parsed, Timestamp::now())
        .with_context(|| format!("{}", args.file.display()))?;
    let applying = Progress::stderr("import: applied", "rows", Some(plan.contacts.len() as u64));
    let imported = store::import(dir, &plan.contacts, |n| applying.inc(n));
    applying.finish();
    let report = imported.map_err(|error| match error {
        // A row that does not fit is a fault of the file's plan: name the file.
        StoreError::ImportRow { .. } => {
            anyhow::Error::new(error).context(format!("{}", args.file.display()))
        }
        other => anyhow::Error::new(other),
    })?;
    eprintln!(
        "imported {} rows into {} identities ({} joined by shared emails or phones, {} primaries recomputed) in {:.1}s; snapshot {}",
        plan.rows,
        plan.identities,
        plan.identities_joined_by_values,
        plan.primaries_changed,
        started.elapsed().as_secs_f64(),
        report.snapshot.display()
    );
    if report.identities_over_default_cap > 0 {
        eprintln!(
            "warning: {} identities have more than {} contacts (the largest has {}); they are \
             imported as they are, but serve's identity size cap (--max-identity-size, default \
             {}) refuses to grow them through /identify (docs/behaviour.md §3.6)",
            report.identities_over_default_cap,
            store::DEFAULT_MAX_IDENTITY_SIZE,
            report.largest_identity,
            store::DEFAULT_MAX_IDENTITY_SIZE
        );
    }
    Ok(())
}
