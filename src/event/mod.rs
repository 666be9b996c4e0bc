//! Events: the only way the identity graph changes (docs/design.md "The shape").
//!
//! [`crate::graph::IdentityGraph::identify`] decides what a request does and returns the events
//! it caused; [`crate::graph::IdentityGraph::apply`] replays one. The write-ahead log stores
//! events (bincode), recovery replays them, import produces them, and a snapshot is a list of
//! [`NewContact`] events plus history records that rebuilds the same graph. One code path
//! changes state.
//!
//! The encoding is part of the on-disk format (log format version 1): variants and fields may
//! only be appended, never reordered.
//!
//! The persisted forms of the graph's other state live here too, beside the events they
//! embed: [`SnapshotEntry`] (one item of a snapshot file, version 2) and [`HistoryRecord`]
//! (a merge, deletion or refusal, kept in memory and in snapshots). The same encoding rule
//! holds for them.

use serde::{Deserialize, Serialize};

use crate::contact::{ContactId, Email, Phone, Timestamp};

mod records;

pub use records::{BlockedValues, HistoryRecord, SnapshotEntry, SnapshotItem};

/// A contact row entering the graph, from `/identify` (docs/behaviour.md §3.2 and §3.4), from an
/// import (docs/behaviour.md §7) or from a snapshot.
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
    /// `deletedAt`; deleted rows never match (docs/behaviour.md §2).
    pub deleted_at: Option<Timestamp>,
    /// An existing contact whose identity this one joins, or `None` for a new identity.
    /// `/identify` links a new secondary to the identity's primary; import and snapshots link
    /// each row to the smallest-id earlier member of its identity.
    pub link: Option<ContactId>,
}

/// A [`NewContact`] whose email and phone are borrowed, e.g. from the bytes of a snapshot chunk
/// or a log record: recovery decodes rows with it and copies each value once, straight into the
/// graph's arena, instead of allocating and freeing a `String` per value on the start-up and
/// replay path.
///
/// Same fields, same order and therefore the same bincode encoding as [`NewContact`] (a unit
/// test checks it): the on-disk formats do not change. Values are not re-validated (the owned
/// type's decoding does not either); bincode checks they are UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContactRef<'a> {
    /// As [`NewContact::id`].
    pub id: ContactId,
    /// As [`NewContact::email`].
    #[serde(borrow)]
    pub email: Option<&'a str>,
    /// As [`NewContact::phone`].
    #[serde(borrow)]
    pub phone: Option<&'a str>,
    /// As [`NewContact::created_at`].
    pub created_at: Timestamp,
    /// As [`NewContact::updated_at`].
    pub updated_at: Timestamp,
    /// As [`NewContact::deleted_at`].
    pub deleted_at: Option<Timestamp>,
    /// As [`NewContact::link`].
    pub link: Option<ContactId>,
}

impl<'a> NewContactRef<'a> {
    /// Decodes the row at the front of `bytes` (its bincode encoding with fixed-width integers, as
    /// [`NewContact`] is written in log records and snapshots) and returns it with the number of
    /// bytes it took. Written by hand because it runs once per row at recovery, where it is about
    /// three times faster than going through serde. Accepts exactly what bincode accepts (a unit
    /// test compares them byte for byte).
    ///
    /// # Errors
    /// A bincode error when `bytes` is shorter than the row, an option tag is neither 0 nor
    /// 1, or a value is not UTF-8.
    pub fn decode_prefix(bytes: &'a [u8]) -> Result<(NewContactRef<'a>, usize), bincode::Error> {
        let mut reader = RowReader { bytes, at: 0 };
        let row = NewContactRef {
            id: reader.u64()?,
            email: reader.option(RowReader::str)?,
            phone: reader.option(RowReader::str)?,
            created_at: Timestamp(reader.u64()? as i64),
            updated_at: Timestamp(reader.u64()? as i64),
            deleted_at: reader.option(|r| r.u64().map(|t| Timestamp(t as i64)))?,
            link: reader.option(RowReader::u64)?,
        };
        Ok((row, reader.at))
    }

    /// This row with owned values (values are taken as stored, not validated again).
    pub fn to_owned_contact(&self) -> NewContact {
        NewContact {
            id: self.id,
            email: self.email.map(Email::from_stored),
            phone: self.phone.map(Phone::from_stored),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
            link: self.link,
        }
    }
}

impl NewContact {
    /// This row with its values borrowed.
    pub fn as_row(&self) -> NewContactRef<'_> {
        NewContactRef {
            id: self.id,
            email: self.email.as_ref().map(Email::as_str),
            phone: self.phone.as_ref().map(Phone::as_str),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
            link: self.link,
        }
    }
}

