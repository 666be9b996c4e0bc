//! Progress reporting of long command-line jobs (`idrecon feed`, `idrecon import`) on stderr:
//! an [`indicatif`] progress bar when stderr is a terminal, and a plain line every
//! [`PLAIN_EVERY`] otherwise (log files and CI output stay readable: no control characters).
//!
//! [`Progress`] is cheap to share (`Clone`, atomic counters) and to advance from many tasks.

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use parking_lot::Mutex;

/// Interval between two plain progress lines when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// A progress display for one phase of a job: `label`, a count of `unit`s done, and the total
/// when it is known.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    label: &'static str,
    unit: &'static str,
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
    display: Display,
}

enum Display {
    Bar(ProgressBar),
    /// Plain lines; holds when the last one was printed.
    Plain(Mutex<Instant>),
    Hidden,
}

impl Progress {
    /// A progress display on stderr: a bar (or spinner, without `total`) when stderr is a
    /// terminal, plain periodic lines `label: done/total unit (rate/s)` otherwise.
    pub fn stderr(label: &'static str, unit: &'static str, total: Option<u64>) -> Progress {
        let display = if std::io::stderr().is_terminal() {
            Display::Bar(bar(label, unit, total))
        } else {
            Display::Plain(Mutex::new(Instant::now()))
        };
        Progress::with_display(label, unit, total, display)
    }

    /// A progress that shows nothing (for library callers and tests).
    pub fn hidden() -> Progress {
        Progress::with_display("", "", None, Display::Hidden)
    }

    fn with_display(
        label: &'static str,
        unit: &'static str,
        total: Option<u64>,
        display: Display,
    ) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                label,
                unit,
                total,
                done: AtomicU64::new(0),
                started: Instant::now(),
                display,
            }),
        }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        let done = self.inner.done.fetch_add(n, Ordering::Relaxed) + n;
        self.show(done);
    }

    /// Sets the count of units done to `done`.
    pub fn set(&self, done: u64) {
        self.inner.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// Ends the display: the bar is cleared (the caller prints its own summary), plain mode
    /// prints nothing more.
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.inner.display {
            bar.finish_and_clear();
        }
    }

    fn show(&self, done: u64) {
        match &self.inner.display {
            Display::Bar(bar) => bar.set_position(done),
            Display::Plain(last) => {
                let now = Instant::now();
                let Some(mut last) = last.try_lock() else {
                    return;
                };
                if now.duration_since(*last) < PLAIN_EVERY {
                    return;
                }
                *last = now;
                drop(last);
                eprintln!("{}", self.line(done));
            }
            Display::Hidden => {}
        }
    }

    /// The plain progress line: `label: done/total unit (rate/s)`.
    fn line(&self, done: u64) -> String {
        let inner = &self.inner;
        let rate = done as f64 / inner.started.elapsed().as_secs_f64().max(0.001);
        match inner.total {
            Some(total) => format!(
                "{}: {done}/{total} {} ({rate:.0}/s)",
                inner.label, inner.unit
            ),
            None => format!("{}: {done} {} ({rate:.0}/s)", inner.label, inner.unit),
        }
    }
}

fn template(label: &str, unit: &str, total: Option<u64>) -> String {
    match total {
        Some(_) => format!(
            "{label} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} \
             ({{rate}}, eta {{eta}})"
        ),
        None => {
            format!("{{spinner}} {label} [{{elapsed_precise}}] {{human_pos}} {unit} ({{rate}})")
        }
    }
}

fn bar(label: &'static str, unit: &'static str, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&template(label, unit, total)) {
        bar.set_style(
            style.with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            }),
        );
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_label_count_total_and_unit() {
        let p = Progress::with_display("feed", "requests", Some(10), Display::Hidden);
        p.inc(3);
        p.inc(4);
        assert_eq!(p.done(), 7);
        assert!(p.line(7).starts_with("feed: 7/10 requests ("));
        let q = Progress::with_display("parse", "rows", None, Display::Hidden);
        q.set(5);
        assert!(q.line(q.done()).starts_with("parse: 5 rows ("));
    }

    #[test]
    fn bar_templates_are_valid() {
        for total in [Some(10), None] {
            assert!(ProgressStyle::with_template(&template("feed", "requests", total)).is_ok());
        }
    }
}
