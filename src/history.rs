//! Identity history (issue 5 "History"): what happened to an identity, in the order it
//! happened.
//!
//! Inserts need no record: every row is its own insert record (its values are the request's
//! values, its `createdAt` the time). Everything else that happens to an identity — merges,
//! deletions, refusals by the size cap — is kept as a compact [`crate::event::HistoryRecord`]
//! in the graph and in every snapshot, so history survives snapshots and restarts.
//!
//! # Order
//! Each record stores `before_id`, the graph's next contact id when it was applied: it happened
//! after the insert of every id below `before_id` and before every insert from `before_id` on.
//! Records among themselves keep the order they were applied in. [`HistoryEntry`] lists are
//! sorted by that order, which is the log order.

use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::Refusal;

/// One entry of `GET /identities/{contactId}/history`, values resolved for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEntry {
    /// A row was recorded with these request values.
    ContactInserted {
        /// The new row.
        id: ContactId,
        /// Its email.
        email: Option<Email>,
        /// Its phone.
        phone: Option<Phone>,
        /// Its `createdAt`.
        at: Timestamp,
    },
    /// Two identities were merged.
    Merged {
        /// The primary that stayed primary.
        primary: ContactId,
        /// The primary demoted into it.
        demoted: ContactId,
        /// When (`None` for an import's merge).
        at: Option<Timestamp>,
        /// The email that linked the two, if known.
        email: Option<Email>,
        /// The phone that linked the two, if known.
        phone: Option<Phone>,
    },
    /// A contact was deleted.
    Deleted {
        /// The deleted contact.
        id: ContactId,
        /// When.
        at: Timestamp,
        /// The contact promoted to primary, if any.
        promoted: Option<ContactId>,
    },
    /// The size cap refused a merge (`other` set) or a new secondary.
    Refused(Refusal),
}
