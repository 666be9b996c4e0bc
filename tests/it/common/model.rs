//! A deliberately naive model of docs/behaviour.md §3, shared by `graph_model.rs` (differential
//! test of the graph) and `linearizability.rs` (checks the served answers against the write-ahead
//! log).
//!
//! The model is a `Vec` of rows with exactly the columns of the `Contact` table, changed the way
//! docs/behaviour.md §3 describes it in prose: scan everything, collect identities through
//! `linkedId`, demote, re-point, insert. It is quadratic on purpose and shares no code with
//! `src/graph/` (union-find, indexes, rings); only the plain event type of `src/event/` is read,
//! to apply logged events.
#![allow(dead_code)]

use idrecon::contact::{ContactRow, LinkPrecedence};
use idrecon::event::Event;
use idrecon::graph::Identity;

/// One row of the `Contact` table, plain values only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: u64,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub linked_id: Option<u64>,
    pub primary: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

/// An `/identify` answer, plain values only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub primary: u64,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub secondaries: Vec<u64>,
}

/// A row the graph serves, as a model row.
pub fn row_of(r: ContactRow) -> Row {
    Row {
        id: r.id,
        email: r.email.map(|e| e.as_str().to_owned()),
        phone: r.phone_number.map(|p| p.as_str().to_owned()),
        linked_id: r.linked_id,
        primary: r.link_precedence == LinkPrecedence::Primary,
        created_at: r.created_at.0,
        updated_at: r.updated_at.0,
        deleted_at: r.deleted_at.map(|t| t.0),
    }
}

