//! Test helpers: a real server on `127.0.0.1:0` per test (the zero-to-production `spawn_app`),
//! and the real binary for CLI tests.
#![allow(dead_code)]

pub mod cluster;
pub mod model;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idrecon::http::HttpOptions;
use idrecon::store::{Recovery, Store, StoreError, StoreOptions};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server over a data directory.
pub struct TestApp {
    pub url: String,
    pub client: reqwest::Client,
    pub store: Arc<Store>,
    pub dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestApp {
    /// Opens (recovers) `dir` and serves it with default options.
    pub async fn spawn(dir: &Path) -> TestApp {
        TestApp::spawn_with(dir, StoreOptions::default(), HttpOptions::default()).await
    }

    pub async fn spawn_with(dir: &Path, store_options: StoreOptions, http: HttpOptions) -> TestApp {
        // As `idrecon serve` does, before the store opens (once per process: idempotent).
        idrecon::metrics::install();
        let (store, _recovery) = open_store(dir, store_options);
        TestApp::serve(store, dir, http).await
    }

    /// Serves an already opened `store` (e.g. one over `FaultFs`) whose data directory is `dir`.
    pub async fn serve(store: Arc<Store>, dir: &Path, http: HttpOptions) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let server_store = store.clone();
        let server = tokio::spawn(async move {
            idrecon::http::server::serve(listener, server_store, http, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestApp {
            url,
            client: reqwest::Client::new(),
            store,
            dir: dir.to_path_buf(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// POST /identify with a JSON body; returns status and parsed body.
    pub async fn identify(&self, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/identify", self.url))
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// GET a path; returns status and parsed body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Any method on a path; returns status, the `x-idrecon-outcome` header (if any) and the
    /// parsed body.
    pub async fn send(&self, method: reqwest::Method, path: &str) -> (u16, Option<String>, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.url))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let outcome = response
            .headers()
            .get("x-idrecon-outcome")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, outcome, response.json().await.expect("JSON body"))
    }

    /// Every row, via the listing endpoint (all pages).
    pub async fn all_rows(&self) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut after = 0u64;
        loop {
            let (status, page) = self.get(&format!("/contacts?after={after}&limit=7")).await;
            assert_eq!(status, 200);
            rows.extend(
                page["contacts"]
                    .as_array()
                    .expect("contacts array")
                    .iter()
                    .cloned(),
            );
            match page["next"].as_u64() {
                Some(next) => after = next,
                None => return rows,
            }
        }
    }

    /// Graceful shutdown: stop serving, final snapshot, close the log, release the directory.
    pub async fn stop(mut self) {
        self.stop_server().await;
        self.store.close().expect("clean close");
    }

    /// Stops serving without the final snapshot or a log close (the log writer has already
    /// made every acknowledged write durable): the closest an in-process test gets to a crash.
    pub async fn abandon(mut self) {
        self.stop_server().await;
        // A background snapshot or compaction holds the store (and so the directory lock)
        // until it ends.
        self.store.wait_for_maintenance();
    }

    async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }
}

/// Opens (recovers) `dir`, retrying for up to 5 s while its lock is held. A store this test
/// just dropped can still hold the lock for a moment: the lock is an `flock` on the directory,
/// and a child process that another test of the same binary is spawning at that instant
/// (`idrecon check`, ...) shares the locked descriptor until its `exec` closes it. Any other error,
/// or a lock held past the deadline, fails the test.
fn open_store(dir: &Path, options: StoreOptions) -> (Arc<Store>, Recovery) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Store::open(dir, options.clone()) {
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return opened.expect("store opens"),
        }
    }
}

/// Runs the real `idrecon` binary with `args`.
pub fn idrecon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("binary runs")
}

/// Path of a file in the repository's `data/` directory.
pub fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The `contact` answer as a compact tuple: (primary, emails, phones, secondaries).
pub fn summary(answer: &Value) -> (u64, Vec<String>, Vec<String>, Vec<u64>) {
    let c = &answer["contact"];
    let strings = |v: &Value| {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_owned())
            .collect()
    };
    (
        c["primaryContactId"].as_u64().expect("primary id"),
        strings(&c["emails"]),
        strings(&c["phoneNumbers"]),
        c["secondaryContactIds"]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v.as_u64().expect("id"))
            .collect(),
    )
}

/// The real `idrecon serve` binary on `127.0.0.1:0`, killed when dropped. Used where a test
/// needs a process of its own: exact metric counts (the metrics recorder is global to a
/// process, and every test of this binary shares one), signals, crashes.
pub struct Binary {
    pub child: std::process::Child,
    pub url: String,
}

impl Binary {
    /// Starts `idrecon serve --listen 127.0.0.1:0 --data-dir DIR` plus `args`, and waits (up to
    /// 60 s) for the address it reports in its `serving` log line.
    pub fn start(dir: &Path, args: &[&str]) -> Binary {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent
                    && line.contains("serving")
                    && let Some(at) = line.find("127.0.0.1:")
                {
                    let port: String = line[at + 10..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    let _ = tx.send(format!("http://127.0.0.1:{port}"));
                    sent = true;
                }
                // Keep draining so the server never blocks on a full pipe.
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server reports its address");
        Binary { child, url }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
