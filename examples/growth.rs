//! Helpers of `benches/growth.sh`, which measures how memory, start-up, replay and read latency
//! change from 10 k to 10 M contacts: a benchmark program, not a test.
//!
//! ```text
//! growth read-latency PRELOAD.csv REQUESTS.jsonl [PASSES]
//!     Builds the graph from an import CSV (the same plan and events as `idrecon import`), then
//!     times pure-read identifies over the request bodies (at most 200 000 lines of a
//!     `returning` workload): `parse_identify_body` + `decide` (plan and answer from one index
//!     probe per value; asserted to be a pure read), the work `/identify` does for a returning
//!     customer outside HTTP and the log.
//!     Prints `read_ns=<median ns per identify over PASSES passes (default 9)>` and the spread.
//!
//! growth chase MEBIBYTES [LOADS]
//!     The machine's cost of one dependent random memory access over a working set of
//!     MEBIBYTES: a pointer chase through a random cycle of 64-byte lines (default 2 000 000
//!     loads, after a warm-up lap of the same length). Prints `chase_ns=<ns per load>`. A
//!     pure read makes a few such accesses one after another (index bucket, row, value
//!     bytes, other members), so chase_ns at the 10 M graph's footprint against chase_ns at
//!     the 10 k graph's gives the floor of the 10 M / 10 k latency ratio on this machine.
//!
//! growth index-growth VALUES
//!     Inserts VALUES random hashes into one `ValueIndex`, one at a time as `/identify` does,
//!     and prints the longest single insert around each growth of 1 Mi buckets or more: the
//!     insert that starts it (`grow_us`) and the one that ends it (`done_us`), then the longest
//!     insert of all (`worst_us`). Each is time the graph's write lock is held.
//!
//! growth wal-log PRELOAD.csv DATA_DIR
//!     Writes DATA_DIR/wal: one `ContactInserted` log record per row of the CSV (the events
//!     `idrecon import` would apply), with no snapshot, so `idrecon serve --data-dir DATA_DIR`
//!     must replay the whole log; its "recovery finished" line gives the replay rate.
//! ```
//!
//! Run: `cargo run --release --example growth -- read-latency data/bench/growth/10000/preload.csv
//! data/bench/growth/10000/returning.jsonl`.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use idrecon::contact::Timestamp;
use idrecon::event::{Event, NewContact};
use idrecon::graph::{Decision, IdentityGraph};
use idrecon::http::identify::parse_identify_body;
use idrecon::phone_region::Normalizer;
use idrecon::rows::{self, RowFormat};
use idrecon::wal::{FsyncMode, Wal, WalOptions};

/// Most request lines timed per pass.
const MAX_REQUESTS: usize = 200_000;

/// The import plan of `csv`: one `NewContact` per row, in id order.
fn plan(csv: &Path) -> anyhow::Result<Vec<NewContact>> {
    let file = File::open(csv).with_context(|| format!("cannot open {}", csv.display()))?;
    let parsed = rows::read_rows(BufReader::with_capacity(1 << 20, file), RowFormat::Csv)
        .with_context(|| csv.display().to_string())?;
    let plan = rows::plan_import(parsed, Timestamp(0)).context("plan import")?;
    Ok(plan.contacts)
}

fn read_latency(csv: &Path, requests: &Path, passes: usize) -> anyhow::Result<()> {
    let mut graph = IdentityGraph::new();
    for contact in plan(csv)? {
        graph.apply(&Event::ContactInserted(contact))?;
    }
    let lines: Vec<String> = BufReader::new(File::open(requests)?)
        .lines()
        .take(MAX_REQUESTS)
        .collect::<Result<_, _>>()?;
    let mut per_pass = Vec::with_capacity(passes);
    let normalizer = Normalizer::default();
    for pass in 0..=passes {
        let started = Instant::now();
        for line in &lines {
            let request = parse_identify_body(black_box(line.as_bytes()), &normalizer)
                .map_err(|e| anyhow::anyhow!("{}: {line}", e.message))?;
            match graph.decide(&request, || Timestamp(0)) {
                Decision::Read(_, identity) => black_box(identity.to_identity()),
                Decision::Write(_) => bail!("not a pure read: {line}"),
            };
        }
        let ns = started.elapsed().as_nanos() as f64 / lines.len() as f64;
        // Pass 0 warms the caches and the allocator; it is not counted.
        if pass > 0 {
            per_pass.push(ns);
        }
    }
    per_pass.sort_by(f64::total_cmp);
    let median = per_pass[per_pass.len() / 2];
    println!(
        "contacts={} requests={} passes={} read_ns={median:.1} min_ns={:.1} max_ns={:.1}",
        graph.len(),
        lines.len(),
        passes,
        per_pass[0],
        per_pass[per_pass.len() - 1]
    );
    Ok(())
}

