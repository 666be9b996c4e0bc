//! Deletion and erasure (docs/behaviour.md §6.6, §6.7): the two admin writes besides
//! `/identify`, each one event in the log.

use crate::contact::{ContactId, ContactRow, Timestamp};
use crate::event::Event;
use crate::graph::ApplyError;

use super::identify::mark_changed;
use super::{Store, StoreError};

/// What `DELETE /contacts/{id}` found (docs/behaviour.md §6.6).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Deletion {
    /// The row was deleted; this is it now.
    Deleted(ContactRow),
    /// No contact has that id (or it was erased): `404`.
    NotFound,
    /// The row was already deleted: `409`.
    AlreadyDeleted(ContactRow),
}

/// What an erasure removed (docs/behaviour.md §6.7).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Erasure {
    /// The primary of the erased identity.
    pub primary_contact_id: ContactId,
    /// Every contact removed, in id order.
    pub contact_ids: Vec<ContactId>,
}

impl Store {
    /// `DELETE /contacts/{id}` (docs/behaviour.md §6.6): logs and applies
    /// [`Event::ContactDeleted`] and answers the deleted row once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn delete_contact(&self, id: ContactId) -> Result<Deletion, StoreError> {
        let now = Timestamp::now();
        let (deletion, lsn) = {
            let mut state = self.write_state()?;
            match state.graph.contact(id) {
                None => (Deletion::NotFound, state.lsn),
                Some(row) if row.deleted_at.is_some() => (Deletion::AlreadyDeleted(row), state.lsn),
                Some(_) => {
                    let at = state.graph.clock(now);
                    self.apply_and_log(&mut state, &Event::ContactDeleted { id, at })?;
                    if let Some(key) = state.graph.identity_key_of(id) {
                        mark_changed(&self.wal, &mut state, key);
                    }
                    let row = state
                        .graph
                        .contact(id)
                        .ok_or(ApplyError::UnknownContact(id))?;
                    (Deletion::Deleted(row), state.lsn)
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
    /// [`Event::IdentityErased`] (which carries no personal data), answers once durable, and
    /// queues a compaction ([`Store::compact_blocking`]) on the maintenance task so the erased
    /// values leave every file within one snapshot's time. `None` for an unknown or already
    /// erased id.
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
            let found = state.graph.identity_rows(id);
            if found.is_none() {
                // Nothing to erase: settled, the marker need not wait for it.
                self.erasures_settled
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
            match found {
                None => (None, state.lsn),
                Some(rows) => {
                    let primary = state.graph.find(id).unwrap_or(id);
                    let at = state.graph.clock(now);
                    self.apply_and_log(&mut state, &Event::IdentityErased { id, at })?;
                    self.erasures_settled
                        .fetch_add(1, std::sync::atomic::Ordering::Release);
                    let erasure = Erasure {
                        primary_contact_id: primary,
                        contact_ids: rows.iter().map(|r| r.id).collect(),
                    };
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
