//! Whether this process is CPU-bound: the CPU time all its threads used over a window of wall
//! time, against the cores it may run on. The log writer applies its commit delay only while
//! the process is CPU-bound ([`crate::wal`] module docs, "Commit delay"): that is when an fsync
//! fewer is CPU handed back to requests; otherwise the delay would only add latency.
//!
//! The share is `(Δ CPU time − Δ background CPU time) / (Δ wall time × cores)`. CPU time is
//! POSIX `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, all threads; `cores` is
//! [`std::thread::available_parallelism`] (on Linux it honours the CPU affinity mask and cgroup
//! quota, so a server pinned with `taskset -c 0` has one core). It
//! is measured over windows of at least [`WINDOW`], with hysteresis: CPU-bound from a share of
//! [`BUSY_ON`], no longer below [`BUSY_OFF`], so the delay does not flap around one threshold
//! (the delay itself lowers the share it is decided by).
//!
//! *Background CPU time* is what background threads report ([`start_background_thread`],
//! [`report_background`]): the snapshot thread, which runs in the `SCHED_IDLE` class and so only
//! ever uses time the request threads leave. Counting it would make every snapshot look like
//! saturation, and the longer delay would then add its wait to writes at a load the core serves
//! easily.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Background CPU time reported so far, in nanoseconds (module docs).
static BACKGROUND_CPU_NANOS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's CPU time at its last background report; `None` unless the thread was
    /// marked background ([`start_background_thread`]).
    static BACKGROUND_REPORTED: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Shortest wall-clock window a share is measured over: 50 ms, about 50 group commits under
/// load, long enough for the tick-free process clock to average out single requests.
pub const WINDOW: Duration = Duration::from_millis(50);
/// Share of the cores at and above which the process counts as CPU-bound: 0.90. Saturated on
/// one core, `idrecon serve` measures 0.94–0.98 (BENCHMARKS.md, "seventh pass").
pub const BUSY_ON: f64 = 0.90;
/// Share below which a CPU-bound process no longer counts as one: 0.75.
pub const BUSY_OFF: f64 = 0.75;

/// Process CPU share over the last window, with hysteresis. Owned by the one thread that
/// asks (the log writer); [`CpuLoad::is_busy`] costs one `Instant::now` between windows and
/// one `clock_gettime` system call per window.
#[derive(Debug)]
pub struct CpuLoad {
    cores: f64,
    window_start: Instant,
    cpu_at_start: Duration,
    background_at_start: u64,
    busy: bool,
}

impl Default for CpuLoad {
    fn default() -> Self {
        CpuLoad::new()
    }
}

impl CpuLoad {
    /// Starts the first window now; the process counts as not CPU-bound until a window of at
    /// least [`WINDOW`] has shown otherwise.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuLoad {
            cores: cores as f64,
            window_start: Instant::now(),
            cpu_at_start: process_cpu_time(),
            background_at_start: BACKGROUND_CPU_NANOS.load(Ordering::Relaxed),
            busy: false,
        }
    }

    /// Whether the process is CPU-bound (module docs): the verdict of the last complete
    /// window. Starts a new window when the current one is at least [`WINDOW`] old.
    pub fn is_busy(&mut self) -> bool {
        let now = Instant::now();
        let wall = now.duration_since(self.window_start);
        if wall >= WINDOW {
            let cpu = process_cpu_time();
            let background = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed);
            let used = cpu
                .saturating_sub(self.cpu_at_start)
                .saturating_sub(Duration::from_nanos(
                    background.wrapping_sub(self.background_at_start),
                ));
            self.busy = next_busy(self.busy, share(used, wall, self.cores));
            self.window_start = now;
            self.cpu_at_start = cpu;
            self.background_at_start = background;
        }
        self.busy
    }
}

/// Marks the calling thread as background work (module docs) from now on: the CPU time it
/// uses is left out of every [`CpuLoad`] share once reported by [`report_background`]. For
/// threads that run at idle priority only, whose time is by definition what others leave.
pub fn start_background_thread() {
    BACKGROUND_REPORTED.set(Some(thread_cpu_time()));
}

