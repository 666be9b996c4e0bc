//! `idrecon export` (docs/behaviour.md §7): every row of a data directory, in id order, to
//! stdout, read without changing the directory or taking its lock.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;

use super::DataDir;
use crate::rows::{self, RowFormat};
use crate::store;

/// Flags of `idrecon export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory it exports from (`--data-dir`).
    #[command(flatten)]
    pub data: DataDir,
    /// Output format.
    #[arg(long, env = "IDRECON_FORMAT", value_parser = super::row_format_parser(),
          default_value_t = RowFormat::Csv)]
    pub format: RowFormat,
}

/// Runs `idrecon export` (docs/behaviour.md §7): read-only; every row in id order to stdout.
///
/// # Errors
/// The data directory does not exist or is not a directory (rather than exporting it as empty:
/// a mistyped path must not look like an empty service), cannot be read or recovered (it is
/// damaged, or an event does not apply), or stdout cannot be written.
pub(super) fn run(args: ExportArgs) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("data directory {} is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("data directory {} does not exist", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    let graph = if crate::cluster::inspect::is_member_dir(dir) {
        crate::cluster::inspect::inspect(dir)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot read the cluster member directory {}", dir.display()))?
            .graph
    } else {
        store::inspect(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .graph
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    rows::write_rows(&mut out, args.format, graph.all_contacts())?;
    out.flush()?;
    Ok(())
}