/// An identity the graph answers, as a model answer.
pub fn answer_of(identity: &Identity) -> Answer {
    Answer {
        primary: identity.primary_contact_id,
        emails: (identity.emails.iter())
            .map(|e| e.as_str().to_owned())
            .collect(),
        phones: (identity.phone_numbers.iter())
            .map(|p| p.as_str().to_owned())
            .collect(),
        secondaries: identity.secondary_contact_ids.clone(),
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub rows: Vec<Row>,
    /// Exact values that never match (blocked values, docs/behaviour.md §3.6); stored on rows
    /// all the same.
    pub blocked: Vec<String>,
    /// The largest id ever erased: ids are never reused.
    pub erased_max: u64,
    /// The latest `createdAt` ever erased: the clock never goes backwards.
    pub erased_clock: i64,
}

impl Model {
    pub fn get(&self, id: u64) -> &Row {
        self.rows
            .iter()
            .find(|r| r.id == id)
            .expect("model row exists")
    }

    /// The identity of a row is its primary: itself, or the row its `linkedId` names.
    pub fn identity(r: &Row) -> u64 {
        if r.primary {
            r.id
        } else {
            r.linked_id.expect("a secondary has a linkedId")
        }
    }

    pub fn age(&self, id: u64) -> (i64, u64) {
        let r = self.get(id);
        (r.created_at, r.id)
    }

    /// docs/behaviour.md §2: the clock never goes backwards for new rows.
    pub fn clock(&self, now: i64) -> i64 {
        self.rows
            .iter()
            .map(|r| r.created_at)
            .fold(now.max(self.erased_clock), i64::max)
    }

    pub fn next_id(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.id + 1)
            .max()
            .unwrap_or(1)
            .max(self.erased_max + 1)
    }

    /// A request value as matching sees it: blocked values are absent.
    fn usable<'a>(&self, v: Option<&'a str>) -> Option<&'a str> {
        v.filter(|v| !self.blocked.iter().any(|b| b == v))
    }

    /// Deletion (docs/behaviour.md §6.6), in prose: the row gets `deletedAt = updatedAt = at`; if
    /// it was the primary, the identity's best row — oldest live, or oldest of all when none is
    /// live — becomes primary (touched: `updatedAt = at`) and every row of the identity is
    /// re-pointed to it. Returns false (changing nothing) for an unknown or already deleted row.
    pub fn delete(&mut self, id: u64, at: i64) -> bool {
        let Some(row) = self.rows.iter_mut().find(|r| r.id == id) else {
            return false;
        };
        if row.deleted_at.is_some() {
            return false;
        }
        row.deleted_at = Some(at);
        row.updated_at = at;
        let old = Model::identity(row);
        if old != id {
            return true;
        }
        let best = self
            .rows
            .iter()
            .filter(|r| Model::identity(r) == old)
            .min_by_key(|r| (r.deleted_at.is_some(), r.created_at, r.id))
            .map(|r| r.id)
            .expect("the identity has its primary");
        if best != old {
            for r in &mut self.rows {
                if Model::identity(r) != old {
                    continue;
                }
                if r.id == best {
                    r.primary = true;
                    r.linked_id = None;
                    r.updated_at = at;
                } else {
                    r.primary = false;
                    r.linked_id = Some(best);
                }
            }
        }
        true
    }

    /// Erasure (docs/behaviour.md §6.7): every row of the identity of `id` is gone. Returns false
    /// for an unknown row.
    pub fn erase(&mut self, id: u64) -> bool {
        let Some(row) = self.rows.iter().find(|r| r.id == id) else {
            return false;
        };
        let identity = Model::identity(row);
        let erased_max = self
            .rows
            .iter()
            .filter(|r| Model::identity(r) == identity)
            .map(|r| r.id)
            .max()
            .unwrap_or(0);
        self.erased_max = self.erased_max.max(erased_max);
        let erased_clock = self
            .rows
            .iter()
            .filter(|r| Model::identity(r) == identity)
            .map(|r| r.created_at)
            .max()
            .unwrap_or(i64::MIN);
        self.erased_clock = self.erased_clock.max(erased_clock);
        self.rows.retain(|r| Model::identity(r) != identity);
        true
    }

    pub fn push(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
        linked_id: Option<u64>,
        at: i64,
    ) {
        let id = self.next_id();
        self.rows.push(Row {
            id,
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
            linked_id,
            primary: linked_id.is_none(),
            created_at: at,
            updated_at: at,
            deleted_at: None,
        });
    }

    /// docs/behaviour.md §3 steps 1–5 at wall-clock `now`. Returns the answer and whether anything
    /// was written.
    pub fn identify(&mut self, e: Option<&str>, p: Option<&str>, now: i64) -> (Answer, bool) {
        let now = self.clock(now);
        // Blocked values are stored (`stored_*`) but never used for matching.
        let (stored_e, stored_p) = (e, p);
        let (e, p) = (self.usable(e), self.usable(p));
        // 1. Match: live rows with email e or phone p.
        let mut identities: Vec<u64> = self
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none())
            .filter(|r| {
                (e.is_some() && r.email.as_deref() == e) || (p.is_some() && r.phone.as_deref() == p)
            })
            .map(Model::identity)
            .collect();
        identities.sort_unstable();
        identities.dedup();
        // 2. New customer.
        let Some(winner) = identities.iter().copied().min_by_key(|&id| self.age(id)) else {
            self.push(stored_e, stored_p, None, now);
            let id = self.rows.last().expect("just pushed").id;
            return (self.answer(id), true);
        };
        // 3. Merge: demote every other primary, re-point its secondaries.
        let mut wrote = false;
        for &loser in identities.iter().filter(|&&id| id != winner) {
            for r in &mut self.rows {
                if r.id == loser {
                    r.primary = false;
                    r.linked_id = Some(winner);
                    r.updated_at = now;
                    wrote = true;
                } else if r.linked_id == Some(loser) {
                    r.linked_id = Some(winner);
                }
            }
        }
        // 4. New information.
        let live_members: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none() && Model::identity(r) == winner)
            .collect();
        let knows_e = e.is_none_or(|e| live_members.iter().any(|r| r.email.as_deref() == Some(e)));
        let knows_p = p.is_none_or(|p| live_members.iter().any(|r| r.phone.as_deref() == Some(p)));
        if !(knows_e && knows_p) {
            self.push(stored_e, stored_p, Some(winner), now);
            wrote = true;
        }
        // 5. Answer.
        (self.answer(winner), wrote)
    }

    pub fn answer(&self, primary: u64) -> Answer {
        let mut members: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none() && Model::identity(r) == primary)
            .collect();
        members.sort_by_key(|r| (r.created_at, r.id));
        let p = self.get(primary);
        // A deleted primary (an identity without live rows) contributes no values.
        let p_values = p.deleted_at.is_none();
        let mut emails: Vec<String> = Vec::new();
        for v in p
            .email
            .iter()
            .filter(|_| p_values)
            .chain(members.iter().filter_map(|r| r.email.as_ref()))
        {
            if !emails.contains(v) {
                emails.push(v.clone());
            }
        }
        let mut phones: Vec<String> = Vec::new();
        for v in p
            .phone
            .iter()
            .filter(|_| p_values)
            .chain(members.iter().filter_map(|r| r.phone.as_ref()))
        {
            if !phones.contains(v) {
                phones.push(v.clone());
            }
        }
        let secondaries = members
            .iter()
            .map(|r| r.id)
            .filter(|&id| id != primary)
            .collect();
        Answer {
            primary,
            emails,
            phones,
            secondaries,
        }
    }
}

