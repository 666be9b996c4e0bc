//! `idrecon feed`: sends every JSON line of a checkout-events file to a running service's
//! `POST /identify`, with bounded concurrency and retries on connection errors, and reports
//! what happened (requests/s, outcomes from the `x-idrecon-outcome` header, errors by code).
//!
//! Lines are sent in file order by `--concurrency` workers; with `--concurrency 1` the service
//! sees exactly the file's order (and so produces deterministic ids).
//!
//! Progress goes to stderr ([`super::progress`]): a bar when stderr is a terminal, a plain
//! `feed: done/total requests (rate/s)` line every two seconds otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;

use super::progress::Progress;
use crate::http::OUTCOME_HEADER;

/// Flags of `idrecon feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Base URL of the running service.
    #[arg(long, env = "IDRECON_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Requests in flight at once (1 keeps the file's order exactly).
    #[arg(long, env = "IDRECON_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// JSON Lines file of /identify request bodies.
    pub file: PathBuf,
}

/// Runs `idrecon feed`: feeds the file on a new multi-threaded runtime and prints the
/// [`FeedSummary`] to stdout. Returns 0 when every request got a 2xx answer, 1 when any got an
/// error answer or none at all.
///
/// # Errors
/// The runtime cannot be started, or [`feed`] fails.
pub(super) fn run(args: FeedArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = runtime.block_on(feed(&args.file, &args.url, args.concurrency))?;
    print!("{summary}");
    if let Some(error) = &summary.unreachable_error {
        eprintln!(
            "error: {} of {} requests got no answer from {}: {error}",
            summary.unreachable, summary.requests, args.url
        );
    }
    Ok(if summary.errors.is_empty() && summary.unreachable == 0 {
        0
    } else {
        1
    })
}

/// The `x-idrecon-outcome` values a summary always lists, in this order.
const KNOWN_OUTCOMES: [&str; 5] = ["new-primary", "new-secondary", "merge", "read", "refused"];

/// Attempts per request when the connection fails (not when the server answers an error).
const ATTEMPTS: u32 = 5;

/// What a feed run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedSummary {
    /// Lines sent.
    pub requests: u64,
    /// Answers by outcome for 200s: the `x-idrecon-outcome` value (`new-primary`,
    /// `new-secondary`, `merge`, `read`, `refused`), `unknown` when the header is missing.
    pub outcomes: BTreeMap<String, u64>,
    /// Error answers by `status code` (e.g. `400 invalid_email`).
    pub errors: BTreeMap<String, u64>,
    /// Requests that never got an answer after every retry.
    pub unreachable: u64,
    /// The connection error of the last such request, with its causes (it names the URL).
    pub unreachable_error: Option<String>,
    /// Wall time of the run, in milliseconds.
    pub elapsed_ms: u64,
}

impl FeedSummary {
    /// Requests per second over the run (a run under 1 ms counts as 1 ms).
    pub fn rate(&self) -> f64 {
        self.requests as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }
}

impl std::fmt::Display for FeedSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sent {} requests in {:.2}s ({:.0} requests/s)",
            self.requests,
            self.elapsed_ms as f64 / 1000.0,
            self.rate()
        )?;
        // The outcomes of docs/behaviour.md §3 always (0 when absent), then any other value
        // the service sent, so the lines add up to the requests sent.
        for name in KNOWN_OUTCOMES {
            writeln!(
                f,
                "  {name:<14} {}",
                self.outcomes.get(name).copied().unwrap_or(0)
            )?;
        }
        for (name, n) in &self.outcomes {
            if !KNOWN_OUTCOMES.contains(&name.as_str()) {
                writeln!(f, "  {name:<14} {n}")?;
            }
        }
        for (code, n) in &self.errors {
            writeln!(f, "  error {code:<20} {n}")?;
        }
        if self.unreachable > 0 {
            writeln!(f, "  unreachable    {}", self.unreachable)?;
        }
        Ok(())
    }
}

/// Feeds the JSON lines of `file` to `{url}/identify` with `concurrency` workers.
///
/// `url` is the service's base URL (a trailing `/` is ignored); `concurrency` is the number of
/// workers, at least one. Each line is sent as it is, blank lines skipped; a request whose connection fails is
/// tried up to five times, with a back-off doubling from 50 ms; an answer is never retried.
///
/// # Errors
/// The file cannot be read, the HTTP client cannot be built, or a worker task panicked.
/// Per-request failures are counted in the summary, not returned.
pub async fn feed(file: &Path, url: &str, concurrency: usize) -> anyhow::Result<FeedSummary> {
    let text = tokio::fs::read_to_string(file).await?;
    let lines: Arc<Vec<String>> = Arc::new(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let endpoint = format!("{}/identify", url.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let summary = Arc::new(Mutex::new(FeedSummary::default()));
    let started = Instant::now();
    let progress = Progress::stderr("feed", "requests", Some(lines.len() as u64));

    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (lines, client, endpoint) = (lines.clone(), client.clone(), endpoint.clone());
        let (next, progress, summary) = (next.clone(), progress.clone(), summary.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(line) = lines.get(i) else { break };
                let result = send(&client, &endpoint, line).await;
                let mut s = summary.lock();
                s.requests += 1;
                match result {
                    Answer::Ok(outcome) => *s.outcomes.entry(outcome).or_default() += 1,
                    Answer::Error(code) => *s.errors.entry(code).or_default() += 1,
                    Answer::Unreachable(error) => {
                        s.unreachable += 1;
                        s.unreachable_error = Some(error);
                    }
                }
                drop(s);
                progress.inc(1);
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    progress.finish();
    let mut summary = summary.lock().clone();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

enum Answer {
    Ok(String),
    Error(String),
    /// No answer after every attempt: the last connection error, with its causes.
    Unreachable(String),
}

async fn send(client: &reqwest::Client, endpoint: &str, line: &str) -> Answer {
    let mut backoff = Duration::from_millis(50);
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        let sent = client
            .post(endpoint)
            .header("content-type", "application/json")
            .body(line.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    let outcome = response
                        .headers()
                        .get(OUTCOME_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("unknown")
                        .to_owned();
                    let _ = response.bytes().await;
                    return Answer::Ok(outcome);
                }
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let code = body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                return Answer::Error(format!("{} {code}", status.as_u16()));
            }
            Err(error) => {
                // reqwest's own message names the URL; the cause (connection refused, a DNS
                // failure) is further down its chain.
                last_error = super::error_report(&anyhow::Error::new(error));
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
    Answer::Unreachable(last_error)
}
