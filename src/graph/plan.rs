//! Deciding what an `/identify` request does, without changing anything (docs/behaviour.md
//! §3, with the over-merge guards of §3.6), and the read-only lookup by values (§6.3).

use super::{ApplyError, Identity, IdentityGraph, IdentityKey, IdentityView};
use crate::contact::{ContactId, Email, Phone, Timestamp, ValidationError};
use crate::event::{Event, NewContact, Refusal};

/// What a read-only lookup by email and/or phone found (`GET /identities`,
/// docs/behaviour.md §6.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The values lead to one identity.
    Found(IdentityKey, Identity),
    /// No value is known (or every value is blocked).
    NotFound,
    /// The email and the phone belong to two identities; a lookup never merges them.
    Conflict {
        /// Primary of the identity of the email.
        email_primary: ContactId,
        /// Primary of the identity of the phone.
        phone_primary: ContactId,
    },
}

/// A validated `/identify` request: the normalized pair `(e, p)` of docs/behaviour.md §3, at
/// least one of them present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyRequest {
    email: Option<Email>,
    phone: Option<Phone>,
}

impl IdentifyRequest {
    /// Builds a request from normalized values.
    ///
    /// # Errors
    /// `missing_contact` when both are absent (docs/behaviour.md §4: both absent → 400).
    pub fn new(email: Option<Email>, phone: Option<Phone>) -> Result<Self, ValidationError> {
        if email.is_none() && phone.is_none() {
            return Err(ValidationError::new(
                "missing_contact",
                "at least one of email and phoneNumber must be given",
                None,
            ));
        }
        Ok(IdentifyRequest { email, phone })
    }

    /// The normalized email, if given.
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    /// The normalized phone, if given.
    pub fn phone(&self) -> Option<&Phone> {
        self.phone.as_ref()
    }
}

/// What `/identify` does ([`IdentityGraph::decide`]). Borrows the graph it was decided on.
#[derive(Clone, Debug)]
pub enum Decision<'g> {
    /// A pure read: the identity's key and answer, read in place.
    Read(IdentityKey, IdentityView<'g>),
    /// The events to apply (never empty).
    Write(Vec<Event>),
}

/// The usable (not blocked) values of a request and the slots carrying them.
#[derive(Clone, Copy)]
struct Matches<'r> {
    email: Option<&'r Email>,
    phone: Option<&'r Phone>,
    by_email: Option<u32>,
    by_phone: Option<u32>,
}

impl IdentityGraph {
    /// Decides what `request` does at wall-clock `now` (docs/behaviour.md §3 steps 1–4) without
    /// changing anything: the events to apply, in order. An empty vector means the request is a
    /// pure read. At most one event results today: a new primary, a new secondary, or a merge (a
    /// merge means both values are known, so it never needs a new row).
    ///
    /// With [`GraphOptions`](super::GraphOptions) set (docs/behaviour.md §3.6): blocked values
    /// count as absent for matching (they are still stored on a new row), and a merge or new
    /// secondary that would take an identity past `max_identity_size` becomes an
    /// [`Event::MergeRefused`].
    pub fn plan(&self, request: &IdentifyRequest, now: Timestamp) -> Vec<Event> {
        self.plan_matched(request, || now, &self.matches(request))
    }

