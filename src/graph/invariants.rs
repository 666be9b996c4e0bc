//! The graph's invariants, checked after every mutation in debug builds and in full by
//! [`IdentityGraph::check_invariants`].

use super::sizes::IdentitySizes;
use super::value_index::ValueIndex;
use super::{IdentityGraph, ValueOf};

impl IdentityGraph {
    /// The invariant check run (in debug builds) after every mutation: the whole identity when
    /// it has at most 256 members, so a giant identity does not make a test run quadratic;
    /// [`IdentityGraph::check_invariants`] checks everything.
    pub(super) fn check_touched_identity(&self, root: u32) -> Result<(), String> {
        if self.links[root as usize].size <= 256 {
            self.check_identity(root)
        } else if self.links[root as usize].parent != root {
            Err(format!("slot {root} is not a root"))
        } else {
            Ok(())
        }
    }

    /// Checks one identity (O(its size)): ring and union-find agree, the size is right, the
    /// primary is the best member, and every live value of it is indexed inside it.
    fn check_identity(&self, root: u32) -> Result<(), String> {
        let links = self.links[root as usize];
        if links.parent != root {
            return Err(format!("slot {root} is not a root"));
        }
        let mut count = 0u32;
        let mut best = root;
        for s in self.members(root) {
            count += 1;
            if self.root(s) != root {
                return Err(format!(
                    "slot {s} is in the ring of {root} but not under it"
                ));
            }
            if self.is_better(s, best) {
                best = s;
            }
            let node = &self.nodes[s as usize];
            if self.is_erased(s) {
                return Err(format!("identity at {root} is partly erased"));
            }
            // A value carried by another identity's first carrier is shadowed (see
            // `apply_insert`); a blocked value is never indexed. During a bulk load the indexes
            // are built at the end.
            if node.live() && !self.bulk {
                let values = [
                    (
                        "email",
                        self.text(node.email).map(|e| (e, self.lookup_email(e))),
                    ),
                    (
                        "phone",
                        self.text(node.phone).map(|p| (p, self.lookup_phone(p))),
                    ),
                ];
                for (kind, value) in values {
                    match value {
                        Some((v, Some(_))) if self.blocked(v) => {
                            return Err(format!("blocked {kind} of {} is indexed", node.id));
                        }
                        Some((v, None)) if !self.blocked(v) => {
                            return Err(format!(
                                "{kind} of contact {} not indexed in its identity",
                                node.id
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if count > links.size {
                break;
            }
        }
        if count != links.size {
            return Err(format!(
                "identity at {root}: ring has {count} members, size says {}",
                links.size
            ));
        }
        if best != links.primary {
            return Err(format!(
                "identity at {root}: primary is {} but the oldest live member is {}",
                self.nodes[links.primary as usize].id, self.nodes[best as usize].id
            ));
        }
        Ok(())
    }

    /// Checks every invariant of the whole graph in O(n): ids strictly increasing, every
    /// identity consistent (see `check_identity`: exactly one primary, the oldest live member),
    /// indexes point at live carriers of their value, the count of identities of each size
    /// right.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.nodes.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err("ids are not strictly increasing".into());
        }
        let mut sizes = IdentitySizes::default();
        for s in 0..self.nodes.len() as u32 {
            if self.links[s as usize].parent == s {
                if self.is_erased(s) {
                    if let Some(m) = self.members(s).find(|&m| !self.is_erased(m)) {
                        return Err(format!(
                            "contact {} survived the erasure of its identity",
                            self.nodes[m as usize].id
                        ));
                    }
                    continue;
                }
                sizes.add(self.links[s as usize].size);
                self.check_identity(s)?;
            }
        }
        if sizes != self.sizes {
            return Err(format!(
                "{} roots, the largest of {} members, but the graph counts {} identities, the \
                 largest of {} (or other sizes differ)",
                sizes.identities(),
                sizes.largest(),
                self.sizes.identities(),
                self.sizes.largest()
            ));
        }
        let indexes: [(&str, &ValueIndex, ValueOf); 2] = [
            ("email", &self.by_email, |n| n.email),
            ("phone", &self.by_phone, |n| n.phone),
        ];
        for (kind, index, field) in indexes {
            for s in index.slots() {
                let node = &self.nodes[s as usize];
                let live = node.live() && !self.is_erased(s);
                let Some(text) = self.text(field(node)).filter(|_| live) else {
                    return Err(format!(
                        "{kind} index points at contact {} without a live {kind}",
                        node.id
                    ));
                };
                if self.find_value(index, field, text, self.hash(text)) != Some(s) {
                    return Err(format!(
                        "{kind} index holds contact {} where a lookup of its {kind} cannot find it",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }
}
