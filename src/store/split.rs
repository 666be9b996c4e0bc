//! Splits and run-time blocked values (docs/behaviour.md §10): admin writes, each one event in
//! the log, decided and applied by the graph under the write lock and answered once durable.

use std::time::Instant;

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};

use crate::contact::{ContactId, Timestamp};
use crate::event::{BlockedValues, Event};
use crate::graph::{Link, SplitOutcome, SplitReport};

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
            let mut state = self.write_state()?;
            let locked = Instant::now();
            match state.graph.split(id, values, now)? {
                None => (None, state.lsn),
                Some((event, outcome)) => {
                    let state = self.log_applied(state, &event, &outcome, locked)?;
                    let report = state.graph.split_report(&outcome);
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
            let mut state = self.write_state()?;
            let locked = Instant::now();
            let (event, outcome) = state.graph.block_values(values, retroactive, now)?;
            let state = self.log_applied(state, &event, &outcome, locked)?;
            (state.graph.split_report(&outcome), state.lsn)
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
            let mut state = self.write_state()?;
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

    /// Logs `event`, already applied, makes every pure read wait for its LSN (it may have
    /// changed up to one identity per contact of those it split), and logs the exclusive hold
    /// since `locked`. Returns the lock downgraded to shared: the
    /// answer (one identity per part, up to the identity's size) is built while readers go on.
    fn log_applied<'a>(
        &self,
        mut state: RwLockWriteGuard<'a, State>,
        event: &Event,
        outcome: &SplitOutcome,
        locked: Instant,
    ) -> Result<RwLockReadGuard<'a, State>, StoreError> {
        state.changed_everywhere = self.append_applied(&mut state, event)?;
        self.note_applied(1);
        tracing::info!(
            removed_links = outcome.removed_links(),
            lock_held_us = locked.elapsed().as_micros() as u64,
            "{}",
            match event {
                Event::IdentitySplit { .. } => "identity split",
                _ => "values blocked",
            }
        );
        Ok(RwLockWriteGuard::downgrade(state))
    }
}
