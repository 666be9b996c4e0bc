//! Process crash test with the real binary (docs/behaviour.md §8): concurrent clients send
//! overlapping checkout requests drawn from small pools (so merges are frequent), the server is
//! killed with SIGKILL at a random moment, restarted, and checked:
//!
//! - every acknowledged answer is reflected in the recovered rows: its contact ids exist, they
//!   are all still in one identity, and every email and phone it listed belongs to it;
//! - every identity has exactly one primary and every secondary points straight at it;
//! - the recovered log replays (read-only `idrecon export`) to the same rows the restarted
//!   server serves.
//!
//! A second test kills the process while an admin client splits identities (docs/behaviour.md
//! §10) under the same load: a split rewrites links, so acknowledged answers are checked for
//! what no later split may undo (their contacts exist, acknowledged splits' values stay
//! blocked), and the recovered log must replay to exactly the rows served.
//!
//! `IDRECON_CRASH_CYCLES` sets the number of kill cycles (default 5).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

struct Server {
    child: Child,
    url: String,
}

/// Starts `idrecon serve` on 127.0.0.1:0 and reads the bound address from its log.
fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
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
    Server { child, url }
}

/// One acknowledged `/identify` answer.
#[derive(Debug, Clone)]
struct Ack {
    primary: u64,
    emails: Vec<String>,
    phones: Vec<String>,
    secondaries: Vec<u64>,
}

fn request_body(rng: &mut u64, cycle: u64) -> Value {
    // xorshift: deterministic enough, no extra dependency.
    let mut next = |n: u64| {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng % n
    };
    // Small pools (so merges are frequent) that move with the cycle, plus fresh values (so
    // every moment has writes in flight: new primaries, new secondaries, merges).
    let base = cycle * 20;
    let email = match next(4) {
        0 => format!("fresh{}@crash.io", next(u64::MAX)),
        _ => format!("c{}@crash.io", base + next(40)),
    };
    let phone = match next(4) {
        0 => format!("9{}", next(1 << 40)),
        _ => format!("{}", 5000 + base + next(40)),
    };
    match next(5) {
        0 => json!({ "email": email }),
        1 => json!({ "phoneNumber": phone }),
        _ => json!({ "email": email, "phoneNumber": phone }),
    }
}

async fn client_loop(
    url: String,
    seed: u64,
    cycle: u64,
    acks: Arc<Mutex<Vec<Ack>>>,
    deadline: Instant,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut rng = seed.max(1);
    while Instant::now() < deadline {
        let body = request_body(&mut rng, cycle);
        let Ok(response) = client
            .post(format!("{url}/identify"))
            .json(&body)
            .send()
            .await
        else {
            return; // the server is gone
        };
        if response.status() != 200 {
            continue;
        }
        let Ok(answer) = response.json::<Value>().await else {
            return;
        };
        let c = &answer["contact"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map_or(vec![], |a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        acks.lock().push(Ack {
            primary: c["primaryContactId"].as_u64().unwrap_or(0),
            emails: strings(&c["emails"]),
            phones: strings(&c["phoneNumbers"]),
            secondaries: c["secondaryContactIds"]
                .as_array()
                .map_or(vec![], |a| a.iter().filter_map(Value::as_u64).collect()),
        });
    }
}

async fn all_rows(url: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!("{url}/contacts?after={after}&limit=10000"))
            .send()
            .await
            .expect("listing")
            .json()
            .await
            .expect("json");
        rows.extend(
            page["contacts"]
                .as_array()
                .expect("contacts")
                .iter()
                .cloned(),
        );
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return rows,
        }
    }
}

/// Checks the recovered rows against every acknowledged answer and the one-primary rule.
fn verify(rows: &[Value], acks: &[Ack]) {
    let by_id: HashMap<u64, &Value> = rows
        .iter()
        .map(|r| (r["id"].as_u64().expect("id"), r))
        .collect();
    let primary_of = |id: u64| -> u64 {
        let row = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("acknowledged contact {id} was lost"));
        row["linkedId"].as_u64().unwrap_or(id)
    };
    // One primary per identity; every secondary points straight at a primary.
    for row in rows {
        match row["linkPrecedence"].as_str() {
            Some("primary") => assert!(row["linkedId"].is_null(), "{row}"),
            Some("secondary") => {
                let target = row["linkedId"].as_u64().expect("secondary has linkedId");
                let primary = by_id.get(&target).expect("linkedId exists");
                assert_eq!(
                    primary["linkPrecedence"], "primary",
                    "linkedId of {row} is not a primary"
                );
            }
            other => panic!("bad precedence {other:?}"),
        }
    }
    let mut values: HashMap<u64, (HashSet<String>, HashSet<String>)> = HashMap::new();
    for row in rows {
        let id = row["id"].as_u64().expect("id");
        let entry = values.entry(primary_of(id)).or_default();
        if let Some(e) = row["email"].as_str() {
            entry.0.insert(e.to_owned());
        }
        if let Some(p) = row["phoneNumber"].as_str() {
            entry.1.insert(p.to_owned());
        }
    }
    for ack in acks {
        let identity = primary_of(ack.primary);
        for &s in &ack.secondaries {
            assert_eq!(
                primary_of(s),
                identity,
                "acknowledged link {s} -> {} undone: {ack:?}",
                ack.primary
            );
        }
        let (emails, phones) = &values[&identity];
        for e in &ack.emails {
            assert!(
                emails.contains(e),
                "acknowledged email {e} missing from identity: {ack:?}"
            );
        }
        for p in &ack.phones {
            assert!(
                phones.contains(p),
                "acknowledged phone {p} missing from identity: {ack:?}"
            );
        }
    }
}