/// Reports the CPU time the calling background thread used since its last report; nothing on
/// a thread not marked background. Call it every few milliseconds of work (a [`WINDOW`] is
/// 50 ms) and when the work ends: one `clock_gettime` system call.
pub fn report_background() {
    if let Some(last) = BACKGROUND_REPORTED.get() {
        let now = thread_cpu_time();
        BACKGROUND_REPORTED.set(Some(now));
        let nanos = u64::try_from(now.saturating_sub(last).as_nanos()).unwrap_or(u64::MAX);
        BACKGROUND_CPU_NANOS.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Share of `cores` that `used` CPU time is over `wall` time (1.0: every core busy all along).
pub fn share(used: Duration, wall: Duration, cores: f64) -> f64 {
    used.as_secs_f64() / (wall.as_secs_f64() * cores).max(f64::MIN_POSITIVE)
}

/// The hysteresis rule: CPU-bound from [`BUSY_ON`] on, and stays so down to [`BUSY_OFF`].
pub fn next_busy(was_busy: bool, share: f64) -> bool {
    if was_busy {
        share >= BUSY_OFF
    } else {
        share >= BUSY_ON
    }
}

/// CPU time used by all threads of this process so far (user + system), from
/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, which cannot fail for this clock.
pub fn process_cpu_time() -> Duration {
    cpu_clock(rustix::time::ClockId::ProcessCPUTime)
}

/// CPU time used by the calling thread so far, from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`.
pub fn thread_cpu_time() -> Duration {
    cpu_clock(rustix::time::ClockId::ThreadCPUTime)
}

fn cpu_clock(id: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(id);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(t.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_turns_on_at_busy_on_and_off_below_busy_off() {
        assert!(!next_busy(false, 0.0));
        assert!(!next_busy(false, BUSY_ON - 0.01));
        assert!(next_busy(false, BUSY_ON));
        assert!(next_busy(false, 1.0));
        // Once busy, a share between the thresholds keeps it busy...
        assert!(next_busy(true, BUSY_ON - 0.01));
        assert!(next_busy(true, BUSY_OFF));
        // ...and only a share below BUSY_OFF ends it.
        assert!(!next_busy(true, BUSY_OFF - 0.01));
        assert!(!next_busy(true, 0.0));
    }

    #[test]
    fn process_cpu_time_counts_work_done() {
        let before = process_cpu_time();
        // Spin until the process clock has advanced 5 ms (bounded by 10 s of wall time, so a
        // clock that does not count work fails the test instead of hanging it).
        let started = Instant::now();
        let mut x = 0u64;
        while process_cpu_time() < before + Duration::from_millis(5)
            && started.elapsed() < Duration::from_secs(10)
        {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu_time() >= before + Duration::from_millis(5));
    }

    /// Burns at least `cpu` of this thread's CPU time (bounded by 10 s of wall time).
    fn spin(cpu: Duration) {
        let (before, started) = (thread_cpu_time(), Instant::now());
        let mut x = 0u64;
        while thread_cpu_time() < before + cpu && started.elapsed() < Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn background_work_is_left_out_of_the_share() {
        // A thread not marked background reports nothing.
        let before = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed);
        spin(Duration::from_millis(5));
        report_background();
        let reported = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed) - before;
        assert!(reported < 5_000_000, "{reported} ns reported");
        // A background thread reports the CPU time it spins, at every report.
        start_background_thread();
        let before = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed);
        spin(Duration::from_millis(60));
        report_background();
        let reported = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed) - before;
        assert!(reported >= 60_000_000, "{reported} ns reported");
        let before = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed);
        spin(Duration::from_millis(5));
        report_background();
        let reported = BACKGROUND_CPU_NANOS.load(Ordering::Relaxed) - before;
        assert!(reported >= 5_000_000, "{reported} ns at the last report");

        // A window of 50 ms on one core in which the process used 60 ms of CPU time: busy...
        let spent = Duration::from_millis(60);
        let window = |background: u64| {
            let mut load = CpuLoad::new();
            load.cores = 1.0;
            load.window_start = Instant::now() - WINDOW;
            load.cpu_at_start = process_cpu_time().saturating_sub(spent);
            load.background_at_start = BACKGROUND_CPU_NANOS
                .load(Ordering::Relaxed)
                .wrapping_sub(background);
            load.is_busy()
        };
        assert!(window(0));
        // ...unless that CPU time was reported as background work.
        assert!(!window(60_000_000));
    }

    #[test]
    fn share_is_cpu_time_over_wall_time_times_cores() {
        let ms = Duration::from_millis;
        assert_eq!(share(ms(50), ms(50), 1.0), 1.0);
        assert_eq!(share(ms(50), ms(50), 2.0), 0.5);
        assert_eq!(share(ms(0), ms(50), 1.0), 0.0);
        assert!(share(ms(1), ms(0), 1.0).is_finite());
    }

    #[test]
    fn an_idle_window_is_not_busy_and_the_verdict_holds_within_a_window() {
        let mut load = CpuLoad::new();
        assert!(!load.is_busy(), "nothing measured yet");
        // A window of 10 s in which the process used next to no CPU time.
        load.window_start = Instant::now() - Duration::from_secs(10);
        load.cpu_at_start = process_cpu_time();
        assert!(!load.is_busy());
        // A busy verdict stands until the next window is complete.
        load.busy = true;
        assert!(load.is_busy());
    }
}
