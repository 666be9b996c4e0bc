//! Cluster mode: a Raft group of 3 or 5 members on openraft, replicating the identity graph
//! (docs/behaviour.md §9; operations in docs/CLUSTER.md, file formats in docs/format.md).
//!
//! ```text
//! node        a running member: openraft, the replica, writes and linearizable reads
//!   log_store   the Raft log on idrecon's own write-ahead log, the vote (raft_state)
//!   state_machine  the graph (replica) and its snapshots, built and installed as files
//!   network     Raft messages over HTTP to the other members
//!   inspect     reading a member's directory without changing it (export, check)
//!   membership  status, adding a learner, promoting it, removing a member
//!   watch       metrics and log lines that follow openraft's state
//!   erasure     after an erasure, snapshot and purge the log so the values leave the files
//!   proposals   the /identify commands of concurrent requests proposed as one entry
//! types       what an entry carries (the request and the leader's time) and its answer
//! ```
//!
//! What is replicated is the request that decides a change, stamped once with the leader's
//! time; every member applies it with the same pure rules, so members that applied the same
//! entries hold the same graph ([`types`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod erasure;
pub mod inspect;
pub mod log_store;
mod membership;
pub mod network;
pub mod node;
mod proposals;
pub mod raft_state;
pub mod replica;
pub mod seed;
pub mod state_machine;
pub mod types;
mod watch;

pub use membership::{MemberStatus, Status};
pub use node::{ClusterNode, Role};
pub use types::{Answer, Command, NodeId};

/// Bytes per piece when a snapshot is streamed to a lagging follower.
pub const SNAPSHOT_PIECE_BYTES: u64 = 1 << 20;

/// Default `--snapshot-every` in cluster mode: a snapshot every this many entries, after
/// which the log is purged behind it (the entries not purged are kept in memory too).
pub const DEFAULT_CLUSTER_SNAPSHOT_EVERY: u64 = 50_000;

/// The members of a cluster: `1=127.0.0.1:4001,2=127.0.0.1:4002,3=127.0.0.1:4003`, each id a
/// positive integer, each address `HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members(pub BTreeMap<NodeId, String>);

/// Why a member list or cluster option is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct MembersError(String);

impl FromStr for Members {
    type Err = MembersError;

    fn from_str(text: &str) -> Result<Members, MembersError> {
        let mut members = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| MembersError(format!("`{item}` is not ID=HOST:PORT")))?;
            let id: NodeId = id.trim().parse().ok().filter(|&id| id > 0).ok_or_else(|| {
                MembersError(format!("member id `{id}` is not a positive integer"))
            })?;
            let address = address.trim();
            match address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return Err(MembersError(format!(
                        "member {id}'s address `{address}` is not HOST:PORT"
                    )));
                }
            }
            if members.insert(id, address.to_owned()).is_some() {
                return Err(MembersError(format!("member id {id} is listed twice")));
            }
        }
        if members.is_empty() {
            return Err(MembersError("the member list is empty".to_owned()));
        }
        Ok(Members(members))
    }
}

impl Members {
    /// Checks that the list can form a cluster: 3 or 5 voters (an even number adds no fault
    /// tolerance; more than 5 slows every commit).
    ///
    /// # Errors
    /// Naming the count.
    pub fn check_formation(&self) -> Result<(), MembersError> {
        if matches!(self.0.len(), 3 | 5) {
            Ok(())
        } else {
            Err(MembersError(format!(
                "a cluster forms with 3 or 5 members, the list has {}",
                self.0.len()
            )))
        }
    }
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|(id, a)| format!("{id}={a}")).collect();
        f.write_str(&items.join(","))
    }
}

