//! The `idrecon` command line (docs/behaviour.md §7), the top of the dependency order: it
//! parses flags, layers the configuration and calls the layers below; no rule of the service
//! lives here.
//!
//! - this module: the clap [`Cli`] and its [`Command`]s, the `--data-dir` flag they share,
//!   [`parse`] / [`try_parse_from`] and [`run`], which dispatches to one module per subcommand;
//! - [`serve`], [`import`], [`export`], [`check`], [`feed`]: each subcommand's flags and run;
//! - [`config`]: the `--config` TOML file, layered under flags and `IDRECON_*` environment
//!   variables (precedence flag > environment > file > default);
//! - [`telemetry`]: the global logging flags and the `tracing` subscriber;
//! - [`progress`]: progress of long jobs (`import`, `feed`) on stderr.
//!
//! `main.rs` only parses ([`parse`]), starts tracing ([`telemetry::init`]) and calls [`run`].

pub mod check;
pub mod cluster;
pub mod config;
pub mod export;
pub mod feed;
pub mod import;
pub mod progress;
pub mod serve;
pub mod serve_cluster;
pub mod telemetry;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::rows::RowFormat;

pub use check::CheckArgs;
use config::{ConfigError, EffectiveConfig};
pub use export::ExportArgs;
pub use feed::FeedArgs;
pub use import::ImportArgs;
pub use serve::{BlockedPreset, ServeArgs, shutdown_signal};
use telemetry::LogArgs;

/// The default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "idrecon-data";

/// Identity reconciliation: links every email and phone number of a customer into one identity.
#[derive(Debug, Parser)]
#[command(name = "idrecon", version, about)]
pub struct Cli {
    /// TOML file of settings: keys are the long flag names in snake_case (`data_dir`, `fsync`,
    /// `snapshot_every`, …). Flags and environment variables override it.
    #[arg(long, global = true, env = "IDRECON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logging flags (global: accepted before or after the subcommand).
    #[command(flatten)]
    pub log: LogArgs,
    /// The effective configuration and where each value came from; filled by [`parse`] and
    /// [`try_parse_from`] (empty after a plain `Cli::parse`).
    #[arg(skip)]
    pub effective: EffectiveConfig,
}

/// Parses the process's command line, environment and `--config` file (precedence flag >
/// environment > file > default). Like clap's `Parser::parse`, it prints the error and exits
/// the process on a usage error (exit 2), `--help` or `--version` (exit 0), and on a config file
/// error (exit 2, naming the file and key).
pub fn parse() -> Cli {
    match try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    }
}

/// Parses `args` (the program name first) with the environment and the `--config` file; see
/// [`parse`].
///
/// # Errors
/// [`ConfigError`]: a usage error, `--help`/`--version` (as [`ConfigError::Cli`]), or a config
/// file that cannot be read, is not TOML, has an unknown key or an invalid value.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let loaded = config::load(&Cli::command(), args)?;
    let mut cli = Cli::from_arg_matches(&loaded.matches)?;
    cli.effective = loaded.effective;
    Ok(cli)
}

/// The subcommands (docs/behaviour.md §7).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Recover state from the data directory, then serve the HTTP API.
    Serve(ServeArgs),
    /// Load existing Contact rows (CSV or JSON Lines) into a new, empty data directory.
    Import(ImportArgs),
    /// Write every row to stdout.
    Export(ExportArgs),
    /// Verify every snapshot and log checksum; non-zero exit on corruption serve would refuse.
    Check(CheckArgs),
    /// Send every JSON line of a checkout-events file to a running service's /identify.
    Feed(FeedArgs),
    /// Show or change the membership of a running cluster (docs/CLUSTER.md).
    Cluster(cluster::ClusterArgs),
}

/// `--format`'s parser (import and export): the names of [`RowFormat::ALL`] as clap's possible
/// values, each with its help line (so `--help` and a usage error list them), parsed with
/// [`RowFormat`]'s `FromStr`. The rows module knows nothing of clap.
fn row_format_parser() -> impl clap::builder::TypedValueParser<Value = RowFormat> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = RowFormat::ALL.map(|format| {
        let help = match format {
            RowFormat::Csv => "Comma-separated values with a header row; an empty field is null",
            RowFormat::Jsonl => {
                "JSON Lines: one JSON object per line with the column names as keys"
            }
        };
        PossibleValue::new(format.as_str()).help(help)
    });
    PossibleValuesParser::new(values).try_map(|name| name.parse::<RowFormat>())
}

/// `--data-dir`, shared by every subcommand.
#[derive(Debug, Args)]
pub struct DataDir {
    /// Data directory (log segments, snapshots).
    #[arg(long, env = "IDRECON_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Runs a parsed command line. Returns the process exit code: 0 on success; 1 when `check`
/// finds damage `serve` would refuse to start on, or when a `feed` request failed.
///
/// # Errors
/// Any failure of the subcommand, with context (see each subcommand's `run`); `main` prints it
/// and exits 1.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve::run(args, &cli.log, &cli.effective),
        Command::Import(args) => import::run(args).map(|()| 0),
        Command::Export(args) => export::run(args).map(|()| 0),
        Command::Check(args) => check::run(args),
        Command::Feed(args) => feed::run(args),
        Command::Cluster(args) => cluster::run(args).map(|()| 0),
    }
}

/// `error` and its causes on one line, outermost first, separated by `: `, as `main` prints it
/// (`error: …`, exit 1). A cause is left out when the error it caused already ends with its
/// text: library errors that embed their source (`I/O error on DIR: {source}`) would otherwise
/// print the same cause twice, as anyhow's `{:#}` does.
pub fn error_report(error: &anyhow::Error) -> String {
    let mut report = error.to_string();
    let mut previous = report.clone();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !previous.ends_with(&text) {
            report.push_str(": ");
            report.push_str(&text);
        }
        previous = text;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::error_report;

    #[test]
    fn a_cause_embedded_in_its_error_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("I/O error on DIR: {source}")]
        struct Embeds {
            source: std::io::Error,
        }
        let cause = std::io::Error::other("disk on fire");
        let error = anyhow::Error::new(Embeds { source: cause }).context("cannot open DIR");
        assert_eq!(
            error_report(&error),
            "cannot open DIR: I/O error on DIR: disk on fire"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_report(&plain), "outer: inner");
    }
}
