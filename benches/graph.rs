//! Criterion benchmarks of the identity graph on 1 000 000 contacts: merging two identities
//! (union plus metadata), `find` of a random contact, a pure-read `/identify` (normalize, plan,
//! build the answer), and planning a brand-new contact.
//!
//! Run: `cargo bench --bench graph`. Each figure is compared with a baseline measured in the
//! same run (a hash-map lookup), because absolute times move with the machine's load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use idrecon::contact::Timestamp;
use idrecon::event::Event;
use idrecon::graph::{Decision, IdentifyRequest, IdentityGraph};
use idrecon::http::identify::parse_identify_body;
use idrecon::http::{IdentifyAnswer, ResponseKey};
use idrecon::phone_region::Normalizer;

#[path = "support/graph_fixture.rs"]
mod graph_fixture;
use graph_fixture::{email, known_body, phone};

const CONTACTS: u64 = 1_000_000;
/// Contacts `1..=PAIRED` form identities of two (primary + secondary); the rest are singleton
/// identities that the merge benchmark joins pairwise.
const PAIRED: u64 = 600_000;

fn build() -> IdentityGraph {
    graph_fixture::build(CONTACTS, PAIRED).expect("valid contacts")
}

/// `n` contact ids in `1..=CONTACTS` from a fixed xorshift64 sequence (deterministic, no
/// dependency on `rand`'s stream stability).
fn random_ids(n: usize) -> Vec<u64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % CONTACTS + 1
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let base = build();

    // Baseline measured in the same run: one lookup of a string key in a hash map of
    // 1 000 000 entries, the least any identify must do per value.
    let map: hashbrown::HashMap<String, u32> = (1..=CONTACTS as u32)
        .map(|i| (format!("customer{i}@example.com"), i))
        .collect();
    let key = "customer1001@example.com".to_owned();
    c.bench_function("baseline: hash map lookup (1M keys)", |b| {
        b.iter(|| black_box(map.get(black_box(key.as_str()))));
    });
    drop(map);

    // `find` of random contact ids, against a same-run baseline: a lookup of the same random
    // ids in a hash map of 1 000 000 `u32` keys. The ids come from a fixed xorshift sequence
    // of 65 536 entries (larger than the L2 cache's worth of nodes they touch), cycled.
    let ids = random_ids(1 << 16);
    let mask = ids.len() - 1;
    let id_map: hashbrown::HashMap<u64, u64> = (1..=CONTACTS).map(|i| (i, i / 2)).collect();
    let mut next = 0usize;
    c.bench_function("baseline: hash map u64 lookup, random ids (1M keys)", |b| {
        b.iter(|| {
            next = (next + 1) & mask;
            black_box(id_map.get(black_box(&ids[next])))
        });
    });
    drop(id_map);
    let mut next = 0usize;
    c.bench_function("find, random ids (1M contacts)", |b| {
        b.iter(|| {
            next = (next + 1) & mask;
            black_box(base.find(black_box(ids[next])))
        });
    });

    c.bench_function("merge two identities (1M contacts)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut graph = base.clone();
                let mut left = PAIRED + 1;
                while done < iters && left < CONTACTS {
                    let event = Event::IdentitiesMerged {
                        winner: left,
                        loser: left + 1,
                        at: Some(Timestamp(0)),
                    };
                    let start = Instant::now();
                    graph.apply(black_box(&event)).expect("valid merge");
                    total += start.elapsed();
                    left += 2;
                    done += 1;
                }
            }
            total
        });
    });

    let known = known_body();
    c.bench_function("pure-read identify incl. parsing (1M contacts)", |b| {
        b.iter(|| {
            let request = parse_identify_body(black_box(known.as_bytes()), &Normalizer::default())
                .expect("valid");
            match base.decide(&request, || Timestamp(0)) {
                Decision::Read(_, identity) => black_box(identity.to_identity()),
                Decision::Write(_) => unreachable!("a known customer is a pure read"),
            }
        });
    });

    // What `POST /identify` does for a returning customer below HTTP: the identity is copied
    // out of the graph (`Store::identify`) and the answer serialized from the copy.
    c.bench_function(
        "pure-read identify incl. parsing and JSON answer (1M contacts)",
        |b| {
            let mut json = Vec::with_capacity(512);
            b.iter(|| {
                let request =
                    parse_identify_body(black_box(known.as_bytes()), &Normalizer::default())
                        .expect("valid");
                match base.decide(&request, || Timestamp(0)) {
                    Decision::Read(_, identity) => {
                        json.clear();
                        let identity = identity.to_identity();
                        let answer = IdentifyAnswer::new(&identity, ResponseKey::PrimaryContactId);
                        serde_json::to_writer(&mut json, &answer).expect("serializable");
                        black_box(json.len())
                    }
                    Decision::Write(_) => unreachable!("a known customer is a pure read"),
                }
            });
        },
    );

    let request = parse_identify_body(known.as_bytes(), &Normalizer::default()).expect("valid");
    c.bench_function("pure-read decide: plan + answer (1M contacts)", |b| {
        b.iter(|| match base.decide(black_box(&request), || Timestamp(0)) {
            Decision::Read(_, identity) => black_box(identity.to_identity()),
            Decision::Write(_) => unreachable!("a known customer is a pure read"),
        });
    });

    let new = IdentifyRequest::new(email(CONTACTS + 5), phone(CONTACTS + 5)).expect("valid");
    c.bench_function("plan a new contact (1M contacts)", |b| {
        b.iter(|| black_box(base.plan(black_box(&new), Timestamp(0))));
    });
}

criterion_group! {
    name = graph;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(graph);
