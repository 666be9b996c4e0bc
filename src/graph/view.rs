//! Answers: the consolidated identity (docs/behaviour.md §3 step 5), read in place or copied
//! out, and the rows readers see (§6.1–§6.4).

use smallvec::SmallVec;

use super::arena::{StrRef, stored_text};
use super::{IdentityGraph, Node};
use crate::contact::{ContactId, ContactRow, Email, LinkPrecedence, Phone};

/// The consolidated identity answered by `/identify` (docs/behaviour.md §3 step 5).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// Id of the identity's primary contact.
    pub primary_contact_id: ContactId,
    /// Distinct emails of live contacts: the primary's first, then in age order of first carrier.
    pub emails: Vec<Email>,
    /// Distinct phones of live contacts, ordered like `emails`.
    pub phone_numbers: Vec<Phone>,
    /// Ids of every live secondary, in age order.
    pub secondary_contact_ids: Vec<ContactId>,
}

/// Members an [`IdentityView`] holds without allocating: most identities are one or two
/// contacts, so a typical answer allocates nothing.
const INLINE_MEMBERS: usize = 6;

/// A consolidated identity read in place: the answer of [`Identity`] with its values still in the
/// graph's arena, so deciding a request under the shared lock copies nothing
/// (the member list is inline up to `INLINE_MEMBERS`). [`IdentityView::to_identity`] copies out
/// the answer, which is rendered after the lock is released.
#[derive(Clone)]
pub struct IdentityView<'g> {
    graph: &'g IdentityGraph,
    /// The primary's slot.
    primary: u32,
    /// Slots whose values are answered, in answer order: the primary first when it is live,
    /// then every other live member by (created at, id). Inline up to [`INLINE_MEMBERS`]
    /// (most identities are one or two contacts): no allocation for a typical answer.
    order: SmallVec<[u32; INLINE_MEMBERS]>,
}

impl IdentityView<'_> {
    /// The identity as an owned value, with the same contents.
    pub fn to_identity(&self) -> Identity {
        Identity {
            primary_contact_id: self.primary_contact_id(),
            emails: self
                .emails()
                .map(|bytes| Email::from_stored(stored_text(bytes)))
                .collect(),
            phone_numbers: self
                .phone_numbers()
                .map(|bytes| Phone::from_stored(stored_text(bytes)))
                .collect(),
            secondary_contact_ids: self.secondary_contact_ids().collect(),
        }
    }

    /// The distinct values `value_of` gives the members, in member order (first occurrence
    /// wins): by a scan of the earlier members for the usual handful, through a hash set for
    /// large identities. Values are compared and given as stored bytes. `value_of` is a
    /// closure type rather than a `ValueOf` pointer so that it is inlined into the scan.
    fn distinct(
        &self,
        value_of: impl Fn(&Node) -> Option<StrRef> + Copy,
    ) -> impl Iterator<Item = &[u8]> {
        let graph = self.graph;
        let stored = move |slot: u32| value_of(&graph.nodes[slot as usize]);
        let mut seen = (self.order.len() > 32).then(hashbrown::HashSet::new);
        self.order.iter().enumerate().filter_map(move |(i, &slot)| {
            let bytes = graph.values.bytes(stored(slot)?);
            let first = match seen.as_mut() {
                Some(seen) => seen.insert(bytes),
                None => !self.order[..i]
                    .iter()
                    .any(|&s| stored(s).is_some_and(|r| graph.values.bytes(r) == bytes)),
            };
            first.then_some(bytes)
        })
    }

    /// Id of the identity's primary contact.
    fn primary_contact_id(&self) -> ContactId {
        self.graph.nodes[self.primary as usize].id
    }

    /// Distinct emails as stored bytes: the primary's first, then in age order of first carrier.
    fn emails(&self) -> impl Iterator<Item = &[u8]> {
        self.distinct(|node| node.email)
    }

    /// Distinct phones as stored bytes, ordered like the emails.
    fn phone_numbers(&self) -> impl Iterator<Item = &[u8]> {
        self.distinct(|node| node.phone)
    }

    /// Ids of every live secondary, in age order.
    fn secondary_contact_ids(&self) -> impl Iterator<Item = ContactId> {
        let nodes = &self.graph.nodes;
        self.order
            .iter()
            .filter(|&&slot| slot != self.primary)
            .map(|&slot| nodes[slot as usize].id)
    }
}

impl std::fmt::Debug for IdentityView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_identity().fmt(f)
    }
}

impl IdentityGraph {
    pub(super) fn build_identity(&self, root: u32) -> Identity {
        self.identity_view(root).to_identity()
    }

