//! The links of an identity and their reasons (docs/behaviour.md §10), derived from what the
//! graph keeps anyway: the members' values and the merge records of its history.
//!
//! - Two members that carry the same email (or phone number) are linked by it. Each value
//!   shared by k members gives k − 1 links: its first carrier (smallest id) to each later one,
//!   made when the later one was recorded (its `createdAt`).
//! - A merge by `/identify` (docs/behaviour.md §3.3) links the contact whose email the request
//!   carried to the contact whose phone number it carried, by both values.
//! - Members that neither explains are joined by an import (whose file said they belong
//!   together without a shared value): one link from the identity's first member to the first
//!   member of each such group. No value is its reason, so no block removes it.
//!
//! Storing nothing per link keeps a contact's memory as it was; the cost moves to the rare
//! split, which derives the links of one identity in O(its size + its history).

use super::IdentityGraph;
use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::{BlockedValues, HistoryRecord};

/// Why two contacts of an identity are linked (docs/behaviour.md §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkReason {
    /// Both carry this email.
    SharedEmail(Email),
    /// Both carry this phone number.
    SharedPhone(Phone),
    /// A request carried the email of the first and the phone number of the second, and
    /// merged their identities.
    Request {
        /// The request's email (the first contact's).
        email: Email,
        /// The request's phone number (the second contact's).
        phone: Phone,
    },
    /// An import linked them without a shared value.
    Imported,
}

/// One link of an identity ([`IdentityGraph::links`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The two contacts linked: for a shared value the earlier carrier first; for a request
    /// the email's carrier first.
    pub contacts: (ContactId, ContactId),
    /// Why.
    pub reason: LinkReason,
    /// When the link was made: the later contact's `createdAt` for a shared value, the merge's
    /// time for a request; `None` for an import's link (and a merge made by an import).
    pub at: Option<Timestamp>,
    /// Whether a value of the reason is blocked now: a split of the identity removes the link.
    pub blocked: bool,
}

/// What links two members, by slot (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) enum EdgeKind {
    /// Both carry the same email.
    Email,
    /// Both carry the same phone number.
    Phone,
    /// `a`'s email and `b`'s phone were one request's values; the merge's time.
    Request(Option<Timestamp>),
    /// An import's link.
    Imported,
}

/// A link between the members in slots `a` and `b`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Edge {
    pub(super) a: u32,
    pub(super) b: u32,
    pub(super) kind: EdgeKind,
    /// Whether a value of the reason is blocked now (a split removes the link).
    pub(super) blocked: bool,
}

/// Union-find over the positions `0..n` of an identity's members (union by smaller position,
/// path halving): small and local, for the partitions of one split.
pub(super) struct Partition {
    parent: Vec<u32>,
}

impl Partition {
    pub(super) fn new(n: usize) -> Partition {
        Partition {
            parent: (0..n as u32).collect(),
        }
    }

    pub(super) fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let grandparent = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = grandparent;
            i = grandparent;
        }
        i
    }

    pub(super) fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        self.parent[high as usize] = low;
    }
}

impl IdentityGraph {
    /// The members of the identity whose root is `root`, in slot (id) order.
    pub(super) fn sorted_members(&self, root: u32) -> Vec<u32> {
        let mut members: Vec<u32> = self.members(root).collect();
        members.sort_unstable();
        members
    }

