//! Criterion benchmarks of splitting an identity (docs/behaviour.md §10) in a graph that also
//! holds 1 000 000 unrelated one-contact identities: the shape a junk phone number makes (every
//! contact of the identity carries it, each with its own email), split by that phone number,
//! at 1 000 and at 100 000 contacts. `IdentityGraph::split` is what runs under the store's
//! exclusive lock, so its time is the hold every other request waits for (the answer is built
//! afterwards, under the shared lock, and not measured here).
//!
//! Run: `cargo bench --bench split`. The baseline measured in the same run is a clone of the
//! identity's member list (a `Vec<u64>` of its size), the least any split must touch.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use idrecon::contact::{Email, Phone, Timestamp};
use idrecon::event::BlockedValues;
use idrecon::graph::{IdentifyRequest, IdentityGraph};

const UNRELATED: u64 = 1_000_000;
const JUNK: &str = "5550100";

/// `size` contacts sharing one junk phone (each with its own email), then `UNRELATED`
/// one-contact customers, all through `/identify`'s rules. The junk identity's primary is 1.
fn build(size: u64) -> IdentityGraph {
    let mut graph = IdentityGraph::new();
    let mut t = 1_680_307_200_000;
    let mut identify = |graph: &mut IdentityGraph, email: String, phone: String| {
        t += 1;
        let request = IdentifyRequest::new(
            Email::parse(&email).ok().flatten(),
            Phone::parse(&phone).ok().flatten(),
        )
        .expect("valid request");
        // Planned and applied without building the answer, which would cost O(identity size)
        // per request while the junk identity grows.
        for event in graph.plan(&request, Timestamp(t)) {
            graph.apply(&event).expect("planned events apply");
        }
    };
    for i in 0..size {
        identify(&mut graph, format!("junk{i}@example.com"), JUNK.to_owned());
    }
    for i in 0..UNRELATED {
        identify(&mut graph, format!("c{i}@example.com"), format!("7{i:09}"));
    }
    graph
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("split");
    group.sample_size(10);
    let junk = BlockedValues {
        emails: Vec::new(),
        phones: vec![Phone::parse(JUNK).ok().flatten().expect("phone")],
    };
    for size in [1_000u64, 100_000] {
        let graph = build(size);
        let members: Vec<u64> = (1..=size).collect();
        group.bench_function(format!("baseline: copy {size} member ids"), |b| {
            b.iter(|| black_box(members.clone()));
        });
        group.bench_function(
            format!("split a {size}-contact identity by its junk phone"),
            |b| {
                b.iter_batched(
                    || graph.clone(),
                    |mut g| {
                        let split = g.split(1, junk.clone(), Timestamp(1_800_000_000_000));
                        assert_eq!(
                            split.ok().flatten().map(|(_, o)| o.removed_links()),
                            Some(size as usize - 1)
                        );
                        g
                    },
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(split, benches);
criterion_main!(split);
