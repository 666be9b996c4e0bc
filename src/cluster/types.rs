//! What a cluster replicates and what applying it answers (docs/behaviour.md §9).
//!
//! An entry carries the request that decides a change, not the change: the leader stamps the
//! time once, and every member runs the same pure planning on its own copy of the graph when
//! it applies the entry. Contact ids and timestamps are then functions of the log, so every
//! member that applied the same entries holds the same graph.

use serde::{Deserialize, Serialize};

use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::BlockedValues;
use crate::graph::{Identity, SplitReport};
use crate::store::{Deletion, Erasure, Outcome};

/// A member's id in the Raft group: a positive integer, unique in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of an idrecon cluster: entries carry [`Command`]s, applying
    /// one answers an [`Answer`], members are addressed as `HOST:PORT`
    /// ([`openraft::BasicNode`]), snapshots are idrecon's own snapshot files, streamed in
    /// pieces.
    pub TypeConfig:
        D = Command,
        R = Answer,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle of a member.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log position: the leader's term and node, and the index.
pub type LogId = openraft::LogId<NodeId>;
/// A member's address as openraft knows it.
pub type Node = openraft::BasicNode;
/// A storage error as openraft reports it.
pub type StorageError = openraft::StorageError<NodeId>;

/// A change the cluster agrees on: the request as the leader received it, with the time the
/// leader stamped on it. Applying it runs the same rules as a single node (docs/behaviour.md
/// §3, §6.6, §6.7) on the member's graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `POST /identify` with normalized values (at least one present).
    Identify {
        /// The normalized email, if any.
        email: Option<Email>,
        /// The normalized phone number, if any.
        phone: Option<Phone>,
        /// The leader's wall clock when it proposed the entry.
        at: Timestamp,
    },
    /// `DELETE /contacts/{id}`.
    DeleteContact {
        /// The contact to delete.
        id: ContactId,
        /// The leader's wall clock when it proposed the entry.
        at: Timestamp,
    },
    /// `DELETE /identities/{id}?erase=true`.
    EraseIdentity {
        /// Any contact of the identity to erase.
        id: ContactId,
        /// The leader's wall clock when it proposed the entry.
        at: Timestamp,
    },
    /// `POST /identities/{id}/split`.
    SplitIdentity {
        /// Any contact of the identity to split.
        id: ContactId,
        /// The values to block.
        values: BlockedValues,
        /// The leader's wall clock when it proposed the entry.
        at: Timestamp,
    },
    /// `POST /admin/blocked-values`.
    BlockValues {
        /// The values to block.
        values: BlockedValues,
        /// Whether identities already linked through them are split.
        retroactive: bool,
        /// The leader's wall clock when it proposed the entry.
        at: Timestamp,
    },
    /// `DELETE /admin/blocked-values`.
    UnblockValues {
        /// The values to unblock.
        values: BlockedValues,
    },
    /// Several `/identify` commands of concurrent requests proposed as one entry (proposal
    /// batching, `proposals.rs`), applied in order as if each were its own entry; answered by
    /// [`Answer::Batch`] in the same order.
    Batch(Vec<Command>),
}

/// What applying an entry answered, handed back to the request that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A blank or membership entry: nothing to answer.
    Nothing,
    /// [`Command::Identify`]: the consolidated identity and what the request did.
    Identified {
        /// The identity, as `/identify` answers it.
        identity: Identity,
        /// What the request did.
        outcome: Outcome,
    },
    /// [`Command::DeleteContact`].
    Deleted(Deletion),
    /// [`Command::EraseIdentity`]; `None` for an unknown or already erased contact.
    Erased(Option<Erasure>),
    /// The graph cannot take another contact (every member refuses the same entry the same
    /// way, so they stay equal).
    Full,
    /// [`Command::SplitIdentity`]; `None` for an unknown or erased contact.
    Split(Option<SplitReport>),
    /// [`Command::BlockValues`]: what a retroactive block split.
    Blocked(SplitReport),
    /// [`Command::UnblockValues`]: the values whose run-time blocks were lifted.
    Unblocked(BlockedValues),
    /// [`Command::Batch`]: one answer per command, in order.
    Batch(Vec<Answer>),
}
