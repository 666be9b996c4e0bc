//! A cluster of three real `idrecon serve` members on loopback ports, for the cluster tests
//! (docs/behaviour.md §9): start, kill -9, SIGTERM, signals, agreement on a leader, waiting for
//! every member to apply the same log, exports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One member process.
pub struct Member {
    pub id: u64,
    pub address: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// Three members on loopback ports, each with its own data directory.
pub struct Cluster {
    pub members: Vec<Member>,
    pub list: String,
    extra: Vec<String>,
    _tmp: tempfile::TempDir,
}

/// A free loopback port (bound, then released for the member to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    pub fn new(extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (1..=3)
            .map(|id| Member {
                id,
                address: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("node{id}")),
                log: tmp.path().join(format!("node{id}.log")),
                child: None,
            })
            .collect();
        let list = members
            .iter()
            .map(|m| format!("{}={}", m.id, m.address))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            members,
            list,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            _tmp: tmp,
        }
    }

    pub fn start(&mut self, id: u64) {
        let m = &mut self.members[(id - 1) as usize];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
            .args([
                "serve",
                "--node-id",
                &id.to_string(),
                "--cluster",
                &self.list,
            ])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(&self.extra)
            .env("RUST_LOG", "info,openraft=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("member starts");
        m.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for id in 1..=3 {
            self.start(id);
        }
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.members[(id - 1) as usize].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        if let Some(mut child) = self.members[(id - 1) as usize].child.take() {
            signal(&child, "TERM");
            let status = child.wait().expect("member exits");
            assert!(status.success(), "member {id} stopped cleanly: {status}");
        }
    }

    pub fn pid(&self, id: u64) -> u32 {
        self.members[(id - 1) as usize]
            .child
            .as_ref()
            .expect("running")
            .id()
    }

    pub fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.id)
            .collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.members[(id - 1) as usize].url()
    }

    /// The leader every running member agrees on, waited for up to `limit`.
    pub async fn leader(&self, limit: Duration) -> u64 {
        let client = client();
        let deadline = Instant::now() + limit;
        loop {
            let mut seen = Vec::new();
            for id in self.running() {
                if let Ok(health) = get_json(&client, &format!("{}/healthz", self.url(id))).await {
                    seen.push(health["leader"].as_u64());
                }
            }
            if let Some(Some(leader)) = seen.first().copied()
                && seen.len() == self.running().len()
                && seen.iter().all(|l| *l == Some(leader))
                && self.running().contains(&leader)
            {
                return leader;
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .running()
                    .into_iter()
                    .map(|id| {
                        let log = self.member_log(id);
                        let tail: Vec<&str> = log
                            .lines()
                            .filter(|l| !l.starts_with("  ") || l.contains("left:"))
                            .rev()
                            .take(15)
                            .collect();
                        format!(
                            "member {id}:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "no agreed leader within {limit:?}: {seen:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to `limit`) until every running member has applied the same, last, index.
    pub async fn settled(&self, limit: Duration) {
        let client = client();
        let deadline = Instant::now() + limit;
        loop {
            let mut applied = Vec::new();
            for id in self.running() {
                if let Ok(status) =
                    get_json(&client, &format!("{}/cluster/status", self.url(id))).await
                {
                    applied.push((
                        status["appliedIndex"].as_u64(),
                        status["lastLogIndex"].as_u64(),
                    ));
                }
            }
            if applied.len() == self.running().len()
                && applied.iter().all(|a| *a == applied[0] && a.0 == a.1)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "members did not settle: {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn export(&self, id: u64) -> String {
        let m = &self.members[(id - 1) as usize];
        let out = super::idrecon(&["export", "--data-dir", m.dir.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "export of member {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 export")
    }

    pub fn member_log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.members[(id - 1) as usize].log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}
