//! What the handlers call: the single-node [`Store`], or a cluster member's leader-side
//! operations and replica (docs/behaviour.md §9). Both answer the same domain types, so the
//! handlers, their validation and their answers are the same in both modes.
//!
//! A cluster member reaches this module only for requests it executes itself: the forwarding
//! layer ([`super::forward`]) has already sent everything else to the leader. A member that
//! lost the lead between that check and the call answers `421` (it names the new leader) or
//! `503` (no leader yet), never a stale answer.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};

use super::error::ApiError;
use crate::cluster::{Answer, ClusterError, ClusterNode, Command};
use crate::contact::{ContactId, ContactRow, Timestamp};
use crate::event::BlockedValues;
use crate::graph::{
    HistoryEntry, IdentifyRequest, Identity, IdentityGraph, Link, Lookup, SplitReport,
};
use crate::store::{Deletion, Erasure, Outcome, ReadTurn, Store, StoreError};

/// The response header naming the leader's `HOST:PORT` on a `421` (docs/behaviour.md §9).
pub const LEADER_HEADER: &str = "x-idrecon-leader";

/// How fresh a read must be (docs/behaviour.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read arrived (the default).
    Linearizable,
    /// This member's own state, possibly behind the leader (`?local=true` on a follower).
    Local,
}

/// Where requests are executed.
#[derive(Clone)]
pub enum Backend {
    /// One process with its own log (docs/behaviour.md §8).
    Single(Arc<Store>),
    /// A member of a Raft group (docs/behaviour.md §9).
    Cluster(Arc<ClusterNode>),
}

/// Why a request could not be executed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// From the single-node store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// From the cluster member.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl From<BackendError> for ApiError {
    /// [`StoreError`]s as in single-node mode; a member that does not lead answers `421
    /// not_leader` with the leader's address in [`LEADER_HEADER`] and the message, or `503
    /// unavailable` with `Retry-After: 1` when no leader is known or no quorum answers; a full
    /// graph is `507` as in single-node mode.
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Store(e) => e.into(),
            BackendError::Cluster(ClusterError::NotLeader(Some(leader))) => {
                not_leader(&leader.address)
            }
            BackendError::Cluster(ClusterError::NotLeader(None)) => {
                unavailable("no leader is elected right now; retry shortly")
            }
            BackendError::Cluster(ClusterError::Unavailable(why)) => {
                tracing::warn!(error = %why, "request not executed by the cluster");
                unavailable("the cluster cannot execute requests right now; retry shortly")
            }
            BackendError::Cluster(ClusterError::Membership(why)) => {
                ApiError::new(StatusCode::CONFLICT, "membership_conflict", why)
            }
            BackendError::Cluster(ClusterError::Full) => {
                StoreError::Apply(crate::graph::ApplyError::Full).into()
            }
            BackendError::Cluster(ClusterError::CapacityExceeded { limit }) => {
                StoreError::CapacityExceeded { limit }.into()
            }
        }
    }
}

/// `421 not_leader` naming `address` in the body and in [`LEADER_HEADER`].
pub(crate) fn not_leader(address: &str) -> ApiError {
    let error = ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "not_leader",
        format!(
            "this member does not lead the cluster; send the request to the leader at {address}"
        ),
    );
    match HeaderValue::from_str(address) {
        Ok(value) => error.with_header(HeaderName::from_static(LEADER_HEADER), value),
        Err(_) => error,
    }
}