    /// Every link among `members` (sorted slots of one identity), as the module docs define
    /// them, each with whether a block removes it now. O(members + their history records):
    /// whether a shared value is blocked is decided once per distinct value.
    pub(super) fn edges(&self, members: &[u32]) -> Vec<Edge> {
        let mut edges = Vec::new();
        let fields: [(super::ValueOf, EdgeKind); 2] = [
            (|n| n.email, EdgeKind::Email),
            (|n| n.phone, EdgeKind::Phone),
        ];
        for (field, kind) in fields {
            // Per distinct value: its first carrier and whether it is blocked.
            let mut first: hashbrown::HashMap<&[u8], (u32, bool)> = hashbrown::HashMap::new();
            for &m in members {
                if let Some(value) = field(&self.nodes[m as usize]) {
                    let (carrier, blocked) = *first
                        .entry(self.values.bytes(value))
                        .or_insert_with(|| (m, self.blocked(self.values.get(value))));
                    if carrier != m {
                        edges.push(Edge {
                            a: carrier,
                            b: m,
                            kind,
                            blocked,
                        });
                    }
                }
            }
        }
        let mut records: Vec<u32> = members.iter().flat_map(|&m| self.records_of(m)).collect();
        records.sort_unstable();
        records.dedup();
        let member = |id: Option<ContactId>| {
            id.and_then(|id| self.slot_of(id))
                .filter(|s| members.binary_search(s).is_ok())
        };
        for index in records {
            if let Some(HistoryRecord::Merged {
                by_email,
                by_phone,
                at,
                ..
            }) = self.history.get(index as usize)
                && let (Some(a), Some(b)) = (member(*by_email), member(*by_phone))
            {
                let (email, phone) = (self.nodes[a as usize].email, self.nodes[b as usize].phone);
                let blocked = [email, phone]
                    .into_iter()
                    .flatten()
                    .any(|r| self.blocked(self.values.get(r)));
                edges.push(Edge {
                    a,
                    b,
                    kind: EdgeKind::Request(*at),
                    blocked,
                });
            }
        }
        // What values and requests leave apart, an import joined.
        let position = |s: u32| members.binary_search(&s).unwrap_or(0) as u32;
        let mut explained = Partition::new(members.len());
        for edge in &edges {
            explained.union(position(edge.a), position(edge.b));
        }
        for (i, &m) in members.iter().enumerate() {
            if explained.find(i as u32) == i as u32 && i != 0 {
                edges.push(Edge {
                    a: members[0],
                    b: m,
                    kind: EdgeKind::Imported,
                    blocked: false,
                });
            }
        }
        edges
    }

    /// `GET /identities/{contactId}/links` (docs/behaviour.md §10): every link of the identity
    /// containing contact `id` with its reason, shared values first (emails, then phone
    /// numbers, by later contact), then requests in log order, then an import's links; `None`
    /// for an unknown or erased id. O(identity size + its history records).
    pub fn links(&self, id: ContactId) -> Option<Vec<Link>> {
        let root = self.root(self.slot_of(id)?);
        let members = self.sorted_members(root);
        let links = self
            .edges(&members)
            .iter()
            .map(|edge| {
                let (a, b) = (&self.nodes[edge.a as usize], &self.nodes[edge.b as usize]);
                let (reason, at) = match edge.kind {
                    EdgeKind::Email => (
                        self.email_of(a).map(LinkReason::SharedEmail),
                        Some(b.created_at),
                    ),
                    EdgeKind::Phone => (
                        self.phone_of(a).map(LinkReason::SharedPhone),
                        Some(b.created_at),
                    ),
                    EdgeKind::Request(at) => (
                        self.email_of(a)
                            .zip(self.phone_of(b))
                            .map(|(email, phone)| LinkReason::Request { email, phone }),
                        at,
                    ),
                    EdgeKind::Imported => (Some(LinkReason::Imported), None),
                };
                Link {
                    contacts: (a.id, b.id),
                    reason: reason.unwrap_or(LinkReason::Imported),
                    at,
                    blocked: edge.blocked,
                }
            })
            .collect();
        Some(links)
    }
}

/// Whether `text` is one of `values` (either kind: a block applies to emails and phone
/// numbers alike, as the configured list does). `values` is sorted.
pub(super) fn listed(values: &BlockedValues, text: &str) -> bool {
    values
        .emails
        .binary_search_by(|e| e.as_str().cmp(text))
        .is_ok()
        || values
            .phones
            .binary_search_by(|p| p.as_str().cmp(text))
            .is_ok()
}
