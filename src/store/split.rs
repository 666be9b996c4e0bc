//! Splits and run-time blocked values (docs/behaviour.md §10): admin writes, each one event in
//! the log, decided and applied by the graph under the write lock and answered once durable.

use std::time::Instant;

use crate::contact::{ContactId, Timestamp};
use crate::event::{BlockedValues, Event};
use crate::graph::{Link, SplitReport};
use crate::wal::Lsn;

use super::identify::mark_changed;
use super::{State, Store, StoreError};

impl Store {
    /// `POST /identities/{contactId}/split` (docs/behaviour.md §10): blocks `values` and splits
    /// the identity containing `id` into the components of its remaining links, as one
    /// [`Event::IdentitySplit`]; `None` for an unknown or erased id (nothing is logged).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn split_identity(
        &self,
        id: ContactId,
        values: BlockedValues,
    ) -> Result<Option<SplitReport>, StoreError> {
        let now = Timestamp::now();
        let (report, lsn) = {
            let mut state = self.state.write();
            let locked = Instant::now();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            match state.graph.split(id, values, now)? {
                None => (None, state.lsn),
                Some((event, report)) => {
                    self.log_applied(&mut state, &event, &report)?;
                    log_split("identity split", &report, locked);
                    (Some(report), state.lsn)
                }
            }
        };
        self.durable(lsn).await?;
        Ok(report)
    }

    /// `POST /admin/blocked-values` (docs/behaviour.md §10): blocks `values` for matching as one
    /// [`Event::ValuesBlocked`]; with `retroactive`, every identity holding a contact that
    /// carries one of them is split in the same event.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn block_values(
        &self,
        values: BlockedValues,
        retroactive: bool,
    ) -> Result<SplitReport, StoreError> {
        let now = Timestamp::now();
        let (report, lsn) = {
            let mut state = self.state.write();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            let locked = Instant::now();
            let (event, report) = state.graph.block_values(values, retroactive, now)?;
            self.log_applied(&mut state, &event, &report)?;
            log_split("values blocked", &report, locked);
            (report, state.lsn)
        };
        self.durable(lsn).await?;
        Ok(report)
    }

    /// `DELETE /admin/blocked-values` (docs/behaviour.md §10): lifts the run-time blocks of
    /// `values` as one [`Event::ValuesUnblocked`]; merges nothing. Returns the values whose
    /// run-time blocks were lifted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn unblock_values(&self, values: BlockedValues) -> Result<BlockedValues, StoreError> {
        let (lifted, lsn) = {
            let mut state = self.state.write();
            if state.lsn == Lsn::MAX {
                return Err(StoreError::Unavailable);
            }
            let (event, lifted) = state.graph.unblock_values(values)?;
            self.append_applied(&mut state, &event)?;
            self.note_applied(1);
            (lifted, state.lsn)
        };
        self.durable(lsn).await?;
        Ok(lifted)
    }

    /// The values blocked at run time (`GET /admin/blocked-values`), once durable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn blocked_values(&self) -> Result<BlockedValues, StoreError> {
        let (values, lsn) = {
            let state = self.state.read();
            (state.graph.blocked_values().clone(), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(values)
    }

    /// `GET /identities/{contactId}/links` (docs/behaviour.md §10), once durable; `None` for an
    /// unknown or erased id.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    pub async fn links(&self, id: ContactId) -> Result<Option<Vec<Link>>, StoreError> {
        let (links, lsn) = {
            let state = self.state.read();
            (state.graph.links(id), state.lsn)
        };
        self.durable(lsn).await?;
        Ok(links)
    }

    /// Logs `event`, already applied, and marks every identity of `report` changed at its LSN.
    fn log_applied(
        &self,
        state: &mut State,
        event: &Event,
        report: &SplitReport,
    ) -> Result<(), StoreError> {
        self.append_applied(state, event)?;
        for identity in &report.identities {
            if let Some(key) = state.graph.identity_key_of(identity.primary_contact_id) {
                mark_changed(&self.wal, state, key);
            }
        }
        self.note_applied(1);
        Ok(())
    }
}

/// Logs what a split or a block did and how long it held the write lock (every other request
/// waits that long): operators watch it, and `benches/split.sh` reads it.
fn log_split(what: &'static str, report: &SplitReport, locked: Instant) {
    tracing::info!(
        identities = report.identities.len(),
        removed_links = report.removed_links,
        lock_held_us = locked.elapsed().as_micros() as u64,
        "{what}"
    );
}
