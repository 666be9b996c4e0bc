//! The `idrecon` command line (SPEC.md §7): flags (clap, each also read from an `IDRECON_*`
//! environment variable and from the `--config` TOML file, see [`crate::config`]) and the
//! subcommands `serve`, `import`, `export`, `check`, `feed`.
//! `main.rs` only parses ([`parse`]), starts tracing and calls [`run`].

use std::fs::File;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{ConfigError, EffectiveConfig};
use crate::contact::Timestamp;
use crate::event::Event;
use crate::graph::BlockList;
use crate::graph::{GraphOptions, IdentityGraph};
use crate::http::auth::AdminToken;
use crate::http::{HttpOptions, ResponseKey};
use crate::phone_region::{Normalizer, PhoneRegion};
use crate::progress::Progress;
use crate::rows::{self, RowFormat};
use crate::snapshot::{self, SnapshotDir};
use crate::store::{self, Store, StoreOptions};
use crate::telemetry::LogArgs;
use crate::wal::FsyncMode;

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
    let loaded = crate::config::load(&Cli::command(), args)?;
    let mut cli = Cli::from_arg_matches(&loaded.matches)?;
    cli.effective = loaded.effective;
    Ok(cli)
}

/// The subcommands (SPEC.md §7).
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
}

/// `--data-dir`, shared by every subcommand.
#[derive(Debug, Args)]
pub struct DataDir {
    /// Data directory (log segments, snapshots).
    #[arg(long, env = "IDRECON_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Flags of `idrecon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IDRECON_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDir,
    /// When a write is acknowledged: after its own fsync (always), after an fsync shared with
    /// concurrent writes (batch, group commit), or once handed to the OS (never).
    #[arg(long, env = "IDRECON_FSYNC", value_parser = fsync_mode_parser(),
          default_value_t = FsyncMode::Batch)]
    pub fsync: FsyncMode,
    /// Spelling of the primary id key in /identify answers.
    #[arg(long, env = "IDRECON_RESPONSE_KEY", default_value_t = ResponseKey::PrimaryContactId,
          value_parser = response_key_parser())]
    pub response_key: ResponseKey,
    /// Take a snapshot after this many logged events (0: only on shutdown).
    #[arg(long, env = "IDRECON_SNAPSHOT_EVERY", default_value_t = 1_000_000)]
    pub snapshot_every: u64,
    /// Most MiB per second a background snapshot writes to the data directory's device, so the
    /// log's fsyncs do not queue behind it (0: unlimited). The snapshot at shutdown is never
    /// paced.
    #[arg(long, env = "IDRECON_SNAPSHOT_WRITE_RATE", value_name = "MIB_PER_S",
          default_value_t = crate::store::DEFAULT_SNAPSHOT_WRITE_MIB_S)]
    pub snapshot_write_rate: u64,
    /// Start a new log segment when the current one reaches this many bytes.
    #[arg(long, env = "IDRECON_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// Group commit (--fsync batch): after a batch of four or more writes, wait before the next
    /// fsync, while writes keep arriving, until the oldest queued write has waited this many
    /// microseconds, so more writes share it (0: never wait).
    #[arg(long, env = "IDRECON_COMMIT_DELAY_US", default_value_t = 800,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub commit_delay_us: u64,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "IDRECON_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a request may take, body included, in milliseconds (408 after).
    #[arg(long, env = "IDRECON_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Longest a connection may take to send a complete request head, idle keep-alive time
    /// included, in milliseconds (the connection is closed after it).
    #[arg(long, env = "IDRECON_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Bearer token that admin routes (`GET /contacts`) require. Prefer the environment or the
    /// config file: a command line is visible to every local user.
    #[arg(
        long,
        env = "IDRECON_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<AdminToken>,
    /// Serve on a non-loopback address without an admin token: admin routes are then open to
    /// anyone who can reach the port.
    #[arg(long, env = "IDRECON_INSECURE_ADMIN")]
    pub insecure_admin: bool,
    /// Built-in list of blocked values to turn on (`recommended`: placeholder emails such as
    /// `test@test.com`, phones of one repeated digit, `null`, `n/a`, …; see README
    /// "Over-merge guards"). Blocked values are stored but never matched.
    #[arg(long, env = "IDRECON_BLOCKED_VALUES", value_enum, default_value_t = BlockedPreset::None)]
    pub blocked_values: BlockedPreset,
    /// An exact email or phone value to block (repeatable; compared after normalization,
    /// ASCII case-insensitively).
    #[arg(long = "blocked-value", value_name = "VALUE", action = clap::ArgAction::Append)]
    pub blocked_value: Vec<String>,
    /// A regular expression (Rust `regex` syntax, matched against the whole normalized value)
    /// of emails or phones to block (repeatable).
    #[arg(long = "blocked-pattern", value_name = "REGEX", action = clap::ArgAction::Append)]
    pub blocked_pattern: Vec<String>,
    /// Most contacts an identity may reach through /identify: a merge or new secondary that
    /// would exceed it is refused, logged and recorded in the identity's history. Off by
    /// default; README "Over-merge guards" recommends a value.
    #[arg(long, env = "IDRECON_MAX_IDENTITY_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_identity_size: Option<u32>,
    /// Canonicalize phone numbers to E.164 before matching and storing, reading numbers without
    /// a country code as numbers of this region (ISO 3166-1 alpha-2, e.g. IN). Numbers that do
    /// not parse are answered 400. Values stored earlier are not rewritten.
    #[arg(long, env = "IDRECON_PHONE_REGION", value_name = "ISO")]
    pub phone_region: Option<PhoneRegion>,
    /// Print the effective configuration as TOML (with where each value came from) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `--fsync`'s parser: the names of [`FsyncMode::ALL`] as clap's possible values (so `--help`
