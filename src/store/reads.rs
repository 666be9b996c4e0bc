//! Read-only requests (docs/behaviour.md §6.1–§6.5): rows, listings, lookups, identities and
//! their history, each read under the shared lock and answered once what it reveals is durable.

use crate::contact::{ContactId, ContactRow};
use crate::graph::{HistoryEntry, IdentifyRequest, Identity, Lookup};
use crate::wal::Lsn;

use super::identify::changed_at;
use super::{Store, StoreError};

impl Store {
    /// The row `id` (docs/behaviour.md §6.1), deleted rows included, once durable; `None` for
    /// an unknown or erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn contact(&self, id: ContactId) -> Result<Option<ContactRow>, StoreError> {
        let (row, lsn) = {
            let state = self.state.read();
            (state.graph.contact(id), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(row)
    }

    /// Up to `limit` rows with ids greater than `after`, in id order (docs/behaviour.md §6.2),
    /// once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn contacts_after(
        &self,
        after: ContactId,
        limit: usize,
    ) -> Result<Vec<ContactRow>, StoreError> {
        let (rows, lsn) = {
            let state = self.state.read();
            (state.graph.contacts_after(after, limit), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(rows)
    }

    /// `GET /identities?email=&phoneNumber=` (docs/behaviour.md §6.3): the identity the values
    /// lead to, read without planning or writing anything, once what it reveals is durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn lookup(&self, request: &IdentifyRequest) -> Result<Lookup, StoreError> {
        let (lookup, lsn) = {
            let state = self.state.read();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            let lookup = state.graph.lookup(request);
            let lsn = match &lookup {
                Lookup::Found(key, _) => changed_at(&self.wal, &state, *key),
                // A conflict or a miss reveals the state of two identities or of none: wait
                // for everything applied.
                Lookup::Conflict { .. } | Lookup::NotFound => state.lsn,
            };
            (lookup, lsn)
        };
        self.durable(lsn).await?;
        Ok(lookup)
    }

    /// `GET /identities/{contactId}` (docs/behaviour.md §6.4): the consolidated identity
    /// containing contact `id` and all its rows (deleted ones included, id order), once
    /// durable; `None` for an unknown or erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn identity(
        &self,
        id: ContactId,
    ) -> Result<Option<(Identity, Vec<ContactRow>)>, StoreError> {
        let (found, lsn) = {
            let state = self.state.read();
            let found = state
                .graph
                .identity_of(id)
                .zip(state.graph.identity_rows(id));
            (found, state.lsn)
        };
        self.durable(lsn).await?;
        Ok(found)
    }

    /// `GET /identities/{contactId}/history` (docs/behaviour.md §6.5), once durable; `None`
    /// for an unknown or erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn history(&self, id: ContactId) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let (history, lsn) = {
            let state = self.state.read();
            (state.graph.history(id), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(history)
    }
}