    /// The slots carrying the request's usable (not blocked) email and phone: one index probe
    /// each.
    fn matches<'r>(&self, request: &'r IdentifyRequest) -> Matches<'r> {
        let by_email = (request.email.as_ref()).and_then(|e| self.lookup_email(e.as_str()));
        let by_phone = (request.phone.as_ref()).and_then(|p| self.lookup_phone(p.as_str()));
        // A blocked value is never indexed (`check_invariants`), so a value the probe found is
        // usable: the block list is consulted only for a value the index does not know.
        Matches {
            email: (request.email.as_ref())
                .filter(|e| by_email.is_some() || !self.blocked(e.as_str())),
            phone: (request.phone.as_ref())
                .filter(|p| by_phone.is_some() || !self.blocked(p.as_str())),
            by_email,
            by_phone,
        }
    }

    /// [`IdentityGraph::plan`] and, for a pure read, its answer, from one probe of each index
    /// (the hot path of `/identify`: a returning customer costs one lookup per value).
    ///
    /// `now` is called (once) only when the request writes: a pure read stamps nothing, so it
    /// does not read the wall clock.
    pub fn decide(
        &self,
        request: &IdentifyRequest,
        now: impl FnOnce() -> Timestamp,
    ) -> Decision<'_> {
        self.decide_within(request, now, usize::MAX)
            .unwrap_or_else(|key| Decision::Read(key, self.identity_view(key.0)))
    }

    /// [`IdentityGraph::decide`], except that a pure read of an identity with more than
    /// `max_members` contacts (deleted ones included) is `Err` with the identity's key and its
    /// answer is not built: building it takes time in proportion to the identity's size, which
    /// the caller may first want to take a turn for (docs/behaviour.md §3.6).
    pub fn decide_within(
        &self,
        request: &IdentifyRequest,
        now: impl FnOnce() -> Timestamp,
        max_members: usize,
    ) -> Result<Decision<'_>, IdentityKey> {
        let matches = self.matches(request);
        let events = self.plan_matched(request, now, &matches);
        match matches.by_email.or(matches.by_phone) {
            Some(slot) if events.is_empty() => {
                let root = self.root(slot);
                if self.links[root as usize].size as usize > max_members {
                    return Err(IdentityKey(root));
                }
                Ok(Decision::Read(IdentityKey(root), self.identity_view(root)))
            }
            _ => Ok(Decision::Write(events)),
        }
    }

    /// [`IdentityGraph::plan`] from the request's `matches`; `now` is called only once an event
    /// is certain (a request that changes nothing returns before reading the clock).
    fn plan_matched(
        &self,
        request: &IdentifyRequest,
        now: impl FnOnce() -> Timestamp,
        matches: &Matches<'_>,
    ) -> Vec<Event> {
        let Matches {
            email,
            phone,
            by_email,
            by_phone,
        } = *matches;
        // Read by each branch once it knows it writes.
        let stamp = move || self.clock(now());
        let refusal = |primary: u32, other: Option<u32>, clock: Timestamp| {
            Event::MergeRefused(Refusal {
                primary: self.nodes[primary as usize].id,
                other: other.map(|o| self.nodes[o as usize].id),
                email: request.email.clone(),
                phone: request.phone.clone(),
                at: clock,
                limit: self.options.max_identity_size.unwrap_or(u32::MAX),
            })
        };
        let over_cap = |size: u64| {
            self.options
                .max_identity_size
                .is_some_and(|cap| size > u64::from(cap))
        };
        let new_contact = |link: Option<ContactId>, clock: Timestamp| {
            Event::ContactInserted(NewContact {
                id: self.next_id,
                email: request.email.clone(),
                phone: request.phone.clone(),
                created_at: clock,
                updated_at: clock,
                deleted_at: None,
                link,
            })
        };
        match (by_email, by_phone) {
            (None, None) => vec![new_contact(None, stamp())],
            (Some(a), Some(b)) => {
                let (root_a, root_b) = (self.root(a), self.root(b));
                if root_a == root_b {
                    return Vec::new();
                }
                let clock = stamp();
                let (pa, pb) = (self.primary_of_root(root_a), self.primary_of_root(root_b));
                let size = u64::from(self.links[root_a as usize].size)
                    + u64::from(self.links[root_b as usize].size);
                if over_cap(size) {
                    // Answered from the identity of the email (docs/behaviour.md §3 step 5 order).
                    return vec![refusal(pa, Some(pb), clock)];
                }
                let (winner, loser) = if self.is_better(pa, pb) {
                    (pa, pb)
                } else {
                    (pb, pa)
                };
                vec![Event::IdentitiesLinked {
                    winner: self.nodes[winner as usize].id,
                    loser: self.nodes[loser as usize].id,
                    at: clock,
                    by_email: self.nodes[a as usize].id,
                    by_phone: self.nodes[b as usize].id,
                }]
            }
            (Some(found), None) | (None, Some(found)) => {
                let email_is_new = email.is_some() && by_email.is_none();
                let phone_is_new = phone.is_some() && by_phone.is_none();
                if !(email_is_new || phone_is_new) {
                    return Vec::new();
                }
                let clock = stamp();
                let root = self.root(found);
                let primary = self.primary_of_root(root);
                if over_cap(u64::from(self.links[root as usize].size) + 1) {
                    return vec![refusal(primary, None, clock)];
                }
                vec![new_contact(Some(self.nodes[primary as usize].id), clock)]
            }
        }
    }

    /// The identity the request's values belong to, as `/identify` answers it (docs/behaviour.md §3
    /// step 5), with its key (its union-find root): the identity of the email, else of the phone
    /// (before the request's own events, both lead to the same identity or only one is known);
    /// `None` when neither value is known.
    fn answer_with_key(
        &self,
        request: &IdentifyRequest,
    ) -> Option<(IdentityKey, IdentityView<'_>)> {
        let matches = self.matches(request);
        let root = self.root(matches.by_email.or(matches.by_phone)?);
        Some((IdentityKey(root), self.identity_view(root)))
    }

    /// The answer to a request whose planned `events` were just applied: the identity of the
    /// contact they inserted, if any (a request whose values are all blocked matches nothing,
    /// not even the row it just created), else the identity of the matched contact.
    pub fn answer_after(
        &self,
        request: &IdentifyRequest,
        events: &[Event],
    ) -> Option<(IdentityKey, IdentityView<'_>)> {
        let inserted = events.iter().rev().find_map(|e| match e {
            Event::ContactInserted(c) => self.slot_of(c.id),
            _ => None,
        });
        match inserted {
            Some(slot) => {
                let root = self.root(slot);
                Some((IdentityKey(root), self.identity_view(root)))
            }
            None => self.answer_with_key(request),
        }
    }

    /// Read-only lookup (`GET /identities`, docs/behaviour.md §6.3): the identity the values
    /// lead to, without planning or changing anything. Blocked values never match, and a
    /// lookup never merges: an email and a phone of two identities give [`Lookup::Conflict`].
    pub fn lookup(&self, request: &IdentifyRequest) -> Lookup {
        let Matches {
            by_email, by_phone, ..
        } = self.matches(request);
        match (by_email, by_phone) {
            (None, None) => Lookup::NotFound,
            (Some(a), Some(b)) if self.root(a) != self.root(b) => Lookup::Conflict {
                email_primary: self.nodes[self.primary_of_root(self.root(a)) as usize].id,
                phone_primary: self.nodes[self.primary_of_root(self.root(b)) as usize].id,
            },
            (Some(slot), _) | (None, Some(slot)) => {
                let root = self.root(slot);
                Lookup::Found(IdentityKey(root), self.build_identity(root))
            }
        }
    }

    /// The key of the identity containing contact `id` (its union-find root); `None` for an
    /// unknown or erased id.
    pub fn identity_key_of(&self, id: ContactId) -> Option<IdentityKey> {
        self.slot_of(id).map(|s| IdentityKey(self.root(s)))
    }

    /// Plans, applies and answers one request: the whole of docs/behaviour.md §3 on an exclusive
    /// graph. Returns the answer and the events applied (empty for a pure read).
    ///
    /// # Errors
    /// [`ApplyError::Full`] when no slot is left for a new contact; no other error can occur
    /// for events the graph planned itself.
    pub fn identify(
        &mut self,
        request: &IdentifyRequest,
        now: Timestamp,
    ) -> Result<(Identity, Vec<Event>), ApplyError> {
        let events = self.plan(request, now);
        for event in &events {
            self.apply(event)?;
        }
        // After applying, a value is indexed or a row was inserted, so an answer exists.
        match self.answer_after(request, &events) {
            Some((_, identity)) => Ok((identity.to_identity(), events)),
            None => Err(ApplyError::Full),
        }
    }
}
