//! Instruction counts of request parsing (issue 3, BENCHMARKS.md "fifth pass"): a benchmark
//! program for callgrind, whose counts do not drift with the machine's load the way criterion's
//! times do here.
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/parse_count [N]
//! ```
//!
//! Parses the same `/identify` body N times (default 100 000) with [`parse_identify_body`] and
//! the default normalizer (the first step of every request); callgrind's `I refs` ÷ N is the
//! instructions per parse (the start-up's share is under 1 % at the default N).

use idrecon::phone_region::Normalizer;
use idrecon::request::parse_identify_body;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let body = br#"{"email":"Customer1001@Example.com","phoneNumber":"9000001001"}"#;
    let normalizer = Normalizer::default();
    let mut bytes = 0usize;
    for _ in 0..n {
        match parse_identify_body(std::hint::black_box(body), &normalizer) {
            Ok(request) => bytes += request.email().map_or(0, |e| e.as_str().len()),
            Err(error) => {
                eprintln!(
                    "parse_count: the fixed body was rejected: {}",
                    error.message
                );
                std::process::exit(1);
            }
        }
    }
    println!("parsed {n} bodies ({bytes} email bytes)");
}
