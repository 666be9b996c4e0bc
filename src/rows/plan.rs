//! Planning an import: the checks on the rows as a whole, the grouping into identities (with
//! petgraph's union-find over row indexes) and the recomputed primaries.

use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use petgraph::unionfind::UnionFind;

use super::{ImportError, ImportRow};
use crate::contact::{ContactId, Email, LinkPrecedence, Phone, Timestamp};
use crate::event::NewContact;

/// What an import will write (docs/behaviour.md §7), computed by [`plan_import`] without
/// writing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportPlan {
    /// One [`NewContact`] per row, sorted by id ascending. `link` is the smallest id of the
    /// row's identity when that is smaller than the row's own id, else `None` (the smallest-id
    /// row of each identity), so replaying the events in order keeps the graph's invariants after
    /// every event: each row joins its identity's first row.
    pub contacts: Vec<NewContact>,
    /// Number of rows read.
    pub rows: usize,
    /// Number of identities after grouping by links and by shared values.
    pub identities: usize,
    /// Number of identities joined because live rows share an email or phone (racy duplicate
    /// primaries repaired): identities by `linkedId` chains alone minus [`Self::identities`].
    pub identities_joined_by_values: usize,
    /// Number of rows whose `linkPrecedence` the import changed (promoted to primary or demoted
    /// to secondary); each of them is touched (`updatedAt` = `max(file updatedAt, now)`).
    pub primaries_changed: usize,
}

/// Plans an import (docs/behaviour.md §7): checks the rows as a whole, groups them into
/// identities and recomputes each identity's primary. Pure: writes nothing. Iterative
/// throughout (the cycle walk and petgraph's union-find alike), so `linkedId` chains of any
/// depth cannot overflow the stack; memory is O(rows).
///
/// * **Identities.** Rows join one identity when a `linkedId` chain of any depth connects them
///   (a deleted row still carries its link), or when live rows (`deletedAt` null) share an email
///   or a phone number. The file's `linkPrecedence` plays no part in grouping (a primary with a
///   `linkedId` still joins through it; a secondary without one is grouped by values only).
/// * **Primary.** Each identity's primary is its oldest live row by age order
///   `(createdAt, id)`; an identity with no live row has its oldest row as primary.
/// * **Touch.** A row whose precedence the import changes is touched, like a merge would:
///   its `updatedAt` becomes `max(file updatedAt, now)`. Every other row keeps the file's
///   `updatedAt`, including a secondary whose `linkedId` the import re-points (re-pointing does
///   not touch rows, docs/behaviour.md §3.3).
///
/// # Errors
/// [`ImportError::Invalid`], checked in this order:
/// 1. a duplicate id, at the later of the two lines (the message names the first line);
/// 2. a dangling `linkedId` (no row has that id), at the row's line;
/// 3. a `linkedId` cycle (a self-link included), at the smallest line among the rows on the
///    cycle (the message lists the cycle's ids).
pub fn plan_import(rows: Vec<ImportRow>, now: Timestamp) -> Result<ImportPlan, ImportError> {
    let n = rows.len();

    // 1. Duplicate ids.
    let mut index_of: HashMap<ContactId, usize> = HashMap::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        match index_of.entry(row.id) {
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
            Entry::Occupied(slot) => {
                let other = &rows[*slot.get()];
                let (first, later) = if other.line <= row.line {
                    (other.line, row.line)
                } else {
                    (row.line, other.line)
                };
                return Err(ImportError::invalid(
                    later,
                    format!("duplicate id {} (first at line {first})", row.id),
                ));
            }
        }
    }

    // 2. Dangling links; `target[i]` = index of the row that row i links to.
    let mut target: Vec<Option<usize>> = Vec::with_capacity(n);
    for row in &rows {
        target.push(match row.linked_id {
            None => None,
            Some(linked) => match index_of.get(&linked) {
                Some(&j) => Some(j),
                None => {
                    return Err(ImportError::invalid(
                        row.line,
                        format!("linkedId {linked} does not match the id of any row"),
                    ));
                }
            },
        });
    }
    drop(index_of);

    // 3. Cycles: every row has at most one outgoing link, so walk each chain once.
    find_cycle(&rows, &target)?;

    // Groups by links. Every union that joins two groups leaves one group fewer, so a count of
    // the joining unions gives the number of groups without walking the roots.
    let mut sets: UnionFind<usize> = UnionFind::new(n);
    let mut joins = 0;
    for (i, t) in target.iter().enumerate() {
        if let Some(j) = *t {
            joins += usize::from(sets.union(i, j));
        }
    }
    let link_groups = n - joins;

    // Groups by shared values of live rows.
    let mut by_email: HashMap<&Email, usize> = HashMap::with_capacity(n);
    let mut by_phone: HashMap<&Phone, usize> = HashMap::with_capacity(n);
    for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.is_live()) {
        if let Some(email) = &row.email {
            let first = *by_email.entry(email).or_insert(i);
            joins += usize::from(sets.union(i, first));
        }
        if let Some(phone) = &row.phone {
            let first = *by_phone.entry(phone).or_insert(i);
            joins += usize::from(sets.union(i, first));
        }
    }
    drop((by_email, by_phone));
    let identities = n - joins;

    // Per identity root: its primary (oldest live, else oldest) and its smallest id.
    let mut oldest_live: Vec<Option<usize>> = vec![None; n];
    let mut oldest: Vec<Option<usize>> = vec![None; n];
    let mut smallest_id: Vec<ContactId> = vec![ContactId::MAX; n];
    let mut root_of = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        let root = sets.find_mut(i);
        root_of.push(root);
        let older = |best: Option<usize>| best.is_none_or(|b| row.age() < rows[b].age());
        if row.is_live() && older(oldest_live[root]) {
            oldest_live[root] = Some(i);
        }
        if older(oldest[root]) {
            oldest[root] = Some(i);
        }
        smallest_id[root] = smallest_id[root].min(row.id);
    }

    let mut primaries_changed = 0;
    let mut contacts = Vec::with_capacity(n);
    for (i, row) in rows.into_iter().enumerate() {
        let root = root_of[i];
        let primary = oldest_live[root].or(oldest[root]);
        let precedence = if primary == Some(i) {
            LinkPrecedence::Primary
        } else {
            LinkPrecedence::Secondary
        };
        let updated_at = if precedence == row.precedence {
            row.updated_at
        } else {
            primaries_changed += 1;
            row.updated_at.max(now)
        };
        let first = smallest_id[root];
        contacts.push(NewContact {
            id: row.id,
            email: row.email,
            phone: row.phone,
            created_at: row.created_at,
            updated_at,
            deleted_at: row.deleted_at,
            link: (first < row.id).then_some(first),
        });
    }
    if !contacts.is_sorted_by_key(|c| c.id) {
        contacts.sort_unstable_by_key(|c| c.id);
    }

    Ok(ImportPlan {
        contacts,
        rows: n,
        identities,
        identities_joined_by_values: link_groups - identities,
        primaries_changed,
    })
}