/// One change to the identity graph. Serialized with bincode into log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A row was recorded (docs/behaviour.md §3.2 and §3.4; import; snapshot load).
    ContactInserted(NewContact),
    /// Two identities became one (docs/behaviour.md §3.3): `loser`, until now a primary,
    /// becomes a secondary of `winner`, the older primary; with `at`, the loser's `updatedAt`
    /// becomes `at` (import joins pass `None` and keep the file's timestamps).
    IdentitiesMerged {
        /// The primary that stays primary.
        winner: ContactId,
        /// The primary that is demoted.
        loser: ContactId,
        /// The demoted row's new `updatedAt`, if it is to change.
        at: Option<Timestamp>,
    },
    /// `DELETE /contacts/{id}` (docs/behaviour.md §6.6): the row gets `deletedAt = updatedAt = at`,
    /// stops matching, and leaves every answer. If it was its identity's primary, the oldest
    /// live member is promoted (its `updatedAt` becomes `at` too). Links stay as they were.
    ContactDeleted {
        /// The row deleted; must exist, not be deleted yet, and not be erased.
        id: ContactId,
        /// `deletedAt` and `updatedAt` of the row.
        at: Timestamp,
    },
    /// `DELETE /identities/{id}?erase=true` (docs/behaviour.md §6.7): every contact of the identity
    /// containing `id` is removed, its emails and phones wiped from memory and indexes. Carries
    /// no personal data, so the log may keep it after compaction.
    IdentityErased {
        /// Any contact of the identity.
        id: ContactId,
        /// When.
        at: Timestamp,
    },
    /// `/identify` merged two identities (docs/behaviour.md §3.3), recorded with its cause for
    /// the history endpoint: the same change as [`Event::IdentitiesMerged`] with `at` set.
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
    /// The identity size cap refused a merge or a new secondary (docs/behaviour.md §3.6).
    /// Changes no row or link; recorded for history only (§6.5).
    MergeRefused(Refusal),
    /// `POST /identities/{id}/split` (docs/behaviour.md §10): `values` are blocked for
    /// matching from now on, and the identity containing `id` becomes the connected components
    /// of its members under the links whose reasons involve no blocked value. The partition is
    /// computed from the graph when the event is applied, so replaying the log recomputes it.
    IdentitySplit {
        /// Any contact of the identity to split.
        id: ContactId,
        /// The values to block (sorted, no duplicates).
        values: BlockedValues,
        /// `updatedAt` of the rows whose link changes.
        at: Timestamp,
    },
    /// `POST /admin/blocked-values` (docs/behaviour.md §10): `values` are blocked for matching;
    /// with `retroactive`, every identity holding a contact that carries one of them is split
    /// as by [`Event::IdentitySplit`].
    ValuesBlocked {
        /// The values to block (sorted, no duplicates).
        values: BlockedValues,
        /// Whether identities already linked through the values are split.
        retroactive: bool,
        /// `updatedAt` of the rows whose link changes.
        at: Timestamp,
    },
    /// `DELETE /admin/blocked-values` (docs/behaviour.md §10): the run-time blocks of `values`
    /// are lifted (a value the configured list blocks stays blocked). Nothing is merged: each
    /// value is matched at its oldest live carrier from now on.
    ValuesUnblocked {
        /// The values to unblock (sorted, no duplicates).
        values: BlockedValues,
    },
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

impl Refusal {
    /// Overwrites the request's email and phone with zeros before freeing them
    /// (docs/behaviour.md §6.7): for the copies a refusal record holds in the graph, and the
    /// ones decoded from the log at start-up.
    pub fn wipe(self) {
        if let Some(email) = self.email {
            email.wipe();
        }
        if let Some(phone) = self.phone {
            phone.wipe();
        }
    }
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
        Event::decode_as(bytes)
    }

    /// Decodes a log payload as [`Event::decode`] does, except that a [`Event::ContactInserted`]
    /// (the most common record) borrows its values from `bytes` (recovery decodes one per row it
    /// replays and copies each value once, straight into the graph's arena). Accepts and rejects
    /// exactly the payloads [`Event::decode`] does.
    ///
    /// # Errors
    /// As [`Event::decode`].
    pub fn decode_borrowed(bytes: &[u8]) -> Result<EventRef<'_>, bincode::Error> {
        // bincode writes an enum's variant index as a u32; `ContactInserted` is variant 0.
        match bytes.split_first_chunk::<4>() {
            Some((tag, rest)) if u32::from_le_bytes(*tag) == 0 => {
                match NewContactRef::decode_prefix(rest)? {
                    (row, used) if used == rest.len() => Ok(EventRef::ContactInserted(row)),
                    _ => Err(Box::new(bincode::ErrorKind::Custom(
                        "Slice had bytes remaining after deserialization".into(),
                    ))),
                }
            }
            _ => Event::decode(bytes).map(EventRef::Other),
        }
    }

    /// A whole payload as one `T` (fixed-width integers, no trailing bytes).
    fn decode_as<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, bincode::Error> {
        use bincode::Options;
        bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(bytes.len() as u64)
            .reject_trailing_bytes()
            .deserialize(bytes)
    }
}