/// ns per dependent load of a random cycle through `mebibytes` of 64-byte lines.
fn chase(mebibytes: usize, loads: usize) -> anyhow::Result<()> {
    const LINE: usize = 8; // u64s per 64-byte line
    let lines = (mebibytes << 20) / 64;
    if lines < 2 {
        bail!("chase needs at least 1 MiB");
    }
    // Sattolo's algorithm: a random permutation that is one cycle through every line.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in (1..lines).rev() {
        let j = (next_random() % i as u64) as usize;
        order.swap(i, j);
    }
    let mut memory = vec![0u64; lines * LINE];
    for (i, &line) in order.iter().enumerate() {
        let next = order[(i + 1) % lines];
        memory[line * LINE] = next as u64;
    }
    drop(order);
    let mut at = 0usize;
    for _ in 0..loads {
        at = memory[at * LINE] as usize;
    }
    let started = Instant::now();
    for _ in 0..loads {
        at = memory[black_box(at) * LINE] as usize;
    }
    let ns = started.elapsed().as_nanos() as f64 / loads as f64;
    black_box(at);
    println!("mebibytes={mebibytes} loads={loads} chase_ns={ns:.1}");
    Ok(())
}

/// The longest inserts of `values` random hashes into one value index, around its growths.
fn index_growth(values: u32) -> anyhow::Result<()> {
    use idrecon::graph::value_index::ValueIndex;
    use std::time::Duration;
    let mut index = ValueIndex::new();
    let mut hash = 0x9E37_79B9_7F4A_7C15u64;
    let mut worst = Duration::ZERO;
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    for slot in 0..values {
        hash ^= hash << 13;
        hash ^= hash >> 7;
        hash ^= hash << 17;
        let (buckets, was_growing) = (index.buckets(), index.is_growing());
        let started = Instant::now();
        index.insert_unique(hash, slot);
        let took = started.elapsed();
        worst = worst.max(took);
        if buckets >= 1 << 20 && index.buckets() != buckets {
            println!(
                "buckets={buckets}->{} values={slot} grow_us={:.1}",
                index.buckets(),
                micros(took)
            );
        }
        if buckets >= 1 << 21 && was_growing && !index.is_growing() {
            println!(
                "buckets={buckets} values={slot} done_us={:.1}",
                micros(took)
            );
        }
    }
    println!("values={values} worst_us={:.1}", micros(worst));
    Ok(())
}

fn wal_log(csv: &Path, dir: &Path) -> anyhow::Result<()> {
    let contacts = plan(csv)?;
    let options = WalOptions {
        fsync: FsyncMode::Never,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&dir.join("wal"), options, 0, |_, _| Ok::<(), String>(()))?;
    let started = Instant::now();
    let count = contacts.len();
    for contact in contacts {
        wal.append(&Event::ContactInserted(contact).encode()?)?;
    }
    wal.close()?;
    println!(
        "wrote {count} log records to {} in {:.1} s",
        dir.join("wal").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["read-latency", csv, requests] => read_latency(Path::new(csv), Path::new(requests), 9),
        ["read-latency", csv, requests, passes] => {
            read_latency(Path::new(csv), Path::new(requests), passes.parse()?)
        }
        ["wal-log", csv, dir] => wal_log(Path::new(csv), Path::new(dir)),
        ["chase", mebibytes] => chase(mebibytes.parse()?, 2_000_000),
        ["chase", mebibytes, loads] => chase(mebibytes.parse()?, loads.parse()?),
        ["index-growth", values] => index_growth(values.parse()?),
        _ => bail!(
            "usage: growth read-latency PRELOAD.csv REQUESTS.jsonl [PASSES] | growth wal-log PRELOAD.csv DATA_DIR | growth chase MEBIBYTES [LOADS] | growth index-growth VALUES"
        ),
    }
}