/// Finds a `linkedId` cycle, iteratively. `target[i]` is the row that row `i` links to.
fn find_cycle(rows: &[ImportRow], target: &[Option<usize>]) -> Result<(), ImportError> {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![UNSEEN; rows.len()];
    let mut path = Vec::new();
    for start in 0..rows.len() {
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                UNSEEN => {
                    state[i] = ON_PATH;
                    path.push(i);
                    at = target[i];
                }
                ON_PATH => {
                    // `i` is on the current path: the cycle is the path from `i` on.
                    let from = path.iter().position(|&p| p == i).unwrap_or(0);
                    return Err(cycle_error(rows, &path[from..]));
                }
                _ => break,
            }
        }
        for &p in &path {
            state[p] = DONE;
        }
        path.clear();
    }
    Ok(())
}

fn cycle_error(rows: &[ImportRow], cycle: &[usize]) -> ImportError {
    let line = cycle.iter().map(|&i| rows[i].line).min().unwrap_or(0);
    let mut ids: Vec<String> = cycle
        .iter()
        .take(10)
        .map(|&i| rows[i].id.to_string())
        .collect();
    if cycle.len() > 10 {
        ids.push("…".into());
    }
    if let Some(&first) = cycle.first() {
        ids.push(rows[first].id.to_string());
    }
    ImportError::invalid(
        line,
        format!(
            "linkedId cycle of {} row(s): {}",
            cycle.len(),
            ids.join(" → ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2030-01-01T00:00:00.000Z").unwrap()
    }

    fn err_line(result: Result<impl std::fmt::Debug, ImportError>) -> (u64, String) {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("line {}: ", err.line())),
            "{text}"
        );
        (err.line(), text)
    }

    fn row(
        line: u64,
        id: ContactId,
        email: &str,
        phone: &str,
        link: Option<ContactId>,
    ) -> ImportRow {
        ImportRow {
            line,
            id,
            email: Email::parse(email).unwrap(),
            phone: Phone::parse(phone).unwrap(),
            linked_id: link,
            precedence: if link.is_some() {
                LinkPrecedence::Secondary
            } else {
                LinkPrecedence::Primary
            },
            created_at: Timestamp(1_000 * id as i64),
            updated_at: Timestamp(1_000 * id as i64),
            deleted_at: None,
        }
    }

    #[test]
    fn deep_chain_plans_without_recursion() {
        const N: u64 = 100_000;
        // Each row links to the previous one; listed newest first for good measure.
        let rows: Vec<ImportRow> = (1..=N)
            .rev()
            .map(|id| row(id, id, &format!("u{id}@x.y"), "", (id > 1).then(|| id - 1)))
            .collect();
        let plan = plan_import(rows, now()).unwrap();
        assert_eq!(plan.rows, N as usize);
        assert_eq!(plan.identities, 1);
        assert_eq!(plan.identities_joined_by_values, 0);
        assert_eq!(plan.primaries_changed, 0);
        assert_eq!(plan.contacts.len(), N as usize);
        assert!(plan.contacts.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(plan.contacts[0].link, None);
        assert!(plan.contacts[1..].iter().all(|c| c.link == Some(1)));
    }

    #[test]
    fn cycles_are_found_with_a_line_on_the_cycle() {
        // 5 → 3 → 4 → 2 → 3: a cycle of length 3 reached from row 5.
        let rows = vec![
            row(2, 1, "a@b", "", None),
            row(3, 5, "e@b", "", Some(3)),
            row(4, 3, "c@b", "", Some(4)),
            row(5, 4, "d@b", "", Some(2)),
            row(6, 2, "f@b", "", Some(3)),
        ];
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 4, "{text}");
        assert!(text.contains("cycle of 3 row(s)"), "{text}");

        let rows = vec![row(2, 1, "a@b", "", None), row(3, 7, "a@b", "", Some(7))];
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 3);
        assert!(text.contains("7 → 7"), "{text}");

        // A long cycle through deep chains.
        let mut rows: Vec<ImportRow> = (1..=100_000)
            .map(|id| row(id + 1, id, "", &format!("{id}"), Some(id % 100_000 + 1)))
            .collect();
        rows.push(row(100_002, 100_001, "", "1", Some(5)));
        let (line, text) = err_line(plan_import(rows, now()));
        assert_eq!(line, 2, "{text}");
        assert!(text.contains("cycle of 100000 row(s)"), "{text}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn plans_match_a_naive_grouping(
                specs in proptest::collection::vec(
                    (0u8..4, 0u8..4, 0u8..12, any::<bool>(), 0i64..5, any::<bool>()),
                    1..12,
                ),
            ) {
                // Row k has id 2k+1 (sparse ids); links point at another row's id or nowhere.
                let n = specs.len();
                let rows: Vec<ImportRow> = specs
                    .iter()
                    .enumerate()
                    .map(|(k, &(e, p, link, deleted, created, primary))| ImportRow {
                        line: k as u64 + 2,
                        id: 2 * k as u64 + 1,
                        email: (e > 0).then(|| Email::parse(&format!("e{e}@x")).unwrap().unwrap()),
                        phone: Phone::parse(&format!("{p}")).unwrap(),
                        linked_id: ((link as usize) < n).then(|| 2 * link as u64 + 1),
                        precedence: if primary { LinkPrecedence::Primary } else { LinkPrecedence::Secondary },
                        created_at: Timestamp(created),
                        updated_at: Timestamp(created),
                        deleted_at: deleted.then_some(Timestamp(9)),
                    })
                    .collect();
                // Naive: grow groups until nothing changes.
                let mut group: Vec<usize> = (0..n).collect();
                let joined = |a: &ImportRow, b: &ImportRow| {
                    a.linked_id == Some(b.id)
                        || b.linked_id == Some(a.id)
                        || (a.is_live() && b.is_live()
                            && ((a.email.is_some() && a.email == b.email)
                                || (a.phone.is_some() && a.phone == b.phone)))
                };
                let mut changed = true;
                while changed {
                    changed = false;
                    for i in 0..n {
                        for j in 0..n {
                            if joined(&rows[i], &rows[j]) && group[i] != group[j] {
                                let (from, to) = (group[i].max(group[j]), group[i].min(group[j]));
                                group.iter_mut().filter(|g| **g == from).for_each(|g| *g = to);
                                changed = true;
                            }
                        }
                    }
                }
                let has_cycle = (0..n).any(|start| {
                    let mut at = start;
                    for _ in 0..=n {
                        match rows[at].linked_id {
                            Some(id) => at = (id as usize - 1) / 2,
                            None => return false,
                        }
                        if at == start {
                            return true;
                        }
                    }
                    false
                });
                let result = plan_import(rows.clone(), Timestamp(100));
                prop_assert_eq!(result.is_err(), has_cycle);
                let Ok(plan) = result else { return Ok(()) };
                let mut groups = group.clone();
                groups.sort_unstable();
                groups.dedup();
                prop_assert_eq!(plan.identities, groups.len());
                prop_assert_eq!(plan.contacts.iter().filter(|c| c.link.is_none()).count(), groups.len());
                for (k, c) in plan.contacts.iter().enumerate() {
                    prop_assert_eq!(c.id, 2 * k as u64 + 1);
                    let first = (0..n).find(|&j| group[j] == group[k]).unwrap();
                    let expected = (first != k).then_some(2 * first as u64 + 1);
                    prop_assert_eq!(c.link, expected);
                    // Touched exactly when the precedence changed.
                    let members: Vec<usize> = (0..n).filter(|&j| group[j] == group[k]).collect();
                    let live: Vec<usize> = members.iter().copied().filter(|&j| rows[j].is_live()).collect();
                    let pool = if live.is_empty() { &members } else { &live };
                    let primary = pool.iter().copied().min_by_key(|&j| rows[j].age()).unwrap();
                    let is_primary = rows[k].precedence == LinkPrecedence::Primary;
                    let touched = is_primary != (primary == k);
                    prop_assert_eq!(c.updated_at, if touched { Timestamp(100) } else { rows[k].updated_at });
                }
            }
        }
    }
}
