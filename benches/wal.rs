//! Criterion benchmark of the write-ahead log under 32 concurrent writers with
//! `--fsync batch` (group commit), on a temporary directory of the real disk (not tmpfs, so
//! every fsync reaches the device).
//!
//! Each writer thread appends one record (a bincode `ContactInserted` event of a realistic
//! contact, about 100 bytes) and waits until it is durable ([`Wal::durable`], as a `200` does),
//! then appends the next one. Criterion reports the time per durable record and, through
//! `Throughput::Elements(1)`, records per second.
//!
//! Before the timed runs it prints the **group-commit batch size distribution** (records per
//! write + fsync: p50 / p90 / max, and the mean from [`Wal::stats`]) of a fixed run of
//! 32 × 2 000 records. The sizes are captured from the outside, through a `metrics` recorder
//! installed for this process that keeps every value the writer records into the
//! `idrecon_wal_batch_records` histogram.
//!
//! Run: `cargo bench --bench wal`. `BENCH_WAL_DIR` chooses where the temporary log lives
//! (default: `target/` of the crate, which is on the same disk as the data directory).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use idrecon::contact::{Email, Phone, Timestamp};
use idrecon::event::{Event, NewContact};
use idrecon::wal::{FsyncMode, Wal, WalOptions};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};
use parking_lot::Mutex;

/// Concurrent writer threads: the load the group-commit throughput is reported at.
const WRITERS: usize = 32;

/// Every value recorded into `idrecon_wal_batch_records`, in order.
#[derive(Clone, Default)]
struct BatchSizes(Arc<Mutex<Vec<f64>>>);

impl HistogramFn for BatchSizes {
    fn record(&self, value: f64) {
        self.0.lock().push(value);
    }
}

/// A `metrics` recorder that keeps the WAL batch-size histogram and drops everything else.
struct BatchRecorder(BatchSizes);

impl Recorder for BatchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == idrecon::metrics::WAL_BATCH_RECORDS {
            Histogram::from_arc(Arc::new(self.0.clone()))
        } else {
            Histogram::noop()
        }
    }
}

/// A realistic log payload: a new contact with an email and a phone number.
fn payload() -> Vec<u8> {
    let contact = NewContact {
        id: 1_000_001,
        email: Email::parse("marty.mcfly1000001@gmail.com").ok().flatten(),
        phone: Some(Phone::from_u64(15_550_101_234)),
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_000_000),
        deleted_at: None,
        link: None,
    };
    Event::ContactInserted(contact)
        .encode()
        .unwrap_or_else(|_| vec![0; 100])
}

/// Where temporary logs go: `BENCH_WAL_DIR`, else `target/` (a real disk; `/tmp` may be tmpfs).
fn bench_root() -> PathBuf {
    std::env::var_os("BENCH_WAL_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Runs `WRITERS` threads, each appending `per_writer` records and waiting for each to be
/// durable before the next; returns the wall time.
fn run_writers(wal: &Arc<Wal>, per_writer: u64, payload: &Arc<Vec<u8>>) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            let wal = Arc::clone(wal);
            let payload = Arc::clone(payload);
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a current-thread runtime");
                for _ in 0..per_writer {
                    let lsn = wal.append(black_box(&payload)).expect("append");
                    runtime.block_on(wal.durable(lsn)).expect("durable");
                }
            });
        }
    });
    started.elapsed()
}

/// Value at quantile `q` (0..=1) of sorted `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn benches(c: &mut Criterion) {
    let sizes = BatchSizes::default();
    // Only this process's WAL records into it; a second install (never here) would be refused.
    let _ = metrics::set_global_recorder(BatchRecorder(sizes.clone()));
    let payload = Arc::new(payload());
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench dir");
    let options = WalOptions {
        fsync: FsyncMode::Batch,
        ..WalOptions::default()
    };

    // 1. Group-commit batch size distribution of a fixed run.
    {
        let dir = tempfile::tempdir_in(&root).expect("temp dir");
        let (wal, _) =
            Wal::open(dir.path(), options, 0, |_, _| Ok::<(), String>(())).expect("open wal");
        let wal = Arc::new(wal);
        sizes.0.lock().clear();
        let per_writer = 2_000;
        let elapsed = run_writers(&wal, per_writer, &payload);
        let stats = wal.stats();
        let mut values = std::mem::take(&mut *sizes.0.lock());
        values.sort_by(f64::total_cmp);
        let records = WRITERS as u64 * per_writer;
        println!(
            "wal group commit, {WRITERS} writers x {per_writer} records ({} B payload), fsync batch, dir {}:",
            payload.len(),
            root.display()
        );
        println!(
            "  {records} durable records in {:.2} s = {:.0} records/s; {} batches, {} fsyncs, mean {:.2} records/batch",
            elapsed.as_secs_f64(),
            records as f64 / elapsed.as_secs_f64(),
            stats.batches,
            stats.fsyncs,
            stats.records as f64 / stats.batches.max(1) as f64
        );
        println!(
            "  records per batch (from idrecon_wal_batch_records, {} samples): p50 {} p90 {} p99 {} max {}",
            values.len(),
            quantile(&values, 0.50),
            quantile(&values, 0.90),
            quantile(&values, 0.99),
            values.last().copied().unwrap_or(0.0)
        );
        wal.close().expect("close");
    }

    // 2. Criterion: time per durable record under 32 writers (records/s as throughput).
    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append + durable, 32 writers, fsync batch", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir_in(&root).expect("temp dir");
            let (wal, _) =
                Wal::open(dir.path(), options, 0, |_, _| Ok::<(), String>(())).expect("open wal");
            let wal = Arc::new(wal);
            let per_writer = iters.div_ceil(WRITERS as u64);
            let elapsed = run_writers(&wal, per_writer, &payload);
            wal.close().expect("close");
            // Time per record actually written (per_writer * WRITERS >= iters).
            elapsed.mul_f64(iters as f64 / (per_writer * WRITERS as u64) as f64)
        });
    });
    group.finish();
}

criterion_group! {
    name = wal;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = benches
}
criterion_main!(wal);
