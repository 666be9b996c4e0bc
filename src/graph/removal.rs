//! Deletion and erasure decided on the graph (docs/behaviour.md §6.6, §6.7): what each finds
//! and the one event it applies. The single-node store and the cluster's replicas both decide
//! through these, so the two modes answer alike.

use super::IdentityGraph;
use crate::contact::{ContactId, ContactRow, Timestamp};
use crate::event::Event;

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

impl IdentityGraph {
    /// Decides `DELETE /contacts/{id}` at `now` (docs/behaviour.md §6.6) without changing
    /// anything: `Ok` with the [`Event::ContactDeleted`] to apply (then
    /// [`IdentityGraph::deletion_answer`] gives the answer), or `Err` with the answer when
    /// there is nothing to delete ([`Deletion::NotFound`], [`Deletion::AlreadyDeleted`]).
    pub fn plan_deletion(&self, id: ContactId, now: Timestamp) -> Result<Event, Deletion> {
        match self.contact(id) {
            None => Err(Deletion::NotFound),
            Some(row) if row.deleted_at.is_some() => Err(Deletion::AlreadyDeleted(row)),
            Some(_) => Ok(Event::ContactDeleted {
                id,
                at: self.clock(now),
            }),
        }
    }

    /// The answer to a deletion of `id` whose event was applied: the row as it is now
    /// ([`Deletion::NotFound`] if it is gone, which an applied deletion never leaves).
    pub fn deletion_answer(&self, id: ContactId) -> Deletion {
        self.contact(id)
            .map_or(Deletion::NotFound, Deletion::Deleted)
    }

    /// Decides `DELETE /identities/{id}?erase=true` at `now` (docs/behaviour.md §6.7) without
    /// changing anything: the [`Event::IdentityErased`] to apply and what it removes, or `None`
    /// when no identity has a contact `id` (unknown, or erased already).
    pub fn plan_erasure(&self, id: ContactId, now: Timestamp) -> Option<(Event, Erasure)> {
        let root = self.root(self.slot_of(id)?);
        // The members' ids only: building their rows would copy the values being erased.
        let mut contact_ids: Vec<ContactId> = self
            .members(root)
            .map(|slot| self.nodes[slot as usize].id)
            .collect();
        contact_ids.sort_unstable();
        let erasure = Erasure {
            primary_contact_id: self.find(id).unwrap_or(id),
            contact_ids,
        };
        let event = Event::IdentityErased {
            id,
            at: self.clock(now),
        };
        Some((event, erasure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::Email;
    use crate::event::NewContact;

    /// A graph of contacts 1 and 2 (one identity, 1 primary) and 3 (alone).
    fn graph() -> IdentityGraph {
        let mut g = IdentityGraph::new();
        for (id, link) in [(1, None), (2, Some(1)), (3, None)] {
            let inserted = g.apply(&Event::ContactInserted(NewContact {
                id,
                email: Email::parse(&format!("c{id}@example.com")).ok().flatten(),
                phone: None,
                created_at: Timestamp(id as i64),
                updated_at: Timestamp(id as i64),
                deleted_at: None,
                link,
            }));
            assert_eq!(inserted, Ok(()));
        }
        g
    }

    #[test]
    fn a_deletion_is_decided_once_and_answered_after_it_applies() {
        let mut g = graph();
        assert_eq!(g.plan_deletion(9, Timestamp(10)), Err(Deletion::NotFound));
        let event = g.plan_deletion(2, Timestamp(10));
        // Deciding changed nothing; the clock never goes back behind the rows it holds.
        assert_eq!(
            event,
            Ok(Event::ContactDeleted {
                id: 2,
                at: Timestamp(10)
            })
        );
        assert_eq!(g.contact(2).map(|r| r.deleted_at), Some(None));
        let Ok(event) = event else { return };
        assert_eq!(g.apply(&event), Ok(()));
        let Deletion::Deleted(row) = g.deletion_answer(2) else {
            panic!("not deleted: {:?}", g.deletion_answer(2));
        };
        assert_eq!(row.deleted_at, Some(Timestamp(10)));
        assert_eq!(
            g.plan_deletion(2, Timestamp(11)),
            Err(Deletion::AlreadyDeleted(row))
        );
    }

    #[test]
    fn an_erasure_lists_the_whole_identity_and_its_primary() {
        let mut g = graph();
        assert_eq!(g.plan_erasure(9, Timestamp(10)), None);
        let Some((event, erasure)) = g.plan_erasure(2, Timestamp(10)) else {
            panic!("contact 2 has an identity");
        };
        assert_eq!(
            erasure,
            Erasure {
                primary_contact_id: 1,
                contact_ids: vec![1, 2],
            }
        );
        assert_eq!(
            event,
            Event::IdentityErased {
                id: 2,
                at: Timestamp(10)
            }
        );
        assert_eq!(g.apply(&event), Ok(()));
        assert_eq!(g.plan_erasure(1, Timestamp(11)), None);
        assert_eq!(g.deletion_answer(1), Deletion::NotFound);
        assert!(g.plan_erasure(3, Timestamp(11)).is_some());
    }
}
