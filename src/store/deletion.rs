//! Deletion and erasure (docs/behaviour.md §6.6, §6.7): the two admin writes besides
//! `/identify`, each one event in the log.

use crate::contact::{ContactId, Timestamp};
pub use crate::graph::{Deletion, Erasure};

use super::identify::mark_changed;
use super::{Store, StoreError};

impl Store {
    /// `DELETE /contacts/{id}` (docs/behaviour.md §6.6): logs and applies the
    /// [`Event::ContactDeleted`](crate::event::Event::ContactDeleted) the graph plans
    /// ([`IdentityGraph::plan_deletion`](crate::graph::IdentityGraph::plan_deletion)) and
    /// answers the deleted row once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn delete_contact(&self, id: ContactId) -> Result<Deletion, StoreError> {
        let now = Timestamp::now();
        let (deletion, lsn) = {
            let mut state = self.write_state()?;
            match state.graph.plan_deletion(id, now) {
                Err(found) => (found, state.lsn),
                Ok(event) => {
                    self.apply_and_log(&mut state, &event)?;
                    if let Some(key) = state.graph.identity_key_of(id) {
                        mark_changed(&self.wal, &mut state, key);
                    }
                    (state.graph.deletion_answer(id), state.lsn)
                }
            }
        };
        if matches!(deletion, Deletion::Deleted(_)) {
            self.note_applied(1);
        }
        self.durable(lsn).await?;
        Ok(deletion)
    }

    /// `DELETE /identities/{contactId}?erase=true` (docs/behaviour.md §6.7): logs and applies
    /// the [`Event::IdentityErased`](crate::event::Event::IdentityErased) the graph plans
    /// (which carries no personal data), answers once durable, and queues a compaction
    /// ([`Store::compact_blocking`]) on the maintenance task so the erased values leave every
    /// file within one snapshot's time. `None` for an unknown or already erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn erase_identity(&self, id: ContactId) -> Result<Option<Erasure>, StoreError> {
        let now = Timestamp::now();
        // Durable before the event is logged, so a crash before the compaction below finishes
        // leaves a mark that recovery finishes it. Blocking (a create and two fsyncs), on this
        // rare admin route only.
        self.mark_erasure()?;
        let (erasure, lsn) = {
            let mut state = self.write_state()?;
            let found = state.graph.plan_erasure(id, now);
            if found.is_none() {
                // Nothing to erase: settled, the marker need not wait for it.
                self.erasures_settled
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            match found {
                None => (None, state.lsn),
                Some((event, erasure)) => {
                    self.apply_and_log(&mut state, &event)?;
                    self.erasures_settled
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                    (Some(erasure), state.lsn)
                }
            }
        };
        if erasure.is_some() {
            // Counted towards the next snapshot, but a compaction comes first.
            self.since_snapshot
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.maintenance.compact();
        }
        self.durable(lsn).await?;
        Ok(erasure)
    }
}
