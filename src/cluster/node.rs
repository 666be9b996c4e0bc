//! A running cluster member: its openraft instance, its replica of the graph, and the
//! operations the HTTP layer calls on the leader (docs/behaviour.md §9; docs/CLUSTER.md).
//!
//! - **Writes** (`/identify` when it changes something, deletions, erasures) are proposed with
//!   [`Raft::client_write`], which returns once the entry is committed on a majority and
//!   applied here; the answer is what applying it answered. The `/identify` writes of
//!   concurrent requests share entries ([`super::proposals`]).
//! - **Reads** are linearizable: before reading its replica the leader confirms, with a
//!   heartbeat round to a majority (openraft's read index), that it still leads and has applied
//!   everything committed when the read arrived. Reads that arrive while a confirmation is in
//!   flight share the next one (`ReadBarrier`), so a busy leader sends one round per batch of
//!   reads, not one per read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState};

use super::log_store::LogStore;
use super::network::Network;
use super::proposals::Proposer;
use super::replica::Replica;
use super::state_machine::StateMachine;
use super::types::{Answer, Command, NodeId, Raft};
use super::{ClusterError, ClusterOptions, Leader};
use crate::contact::Timestamp;
use crate::graph::{Decision, GraphOptions, IdentifyRequest, Identity};
use crate::snapshot::SnapshotDir;
use crate::storage::DiskSpace;
use crate::store::{Outcome, over_contact_limit};
use crate::wal::WalOptions;

/// A member's role, as `/healthz` and `/metrics` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads the cluster: executes writes and linearizable reads.
    Leader,
    /// A voter following a leader (or waiting for one).
    Follower,
    /// Asking the others for votes.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Shutting down.
    Shutdown,
}

impl Role {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// Batches linearizable reads: each confirmation of leadership covers every read that arrived
/// before it started.
#[derive(Default)]
struct ReadBarrier {
    /// Reads that have arrived so far (a ticket per read).
    issued: AtomicU64,
    /// Every read with a ticket below this is covered by a finished confirmation.
    covered: AtomicU64,
    /// One confirmation at a time.
    running: tokio::sync::Mutex<()>,
}

/// A running member.
pub struct ClusterNode {
    id: NodeId,
    raft: Raft,
    replica: Arc<Replica>,
    log: LogStore,
    options: ClusterOptions,
    reads: ReadBarrier,
    /// Batches the `/identify` commands of concurrent requests ([`super::proposals`]).
    proposals: Proposer,
    /// Set once [`ClusterNode::shutdown`] starts; the member's own tasks stop at it.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The free-space reading of the data directory, for `/healthz`.
    disk_space: DiskSpace,
    /// Held for the member's lifetime: the data directory's lock.
    _lock: Box<dyn Send + Sync>,
}

impl ClusterNode {
    /// Opens member `options.node_id`'s data directory `dir` (its Raft log, its snapshots),
    /// starts openraft, and, on a new member whose log is empty, forms the cluster with every
    /// member of `options.members` in the background ([`ClusterNode::form_later`]; docs/
    /// behaviour.md §9: members started with the same list form the cluster by themselves).
    ///
    /// # Errors
    /// [`ClusterError::Unavailable`] naming what failed: the directory is locked or unreadable,
    /// the log or a snapshot is damaged, openraft refused the configuration.
    pub async fn start(
        dir: &Path,
        options: ClusterOptions,
        wal: WalOptions,
        graph: GraphOptions,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ClusterError::Unavailable(format!("{what}: {e}"))
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the data directory", &e))?;
        let lock = crate::storage::Storage::lock_dir(&crate::storage::RealFs, dir)
            .map_err(|e| fail("cannot lock the data directory", &e))?
            .ok_or_else(|| {
                ClusterError::Unavailable(format!(
                    "data directory {} is in use by another process",
                    dir.display()
                ))
            })?;
        let log = LogStore::open(&dir.join("raft"), wal)
            .map_err(|e| fail("cannot open the Raft log", &e))?;
        let machine = StateMachine::open(SnapshotDir::on_disk(dir.join("snapshots")), &graph)
            .map_err(|e| fail("cannot load a snapshot", &e))?;
        let replica = Arc::clone(machine.replica());
        let config = openraft::Config {
            cluster_name: "idrecon".to_owned(),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_ms.0,
            election_timeout_max: options.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: options.log_kept_after_snapshot,
            snapshot_max_chunk_size: super::SNAPSHOT_PIECE_BYTES,
            install_snapshot_timeout: 2_000,
            max_payload_entries: super::network::MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| fail("invalid Raft configuration", &e))?;
        let network = Network::new(options.token.clone())
            .map_err(|e| fail("cannot build the HTTP client", &e))?;
        let raft = Raft::new(
            options.node_id,
            Arc::new(config),
            network,
            log.clone(),
            machine,
        )
        .await
        .map_err(|e| fail("cannot start Raft", &e))?;
        let proposals = Proposer::start(raft.clone());
        let disk_space = DiskSpace::new(
            Arc::new(crate::storage::RealFs),
            dir.to_path_buf(),
            options.disk_full_below_bytes,
        );
        let node = Arc::new(ClusterNode {
            id: options.node_id,
            raft,
            replica,
            log,
            options,
            reads: ReadBarrier::default(),
            proposals,
            stopping: tokio::sync::watch::Sender::new(false),
            disk_space,
            _lock: lock,
        });
        if !node.options.join {
            node.form_later();
        }
        super::watch::spawn(Arc::clone(&node));
        super::erasure::spawn(Arc::clone(&node));
        Ok(node)
    }