/// A change docs/behaviour.md §3 asks for, without timestamps (those come from the service clock).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Planned {
    /// Step 3: primary `loser` becomes a secondary of primary `winner`.
    Merge { winner: u64, loser: u64 },
    /// Steps 2 and 4: a new row; `link` is the identity's primary for a new secondary.
    Insert {
        id: u64,
        email: Option<String>,
        phone: Option<String>,
        link: Option<u64>,
    },
    /// A deletion (docs/behaviour.md §6.6).
    Delete { id: u64 },
    /// An erasure of the identity of `id` (docs/behaviour.md §6.7).
    Erase { id: u64 },
    /// The size cap refused a change (docs/behaviour.md §3.6); the model has no cap, so it never
    /// plans one.
    Refuse { primary: u64, other: Option<u64> },
    /// A split or a block (docs/behaviour.md §10), which `/identify` never plans;
    /// `split_model.rs` models them.
    Repair,
}

impl Planned {
    /// The change a logged event makes, timestamps dropped.
    pub fn of(event: &Event) -> Planned {
        match event {
            Event::ContactInserted(c) => Planned::Insert {
                id: c.id,
                email: c.email.as_ref().map(|e| e.as_str().to_owned()),
                phone: c.phone.as_ref().map(|p| p.as_str().to_owned()),
                link: c.link,
            },
            Event::IdentitiesMerged { winner, loser, .. }
            | Event::IdentitiesLinked { winner, loser, .. } => Planned::Merge {
                winner: *winner,
                loser: *loser,
            },
            Event::ContactDeleted { id, .. } => Planned::Delete { id: *id },
            Event::IdentityErased { id, .. } => Planned::Erase { id: *id },
            Event::MergeRefused(r) => Planned::Refuse {
                primary: r.primary,
                other: r.other,
            },
            Event::IdentitySplit { .. }
            | Event::ValuesBlocked { .. }
            | Event::ValuesUnblocked { .. } => Planned::Repair,
        }
    }
}

