//! `idrecon check` (docs/behaviour.md §7): verifies a data directory the way `serve` would
//! recover it, changing nothing, and prints one line per finding.

use std::convert::Infallible;
use std::io::Write;

use anyhow::bail;
use clap::Args;

use super::DataDir;
use crate::event::SnapshotItem;
use crate::snapshot::SnapshotDir;
use crate::store;

/// Flags of `idrecon check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The data directory it checks (`--data-dir`).
    #[command(flatten)]
    pub data: DataDir,
}

/// Runs `idrecon check` (docs/behaviour.md §7): verifies every snapshot and log record, then rebuilds the
/// state exactly as `serve` would (same snapshot choice, every event replayed) without changing
/// any file. Exit 0 when `serve` would start (a torn tail, or a damaged snapshot it falls back
/// from, is a warning), 1 when it would refuse (an interrupted import included).
///
/// # Errors
/// The data directory does not exist, its snapshot directory cannot be listed, or stdout cannot
/// be written. Damage is not an error: it is printed and gives exit code 1.
pub(super) fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let dir = &args.data.data_dir;
    if !dir.exists() {
        bail!("data directory {} does not exist", dir.display());
    }
    let mut out = std::io::stdout().lock();
    if crate::cluster::inspect::is_member_dir(dir) {
        return check_member(dir, &mut out);
    }
    if store::is_interrupted_import(dir) {
        writeln!(
            out,
            "error: interrupted import: {} holds the marker {} of an import that did not finish; \
             serve would refuse to start. Run `idrecon import` into it again, or remove it",
            dir.display(),
            store::IMPORT_MARKER
        )?;
        return Ok(1);
    }
    let snapshots = SnapshotDir::on_disk(dir.join("snapshots"));
    for (_, path) in snapshots.list()? {
        // The header counts entries: contacts, history records and the clock. Count the kinds
        // while verifying, so the contacts are reported as contacts.
        let (mut contacts, mut history) = (0u64, 0u64);
        let verified = snapshots.read(&path, |item| {
            match item {
                SnapshotItem::Contact(_) => contacts += 1,
                SnapshotItem::History(_) => history += 1,
                SnapshotItem::Clock(_) | SnapshotItem::Blocked(_) => {}
            }
            Ok::<(), Infallible>(())
        });
        match verified {
            Ok(info) => writeln!(
                out,
                "ok       {}: {contacts} contacts, {history} history records at LSN {}",
                path.display(),
                info.lsn
            )?,
            Err(error) => writeln!(out, "CORRUPT  {error}")?,
        }
    }
    let inspection = match store::inspect(dir) {
        Ok(inspection) => inspection,
        Err(error) => {
            writeln!(out, "CORRUPT  {error}")?;
            writeln!(out, "error: serve would refuse to start")?;
            return Ok(1);
        }
    };
    let report = &inspection.wal;
    writeln!(
        out,
        "ok       log: {} segments, {} records after LSN {}, last LSN {}",
        report.segments, report.records_replayed, inspection.snapshot_lsn, report.last_lsn
    )?;
    writeln!(
        out,
        "ok       state: {} contacts in {} identities",
        inspection.graph.len(),
        inspection.graph.identity_count()
    )?;
    if let Some(torn) = &report.torn_tail {
        writeln!(
            out,
            "warning: torn tail in {} at byte offset {} ({} bytes); serve will cut it",
            torn.file.display(),
            torn.offset,
            torn.bytes_cut
        )?;
    }
    for skipped in &inspection.skipped_snapshots {
        writeln!(
            out,
            "warning: serve skips a damaged snapshot and falls back to an older one: {skipped}"
        )?;
    }
    Ok(0)
}

/// `check` of a cluster member's directory (docs/behaviour.md §9): its newest snapshot and its
/// Raft log, every checksum verified and every entry applied; 0 when it loads, 1 when it does not.
fn check_member(dir: &std::path::Path, out: &mut impl Write) -> anyhow::Result<i32> {
    match crate::cluster::inspect::inspect(dir) {
        Ok(member) => {
            writeln!(
                out,
                "ok       cluster member {}: snapshot through index {}, {} log entries after it \
                 (last index {}), {} contacts",
                dir.display(),
                member
                    .snapshot_index
                    .map_or("none".to_owned(), |i| i.to_string()),
                member.entries_applied,
                member
                    .last_index
                    .map_or("none".to_owned(), |i| i.to_string()),
                member.graph.len()
            )?;
            Ok(0)
        }
        Err(why) => {
            writeln!(out, "DAMAGED  cluster member {}: {why}", dir.display())?;
            Ok(1)
        }
    }
}