/// The log on disk replays, read-only (`idrecon export`), to exactly the rows the server serves.
fn assert_export_matches(dir: &Path, rows: &[Value], cycle: u64) {
    let export = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args(["export", "--format", "jsonl", "--data-dir"])
        .arg(dir)
        .output()
        .expect("export runs");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported: Vec<Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(
        exported, rows,
        "cycle {cycle}: replayed log differs from served rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    let cycles: u64 = std::env::var("IDRECON_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks_total = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles {
        let mut server = start(dir.path());
        let acks = Arc::new(Mutex::new(Vec::new()));
        // Let the clients run a random 50–400 ms, then kill -9 while they are mid-flight.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(50 + (seed >> 33) % 350);
        let deadline = Instant::now() + Duration::from_secs(10);
        let clients: Vec<_> = (0..8)
            .map(|i| {
                tokio::spawn(client_loop(
                    server.url.clone(),
                    seed ^ ((i + 1) * 7919),
                    cycle,
                    acks.clone(),
                    deadline,
                ))
            })
            .collect();
        tokio::time::sleep(run_for).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        for client in clients {
            let _ = client.await;
        }
        let acks = acks.lock().clone();
        acks_total += acks.len();

        let mut server = start(dir.path());
        let rows = all_rows(&server.url).await;
        verify(&rows, &acks);
        assert_export_matches(dir.path(), &rows, cycle);
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        eprintln!(
            "cycle {cycle}: {} acknowledged answers verified against {} rows",
            acks.len(),
            rows.len()
        );
    }
    assert!(acks_total > 0, "the clients got answers before the kills");
}

/// Splits the identity of a recent acknowledged answer by one of its phone numbers, over and
/// over, until the server goes away; returns the phone numbers of the splits acknowledged.
async fn splitter_loop(url: String, acks: Arc<Mutex<Vec<Ack>>>, deadline: Instant) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut acknowledged = Vec::new();
    while Instant::now() < deadline {
        let target = acks
            .lock()
            .iter()
            .rev()
            .find(|a| !a.secondaries.is_empty() && !a.phones.is_empty())
            .map(|a| (a.primary, a.phones[a.phones.len() - 1].clone()));
        let Some((primary, phone)) = target else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let Ok(response) = client
            .post(format!("{url}/identities/{primary}/split"))
            .json(&json!({ "phoneNumbers": [phone] }))
            .send()
            .await
        else {
            return acknowledged; // the server is gone
        };
        if response.status() == 200 && response.json::<Value>().await.is_ok() {
            acknowledged.push(phone);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_splits_loses_no_acknowledged_write() {
    let cycles: u64 = std::env::var("IDRECON_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut acks_total, mut splits_total) = (0, 0);
    for cycle in 0..cycles {
        let mut server = start(dir.path());
        let acks = Arc::new(Mutex::new(Vec::new()));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(100 + (seed >> 33) % 300);
        let deadline = Instant::now() + Duration::from_secs(10);
        let clients: Vec<_> = (0..6)
            .map(|i| {
                tokio::spawn(client_loop(
                    server.url.clone(),
                    seed ^ ((i + 1) * 7919),
                    cycle,
                    acks.clone(),
                    deadline,
                ))
            })
            .collect();
        let splitter = tokio::spawn(splitter_loop(server.url.clone(), acks.clone(), deadline));
        tokio::time::sleep(run_for).await;
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        for client in clients {
            let _ = client.await;
        }
        let split_phones = splitter.await.expect("splitter");
        let acks = acks.lock().clone();
        acks_total += acks.len();
        splits_total += split_phones.len();

        let mut server = start(dir.path());
        let rows = all_rows(&server.url).await;
        let ids: HashSet<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
        for ack in &acks {
            for id in std::iter::once(ack.primary).chain(ack.secondaries.iter().copied()) {
                assert!(
                    ids.contains(&id),
                    "acknowledged contact {id} was lost: {ack:?}"
                );
            }
        }
        let blocked: Value = reqwest::get(format!("{}/admin/blocked-values", server.url))
            .await
            .expect("blocked values")
            .json()
            .await
            .expect("json");
        let blocked: HashSet<&str> = blocked["runTime"]["phoneNumbers"]
            .as_array()
            .expect("phone numbers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for phone in &split_phones {
            assert!(
                blocked.contains(phone.as_str()),
                "acknowledged split by {phone} lost"
            );
        }
        // One primary per identity; every secondary points straight at it.
        verify(&rows, &[]);
        assert_export_matches(dir.path(), &rows, cycle);
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        eprintln!(
            "cycle {cycle}: {} answers and {} splits acknowledged, verified against {} rows",
            acks.len(),
            split_phones.len(),
            rows.len()
        );
    }
    assert!(
        acks_total > 0 && splits_total > 0,
        "answers {acks_total}, splits {splits_total}"
    );
}