/// and a usage error list them), each parsed with [`FsyncMode`]'s `FromStr`. The log itself
/// knows nothing of clap.
fn fsync_mode_parser() -> impl clap::builder::TypedValueParser<Value = FsyncMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let values = FsyncMode::ALL.map(|mode| {
        let help = match mode {
            FsyncMode::Always => {
                "Every write gets its own write and fsync; no fsync is shared between writes"
            }
            FsyncMode::Batch => {
                "Group commit (the default): one fsync for every write queued since the last one"
            }
            FsyncMode::Never => {
                "No fsync: a write is durable once handed to the OS (it survives a process \
                 crash, not a power loss)"
            }
        };
        PossibleValue::new(mode.as_str()).help(help)
    });
    PossibleValuesParser::new(values).try_map(|name| name.parse::<FsyncMode>())
}

/// The values of `--response-key`, each with its help line, parsed into a [`ResponseKey`].
fn response_key_parser() -> impl clap::builder::TypedValueParser<Value = ResponseKey> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let help = |key: ResponseKey| match key {
        ResponseKey::PrimaryContactId => "`primaryContactId` (the default)",
        ResponseKey::PrimaryContatctId => {
            "`primaryContatctId`, the original task statement's spelling"
        }
        ResponseKey::Both => "Both keys, same value",
    };
    PossibleValuesParser::new(
        ResponseKey::ALL.map(|key| PossibleValue::new(key.as_str()).help(help(key))),
    )
    .try_map(|text| text.parse::<ResponseKey>())
}

/// `--blocked-values`: which built-in block list to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BlockedPreset {
    /// No built-in list (SPEC.md §3 exactly, unless `--blocked-value`/`--blocked-pattern`).
    None,
    /// [`crate::graph::BlockList::recommended`].
    Recommended,
}

impl ServeArgs {
    /// The over-merge guards these flags configure.
    ///
    /// # Errors
    /// An invalid `--blocked-pattern`, naming it.
    pub fn graph_options(&self) -> anyhow::Result<GraphOptions> {
        let own = BlockList::new(
            self.blocked_value.iter().cloned(),
            self.blocked_pattern.iter().cloned(),
        )?;
        let blocked = match self.blocked_values {
            BlockedPreset::None => own,
            BlockedPreset::Recommended => own.union(&BlockList::recommended())?,
        };
        Ok(GraphOptions {
            blocked: std::sync::Arc::new(blocked),
            max_identity_size: self.max_identity_size,
        })
    }

    /// Refuses settings that would start an unsafe server: a non-loopback `--listen` address
    /// without `--admin-token`, unless `--insecure-admin`.
    ///
    /// # Errors
    /// The refusal, naming the address and both ways out.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.graph_options()?;
        if !self.listen.ip().is_loopback() && self.admin_token.is_none() && !self.insecure_admin {
            bail!(
                "refusing to serve on the non-loopback address {} without an admin token: \
                 anyone who can reach it could read every contact through the admin routes. \
                 Set --admin-token (IDRECON_ADMIN_TOKEN, or admin_token in the config file), \
                 or pass --insecure-admin to serve them unprotected",
                self.listen
            );
        }
        Ok(())
    }
}

/// Flags of `idrecon import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDir,
    /// Input format; by default from the file name or its first byte.
    #[arg(long, env = "IDRECON_FORMAT", value_enum)]
    pub format: Option<RowFormat>,
    /// Canonicalize phone numbers to E.164 as `serve --phone-region` does (ISO 3166-1 alpha-2,
    /// e.g. IN); a row whose phone number does not parse stops the import.
    #[arg(long, env = "IDRECON_PHONE_REGION", value_name = "ISO")]
    pub phone_region: Option<PhoneRegion>,
    /// CSV (`psql \copy … CSV HEADER`) or JSON Lines file of Contact rows.
    pub file: PathBuf,
}

