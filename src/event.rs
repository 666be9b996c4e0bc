//! Events: the only way the identity graph changes (DESIGN.md "The shape").
//!
//! [`crate::graph::IdentityGraph::identify`] decides what a request does and returns the events
//! it caused; [`crate::graph::IdentityGraph::apply`] replays one. The write-ahead log stores
//! events (bincode), recovery replays them, import produces them, and a snapshot is a list of
//! [`NewContact`] events plus history records that rebuilds the same graph. One code path
//! changes state.
//!
//! The encoding is part of the on-disk format (log format version 1): variants and fields may
//! only be appended, never reordered.

use serde::{Deserialize, Serialize};

use crate::contact::{ContactId, Email, Phone, Timestamp};

/// A contact row entering the graph, from `/identify` (SPEC.md §3 steps 2 and 4), from an import
/// (SPEC.md §7) or from a snapshot.
///
/// The graph derives `linkPrecedence` and `linkedId` itself: the primary of an identity is always
/// its oldest live member by age order `(createdAt, id)` (or, for an identity with no live member,
/// its oldest member), so neither needs storing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContact {
    /// The row's id; must be larger than every id already in the graph.
    pub id: ContactId,
    /// Normalized email, if any.
    pub email: Option<Email>,
    /// Normalized phone, if any.
    pub phone: Option<Phone>,
    /// `createdAt`.
    pub created_at: Timestamp,
    /// `updatedAt` (equal to `created_at` for rows created by `/identify`).
    pub updated_at: Timestamp,
    /// `deletedAt`; deleted rows never match (SPEC.md §2).
    pub deleted_at: Option<Timestamp>,
    /// An existing contact whose identity this one joins, or `None` for a new identity.
    /// `/identify` links a new secondary to the identity's primary; import and snapshots link
    /// each row to the smallest-id earlier member of its identity.
    pub link: Option<ContactId>,
}

/// One change to the identity graph. Serialized with bincode into log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A row was recorded (SPEC.md §3 steps 2 and 4; import; snapshot load).
    ContactInserted(NewContact),
    /// Two identities became one (SPEC.md §3 step 3): `loser`, until now a primary, becomes a
    /// secondary of `winner`, the older primary; with `at`, the loser's `updatedAt` becomes `at`
    /// (import joins pass `None` and keep the file's timestamps).
    IdentitiesMerged {
        /// The primary that stays primary.
        winner: ContactId,
        /// The primary that is demoted.
        loser: ContactId,
        /// The demoted row's new `updatedAt`, if it is to change.
        at: Option<Timestamp>,
    },
    /// `DELETE /contacts/{id}` (issue 5 "Deletion"): the row gets `deletedAt = updatedAt = at`,
    /// stops matching, and leaves every answer. If it was its identity's primary, the oldest
    /// live member is promoted (its `updatedAt` becomes `at` too). Links stay as they were.
    ContactDeleted {
        /// The row deleted; must exist, not be deleted yet, and not be erased.
        id: ContactId,
        /// `deletedAt` and `updatedAt` of the row.
        at: Timestamp,
    },
    /// `DELETE /identities/{id}?erase=true` (issue 5 "Erasure"): every contact of the identity
    /// containing `id` is removed, its emails and phones wiped from memory and indexes. Carries
    /// no personal data, so the log may keep it after compaction.
    IdentityErased {
        /// Any contact of the identity.
        id: ContactId,
        /// When.
        at: Timestamp,
    },
    /// `/identify` merged two identities (SPEC.md §3 step 3), recorded with its cause for the
    /// history endpoint: the same change as [`Event::IdentitiesMerged`] with `at` set.
    IdentitiesLinked {
        /// The older primary, which stays primary.
        winner: ContactId,
        /// The primary demoted into `winner`'s identity.
        loser: ContactId,
        /// The demoted row's new `updatedAt`.
        at: Timestamp,
        /// The contact whose email matched the request's email.
        by_email: ContactId,
        /// The contact whose phone matched the request's phone.
        by_phone: ContactId,
    },
    /// The identity size cap refused a merge or a new secondary (issue 5 "Over-merge
    /// guards"). Changes no row or link; recorded for history only.
    MergeRefused(Refusal),
}

/// A change the identity size cap refused (`--max-identity-size`), as history shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Primary of the identity the request was answered from.
    pub primary: ContactId,
    /// Primary of the other identity the request would have merged in; `None` when the refused
    /// change was a new secondary.
    pub other: Option<ContactId>,
    /// The request's normalized email.
    pub email: Option<Email>,
    /// The request's normalized phone.
    pub phone: Option<Phone>,
    /// When.
    pub at: Timestamp,
    /// The cap in force (contacts per identity).
    pub limit: u32,
}

impl Event {
    /// Encodes the event as a log payload (bincode 1, fixed-width little-endian integers).
    ///
    /// # Errors
    /// Only if bincode cannot serialize the value, which cannot happen for these types; the
    /// error is still returned rather than unwrapped.
    pub fn encode(&self) -> Result<Vec<u8>, bincode::Error> {
        bincode::serialize(self)
    }

    /// Decodes a log payload written by [`Event::encode`].
    ///
    /// # Errors
    /// A bincode error when the bytes are not a complete, valid event (trailing bytes included).
    pub fn decode(bytes: &[u8]) -> Result<Event, bincode::Error> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(bytes.len() as u64)
            .reject_trailing_bytes()
            .deserialize(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_reject_garbage() {
        let ev = Event::ContactInserted(NewContact {
            id: 7,
            email: Email::parse("a@b.c").unwrap(),
            phone: Phone::parse("123").unwrap(),
            created_at: Timestamp(5),
            updated_at: Timestamp(6),
            deleted_at: None,
            link: Some(1),
        });
        let bytes = ev.encode().unwrap();
        assert_eq!(Event::decode(&bytes).unwrap(), ev);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Event::decode(&longer).is_err());
        assert!(Event::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Event::decode(&[0xff; 3]).is_err());
        let merge = Event::IdentitiesMerged {
            winner: 1,
            loser: 2,
            at: Some(Timestamp(9)),
        };
        assert_eq!(Event::decode(&merge.encode().unwrap()).unwrap(), merge);
        for event in [
            Event::ContactDeleted {
                id: 3,
                at: Timestamp(10),
            },
            Event::IdentityErased {
                id: 3,
                at: Timestamp(11),
            },
            Event::IdentitiesLinked {
                winner: 1,
                loser: 2,
                at: Timestamp(12),
                by_email: 4,
                by_phone: 5,
            },
            Event::MergeRefused(Refusal {
                primary: 1,
                other: Some(2),
                email: Email::parse("a@b.c").unwrap(),
                phone: None,
                at: Timestamp(13),
                limit: 10,
            }),
        ] {
            assert_eq!(Event::decode(&event.encode().unwrap()).unwrap(), event);
        }
    }
}
