//! A member's copy of the identity graph: the Raft state machine's state (docs/behaviour.md
//! §9).
//!
//! Applying an entry runs the single-node rules on the member's own graph: `/identify` plans
//! with the leader's timestamp and applies the planned events (docs/behaviour.md §3), a
//! deletion or an erasure applies its one event (§6.6, §6.7), a split or a block is decided
//! and applied by the graph (§10). The graph is pure, so members
//! that applied the same entries hold the same graph. Reads take the shared lock, applying takes
//! the exclusive one, as in the single-node store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::{EntryPayload, StoredMembership};
use parking_lot::RwLock;

use crate::contact::{ContactId, Timestamp};
use crate::graph::{IdentifyRequest, IdentityGraph};
use crate::store::{Deletion, Erasure, Outcome};

use super::types::{Answer, Command, Entry, LogId, Node, NodeId};

/// The graph with the position of the log it reflects.
pub struct ReplicaState {
    /// The identity graph.
    pub graph: IdentityGraph,
    /// The last entry applied, `None` before the first.
    pub applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, Node>,
}

/// A member's state machine state, shared by the Raft state machine (which applies entries and
/// takes snapshots) and the HTTP handlers (which read).
pub struct Replica {
    state: RwLock<ReplicaState>,
    /// The Raft index of the last erasure applied (0: none since start): the erasure task
    /// snapshots and purges the log past it so the erased values leave this member's files.
    erased_at: AtomicU64,
    /// Wakes the erasure task.
    erasure_applied: tokio::sync::Notify,
}

impl Replica {
    /// A replica holding `graph` at `applied` with `membership` (from a snapshot, or empty).
    pub fn new(
        graph: IdentityGraph,
        applied: Option<LogId>,
        membership: StoredMembership<NodeId, Node>,
    ) -> Arc<Replica> {
        Arc::new(Replica {
            state: RwLock::new(ReplicaState {
                graph,
                applied,
                membership,
            }),
            erased_at: AtomicU64::new(0),
            erasure_applied: tokio::sync::Notify::new(),
        })
    }

    /// The Raft index of the last erasure applied since start (0: none).
    pub fn erased_at(&self) -> u64 {
        self.erased_at.load(Ordering::Acquire)
    }

    /// Resolves at the next erasure applied after the call started waiting.
    pub async fn erasure_applied(&self) {
        self.erasure_applied.notified().await;
    }

    /// Runs `f` on the state under the shared lock.
    pub fn read<T>(&self, f: impl FnOnce(&ReplicaState) -> T) -> T {
        f(&self.state.read())
    }

    /// Runs `f` on the state under the exclusive lock (snapshot capture and install).
    pub(super) fn write<T>(&self, f: impl FnOnce(&mut ReplicaState) -> T) -> T {
        f(&mut self.state.write())
    }

    /// Applies committed entries in log order under one hold of the exclusive lock and answers
    /// each (docs/behaviour.md §9).
    pub fn apply(&self, entries: impl IntoIterator<Item = Entry>) -> Vec<Answer> {
        let erased_before = self.erased_at();
        let mut state = self.state.write();
        let answers = entries
            .into_iter()
            .map(|entry| {
                state.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => Answer::Nothing,
                    EntryPayload::Normal(command) => {
                        let answer = apply_command(&mut state.graph, &command);
                        if erases(&answer) {
                            self.erased_at
                                .fetch_max(entry.log_id.index, Ordering::AcqRel);
                        }
                        answer
                    }
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Answer::Nothing
                    }
                }
            })
            .collect();
        drop(state);
        if self.erased_at() > erased_before {
            self.erasure_applied.notify_one();
        }
        answers
    }
}

