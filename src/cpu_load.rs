//! Whether this process is CPU-bound: the CPU time all its threads used over a window of wall
//! time, against the cores it may run on. The log writer applies its commit delay only while
//! the process is CPU-bound ([`crate::wal`] module docs, "Commit delay"): that is when an fsync
//! fewer is CPU handed back to requests; otherwise the delay would only add latency.
//!
//! The share is `(Δ CPU time − Δ background CPU time) / (Δ wall time × cores)`. CPU time is
//! POSIX `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, all threads; `cores` is
//! [`std::thread::available_parallelism`] (on Linux it honours the CPU affinity mask and cgroup
//! quota, so a server pinned with `taskset -c 0` has one core). It
//! is measured over windows of at least [`WINDOW`], with hysteresis: CPU-bound once
//! [`BUSY_ON_WINDOWS`] windows in a row reach a share of [`BUSY_ON`], no longer after one window
//! below [`BUSY_OFF`], so the delay does not flap around one threshold (the delay itself lowers
//! the share it is decided by).
//!
//! **Sustained, not a burst.** One window at [`BUSY_ON`] is not enough: at half load
//! (`checkout-mix` on one core 60–80 % busy) windows reached it 0 to 29 times per 10 s run, the
//! more often the slower the host, and each time the 5 ms busy delay held about ten batches:
//! the p99 went from 2.0–2.6 ms to 3.6–5.5 ms in the runs where it happened most
//! (BENCHMARKS.md, "twenty-second pass"). A saturated process stays above
//! [`BUSY_ON`] window after window, so the streak costs it [`BUSY_ON_WINDOWS`] × [`WINDOW`]
//! (200 ms) before the delay applies; a window that spans a start-up (the first after recovery)
//! or a long idle spell is one window too, so it cannot turn the delay on alone.
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
/// Share of the cores at and above which a window counts towards CPU-bound: 0.90. Saturated
/// on one core, `idrecon serve` measures 0.94–0.98 (BENCHMARKS.md, "seventh pass").
pub const BUSY_ON: f64 = 0.90;
/// Windows in a row at [`BUSY_ON`] or above before the process counts as CPU-bound: 4, so at
/// least 200 ms of [`WINDOW`]s (module docs, "Sustained, not a burst").
pub const BUSY_ON_WINDOWS: u32 = 4;
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
    /// Complete windows in a row, up to the last, with a share of at least [`BUSY_ON`].
    busy_windows: u32,
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
            busy_windows: 0,
            busy: false,
        }
    }

    /// Whether the process is CPU-bound (module docs): the verdict as of the last complete
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
            let share = share(used, wall, self.cores);
            self.busy_windows = if share >= BUSY_ON {
                self.busy_windows.saturating_add(1)
            } else {
                0
            };
            self.busy = next_busy(self.busy, self.busy_windows, share);
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

/// The hysteresis rule (module docs): a process that was not CPU-bound is once the last
/// `busy_windows` windows in a row, this one included, reached [`BUSY_ON`]
/// ([`BUSY_ON_WINDOWS`] of them); one that was stays so while this window's `share` is at least
/// [`BUSY_OFF`].
pub fn next_busy(was_busy: bool, busy_windows: u32, share: f64) -> bool {
    if was_busy {
        share >= BUSY_OFF
    } else {
        busy_windows >= BUSY_ON_WINDOWS
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
    fn hysteresis_turns_on_after_a_streak_at_busy_on_and_off_below_busy_off() {
        assert!(!next_busy(false, 0, 0.0));
        assert!(!next_busy(false, 0, BUSY_ON - 0.01));
        // A streak of busy windows shorter than BUSY_ON_WINDOWS is a burst, not saturation.
        assert!(!next_busy(false, 1, 1.0));
        assert!(!next_busy(false, BUSY_ON_WINDOWS - 1, BUSY_ON));
        assert!(next_busy(false, BUSY_ON_WINDOWS, BUSY_ON));
        assert!(next_busy(false, BUSY_ON_WINDOWS + 10, 1.0));
        // Once busy, a share between the thresholds keeps it busy...
        assert!(next_busy(true, 0, BUSY_ON - 0.01));
        assert!(next_busy(true, 0, BUSY_OFF));
        // ...and only a share below BUSY_OFF ends it.
        assert!(!next_busy(true, 0, BUSY_OFF - 0.01));
        assert!(!next_busy(true, BUSY_ON_WINDOWS, 0.0));
    }

    /// Ends one complete [`WINDOW`] of `load` on one core in which the process used `used` of
    /// CPU time, `background_nanos` of it reported as background work (the window's start and
    /// clocks moved back), and returns the verdict.
    fn complete_window(load: &mut CpuLoad, used: Duration, background_nanos: u64) -> bool {
        load.cores = 1.0;
        load.window_start = Instant::now() - WINDOW;
        load.cpu_at_start = process_cpu_time().saturating_sub(used);
        load.background_at_start = BACKGROUND_CPU_NANOS
            .load(Ordering::Relaxed)
            .wrapping_sub(background_nanos);
        load.is_busy()
    }

    /// [`complete_window`] in which the process used `share` of the core, none of it
    /// background work.
    fn feed(load: &mut CpuLoad, share: f64) -> bool {
        complete_window(load, WINDOW.mul_f64(share), 0)
    }

    #[test]
    fn a_burst_of_busy_windows_is_not_saturation_but_a_streak_is() {
        // `feed` moves the CPU clock's start back by up to 60 ms: the process must have used
        // that much already.
        spin(Duration::from_millis(70));
        let mut load = CpuLoad::new();
        // Three windows at full use of the core, then one at 80 %: never CPU-bound, and the
        // 80 % window (under BUSY_ON) starts the streak again.
        for _ in 0..BUSY_ON_WINDOWS - 1 {
            assert!(!feed(&mut load, 1.2));
        }
        assert!(!feed(&mut load, 0.8));
        for _ in 0..BUSY_ON_WINDOWS - 1 {
            assert!(!feed(&mut load, 1.2));
        }
        // The fourth busy window in a row turns it on.
        assert!(feed(&mut load, 1.2));
        // Between the thresholds it stays on; below BUSY_OFF it is off at once, and a single
        // busy window after that does not turn it back on.
        assert!(feed(&mut load, 0.8));
        assert!(!feed(&mut load, 0.5));
        assert!(!feed(&mut load, 1.2));
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

        // A window of 50 ms on one core in which the process used 60 ms of CPU time, the last
        // of a streak: busy...
        let spent = Duration::from_millis(60);
        let window = |background: u64| {
            let mut load = CpuLoad::new();
            load.busy_windows = BUSY_ON_WINDOWS - 1;
            complete_window(&mut load, spent, background)
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