/// Flags of `idrecon export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDir,
    /// Output format.
    #[arg(long, env = "IDRECON_FORMAT", value_enum, default_value_t = RowFormat::Csv)]
    pub format: RowFormat,
}

/// Flags of `idrecon check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDir,
}

/// Flags of `idrecon feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Base URL of the running service.
    #[arg(long, env = "IDRECON_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Requests in flight at once (1 keeps the file's order exactly).
    #[arg(long, env = "IDRECON_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// JSON Lines file of /identify request bodies.
    pub file: PathBuf,
}

/// Runs a parsed command line. Returns the process exit code.
///
/// # Errors
/// Any failure, with context; `main` prints it and exits non-zero.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) if args.print_config => {
            args.validate()?;
            print!("{}", cli.effective.to_toml());
            Ok(0)
        }
        Command::Serve(args) => serve(args, &cli.log).map(|()| 0),
        Command::Import(args) => import(args).map(|()| 0),
        Command::Export(args) => export(args).map(|()| 0),
        Command::Check(args) => check(&args.data.data_dir),
        Command::Feed(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let summary =
                runtime.block_on(crate::feed::feed(&args.file, &args.url, args.concurrency))?;
            print!("{summary}");
            Ok(if summary.errors.is_empty() && summary.unreachable == 0 {
                0
            } else {
                1
            })
        }
    }
}

fn serve(args: ServeArgs, log: &LogArgs) -> anyhow::Result<()> {
    args.validate()?;
    // Before recovery, so the log writer's and snapshots' metrics count from the start.
    crate::metrics::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let options = StoreOptions {
        fsync: args.fsync,
        snapshot_every: args.snapshot_every,
        snapshot_pace: crate::snapshot::WritePace::mib_per_second(args.snapshot_write_rate),
        segment_bytes: args.segment_bytes,
        commit_delay: std::time::Duration::from_micros(args.commit_delay_us),
        graph: args.graph_options()?,
    };
    if !options.graph.blocked.is_empty() || options.graph.max_identity_size.is_some() {
        tracing::info!(
            blocked_values = options.graph.blocked.entries().len(),
            max_identity_size = ?options.graph.max_identity_size,
            "over-merge guards on"
        );
    }
    let dir = &args.data.data_dir;
    let (store, recovery) = Store::open(dir, options)
        .with_context(|| format!("cannot recover the data directory {}", dir.display()))?;
    let (contacts, identities) = store.with_graph(|g| (g.len(), g.identity_count()));
    tracing::info!(
        data_dir = %dir.display(),
        snapshot = ?recovery.snapshot.as_ref().map(|p| p.display().to_string()),
        snapshot_contacts = recovery.snapshot_contacts,
        events_replayed = recovery.wal.records_replayed,
        torn_tail = ?recovery.wal.torn_tail.as_ref().map(|t| format!("{} at {}", t.file.display(), t.offset)),
        contacts,
        identities,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovery finished"
    );
    let http = HttpOptions {
        response_key: args.response_key,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        log_pii: log.log_pii,
        admin_token: args.admin_token,
        normalizer: Normalizer::new(args.phone_region),
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, "serving");
        crate::http::server::serve(listener, store.clone(), http, shutdown_signal())
            .await
            .context("server stopped")
    });
    tracing::info!("shutting down: final snapshot");
    let closed = store.close().context("clean shutdown failed");
    served.and(closed)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

/// `idrecon import` (SPEC.md §7): everything is parsed, validated and planned before the first
/// byte is written, so a bad file writes nothing. The result is one snapshot at LSN 0. Rows
/// parsed and applied are shown as progress on stderr ([`crate::progress`]).
fn import(args: ImportArgs) -> anyhow::Result<()> {
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

/// `idrecon export` (SPEC.md §7): read-only; every row in id order to stdout.
fn export(args: ExportArgs) -> anyhow::Result<()> {
    let dir = &args.data.data_dir;
    let graph = store::inspect(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .graph;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    rows::write_rows(&mut out, args.format, graph.all_contacts())?;
    out.flush()?;
    Ok(())
}

/// `idrecon check` (SPEC.md §7): verifies every snapshot and log record, then rebuilds the
/// state exactly as `serve` would (same snapshot choice, every event replayed) without changing
/// any file. Exit 0 when `serve` would start (a torn tail, or a damaged snapshot it falls back
/// from, is a warning), 1 when it would refuse.
fn check(dir: &Path) -> anyhow::Result<i32> {
    if !dir.exists() {
        bail!("data directory {} does not exist", dir.display());
    }
    let mut out = std::io::stdout().lock();
    let snapshots = SnapshotDir::on_disk(dir.join("snapshots"));
    for (_, path) in snapshots.list()? {
        match snapshots.verify(&path) {
            Ok(info) => writeln!(
                out,
                "ok       {}: {} contacts at LSN {}",
                path.display(),
                info.entries,
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