impl Model {
    /// The primaries of the identities whose live rows carry email `e` or phone `p`.
    fn matched(&self, e: Option<&str>, p: Option<&str>) -> Vec<u64> {
        let mut identities: Vec<u64> = self
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none())
            .filter(|r| {
                (e.is_some() && r.email.as_deref() == e) || (p.is_some() && r.phone.as_deref() == p)
            })
            .map(Model::identity)
            .collect();
        identities.sort_unstable();
        identities.dedup();
        identities
    }

    /// docs/behaviour.md §3 steps 1–4 without changing anything: the merges (sorted) then the
    /// insert, if any. Empty for a pure read.
    pub fn plan(&self, e: Option<&str>, p: Option<&str>) -> Vec<Planned> {
        let (stored_e, stored_p) = (e, p);
        let (e, p) = (self.usable(e), self.usable(p));
        let identities = self.matched(e, p);
        let insert = |link| Planned::Insert {
            id: self.next_id(),
            email: stored_e.map(str::to_owned),
            phone: stored_p.map(str::to_owned),
            link,
        };
        let Some(winner) = identities.iter().copied().min_by_key(|&id| self.age(id)) else {
            return vec![insert(None)];
        };
        let mut planned: Vec<Planned> = identities
            .iter()
            .filter(|&&id| id != winner)
            .map(|&loser| Planned::Merge { winner, loser })
            .collect();
        let members: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.deleted_at.is_none() && identities.contains(&Model::identity(r)))
            .collect();
        let knows_e = e.is_none_or(|e| members.iter().any(|r| r.email.as_deref() == Some(e)));
        let knows_p = p.is_none_or(|p| members.iter().any(|r| r.phone.as_deref() == Some(p)));
        if !(knows_e && knows_p) {
            planned.push(insert(Some(winner)));
        }
        planned
    }

    /// The answer to `(e, p)` when it plans nothing: the one identity it matches.
    pub fn read(&self, e: Option<&str>, p: Option<&str>) -> Option<Answer> {
        match self.matched(self.usable(e), self.usable(p)).as_slice() {
            [primary] => Some(self.answer(*primary)),
            _ => None,
        }
    }

    /// Applies a logged event the naive way. Errors name what does not fit.
    pub fn apply_event(&mut self, event: &Event) -> Result<(), String> {
        match event {
            Event::ContactInserted(c) => {
                if self.rows.iter().any(|r| r.id >= c.id) {
                    return Err(format!("insert of id {} is not above every id", c.id));
                }
                let linked_id = match c.link {
                    None => None,
                    Some(link) => match self.rows.iter().find(|r| r.id == link) {
                        Some(r) => Some(Model::identity(r)),
                        None => return Err(format!("insert links to unknown row {link}")),
                    },
                };
                self.rows.push(Row {
                    id: c.id,
                    email: c.email.as_ref().map(|e| e.as_str().to_owned()),
                    phone: c.phone.as_ref().map(|p| p.as_str().to_owned()),
                    linked_id,
                    primary: linked_id.is_none(),
                    created_at: c.created_at.0,
                    updated_at: c.updated_at.0,
                    deleted_at: c.deleted_at.map(|t| t.0),
                });
            }
            Event::IdentitiesMerged { winner, loser, .. }
            | Event::IdentitiesLinked { winner, loser, .. } => {
                let at = match event {
                    Event::IdentitiesLinked { at, .. } => Some(*at),
                    Event::IdentitiesMerged { at, .. } => *at,
                    _ => None,
                };
                for id in [winner, loser] {
                    if !self.rows.iter().any(|r| r.id == *id && r.primary) {
                        return Err(format!("merge names {id}, which is not a primary"));
                    }
                }
                for r in &mut self.rows {
                    if r.id == *loser {
                        r.primary = false;
                        r.linked_id = Some(*winner);
                        if let Some(at) = at {
                            r.updated_at = at.0;
                        }
                    } else if r.linked_id == Some(*loser) {
                        r.linked_id = Some(*winner);
                    }
                }
            }
            Event::ContactDeleted { id, at } => {
                if !self.delete(*id, at.0) {
                    return Err(format!("deletion of {id}, which is unknown or deleted"));
                }
            }
            Event::IdentityErased { id, .. } => {
                if !self.erase(*id) {
                    return Err(format!("erasure of unknown {id}"));
                }
            }
            Event::MergeRefused(r) => {
                for id in std::iter::once(r.primary).chain(r.other) {
                    if !self.rows.iter().any(|row| row.id == id) {
                        return Err(format!("refusal names unknown {id}"));
                    }
                }
            }
            Event::IdentitySplit { .. }
            | Event::ValuesBlocked { .. }
            | Event::ValuesUnblocked { .. } => {
                return Err(format!(
                    "{event:?} is not modelled here (see split_model.rs)"
                ));
            }
        }
        Ok(())
    }
}
