//! What one group commit's `fdatasync` costs on the data directory's file system, and whether it
//! writes the inode too (docs/OPERATIONS.md, "The data directory's file system").
//!
//! It does what the log writer does for each batch (`src/wal/writer.rs`): a positioned write of a
//! batch-sized record block over zeros written and fsynced ahead, then `fdatasync`. Between
//! commits it spins (no sleep, so no idle state or wake-up is measured) for GAP microseconds.
//! With no gap, consecutive writes fall in the same clock tick and leave the file's timestamps
//! unchanged; with a gap longer than a tick (4 ms at the usual `CONFIG_HZ=250`) every write
//! changes `mtime`, and a file system that writes the inode for that (ext4 without a journal
//! does, since the stable fix "ext4: ... force writeout of inode table buffer" of 2026-02) adds
//! a device request to every commit. The device's request counter
//! (`/sys/block/DEVICE/stat`, writes completed; on a virtio disk a cache flush counts as one)
//! tells the requests per commit.
//!
//! ```text
//! fsync_cost DIR DEVICE [COMMITS] [BATCH_BYTES]      e.g. fsync_cost data/bench vda 400 3000
//! ```
//!
//! Prints, for gaps of 0 and 5 000 µs, three rounds each: device requests per commit and the
//! `fdatasync` latency median / p90 / p99 in µs. Writes DIR/fsync-cost.tmp and removes it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Completed write requests of a block device (field 5 of `/sys/block/DEVICE/stat`).
fn device_writes(device: &str) -> anyhow::Result<u64> {
    let path = format!("/sys/block/{device}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let field = text
        .split_whitespace()
        .nth(4)
        .with_context(|| format!("{path}: no write counter"))?;
    Ok(field.parse()?)
}

/// One round: `commits` batches of `batch` bytes from `offset`, each after a `gap` of spinning.
/// Returns (device requests per commit, sorted fdatasync latencies in µs).
fn round(
    file: &File,
    device: &str,
    offset: &mut u64,
    commits: usize,
    batch: &[u8],
    gap: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let before = device_writes(device)?;
    let mut latencies = Vec::with_capacity(commits);
    for _ in 0..commits {
        let spin = Instant::now();
        while spin.elapsed() < gap {
            std::hint::spin_loop();
        }
        file.write_all_at(batch, *offset)?;
        *offset += batch.len() as u64;
        let started = Instant::now();
        file.sync_data()?;
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let requests = (device_writes(device)? - before) as f64 / commits as f64;
    latencies.sort_by(f64::total_cmp);
    Ok((requests, latencies))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(device)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: fsync_cost DIR DEVICE [COMMITS] [BATCH_BYTES]");
    };
    let commits: usize = args.get(2).map_or(Ok(400), |c| c.parse())?;
    let batch = vec![b'x'; args.get(3).map_or(Ok(3000), |b| b.parse())?];
    let path = Path::new(dir).join("fsync-cost.tmp");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    // Zeros ahead of every write, made durable first: the commits overwrite allocated blocks
    // and never change the file's length (src/wal/writer.rs, "Preallocation and rotation").
    let zeros = vec![0u8; 1 << 20];
    let needed = (6 * commits * batch.len()) as u64;
    let mut at = 0;
    while at < needed {
        file.write_all_at(&zeros, at)?;
        at += zeros.len() as u64;
    }
    file.sync_all()?;
    let mut offset = 0;
    for _ in 0..3 {
        for gap_us in [0u64, 5_000] {
            let (requests, lat) = round(
                &file,
                device,
                &mut offset,
                commits,
                &batch,
                Duration::from_micros(gap_us),
            )?;
            let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
            println!(
                "gap_us={gap_us:<5} requests_per_commit={requests:.2} fdatasync_us median={:.0} p90={:.0} p99={:.0}",
                at(0.5),
                at(0.9),
                at(0.99)
            );
        }
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(())
}