/// The cursor of [`NewContactRef::decode_prefix`].
struct RowReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> RowReader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], bincode::Error> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let taken = end.and_then(|end| self.bytes.get(self.at..end));
        let taken = taken.ok_or_else(|| {
            Box::new(bincode::ErrorKind::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ))
        })?;
        self.at += len;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64, bincode::Error> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    fn str(&mut self) -> Result<&'a str, bincode::Error> {
        let len = usize::try_from(self.u64()?).unwrap_or(usize::MAX);
        std::str::from_utf8(self.take(len)?)
            .map_err(|e| Box::new(bincode::ErrorKind::InvalidUtf8Encoding(e)))
    }

    fn option<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Result<T, bincode::Error>,
    ) -> Result<Option<T>, bincode::Error> {
        match self.take(1)? {
            [0] => Ok(None),
            [1] => value(self).map(Some),
            [tag] => Err(Box::new(bincode::ErrorKind::InvalidTagEncoding(
                usize::from(*tag),
            ))),
            _ => Err(Box::new(bincode::ErrorKind::Custom(
                "option tag missing".into(),
            ))),
        }
    }
}

/// A decoded log payload from [`Event::decode_borrowed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventRef<'a> {
    /// [`Event::ContactInserted`], its values borrowed from the payload.
    ContactInserted(NewContactRef<'a>),
    /// Any other event.
    Other(Event),
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

    proptest::proptest! {
        /// The hand-written row decoder accepts exactly what serde's bincode decoding of the
        /// same type accepts, gives the same row, and says how many bytes it took.
        #[test]
        fn hand_decoded_rows_match_serde(
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            prefix in proptest::collection::vec(0u8..3, 0..40),
            cut in 0usize..64,
        ) {
            use bincode::Options;
            let options = bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .allow_trailing_bytes();
            let valid = bincode::serialize(&NewContactRef {
                id: 9,
                email: Some("é@x.y"),
                phone: None,
                created_at: Timestamp(-1),
                updated_at: Timestamp(2),
                deleted_at: Some(Timestamp(3)),
                link: Some(4),
            })
            .unwrap();
            // Mostly small bytes (valid tags and lengths) then anything, or a cut valid row.
            let mut bytes = prefix;
            bytes.extend_from_slice(&tail);
            for candidate in [bytes, valid[..cut.min(valid.len())].to_vec(), valid.clone()] {
                let by_serde = options.deserialize::<NewContactRef>(&candidate).ok();
                let by_hand = NewContactRef::decode_prefix(&candidate).ok();
                proptest::prop_assert_eq!(by_serde, by_hand.map(|(row, _)| row));
                if let Some((row, used)) = by_hand {
                    proptest::prop_assert_eq!(used as u64, options.serialized_size(&row).unwrap());
                }
            }
        }
    }

    /// Owned and borrowed decoding agree on every payload: the events themselves, every
    /// truncation and extension, and every byte value at every position of an insert.
    #[test]
    fn borrowed_decoding_accepts_and_rejects_exactly_what_owned_decoding_does() {
        let row = NewContact {
            id: 7,
            email: Email::parse("ann@example.com").unwrap(),
            phone: Phone::parse("+91 98765").unwrap(),
            created_at: Timestamp(5),
            updated_at: Timestamp(6),
            deleted_at: Some(Timestamp(8)),
            link: Some(1),
        };
        // Same fields, same bytes: snapshots and logs keep their format.
        assert_eq!(
            bincode::serialize(&row).unwrap(),
            bincode::serialize(&row.as_row()).unwrap()
        );
        let agree = |bytes: &[u8]| {
            let owned = Event::decode(bytes).ok();
            let borrowed = Event::decode_borrowed(bytes).ok().map(|e| match e {
                EventRef::ContactInserted(r) => Event::ContactInserted(r.to_owned_contact()),
                EventRef::Other(e) => e,
            });
            assert_eq!(owned, borrowed, "{bytes:?}");
            owned.is_some()
        };
        let insert = Event::ContactInserted(row).encode().unwrap();
        let merge = Event::IdentitiesMerged {
            winner: 1,
            loser: 2,
            at: None,
        }
        .encode()
        .unwrap();
        assert!(agree(&insert) && agree(&merge));
        for bytes in [&insert, &merge] {
            for len in 0..bytes.len() {
                assert!(!agree(&bytes[..len]));
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(!agree(&longer));
        }
        for at in 0..insert.len() {
            for value in [0u8, 1, 2, 0x7f, 0x80, 0xc3, 0xff] {
                let mut changed = insert.clone();
                changed[at] = value;
                agree(&changed);
            }
        }
    }
}
