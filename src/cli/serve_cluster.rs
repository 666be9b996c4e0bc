//! `idrecon serve --node-id N --cluster LIST` (docs/behaviour.md §9, docs/CLUSTER.md): the
//! cluster flags, their checks, and running a member: bind its own address, open its Raft log
//! and snapshots, start openraft (forming the cluster on first start), serve the API and the
//! internal routes until SIGINT/SIGTERM, then stop openraft and close the log.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::serve::{ServeArgs, shutdown_signal};
use crate::cluster::{ClusterNode, ClusterOptions, Members, NodeId};
use crate::http::HttpOptions;
use crate::http::auth::AdminToken;
use crate::http::backend::Backend;
use crate::wal::WalOptions;

/// The `--listen` default, which cluster mode replaces by the member's own entry.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Cluster flags of `idrecon serve`; without `--cluster`, `serve` is the single-node service.
#[derive(Debug, Args)]
pub struct ClusterFlags {
    /// This member's id in --cluster (a positive integer).
    #[arg(long, env = "IDRECON_NODE_ID", requires = "cluster")]
    pub node_id: Option<NodeId>,
    /// Run as a member of this Raft group of 3 or 5: ID=HOST:PORT,… (every member started with
    /// the same list forms the cluster; each listens on its own entry).
    #[arg(
        long,
        env = "IDRECON_CLUSTER",
        value_name = "ID=HOST:PORT,…",
        requires = "node_id"
    )]
    pub cluster: Option<Members>,
    /// Shared secret of the members' internal routes. Required when a member address is not
    /// loopback. Prefer the environment or the config file.
    #[arg(
        long,
        env = "IDRECON_CLUSTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub cluster_token: Option<AdminToken>,
    /// Whether a follower forwards requests to the leader (true) or answers 421 naming it.
    #[arg(long, env = "IDRECON_CLUSTER_FORWARD", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub cluster_forward: bool,
    /// Join a running cluster: do not form one from --cluster, wait to be added as a learner
    /// (`idrecon cluster add`). The list then names the members to reach.
    #[arg(long, env = "IDRECON_CLUSTER_JOIN", requires = "cluster")]
    pub cluster_join: bool,
    /// Snapshot and purge the Raft log every this many entries.
    #[arg(long, env = "IDRECON_CLUSTER_SNAPSHOT_EVERY",
          default_value_t = crate::cluster::DEFAULT_CLUSTER_SNAPSHOT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_snapshot_every: u64,
}

/// Whether `address` (`HOST:PORT`) names this machine's loopback interface only.
fn is_loopback(address: &str) -> bool {
    let Some((host, _)) = address.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ClusterFlags {
    /// The member's options, or `None` without `--cluster`.
    ///
    /// # Errors
    /// `--node-id` not in the list; a non-loopback member address without `--cluster-token`.
    pub fn options(&self) -> anyhow::Result<Option<ClusterOptions>> {
        let (Some(id), Some(members)) = (self.node_id, &self.cluster) else {
            return Ok(None);
        };
        if !members.0.contains_key(&id) {
            bail!("--node-id {id} is not one of the members of --cluster {members}");
        }
        if !self.cluster_join {
            members.check_formation()?;
        }
        if self.cluster_token.is_none()
            && let Some((other, address)) = members.0.iter().find(|(_, a)| !is_loopback(a))
        {
            bail!(
                "refusing to form a cluster over the non-loopback address {address} (member \
                     {other}) without a cluster token: anyone who can reach it could join the \
                     Raft group. Set --cluster-token (IDRECON_CLUSTER_TOKEN, or cluster_token \
                     in the config file) to the same secret on every member"
            );
        }
        let mut options = ClusterOptions::new(id, members.clone());
        options.token = self.cluster_token.as_ref().map(|t| t.expose().to_owned());
        options.forward = self.cluster_forward;
        options.join = self.cluster_join;
        options.snapshot_every = self.cluster_snapshot_every;
        // Entries kept behind a snapshot for followers a little behind: one snapshot interval,
        // at most the default; a follower further behind gets the snapshot.
        options.log_kept_after_snapshot = options
            .log_kept_after_snapshot
            .min(self.cluster_snapshot_every);
        Ok(Some(options))
    }
}

/// The address a member binds: its own entry of the list. `--listen` may stay at its default or
/// name the same port (on any interface, e.g. `0.0.0.0:PORT` behind NAT).
fn listen_address(args: &ServeArgs, own: &str) -> anyhow::Result<SocketAddr> {
    let entry = own
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve this member's address {own}"))?
        .next()
        .with_context(|| format!("this member's address {own} resolves to nothing"))?;
    if args.listen.to_string() == DEFAULT_LISTEN {
        return Ok(entry);
    }
    for listen in args.listen.resolve()? {
        if listen == entry || (listen.port() == entry.port() && listen.ip().is_unspecified()) {
            return Ok(listen);
        }
    }
    bail!(
        "--listen {} is not this member's address {own} in --cluster: a member listens on its \
         own entry (or 0.0.0.0 with the same port)",
        args.listen
    )
}

/// Runs a cluster member until a shutdown signal; returns after a clean stop.
///
/// # Errors
/// An address that cannot be bound, a data directory that cannot be opened (locked, damaged),
/// openraft refusing to start, or a failed server or log close.
pub(super) fn serve_member(
    args: ServeArgs,
    mut options: ClusterOptions,
    http: HttpOptions,
) -> anyhow::Result<()> {
    options.max_contacts = args.max_contacts;
    options.disk_full_below_bytes = args.disk_full_below_bytes;
    let own = options
        .members
        .get(&options.node_id)
        .cloned()
        .context("this member is not in the list")?;
    let address = listen_address(&args, &own)?;
    let wal = WalOptions {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        commit_delay: Duration::from_micros(args.commit_delay_us),
    };
    let graph = args.graph_options()?;
    let dir = args.data.data_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Bound first: the other members' votes and entries arrive here as soon as openraft
        // starts.
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let id = options.node_id;
        let members = options.members.len();
        let node = ClusterNode::start(&dir, options, wal, graph)
            .await
            .with_context(|| format!("cannot start member {id} on {}", dir.display()))?;
        tracing::info!(node = id, members, address = %listener.local_addr()?, "serving as a cluster member");
        let served = crate::http::server::serve_backend(
            listener,
            Backend::Cluster(std::sync::Arc::clone(&node)),
            http,
            shutdown_signal(),
        )
        .await
        .context("server stopped");
        tracing::info!(node = id, "shutting down: stopping Raft, closing the log");
        let closed = node.shutdown().await.context("clean shutdown failed");
        served.and(closed)
    })
}
