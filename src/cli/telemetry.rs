//! Logging: the global `--log-format` / `--log-pii` flags and the `tracing` subscriber they
//! configure (docs/behaviour.md §6.10, "Logs").
//!
//! Logs go to stderr, one line per event, as human-readable text (the default; coloured only
//! when stderr is a terminal) or as one JSON object per line. Which events are kept follows
//! `RUST_LOG` (an [`EnvFilter`] directive such as `info,idrecon::http=debug`), [`DEFAULT_FILTER`]
//! when it is unset or invalid. Request logs are at debug level: every request runs in an `http_request`
//! span (method, route, request id) whose `request finished` event adds status and latency.
//!
//! Emails and phone numbers are personal data: idrecon never logs them unless `--log-pii` is
//! given, and then only in the debug-level `identify decision` line of `/identify`.

use std::io::IsTerminal;

use clap::Args;
use tracing_subscriber::EnvFilter;

/// The default filter when `RUST_LOG` is unset or unparsable: `info`, except openraft's own
/// events at `warn` (its `info` level logs every vote and replication step; the cluster's
/// leader and membership changes are logged by idrecon itself, docs/behaviour.md §9).
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Shape of a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: timestamp, level, spans, target, message and fields
    /// (`… INFO idrecon::cli::serve: serving address=127.0.0.1:3000`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (the message and the
    /// event's fields), and `span` / `spans` (the fields of the enclosing spans, e.g. the
    /// request id).
    Json,
}

/// Logging flags, global to every subcommand (`idrecon --log-format json serve` and
/// `idrecon serve --log-format json` are the same).
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        env = "IDRECON_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// Include emails and phone numbers in debug logs (off by default: they are personal data).
    /// The environment variable takes true/false, 1/0, yes/no or on/off.
    #[arg(
        long,
        global = true,
        env = "IDRECON_LOG_PII",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub log_pii: bool,
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the log subscriber: {0}")]
pub struct TelemetryError(String);

/// Installs the process's global `tracing` subscriber: events to stderr in `args.log_format`,
/// filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]).
///
/// # Errors
/// [`TelemetryError`] when a global subscriber is already installed.
pub fn init(args: &LogArgs) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| TelemetryError(error.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn flags_parse_with_text_and_no_pii_by_default() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Text);
        assert!(!cli.log.log_pii);
        let cli = Cli::try_parse_from(["x", "--log-format", "json", "--log-pii"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert!(cli.log.log_pii);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
