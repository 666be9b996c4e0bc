//! `POST /identify` on the store (docs/behaviour.md §3): pure reads under the shared lock,
//! writes under the exclusive lock, every answer only once the state it reveals is durable.
//!
//! A request is first decided under the shared lock. One that writes nothing is answered from
//! there and never takes the write lock (§3.5: a pure read is answered without taking the write
//! path). One with events retakes the lock for writing and plans again if anything was applied
//! in between, which is also why identical requests for a new customer, sent at once, create one
//! row.
//!
//! A pure read waits only for its own identity's last change, not for every write in flight:
//! [`State::changed`] remembers, per identity recently changed, the LSN of that change.

use std::sync::Arc;

use crate::contact::Timestamp;
use crate::event::Event;
use crate::graph::{ApplyError, Decision, IdentifyRequest, Identity, IdentityKey};
use crate::wal::{Lsn, Wal};

use super::{Outcome, State, Store, StoreError};

/// Prune [`State::changed`] of durable entries when it holds more than this many.
const CHANGED_PRUNE_AT: usize = 1 << 16;

/// A pure read of an identity with more contacts than this waits for a turn
/// ([`Store::large_reads`]) before its answer is copied out (docs/behaviour.md §3.6).
pub const LARGE_READ_MEMBERS: usize = 64;

/// The default of [`StoreOptions::large_read_turns`](super::StoreOptions::large_read_turns):
/// one fewer than the cores (at least one), so that one core always stays free for every
/// other request.
pub(super) fn large_read_turns() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// The contact limit (docs/behaviour.md §3.6): `Some(limit)` when applying `events` to a graph
/// holding `held` contacts would add at least one contact and take it past `limit`; `None`
/// otherwise, and always without a limit.
pub fn over_contact_limit(events: &[Event], held: usize, limit: Option<u64>) -> Option<u64> {
    let limit = limit?;
    let added = events
        .iter()
        .filter(|e| matches!(e, Event::ContactInserted(_)))
        .count() as u64;
    (added > 0 && held as u64 + added > limit).then_some(limit)
}

/// A large read's turn ([`LARGE_READ_MEMBERS`]), returned with its answer: the caller keeps it
/// until the answer is rendered, so that rendering counts against the turn as copying did.
/// Empty for every other answer.
pub struct ReadTurn {
    /// Given back when dropped.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl ReadTurn {
    /// No turn: the answer was small, or came from a path that takes none (a cluster member).
    pub fn none() -> ReadTurn {
        ReadTurn { permit: None }
    }

    /// Whether this is a large read's turn.
    pub fn is_held(&self) -> bool {
        self.permit.is_some()
    }
}

impl Store {
    /// Answers `/identify` (docs/behaviour.md §3): the consolidated identity, what the request
    /// did, and the [`ReadTurn`] to keep while rendering. The identity is copied out under the
    /// lock it was read under and rendered by the caller after the lock is released. A pure
    /// read of an identity over [`LARGE_READ_MEMBERS`] contacts first waits (in arrival order)
    /// for one of [`StoreOptions::large_read_turns`](super::StoreOptions::large_read_turns)
    /// turns, so that however many clients ask for large identities, their copying and
    /// rendering leave a core to everyone else (§3.6).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed (before or while waiting);
    /// [`StoreError::Apply`] when the graph is full; [`StoreError::CapacityExceeded`] when the
    /// request would add a contact past [`super::StoreOptions::max_contacts`]
    /// (docs/behaviour.md §3.6: nothing is applied or logged, reads and merges still work).
    pub async fn identify(
        &self,
        request: &IdentifyRequest,
    ) -> Result<(Identity, Outcome, ReadTurn), StoreError> {
        match self.decide(request).await? {
            Decided::Read {
                answer,
                changed_at,
                turn,
            } => {
                self.durable(changed_at).await?;
                Ok((answer, Outcome::PureRead, turn))
            }
            Decided::Write { events, planned_at } => {
                let (identity, outcome) = self.write(request, events, planned_at).await?;
                Ok((identity, outcome, ReadTurn::none()))
            }
        }
    }

    /// Decides `request` under the shared lock (module docs): a pure read copies its answer
    /// out there, a write leaves the events it plans. A pure read of a large identity first
    /// takes its turn and is decided again with it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the log has failed.
    async fn decide(&self, request: &IdentifyRequest) -> Result<Decided, StoreError> {
        // A turn to read a large identity, taken only once a request turns out to be one.
        let mut turn = None;
        loop {
            {
                let state = self.state.read();
                if state.lsn == Lsn::MAX {
                    return Err(StoreError::Unavailable);
                }
                let max_members = match turn {
                    Some(_) => usize::MAX,
                    None => LARGE_READ_MEMBERS,
                };
                // The clock is read only if the request writes (a pure read stamps nothing).
                match state
                    .graph
                    .decide_within(request, Timestamp::now, max_members)
                {
                    Ok(Decision::Read(key, identity)) => {
                        return Ok(Decided::Read {
                            answer: identity.to_identity(),
                            // Everything a pure read reveals was last changed at `changed_at`
                            // (older changes to the identity are durable or have smaller LSNs).
                            changed_at: changed_at(&self.wal, &state, key),
                            turn: ReadTurn { permit: turn },
                        });
                    }
                    Ok(Decision::Write(events)) => {
                        return Ok(Decided::Write {
                            events,
                            planned_at: state.lsn,
                        });
                    }
                    Err(_) => {}
                }
            }
            // Decided again with the turn: the identity may have changed while waiting.
            turn = Some(
                Arc::clone(&self.large_reads)
                    .acquire_owned()
                    .await
                    .map_err(|_| StoreError::Unavailable)?,
            );
            // A turn given back wakes the next waiter ahead of every other task of its thread;
            // yielding lets the runtime first take up the requests that arrived meanwhile.
            tokio::task::yield_now().await;
        }
    }