    /// The identity of `root` read in place (docs/behaviour.md §3 step 5: the primary's values
    /// first, then the other live members' by age).
    pub(super) fn identity_view(&self, root: u32) -> IdentityView<'_> {
        let primary = self.primary_of_root(root);
        let mut order: SmallVec<[u32; INLINE_MEMBERS]> =
            SmallVec::with_capacity(self.links[root as usize].size as usize);
        if self.nodes[primary as usize].live() {
            order.push(primary);
        }
        let others = order.len();
        order.extend(
            self.members(root)
                .filter(|&s| s != primary && self.nodes[s as usize].live()),
        );
        order[others..].sort_unstable_by_key(|&s| {
            let n = &self.nodes[s as usize];
            (n.created_at, n.id)
        });
        IdentityView {
            graph: self,
            primary,
            order,
        }
    }

    /// The row with `id` as readers see it (docs/behaviour.md §2, §6.1), deleted rows included;
    /// `None` for an unknown or erased id.
    pub fn contact(&self, id: ContactId) -> Option<ContactRow> {
        self.slot_of(id).map(|s| self.row(s))
    }

    /// Up to `limit` rows with ids greater than `after`, in id order (docs/behaviour.md §6.2).
    pub fn contacts_after(&self, after: ContactId, limit: usize) -> Vec<ContactRow> {
        let start = self.nodes.partition_point(|n| n.id <= after);
        (start..self.nodes.len())
            .filter(|&s| !self.is_erased(s as u32))
            .take(limit)
            .map(|s| self.row(s as u32))
            .collect()
    }

    /// Every row in id order (erased contacts are gone).
    pub fn all_contacts(&self) -> impl Iterator<Item = ContactRow> + '_ {
        (0..self.nodes.len())
            .filter(|&s| !self.is_erased(s as u32))
            .map(|s| self.row(s as u32))
    }

    /// The identity containing contact `id`, whether or not that contact is live; `None` for an
    /// unknown id.
    pub fn identity_of(&self, id: ContactId) -> Option<Identity> {
        self.slot_of(id).map(|s| self.build_identity(self.root(s)))
    }

    /// Every row of the identity containing contact `id`, deleted ones included, in id order;
    /// `None` for an unknown or erased id (`GET /identities/{contactId}`, docs/behaviour.md
    /// §6.4).
    pub fn identity_rows(&self, id: ContactId) -> Option<Vec<ContactRow>> {
        let root = self.root(self.slot_of(id)?);
        let mut slots: Vec<u32> = self.members(root).collect();
        slots.sort_unstable();
        Some(slots.into_iter().map(|s| self.row(s)).collect())
    }

    fn row(&self, slot: u32) -> ContactRow {
        let node = &self.nodes[slot as usize];
        let primary = self.primary_of_root(self.root(slot));
        let (link_precedence, linked_id) = if primary == slot {
            (LinkPrecedence::Primary, None)
        } else {
            (
                LinkPrecedence::Secondary,
                Some(self.nodes[primary as usize].id),
            )
        };
        ContactRow {
            id: node.id,
            phone_number: self.phone_of(node),
            email: self.email_of(node),
            linked_id,
            link_precedence,
            created_at: node.created_at,
            updated_at: node.updated_at,
            deleted_at: node.deleted_at(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::Timestamp;
    use crate::graph::{Decision, IdentifyRequest};

    #[test]
    fn large_identities_answer_first_occurrences_in_age_order() {
        // 45 members (past the 32 where the answer switches from scanning to a hash set), with
        // every email but the first carried by one contact and every phone but the first by
        // one contact: the first occurrence decides each value's place.
        let mut g = IdentityGraph::new();
        let req = |e: &str, p: &str| {
            IdentifyRequest::new(Email::parse(e).unwrap(), Phone::parse(p).unwrap()).unwrap()
        };
        let email = |i: u64| format!("e{i}@example.org");
        let phone = |i: u64| format!("55501{i:02}");
        let mut at = 0;
        for i in 0..40 {
            at += 1;
            g.identify(&req(&email(0), &phone(i)), Timestamp(at))
                .unwrap();
        }
        for j in 1..6 {
            at += 1;
            g.identify(&req(&email(j), &phone(0)), Timestamp(at))
                .unwrap();
        }
        let (answer, events) = g
            .identify(&req(&email(3), &phone(7)), Timestamp(99))
            .unwrap();
        assert!(events.is_empty(), "a known pair is a pure read");
        assert_eq!(answer.primary_contact_id, 1);
        let emails: Vec<&str> = answer.emails.iter().map(Email::as_str).collect();
        assert_eq!(emails, (0..6).map(email).collect::<Vec<_>>());
        let phones: Vec<&str> = answer.phone_numbers.iter().map(Phone::as_str).collect();
        assert_eq!(phones, (0..40).map(phone).collect::<Vec<_>>());
        assert_eq!(answer.secondary_contact_ids, (2..=45).collect::<Vec<_>>());
        // The view renders the same answer as the owned identity it copies out.
        let Decision::Read(_, view) = g.decide(&req(&email(5), &phone(0)), || Timestamp(100))
        else {
            panic!("a known pair is a pure read");
        };
        assert_eq!(view.to_identity(), answer);
        assert_eq!(view.emails().count(), 6);
        assert_eq!(view.secondary_contact_ids().count(), 44);
        // Bounded: a pure read of these 45 contacts is deferred under 45 and answered at 45;
        // a write is decided whatever the identity's size.
        let read = req(&email(5), &phone(0));
        let deferred = g.decide_within(&read, || Timestamp(100), 44);
        assert!(matches!(deferred, Err(key) if Some(key) == g.identity_key_of(1)));
        let Ok(Decision::Read(_, view)) = g.decide_within(&read, || Timestamp(100), 45) else {
            panic!("45 members are within 45");
        };
        assert_eq!(view.to_identity(), answer);
        let write = req(&email(99), &phone(0));
        assert!(matches!(
            g.decide_within(&write, || Timestamp(100), 1),
            Ok(Decision::Write(events)) if events.len() == 1
        ));
    }
}
