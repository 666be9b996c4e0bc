//! `idrecon import` (docs/behaviour.md §7): loads a CSV or JSON Lines file of Contact rows into
//! a new, empty data directory as one snapshot at LSN 0. Reading, validation and planning are
//! [`crate::rows`]'s; this module opens the file, shows progress and writes the snapshot.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use super::DataDir;
use super::progress::Progress;
use crate::contact::Timestamp;
use crate::event::Event;
use crate::graph::IdentityGraph;
use crate::phone_region::{Normalizer, PhoneRegion};
use crate::rows::{self, RowFormat};
use crate::snapshot::{self, SnapshotDir};

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

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// Runs `idrecon import` (docs/behaviour.md §7): everything is parsed, validated and planned
/// before the first byte is written, so a bad file writes nothing. The result is one snapshot
/// at LSN 0. Rows parsed and applied are shown as progress on stderr ([`super::progress`]).
///
/// # Errors
/// The data directory is not empty or cannot be read; the file cannot be opened or read; a row
/// is malformed or invalid, or the rows are inconsistent (a duplicate id, a dangling or cyclic
/// `linkedId`), naming the file and line; or the snapshot cannot be written.
pub(super) fn run(args: ImportArgs) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    if !is_empty_dir(dir)? {
        bail!(
            "import needs a new, empty data directory; {} is not empty",
            dir.display()
        );
    }
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
    let mut graph = IdentityGraph::new();
    graph.reserve(plan.contacts.len());
    let applying = Progress::stderr("import: applied", "rows", Some(plan.contacts.len() as u64));
    for contact in &plan.contacts {
        graph
            .apply(&Event::ContactInserted(contact.clone()))
            .with_context(|| {
                format!(
                    "{}: row id {} does not fit the plan",
                    args.file.display(),
                    contact.id
                )
            })?;
        applying.inc(1);
    }
    applying.finish();
    debug_assert_eq!(graph.check_invariants(), Ok(()));
    let bytes = snapshot::encode(0, graph.next_id(), graph.snapshot_entries())?;
    let path = SnapshotDir::on_disk(dir.join("snapshots")).write_file(0, &bytes)?;
    eprintln!(
        "imported {} rows into {} identities ({} joined by shared emails or phones, {} primaries recomputed) in {:.1}s; snapshot {}",
        plan.rows,
        plan.identities,
        plan.identities_joined_by_values,
        plan.primaries_changed,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}
