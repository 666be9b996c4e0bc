//! Proposal batching: the `/identify` commands of concurrent requests reach Raft as one entry
//! (docs/behaviour.md §9; docs/CLUSTER.md, "Limits").
//!
//! Every Raft entry costs the leader a pass through openraft's core, a log append, a flush
//! callback and a commit step, and each commit step sends the followers a message. With one
//! entry per request those per-entry costs, not the network or the disks, bounded a cluster's
//! throughput. As group commit does for fsyncs, the proposer lets requests that arrive while
//! earlier proposals are in flight share the next entry: at most [`IN_FLIGHT`] proposals are
//! in flight, a request that finds them all busy waits, and the next proposal takes every
//! request queued by then (at most [`MAX_BATCH`]). A request that finds a free slot is
//! proposed at once, as its own entry, so a light load waits for nothing.
//!
//! A batch is one [`Command::Batch`]: its commands are applied in the order they were queued,
//! each exactly as its own entry would be, and each request gets its own answer. A batch is
//! committed or lost as a whole; every request in it gets the same error when it fails.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::ClusterError;
use super::types::{Answer, Command, Raft};

/// Proposals in flight at once. Two let one batch fill while the previous one is appended and
/// replicated.
pub const IN_FLIGHT: usize = 2;
/// Most commands in one entry: bounds an entry's size (at most about 1 KiB per command) and
/// the work one apply does under the replica's lock; with
/// [`super::network::MAX_PAYLOAD_ENTRIES`] it bounds an append message.
pub const MAX_BATCH: usize = 128;

/// One request waiting to be proposed.
struct Proposal {
    command: Command,
    answer: oneshot::Sender<Result<Answer, ClusterError>>,
}

/// The leader's proposal queue; the task behind it ends when this is dropped.
pub(super) struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
}

impl Proposer {
    /// Starts the proposing task of `raft` (on the current tokio runtime).
    pub(super) fn start(raft: Raft) -> Proposer {
        let (queue, proposals) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, proposals));
        Proposer { queue }
    }

    /// Proposes `command` (alone or in a batch, module docs) and returns what applying it
    /// answered, once its entry is committed and applied here.
    ///
    /// # Errors
    /// As [`super::ClusterNode::write`]: [`ClusterError::NotLeader`] or
    /// [`ClusterError::Unavailable`] (also when the member is shutting down).
    pub(super) async fn propose(&self, command: Command) -> Result<Answer, ClusterError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Proposal { command, answer })
            .map_err(|_| ClusterError::Unavailable("the member is shutting down".to_owned()))?;
        answered
            .await
            .map_err(|_| ClusterError::Unavailable("the member is shutting down".to_owned()))?
    }
}

/// Takes proposals off the queue: waits for a free slot, then proposes everything queued by
/// then as one entry on a task of its own.
async fn run(raft: Raft, mut proposals: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = proposals.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match proposals.try_recv() {
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry and hands each request its answer.
async fn propose(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(Proposal { command, answer }) = batch.pop() {
            let _ = answer.send(super::node::write(raft, command).await);
        }
        return;
    }
    let (commands, senders): (Vec<Command>, Vec<_>) = batch
        .into_iter()
        .map(|proposal| (proposal.command, proposal.answer))
        .unzip();
    let count = commands.len();
    match super::node::write(raft, Command::Batch(commands)).await {
        Ok(Answer::Batch(answers)) if answers.len() == count => {
            for (sender, answer) in senders.into_iter().zip(answers) {
                let _ = sender.send(Ok(answer));
            }
        }
        Ok(other) => {
            let error =
                ClusterError::Unavailable(format!("unexpected answer to a batch: {other:?}"));
            for sender in senders {
                let _ = sender.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for sender in senders {
                let _ = sender.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::network::{MAX_MESSAGE_BYTES, MAX_PAYLOAD_ENTRIES};
    use crate::cluster::types::Entry;
    use crate::contact::{Email, MAX_EMAIL_BYTES, MAX_PHONE_CHARS, Phone, Timestamp};

    /// The fullest append message a leader can send fits in what a member accepts: the most
    /// entries per message, each a batch of the most commands, each with the longest email and
    /// phone number, and four bytes per character in case they are not ASCII.
    #[test]
    fn the_largest_append_fits_in_a_message() {
        let email = format!(
            "{}@{}.{}.example.com",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63)
        );
        let email = &email[..email.len().min(MAX_EMAIL_BYTES)];
        let command = Command::Identify {
            email: Email::parse(email).expect("a valid email"),
            phone: Phone::parse(&"9".repeat(MAX_PHONE_CHARS)).expect("a valid phone"),
            at: Timestamp(i64::MAX),
        };
        let entry = Entry {
            log_id: openraft::LogId::new(
                openraft::CommittedLeaderId::new(u64::MAX, u64::MAX),
                u64::MAX,
            ),
            payload: openraft::EntryPayload::Normal(Command::Batch(vec![command; MAX_BATCH])),
        };
        let bytes = bincode::serialized_size(&entry).expect("an encodable entry") as usize;
        let worst = bytes * 4 * MAX_PAYLOAD_ENTRIES as usize;
        assert!(
            worst <= MAX_MESSAGE_BYTES,
            "{MAX_PAYLOAD_ENTRIES} entries of {bytes} bytes (x4) = {worst} > {MAX_MESSAGE_BYTES}"
        );
    }
}
