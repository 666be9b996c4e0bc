//! `idrecon serve` (docs/behaviour.md §7): its flags, the store and HTTP options they build, and
//! the run itself: install the metrics recorder, bind the address, recover the data directory
//! (§8), listen and serve until SIGINT or SIGTERM ([`shutdown_signal`]), then close the store
//! (final snapshot, log closed). `--print-config` prints the effective configuration instead
//! ([`super::config::EffectiveConfig::to_toml`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::DataDir;
use super::config::EffectiveConfig;
use super::serve_cluster::ClusterFlags;
use super::telemetry::LogArgs;
use crate::graph::{BlockList, GraphOptions};
use crate::http::auth::AdminToken;
use crate::http::{HttpOptions, ResponseKey};
use crate::phone_region::{Normalizer, PhoneRegion};
use crate::store::{Store, StoreOptions};
use crate::wal::FsyncMode;

/// Flags of `idrecon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: IP:PORT (`127.0.0.1:3000`, `[::1]:3000`) or HOST:PORT
    /// (`localhost:3000`, resolved; the first address that binds is used).
    #[arg(long, env = "IDRECON_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: ListenAddr,
    /// The data directory it serves (`--data-dir`).
    #[command(flatten)]
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
    /// microseconds, so more writes share it; 5 ms while 64 or more requests wait for the log
    /// (0: never wait).
    #[arg(long, env = "IDRECON_COMMIT_DELAY_US", default_value_t = 800,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub commit_delay_us: u64,
    /// `/healthz` answers 503 `disk_full` while the data directory's file system has fewer
    /// bytes available than this (docs/behaviour.md §6.9); at least, and by default, one
    /// preallocation step of the log (1 MiB). Raise it to be warned while there is time to act.
    #[arg(long, env = "IDRECON_DISK_FULL_BELOW_BYTES",
          default_value_t = crate::store::DISK_FULL_BELOW_BYTES,
          value_parser = clap::value_parser!(u64).range(crate::store::DISK_FULL_BELOW_BYTES..))]
    pub disk_full_below_bytes: u64,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, env = "IDRECON_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,
    /// Longest a request may take, body included, in milliseconds (408 after).
    #[arg(long, env = "IDRECON_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Longest a connection may take to send a complete request head, idle keep-alive time
    /// included, or leave an answer unread, in milliseconds (the connection is closed after
    /// it).
    #[arg(long, env = "IDRECON_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Most connections open at once; a connection beyond them is closed at once, and counted
    /// in /metrics (also closed: a connection whose client reads nothing for the idle timeout
    /// while an answer waits).
    #[arg(long, env = "IDRECON_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Bearer token that admin routes (every route reading or changing rows or identities)
    /// require. Prefer the environment or the config file: a command line is visible to every
    /// local user.
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
    /// `test@test.com`, phones of one repeated digit, `null`, `n/a`, …; see docs/behaviour.md
    /// §3.6). Blocked values are stored but never matched.
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
    /// Most contacts (deleted ones included) an identity may reach through /identify: a merge
    /// or new secondary that would exceed it is refused, logged and recorded in the identity's
    /// history (docs/behaviour.md §3.6). 0 lifts the cap.
    #[arg(long, env = "IDRECON_MAX_IDENTITY_SIZE",
          default_value_t = crate::store::DEFAULT_MAX_IDENTITY_SIZE)]
    pub max_identity_size: u32,
    /// Most contacts the service holds (deleted ones included): past it, a request that would
    /// add a contact is answered 507 `capacity_exceeded` and changes nothing, while reads,
    /// merges and requests that add nothing keep working (docs/behaviour.md §3.6). Off by
    /// default; docs/OPERATIONS.md gives the sizing rule against a memory limit.
    #[arg(long, env = "IDRECON_MAX_CONTACTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_contacts: Option<u64>,
    /// Canonicalize phone numbers to E.164 before matching and storing, reading numbers without
    /// a country code as numbers of this region (ISO 3166-1 alpha-2, e.g. IN). Numbers that do
    /// not parse are answered 400. Values stored earlier are not rewritten.
    #[arg(long, env = "IDRECON_PHONE_REGION", value_name = "ISO")]
    pub phone_region: Option<PhoneRegion>,
    /// Cluster mode (docs/behaviour.md §9).
    #[command(flatten)]
    pub cluster: ClusterFlags,
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
    /// No built-in list (docs/behaviour.md §3.1–§3.5 exactly, unless
    /// `--blocked-value`/`--blocked-pattern`).
    None,
    /// The built-in list of placeholder values (docs/behaviour.md §3.6).
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
            max_identity_size: (self.max_identity_size > 0).then_some(self.max_identity_size),
        })
    }

    /// Refuses settings that would start an unsafe server: a `--listen` address that resolves
    /// to any non-loopback address without `--admin-token`, unless `--insecure-admin`. Returns
    /// the addresses `--listen` resolves to, in resolver order.
    ///
    /// # Errors
    /// An invalid `--blocked-pattern` (as [`ServeArgs::graph_options`]), a host name that does
    /// not resolve, or the refusal, naming the address and both ways out.
    pub fn validate(&self) -> anyhow::Result<Vec<SocketAddr>> {
        self.graph_options()?;
        self.cluster.options()?;
        let addresses = self.listen.resolve()?;
        let exposed = addresses.iter().any(|a| !a.ip().is_loopback());
        if exposed && self.admin_token.is_none() && !self.insecure_admin {
            bail!(
                "refusing to serve on the non-loopback address {} without an admin token: \
                 anyone who can reach it could read every contact through the admin routes. \
                 Set --admin-token (IDRECON_ADMIN_TOKEN, or admin_token in the config file), \
                 or pass --insecure-admin to serve them unprotected",
                self.listen
            );
        }
        Ok(addresses)
    }
}