    /// Forms the cluster in the background, after a wait that grows with the member's rank in
    /// the list: twice the longest election timeout per member listed before it. Several
    /// members forming the same cluster is safe, but one that forms it after a leader was
    /// elected stands for election at once and deposes that leader (about 0.3 s without a
    /// leader); waiting lets the first member's election and appends reach the others first,
    /// so they find their log no longer empty and do nothing, while a cluster whose first
    /// members are down still forms.
    fn form_later(self: &Arc<Self>) {
        let rank = self
            .options
            .members
            .keys()
            .position(|id| *id == self.id)
            .unwrap_or(0);
        let wait =
            std::time::Duration::from_millis(self.options.election_timeout_ms.1 * 2 * rank as u64);
        let node = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = node.stopped() => return,
            }
            if let Err(error) = node.form().await {
                tracing::error!(%error, "cannot form the cluster");
            }
        });
    }

    /// Initializes the cluster with every listed member if this member's log is empty.
    async fn form(&self) -> Result<(), ClusterError> {
        let pristine = !self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        if !pristine {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .options
            .members
            .iter()
            .map(|(id, address)| (*id, BasicNode::new(address.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Unavailable(format!(
                "cannot form the cluster: {e}"
            ))),
        }
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft instance (internal routes hand it the messages of the other members).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The member's replica of the graph.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The member's Raft log.
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// Whether [`ClusterNode::shutdown`] has started.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once [`ClusterNode::shutdown`] has started.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// True while the member's data directory has fewer bytes available than
    /// [`ClusterOptions::disk_full_below_bytes`] (docs/behaviour.md §6.9, `disk_full`), from a
    /// reading at most a second old. Nothing is refused because of it: a log write that does
    /// not fit fails the member's log, which stops the member (§8).
    pub fn disk_full(&self) -> bool {
        self.disk_space.low()
    }

    /// The options the member was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// This member's role now.
    pub fn role(&self) -> Role {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }

    /// The current leader as this member knows it: id and address (from the membership).
    pub fn leader(&self) -> Option<Leader> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let address = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())?;
        Some(Leader { id, address })
    }

    /// Whether this member leads the cluster now (it may learn otherwise at any moment; the
    /// operations below check again).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Proposes `command` and waits until it is committed and applied here; returns what
    /// applying it answered.
    ///
    /// # Errors
    /// [`ClusterError::NotLeader`] when this member does not lead (with the leader it knows);
    /// [`ClusterError::Unavailable`] when the entry cannot be committed (no quorum, shutting
    /// down).
    pub async fn write(&self, command: Command) -> Result<Answer, ClusterError> {
        write(&self.raft, command).await
    }

    /// Returns once this member has confirmed it leads and has applied every entry committed
    /// before the call (docs/behaviour.md §9: linearizable reads). Concurrent callers share
    /// confirmations (module docs).
    ///
    /// # Errors
    /// [`ClusterError::NotLeader`] or [`ClusterError::Unavailable`], as [`ClusterNode::write`].
    pub async fn linearizable(&self) -> Result<(), ClusterError> {
        let ticket = self.reads.issued.fetch_add(1, Ordering::AcqRel) + 1;
        loop {
            if self.reads.covered.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            let _running = self.reads.running.lock().await;
            if self.reads.covered.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            let covers = self.reads.issued.load(Ordering::Acquire);
            match self.raft.ensure_linearizable().await {
                Ok(_) => {
                    self.reads.covered.fetch_max(covers, Ordering::AcqRel);
                }
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    forward,
                ))) => {
                    return Err(ClusterError::NotLeader(Leader::of(forward)));
                }
                Err(e) => return Err(ClusterError::Unavailable(e.to_string())),
            }
        }
    }

    /// `/identify` on the leader (docs/behaviour.md §3, §9): a request that changes nothing is
    /// answered from the replica after a linearizable-read confirmation; one that writes is
    /// proposed with the leader's time, without a confirmation, and answered once applied.
    ///
    /// # Errors
    /// As [`ClusterNode::write`]; [`ClusterError::Full`] when the graph cannot take another
    /// contact; [`ClusterError::CapacityExceeded`] when the request would add a contact past
    /// [`ClusterOptions::max_contacts`](super::ClusterOptions::max_contacts).
    pub async fn identify(
        &self,
        request: &IdentifyRequest,
    ) -> Result<(Identity, Outcome), ClusterError> {
        // What the request would do on the replica as it is: read (`None`), or write, past the
        // contact limit or not. The limit is the leader's check before it proposes
        // (docs/behaviour.md §3.6): entries are applied on every member whatever their limit,
        // so replicas stay equal, and requests already proposed when the limit is reached may
        // pass it by their number.
        let decided =
            self.replica
                .read(|state| match state.graph.decide(request, Timestamp::now) {
                    Decision::Read(..) => None,
                    Decision::Write(events) => Some(over_contact_limit(
                        &events,
                        state.graph.len(),
                        self.options.max_contacts,
                    )),
                });
        if let Some(Some(limit)) = decided {
            return Err(ClusterError::CapacityExceeded { limit });
        }
        // A request that writes needs no read-index round: its entry is decided again when it
        // is applied, and answered from the committed state. Only a pure read confirms the lead
        // first, then decides again on the state that confirmation covers.
        if decided.is_none() {
            self.linearizable().await?;
            let read =
                self.replica
                    .read(|state| match state.graph.decide(request, Timestamp::now) {
                        Decision::Read(_, view) => Some(view.to_identity()),
                        Decision::Write(_) => None,
                    });
            if let Some(identity) = read {
                return Ok((identity, Outcome::PureRead));
            }
        }
        let command = Command::Identify {
            email: request.email().cloned(),
            phone: request.phone().cloned(),
            at: Timestamp::now(),
        };
        match self.proposals.propose(command).await? {
            Answer::Identified { identity, outcome } => Ok((identity, outcome)),
            Answer::Full => Err(ClusterError::Full),
            other => Err(ClusterError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Stops openraft and closes the Raft log (clean shutdown).
    ///
    /// # Errors
    /// When the log cannot be flushed.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        self.stopping.send_replace(true);
        let _ = self.raft.shutdown().await;
        self.log
            .close()
            .map_err(|e| ClusterError::Unavailable(e.to_string()))
    }
}

/// [`ClusterNode::write`] on `raft`: proposes `command`, waits until it is committed and applied
/// here, and returns what applying it answered.
///
/// # Errors
/// As [`ClusterNode::write`].
pub(super) async fn write(raft: &Raft, command: Command) -> Result<Answer, ClusterError> {
    match raft.client_write(command).await {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(ClusterError::NotLeader(Leader::of(forward)))
        }
        Err(e) => Err(ClusterError::Unavailable(e.to_string())),
    }
}