/// Settings of a cluster member.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This member's id (`--node-id`).
    pub node_id: NodeId,
    /// Every initial member's address (`--cluster`), this one's included.
    pub members: BTreeMap<NodeId, String>,
    /// The shared secret of the internal routes (`--cluster-token`); `None` allows only
    /// loopback members.
    pub token: Option<String>,
    /// Whether a follower forwards requests to the leader (`--cluster-forward`, default) or
    /// answers `421` with the leader's address.
    pub forward: bool,
    /// Join a formed cluster (wait to be added) instead of forming one from `members`.
    pub join: bool,
    /// Snapshot (and purge the log) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for followers only a little behind.
    pub log_kept_after_snapshot: u64,
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout range, in milliseconds: a follower stands for election once it has
    /// heard nothing from the leader for the range's maximum (openraft's leader lease) plus its
    /// own draw from the range, and twice the maximum later if it last saw a longer log.
    pub election_timeout_ms: (u64, u64),
    /// Most contacts the leader lets the graph hold (`--max-contacts`, docs/behaviour.md
    /// §3.6); `None` for no limit.
    pub max_contacts: Option<u64>,
    /// `/healthz` answers `503 disk_full` while the member's data directory has fewer bytes
    /// available than this (`--disk-full-below-bytes`, docs/behaviour.md §6.9).
    pub disk_full_below_bytes: u64,
}

impl ClusterOptions {
    /// Options for member `node_id` of `members` with the defaults: forwarding on, a heartbeat
    /// every 50 ms, an election timeout of 100–200 ms, a snapshot every
    /// [`DEFAULT_CLUSTER_SNAPSHOT_EVERY`] entries.
    ///
    /// The election timeout is below openraft's 150–300 ms because openraft scales every wait
    /// by its maximum: a follower first waits the maximum as the old leader's lease, and twice
    /// the maximum more once it has seen a longer log (a mark it keeps until its next
    /// candidacy). Under load a leader's death took up to about 1.8 s to heal with 150–300 ms
    /// and about 1.1 s with 100–200 ms (RELIABILITY.md), inside the 2 s of docs/behaviour.md
    /// §9, while a leader still has to fall silent for 300 ms, six heartbeats, before anyone
    /// stands.
    pub fn new(node_id: NodeId, members: Members) -> ClusterOptions {
        ClusterOptions {
            node_id,
            members: members.0,
            token: None,
            forward: true,
            join: false,
            snapshot_every: DEFAULT_CLUSTER_SNAPSHOT_EVERY,
            log_kept_after_snapshot: 1_000,
            heartbeat_ms: 50,
            election_timeout_ms: (100, 200),
            max_contacts: None,
            disk_full_below_bytes: crate::store::DISK_FULL_BELOW_BYTES,
        }
    }
}

/// A member as a client reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's id.
    pub id: NodeId,
    /// The leader's `HOST:PORT`.
    pub address: String,
}

impl Leader {
    /// The leader a refusal from openraft names, when it names one with its address.
    pub fn of(
        forward: openraft::error::ForwardToLeader<NodeId, openraft::BasicNode>,
    ) -> Option<Leader> {
        let id = forward.leader_id?;
        forward.leader_node.map(|node| Leader {
            id,
            address: node.addr,
        })
    }
}

/// Why a cluster member cannot execute a request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClusterError {
    /// This member does not lead; the leader it knows, if any.
    #[error("this member is not the leader")]
    NotLeader(Option<Leader>),
    /// No quorum, no leader, shutting down, or the member failed to start.
    #[error("the cluster is unavailable: {0}")]
    Unavailable(String),
    /// The graph cannot take another contact.
    #[error("no contact id or slot is left for a new contact")]
    Full,
    /// The request would add a contact past `--max-contacts` (docs/behaviour.md §3.6).
    #[error("the cluster holds its maximum of {limit} contacts")]
    CapacityExceeded {
        /// The limit.
        limit: u64,
    },
    /// A membership change that cannot be made as asked (an unknown member, removing a voter
    /// through the learner path, a change while another is in progress).
    #[error("membership change refused: {0}")]
    Membership(String),
}