/// `503 unavailable` with `Retry-After: 1`.
pub(crate) fn unavailable(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

impl Backend {
    /// `POST /identify` (docs/behaviour.md §3): the identity and what the request did, once
    /// durable (single node) or committed on a majority and applied (cluster), with the
    /// [`ReadTurn`] to keep until the answer is rendered (a cluster member takes none).
    ///
    /// # Errors
    /// [`BackendError`] as [`Store::identify`] and [`ClusterNode::identify`] return them.
    pub async fn identify(
        &self,
        request: &IdentifyRequest,
    ) -> Result<(Identity, Outcome, ReadTurn), BackendError> {
        match self {
            Backend::Single(store) => Ok(store.identify(request).await?),
            Backend::Cluster(node) => {
                let (identity, outcome) = node.identify(request).await?;
                Ok((identity, outcome, ReadTurn::none()))
            }
        }
    }

    /// Runs `read` on the graph of a cluster member after the confirmation `consistency` asks
    /// for.
    async fn read_replica<T>(
        node: &ClusterNode,
        consistency: Consistency,
        read: impl FnOnce(&IdentityGraph) -> T,
    ) -> Result<T, BackendError> {
        if consistency == Consistency::Linearizable {
            node.linearizable().await?;
        }
        Ok(node.replica().read(|state| read(&state.graph)))
    }

    /// The row `id` (docs/behaviour.md §6.1), deleted rows included.
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn contact(
        &self,
        id: ContactId,
        consistency: Consistency,
    ) -> Result<Option<ContactRow>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.contact(id).await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| g.contact(id)).await
            }
        }
    }

    /// Up to `limit` rows with ids above `after`, in id order (docs/behaviour.md §6.2).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn contacts_after(
        &self,
        after: ContactId,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Vec<ContactRow>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.contacts_after(after, limit).await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| g.contacts_after(after, limit)).await
            }
        }
    }

    /// `GET /identities?email=&phoneNumber=` (docs/behaviour.md §6.3).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn lookup(
        &self,
        request: &IdentifyRequest,
        consistency: Consistency,
    ) -> Result<Lookup, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.lookup(request).await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| g.lookup(request)).await
            }
        }
    }

    /// `GET /identities/{contactId}` (docs/behaviour.md §6.4): the identity and all its rows.
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn identity(
        &self,
        id: ContactId,
        consistency: Consistency,
    ) -> Result<Option<(Identity, Vec<ContactRow>)>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.identity(id).await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| {
                    g.identity_of(id).zip(g.identity_rows(id))
                })
                .await
            }
        }
    }

    /// `GET /identities/{contactId}/history` (docs/behaviour.md §6.5).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn history(
        &self,
        id: ContactId,
        consistency: Consistency,
    ) -> Result<Option<Vec<HistoryEntry>>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.history(id).await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| g.history(id)).await
            }
        }
    }

    /// `DELETE /contacts/{id}` (docs/behaviour.md §6.6).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn delete_contact(&self, id: ContactId) -> Result<Deletion, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.delete_contact(id).await?),
            Backend::Cluster(node) => {
                let command = Command::DeleteContact {
                    id,
                    at: Timestamp::now(),
                };
                match node.write(command).await? {
                    Answer::Deleted(deletion) => Ok(deletion),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// `DELETE /identities/{contactId}?erase=true` (docs/behaviour.md §6.7). In a cluster the
    /// erased values leave the members' files once a snapshot covers the erasure and the log
    /// behind it is purged, which every member starts when it applies the erasure
    /// (docs/behaviour.md §9).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn erase_identity(&self, id: ContactId) -> Result<Option<Erasure>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.erase_identity(id).await?),
            Backend::Cluster(node) => {
                let command = Command::EraseIdentity {
                    id,
                    at: Timestamp::now(),
                };
                match node.write(command).await? {
                    Answer::Erased(erasure) => Ok(erasure),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// `POST /identities/{contactId}/split` (docs/behaviour.md §10); `None` for an unknown or
    /// erased contact.
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn split_identity(
        &self,
        id: ContactId,
        values: BlockedValues,
    ) -> Result<Option<SplitReport>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.split_identity(id, values).await?),
            Backend::Cluster(node) => {
                let command = Command::SplitIdentity {
                    id,
                    values,
                    at: Timestamp::now(),
                };
                match node.write(command).await? {
                    Answer::Split(report) => Ok(report),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// `POST /admin/blocked-values` (docs/behaviour.md §10).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn block_values(
        &self,
        values: BlockedValues,
        retroactive: bool,
    ) -> Result<SplitReport, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.block_values(values, retroactive).await?),
            Backend::Cluster(node) => {
                let command = Command::BlockValues {
                    values,
                    retroactive,
                    at: Timestamp::now(),
                };
                match node.write(command).await? {
                    Answer::Blocked(report) => Ok(report),
                    other => Err(unexpected(&other)),
                }
            }
        }
    }

    /// `DELETE /admin/blocked-values` (docs/behaviour.md §10): the values whose run-time blocks
    /// were lifted.
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn unblock_values(
        &self,
        values: BlockedValues,
    ) -> Result<BlockedValues, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.unblock_values(values).await?),
            Backend::Cluster(node) => match node.write(Command::UnblockValues { values }).await? {
                Answer::Unblocked(lifted) => Ok(lifted),
                other => Err(unexpected(&other)),
            },
        }
    }

    /// `GET /admin/blocked-values` (docs/behaviour.md §10): the run-time blocked values.
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn blocked_values(
        &self,
        consistency: Consistency,
    ) -> Result<BlockedValues, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.blocked_values().await?),
            Backend::Cluster(node) => {
                Self::read_replica(node, consistency, |g| g.blocked_values().clone()).await
            }
        }
    }

    /// `GET /identities/{contactId}/links` (docs/behaviour.md §10).
    ///
    /// # Errors
    /// As [`Backend::identify`].
    pub async fn links(
        &self,
        id: ContactId,
        consistency: Consistency,
    ) -> Result<Option<Vec<Link>>, BackendError> {
        match self {
            Backend::Single(store) => Ok(store.links(id).await?),
            Backend::Cluster(node) => Self::read_replica(node, consistency, |g| g.links(id)).await,
        }
    }

    /// Whether this process can acknowledge writes: the log is healthy (single node), or a
    /// leader is known (cluster; docs/behaviour.md §6.9).
    pub fn healthy(&self) -> bool {
        match self {
            Backend::Single(store) => store.healthy(),
            Backend::Cluster(node) => node.leader().is_some(),
        }
    }

    /// The contacts held and the `--max-contacts` limit (docs/behaviour.md §3.6); a cluster
    /// member reports its replica's contacts and its own limit (the leader's applies).
    pub fn capacity(&self) -> (usize, Option<u64>) {
        match self {
            Backend::Single(store) => store.capacity(),
            Backend::Cluster(node) => (
                node.replica().read(|state| state.graph.len()),
                node.options().max_contacts,
            ),
        }
    }

    /// Whether the data directory's file system is nearly full (docs/behaviour.md §6.9), on a
    /// single node and on a cluster member alike.
    pub fn disk_full(&self) -> bool {
        match self {
            Backend::Single(store) => store.disk_full(),
            Backend::Cluster(node) => node.disk_full(),
        }
    }

    /// Runs `f` on the graph this process holds (the replica, in a cluster) under the shared
    /// lock: for gauges, never for answers.
    pub fn with_graph<T>(&self, f: impl FnOnce(&IdentityGraph) -> T) -> T {
        match self {
            Backend::Single(store) => store.with_graph(f),
            Backend::Cluster(node) => node.replica().read(|state| f(&state.graph)),
        }
    }

    /// The cluster member, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        match self {
            Backend::Single(_) => None,
            Backend::Cluster(node) => Some(node),
        }
    }
}

/// An answer of the wrong kind for the command that was proposed: only a bug could cause it.
fn unexpected(answer: &Answer) -> BackendError {
    BackendError::Cluster(ClusterError::Unavailable(format!(
        "applying the entry answered {answer:?}"
    )))
}
