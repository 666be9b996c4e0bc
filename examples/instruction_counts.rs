//! Instruction counts of the pure-read path (issue 3, BENCHMARKS.md "fifth pass"): a benchmark
//! program for callgrind, whose counts do not drift with the machine's load the way criterion's
//! times do here.
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/instruction_counts parse [N]
//!     Parses the same `/identify` body N times (default 100 000) with `parse_identify_body`
//!     and the default normalizer, the first step of every request.
//! valgrind --tool=callgrind target/release/examples/instruction_counts decide [N]
//!     Builds a graph of 10 000 contacts in identities of two (`benches/support/graph_fixture.rs`,
//!     as `benches/graph.rs` does at 1 000 000) and decides the same known request N times:
//!     plan and answer, a pure read.
//! ```
//!
//! Instructions per operation = (`I refs` with N − `I refs` with 0) ÷ N. Instruction counts
//! do not see cache misses, so the graph's size does not matter to them; criterion
//! (`cargo bench --bench graph`) gives the times at 1 000 000 contacts.

use std::hint::black_box;

use idrecon::contact::Timestamp;
use idrecon::graph::Decision;
use idrecon::http::identify::parse_identify_body;
use idrecon::phone_region::Normalizer;

#[path = "../benches/support/graph_fixture.rs"]
mod graph_fixture;

/// Contacts in the `decide` graph, all in identities of two.
const CONTACTS: u64 = 10_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let normalizer = Normalizer::default();
    let body = graph_fixture::known_body();
    let body = body.as_bytes();
    let request = match parse_identify_body(body, &normalizer) {
        Ok(request) => request,
        Err(error) => fail(&error.message),
    };
    let mut answered = 0usize;
    match mode.as_str() {
        "parse" => {
            for _ in 0..n {
                match parse_identify_body(black_box(body), &normalizer) {
                    Ok(request) => answered += usize::from(request.email().is_some()),
                    Err(error) => fail(&error.message),
                }
            }
        }
        "decide" => {
            let graph = match graph_fixture::build(CONTACTS, CONTACTS) {
                Ok(graph) => graph,
                Err(error) => fail(&error.to_string()),
            };
            for _ in 0..n {
                match graph.decide(black_box(&request), || Timestamp(0)) {
                    Decision::Read(_, identity) => answered += identity.to_identity().emails.len(),
                    Decision::Write(_) => fail("a known customer must be a pure read"),
                }
            }
        }
        _ => fail("usage: instruction_counts parse|decide [N]"),
    }
    println!("{mode}: {n} operations ({answered})");
}

fn fail(message: &str) -> ! {
    eprintln!("instruction_counts: {message}");
    std::process::exit(1);
}