    /// Applies and logs `planned`, the events [`Store::decide`] planned for `request` when the
    /// state was at `planned_at` (planning again under the write lock if anything was applied
    /// since), and answers once they are durable.
    ///
    /// # Errors
    /// As [`Store::identify`].
    async fn write(
        &self,
        request: &IdentifyRequest,
        planned: Vec<Event>,
        planned_at: Lsn,
    ) -> Result<(Identity, Outcome), StoreError> {
        if self.wal.is_failed() {
            return Err(StoreError::Unavailable);
        }
        let (identity, outcome, lsn, applied) = {
            let mut state = self.state.write();
            // The plan made under the shared lock holds if no event was applied since (every
            // change of the graph is an event with the next LSN, and `plan` depends only on the
            // graph, the request and the time it read); otherwise plan again under the write
            // lock, at the time of this second plan (the graph's clock never goes back).
            let events = if state.lsn == planned_at {
                planned
            } else {
                state.graph.plan(request, Timestamp::now())
            };
            // Checked under the write lock, against the plan about to be applied, so concurrent
            // requests cannot together overshoot the limit; a refused request leaves no event.
            if let Some(limit) =
                over_contact_limit(&events, state.graph.len(), self.options.max_contacts)
            {
                return Err(StoreError::CapacityExceeded { limit });
            }
            let mut outcome = Outcome::PureRead;
            for event in &events {
                self.apply_and_log(&mut state, event)?;
                outcome = outcome_of(event).unwrap_or(outcome);
            }
            let (key, identity) = state
                .graph
                .answer_after(request, &events)
                .map(|(key, identity)| (key, identity.to_identity()))
                .ok_or(ApplyError::Full)?;
            if !events.is_empty() {
                mark_changed(&self.wal, &mut state, key);
            }
            (identity, outcome, state.lsn, events.len() as u64)
        };
        if applied > 0 {
            self.note_applied(applied);
        }
        self.durable(lsn).await?;
        Ok((identity, outcome))
    }
}

/// What [`Store::decide`] leaves once the shared lock is released.
enum Decided {
    /// A pure read: its answer, the LSN it must wait for, and its turn if it took one.
    Read {
        answer: Identity,
        changed_at: Lsn,
        turn: ReadTurn,
    },
    /// A write: the events planned and the state's LSN when they were.
    Write { events: Vec<Event>, planned_at: Lsn },
}

impl Outcome {
    /// What a request did, from the events `/identify` planned for it (the last one that says
    /// anything; none is a pure read).
    pub fn of_events(events: &[Event]) -> Outcome {
        events
            .iter()
            .rev()
            .find_map(outcome_of)
            .unwrap_or(Outcome::PureRead)
    }
}

/// What an event planned by `/identify` says the request did; `None` for events `plan` never
/// produces.
fn outcome_of(event: &Event) -> Option<Outcome> {
    match event {
        Event::ContactInserted(c) if c.link.is_none() => Some(Outcome::NewPrimary),
        Event::ContactInserted(_) => Some(Outcome::NewSecondary),
        Event::IdentitiesMerged { .. } | Event::IdentitiesLinked { .. } => Some(Outcome::Merge),
        Event::MergeRefused(refusal) => {
            tracing::warn!(
                primary = refusal.primary,
                other = ?refusal.other,
                limit = refusal.limit,
                "identity size cap refused a merge or new secondary"
            );
            Some(Outcome::Refused)
        }
        Event::ContactDeleted { .. }
        | Event::IdentityErased { .. }
        | Event::IdentitySplit { .. }
        | Event::ValuesBlocked { .. }
        | Event::ValuesUnblocked { .. } => None,
    }
}

/// The LSN a read of the identity `key` must wait for: its last change ([`mark_changed`]), or
/// 0 when it has none pending. When every applied event is durable (the usual case on a
/// read-mostly load) nothing is looked up.
pub(super) fn changed_at(wal: &Wal, state: &State, key: IdentityKey) -> Lsn {
    if wal.durable_lsn() >= state.lsn {
        return 0;
    }
    let own = state.changed.get(&key).copied().unwrap_or(0);
    own.max(state.changed_everywhere)
}

/// Remembers that the identity `key` was last changed at the state's LSN (pure reads of it wait
/// for that LSN), pruning entries already durable now and then.
pub(super) fn mark_changed(wal: &Wal, state: &mut State, key: IdentityKey) {
    if state.changed.len() >= CHANGED_PRUNE_AT {
        let durable = wal.durable_lsn();
        state.changed.retain(|_, lsn| *lsn > durable);
    }
    let lsn = state.lsn;
    state.changed.insert(key, lsn);
}
