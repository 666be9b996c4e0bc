//! The graph's value index against a plain map: any sequence of inserts and removals, with
//! hashes crowded into few tags and home buckets so probe runs collide, wrap and shift, and
//! growths that move entries a few clusters per insert.

use std::collections::HashMap;

use idrecon::graph::value_index::ValueIndex;
use proptest::prelude::*;

/// Hashes crowded into few tags and homes, so probe runs collide, wrap and shift.
fn crowded(key: u16) -> u64 {
    (u64::from(key % 7) << 61) | (u64::from(key % 3) << 32) | u64::from(key)
}

proptest! {
    /// Any sequence of inserts and removals leaves exactly the entries a plain map holds,
    /// each findable, with no tombstones (the length counts occupied buckets).
    #[test]
    fn matches_a_map_under_inserts_and_removals(
        ops in proptest::collection::vec((any::<bool>(), 0u16..300), 1..600)
    ) {
        let mut index = ValueIndex::new();
        let mut model: HashMap<u16, u32> = HashMap::new();
        for (n, (insert, key)) in ops.into_iter().enumerate() {
            let hash = crowded(key);
            if insert {
                let slot = n as u32;
                let inserted = index.insert_if_absent(hash, slot, |s| {
                    model.get(&key) == Some(&s)
                });
                prop_assert_eq!(inserted, !model.contains_key(&key));
                model.entry(key).or_insert(slot);
            } else {
                match model.remove(&key) {
                    Some(slot) => prop_assert!(index.remove(hash, slot)),
                    None => prop_assert!(!index.remove(hash, n as u32)),
                }
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.slots().count(), model.len());
            // Mid-growth too, every value is found, in whichever table it is.
            for (key, &slot) in &model {
                prop_assert_eq!(index.find(crowded(*key), |s| s == slot), Some(slot));
                prop_assert!(index.contains(crowded(*key), slot));
            }
        }
        for (key, &slot) in &model {
            prop_assert_eq!(index.find(crowded(*key), |s| s == slot), Some(slot));
        }
    }
}