/// Applies one command to `graph` and answers it. Deterministic: the answer and the graph
/// afterwards depend only on the graph before and the command.
pub fn apply_command(graph: &mut IdentityGraph, command: &Command) -> Answer {
    match command {
        Command::Identify { email, phone, at } => {
            // The leader validated the values; a command without either (only a foreign log
            // could hold one) changes nothing.
            let Ok(request) = IdentifyRequest::new(email.clone(), phone.clone()) else {
                return Answer::Nothing;
            };
            match graph.identify(&request, *at) {
                Ok((identity, events)) => Answer::Identified {
                    identity,
                    outcome: Outcome::of_events(&events),
                },
                Err(_) => Answer::Full,
            }
        }
        Command::DeleteContact { id, at } => Answer::Deleted(delete(graph, *id, *at)),
        Command::EraseIdentity { id, at } => Answer::Erased(erase(graph, *id, *at)),
        // The graph decides and applies these itself (docs/behaviour.md §10); an error leaves
        // it unchanged on every member alike.
        Command::SplitIdentity { id, values, at } => match graph.split(*id, values.clone(), *at) {
            Ok(split) => Answer::Split(split.map(|(_, outcome)| graph.split_report(&outcome))),
            Err(_) => Answer::Split(None),
        },
        Command::BlockValues {
            values,
            retroactive,
            at,
        } => match graph.block_values(values.clone(), *retroactive, *at) {
            Ok((_, outcome)) => Answer::Blocked(graph.split_report(&outcome)),
            Err(_) => Answer::Nothing,
        },
        Command::UnblockValues { values } => match graph.unblock_values(values.clone()) {
            Ok((_, lifted)) => Answer::Unblocked(lifted),
            Err(_) => Answer::Nothing,
        },
        Command::Batch(commands) => Answer::Batch(
            commands
                .iter()
                .map(|command| apply_command(graph, command))
                .collect(),
        ),
    }
}

/// Whether `answer` reports an erasure (in a batch too).
fn erases(answer: &Answer) -> bool {
    match answer {
        Answer::Erased(Some(_)) => true,
        Answer::Batch(answers) => answers.iter().any(erases),
        _ => false,
    }
}

/// `DELETE /contacts/{id}` on `graph` (docs/behaviour.md §6.6), decided as the single-node
/// store decides it ([`IdentityGraph::plan_deletion`]).
fn delete(graph: &mut IdentityGraph, id: ContactId, at: Timestamp) -> Deletion {
    match graph.plan_deletion(id, at) {
        Err(found) => found,
        Ok(event) => match graph.apply(&event) {
            Ok(()) => graph.deletion_answer(id),
            Err(_) => Deletion::NotFound,
        },
    }
}

/// `DELETE /identities/{id}?erase=true` on `graph` (docs/behaviour.md §6.7), decided as the
/// single-node store decides it ([`IdentityGraph::plan_erasure`]).
fn erase(graph: &mut IdentityGraph, id: ContactId, at: Timestamp) -> Option<Erasure> {
    let (event, erasure) = graph.plan_erasure(id, at)?;
    graph.apply(&event).ok()?;
    Some(erasure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Phone, Timestamp};
    use crate::graph::GraphOptions;

    fn identify(email: &str, phone: &str, at: i64) -> Command {
        Command::Identify {
            email: Email::parse(email).expect("a valid email"),
            phone: Phone::parse(phone).expect("a valid phone"),
            at: Timestamp(at),
        }
    }

    /// A batch is applied exactly as its commands would be as separate entries: the same
    /// answers, in order, and the same graph afterwards (proposal batching relies on it).
    #[test]
    fn a_batch_applies_as_its_commands_one_by_one() {
        let commands = vec![
            identify("ann@example.com", "", 1_000),
            identify("", "+441234567890", 1_001),
            identify("ann@example.com", "+441234567890", 1_002),
            identify("bob@example.com", "+441234567890", 1_003),
            identify("ann@example.com", "", 1_004),
        ];
        let mut one_by_one = IdentityGraph::with_options(GraphOptions::default());
        let answers: Vec<Answer> = commands
            .iter()
            .map(|command| apply_command(&mut one_by_one, command))
            .collect();
        let mut batched = IdentityGraph::with_options(GraphOptions::default());
        let batch = apply_command(&mut batched, &Command::Batch(commands));
        assert_eq!(batch, Answer::Batch(answers.clone()));
        // The third request merged the first two identities, the fourth added a secondary.
        assert!(matches!(
            answers[2],
            Answer::Identified {
                outcome: Outcome::Merge,
                ..
            }
        ));
        assert_eq!(batched.len(), one_by_one.len());
        assert_eq!(
            batched.contacts_after(0, 100),
            one_by_one.contacts_after(0, 100)
        );
        assert_eq!(batched.len(), 3);
    }

    #[test]
    fn an_erasure_inside_a_batch_is_seen() {
        let erased = Answer::Erased(Some(Erasure {
            primary_contact_id: 1,
            contact_ids: vec![1],
        }));
        assert!(erases(&Answer::Batch(vec![Answer::Nothing, erased])));
        assert!(!erases(&Answer::Batch(vec![Answer::Nothing])));
        assert!(!erases(&Answer::Erased(None)));
    }
}