/// Runs `idrecon serve`: prints the effective configuration and returns 0 with
/// `--print-config`, otherwise serves until a shutdown signal and returns 0 after a clean
/// shutdown.
///
/// # Errors
/// The refusals of [`ServeArgs::validate`] (also with `--print-config`), an unrecoverable data
/// directory, an address that cannot be bound, or a failed server or final snapshot/close.
pub(super) fn run(
    args: ServeArgs,
    log: &LogArgs,
    effective: &EffectiveConfig,
) -> anyhow::Result<i32> {
    if args.print_config {
        args.validate()?;
        print!("{}", effective.to_toml());
        return Ok(0);
    }
    serve(args, log).map(|()| 0)
}

/// The HTTP options the flags give.
fn http_options(args: &ServeArgs, log: &LogArgs) -> HttpOptions {
    HttpOptions {
        response_key: args.response_key,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        max_connections: args.max_connections as usize,
        log_pii: log.log_pii,
        admin_token: args.admin_token.clone(),
        normalizer: Normalizer::new(args.phone_region),
    }
}

fn serve(args: ServeArgs, log: &LogArgs) -> anyhow::Result<()> {
    let addresses = args.validate()?;
    // Before recovery, so the log writer's and snapshots' metrics count from the start.
    crate::metrics::install();
    if let Some(cluster) = args.cluster.options()? {
        let http = http_options(&args, log);
        return super::serve_cluster::serve_member(args, cluster, http);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let options = StoreOptions {
        fsync: args.fsync,
        snapshot_every: args.snapshot_every,
        snapshot_pace: crate::snapshot::WritePace::mib_per_second(args.snapshot_write_rate),
        segment_bytes: args.segment_bytes,
        commit_delay: Duration::from_micros(args.commit_delay_us),
        graph: args.graph_options()?,
        max_contacts: args.max_contacts,
        disk_full_below_bytes: args.disk_full_below_bytes,
        ..StoreOptions::default()
    };
    if !options.graph.blocked.is_empty() || options.graph.max_identity_size.is_some() {
        tracing::info!(
            blocked_values = options.graph.blocked.entries().len(),
            max_identity_size = ?options.graph.max_identity_size,
            "over-merge guards on"
        );
    }
    // The address is taken before recovery, which can take minutes and ends with a snapshot
    // written on the way out: a port in use must fail at once. It listens (and so accepts
    // connections) only once recovery has finished (docs/behaviour.md §6.9).
    let socket = reserve(&args.listen, &addresses)?;
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
    let http = http_options(&args, log);
    let served = runtime.block_on(async {
        let listener = socket
            .listen(LISTEN_BACKLOG)
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

/// Connections the kernel queues for `accept` (as `tokio::net::TcpListener::bind` uses).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds a socket to the first of `addresses` (what `listen` resolved to) that binds, without
/// listening on it yet: the address is reserved (another process bound to it fails here), but
/// connections are refused until [`tokio::net::TcpSocket::listen`]. `SO_REUSEADDR` is set as
/// `TcpListener::bind` sets it, so a restart does not wait for the previous run's connections
/// in `TIME_WAIT`.
///
/// # Errors
/// No address binds (in use, not local, permission denied): names `listen` and, when it
/// resolved to more than one address, each address with its error.
fn reserve(listen: &ListenAddr, addresses: &[SocketAddr]) -> anyhow::Result<tokio::net::TcpSocket> {
    let bind = |address: SocketAddr| -> std::io::Result<tokio::net::TcpSocket> {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        Ok(socket)
    };
    let mut failures = Vec::new();
    for &address in addresses {
        match bind(address) {
            Ok(socket) => return Ok(socket),
            Err(error) => failures.push((address, error)),
        }
    }
    match failures.as_slice() {
        [(_, error)] => bail!("cannot listen on {listen}: {error}"),
        _ => bail!(
            "cannot listen on {listen}: {}",
            failures
                .iter()
                .map(|(address, error)| format!("{address}: {error}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// The `--listen` address (docs/behaviour.md §7): an IP socket address (`127.0.0.1:3000`,
/// `[::1]:3000`) or a host name and port (`localhost:3000`), kept as typed and resolved by
/// [`ListenAddr::resolve`] when `serve` starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr(String);

impl std::str::FromStr for ListenAddr {
    type Err = String;

    /// Accepts `IP:PORT`, `[IPv6]:PORT` and `HOST:PORT`; nothing is resolved yet.
    ///
    /// # Errors
    /// A bare port (`3000`), with the two addresses it most likely means; anything else that
    /// is not `HOST:PORT` with a port from 0 to 65535.
    fn from_str(text: &str) -> Result<Self, String> {
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(Self(text.to_owned()));
        }
        if text.parse::<u16>().is_ok() {
            return Err(format!(
                "a port without a host: use 127.0.0.1:{text} (or 0.0.0.0:{text})"
            ));
        }
        match text.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && !host.contains(':')
                    && !host.contains(char::is_whitespace)
                    && port.parse::<u16>().is_ok() =>
            {
                Ok(Self(text.to_owned()))
            }
            _ => Err("expected HOST:PORT, such as 127.0.0.1:3000, [::1]:3000 or \
                      localhost:3000"
                .to_owned()),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    /// Writes the address as it was given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ListenAddr {
    /// The socket addresses this names, in resolver order: the address itself for an IP, every
    /// address of the host name otherwise (a blocking lookup).
    ///
    /// # Errors
    /// The host name does not resolve, or resolves to no address; names the address.
    pub fn resolve(&self) -> anyhow::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        let addresses: Vec<SocketAddr> = self
            .0
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the listen address {self}"))?
            .collect();
        if addresses.is_empty() {
            bail!("the listen address {self} resolves to no address");
        }
        Ok(addresses)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the signal on which `serve` stops accepting
/// connections, drains requests in flight and closes the store (docs/behaviour.md §7). When
/// the SIGTERM handler cannot be installed, only SIGINT counts.
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
