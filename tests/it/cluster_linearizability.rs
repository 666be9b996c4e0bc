//! Linearizability of `/identify` on a cluster whose leader is killed mid-run
//! (docs/behaviour.md §9), checked against the Raft log and the naive model of §3
//! (`tests/it/common/model.rs`).
//!
//! Clients send requests over small pools of emails and phones to every member in turn (so
//! followers forward), recording each answer with its wall-clock window. The leader is killed
//! a third of the way in and restarted once a new leader is elected. Afterwards the log of one
//! member (every member applied the same one) is read back; its `Identify` entries, applied in
//! order to the model at their leader-stamped time, give the sequence of states. The check:
//!
//! - every acknowledged write matches one entry with the same values, stamped inside the
//!   request's window, whose application gives exactly the served answer;
//! - every acknowledged pure read is the model's answer, planning nothing, at some state inside
//!   its window: after every entry of a write acknowledged before the read was sent, before the
//!   entry of any write sent after the read was answered, and before any entry stamped after
//!   it was answered;
//! - a write acknowledged before another write was sent has the earlier entry.
//!
//! Requests that failed (`503` while there was no leader, a connection to the killed member)
//! may or may not be in the log; nothing is assumed about them.

use std::sync::Arc;
use std::time::Duration;

use idrecon::cluster::Command;
use idrecon::cluster::types::Entry;
use idrecon::contact::Timestamp;
use openraft::EntryPayload;
use serde_json::{Value, json};

use crate::common::cluster::{Cluster, client};
use crate::common::model::{Answer, Model};
use crate::common::summary;

/// One acknowledged request.
#[derive(Clone, Debug)]
struct Op {
    email: Option<String>,
    phone: Option<String>,
    sent: i64,
    answered: i64,
    answer: Answer,
    read: bool,
}

/// One `Identify` entry of the log.
struct Logged {
    email: Option<String>,
    phone: Option<String>,
    at: i64,
}

fn answer_of(body: &Value) -> Answer {
    let (primary, emails, phones, secondaries) = summary(body);
    Answer {
        primary,
        emails,
        phones,
        secondaries,
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn client_run(urls: Arc<Vec<String>>, seed: u64, requests: usize) -> Vec<Op> {
    let client = client();
    let mut rng = Rng(seed * 7919 + 1);
    let mut ops = Vec::new();
    for i in 0..requests {
        let (e, p) = (rng.below(6), rng.below(6));
        let (email, phone) = match rng.below(3) {
            0 => (Some(format!("u{e}@lin.test")), Some(format!("80{p}"))),
            1 => (Some(format!("u{e}@lin.test")), None),
            _ => (None, Some(format!("80{p}"))),
        };
        let url = &urls[(seed as usize + i) % urls.len()];
        let sent = Timestamp::now().0;
        let response = client
            .post(format!("{url}/identify"))
            .json(&json!({"email": email, "phoneNumber": phone}))
            .send()
            .await;
        let Ok(response) = response else { continue };
        if response.status() != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let read = response
            .headers()
            .get("x-idrecon-outcome")
            .and_then(|v| v.to_str().ok())
            == Some("read");
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        ops.push(Op {
            email,
            phone,
            sent,
            answered: Timestamp::now().0,
            answer: answer_of(&body),
            read,
        });
    }
    ops
}

fn read_log(dir: &std::path::Path) -> Vec<Logged> {
    let mut logged = Vec::new();
    idrecon::wal::replay_read_only(&dir.join("raft").join("log"), 0, |_, payload| {
        let entry: Entry = bincode::deserialize(payload).map_err(|e| e.to_string())?;
        if let EntryPayload::Normal(command) = entry.payload {
            // A batch's commands are applied in order, each as its own entry would be.
            let commands = match command {
                Command::Batch(commands) => commands,
                command => vec![command],
            };
            for command in commands {
                if let Command::Identify { email, phone, at } = command {
                    logged.push(Logged {
                        email: email.map(|e| e.as_str().to_owned()),
                        phone: phone.map(|p| p.as_str().to_owned()),
                        at: at.0,
                    });
                }
            }
        }
        Ok::<(), String>(())
    })
    .expect("the log reads");
    logged
}

/// The check of the module docs; `Err` names the first violation.
fn check(ops: &[Op], log: &[Logged]) -> Result<(usize, usize), String> {
    // states[k]: the model after the first k entries; applied[k]: what entry k answered.
    let mut states = vec![Model::default()];
    let mut applied = Vec::new();
    for entry in log {
        let mut next = states.last().expect("a state").clone();
        let (answer, _) = next.identify(entry.email.as_deref(), entry.phone.as_deref(), entry.at);
        applied.push(answer);
        states.push(next);
    }
    // Writes: match each to an entry (the earliest unused one that fits).
    let mut used = vec![false; log.len()];
    let mut position = vec![None; ops.len()];
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| !op.read) {
        let found = (0..log.len()).find(|&m| {
            !used[m]
                && log[m].email == op.email
                && log[m].phone == op.phone
                && log[m].at >= op.sent - 1
                && log[m].at <= op.answered + 1
                && applied[m] == op.answer
        });
        let Some(m) = found else {
            return Err(format!(
                "acknowledged write {op:?} matches no entry of the log"
            ));
        };
        used[m] = true;
        position[i] = Some(m);
    }
    // Real time between writes.
    for (a, x) in ops.iter().enumerate().filter(|(_, op)| !op.read) {
        for (b, y) in ops.iter().enumerate().filter(|(_, op)| !op.read) {
            if x.answered < y.sent && position[a] >= position[b] {
                return Err(format!(
                    "write {x:?} was acknowledged before {y:?} was sent, yet its entry is not earlier"
                ));
            }
        }
    }
    // Reads.
    let mut reads = 0;
    for op in ops.iter().filter(|op| op.read) {
        let lower = ops
            .iter()
            .zip(&position)
            .filter(|(w, _)| !w.read && w.answered < op.sent)
            .filter_map(|(_, m)| m.map(|m| m + 1))
            .max()
            .unwrap_or(0);
        let stamped_before = log.iter().filter(|l| l.at <= op.answered + 1).count();
        let upper = ops
            .iter()
            .zip(&position)
            .filter(|(w, _)| !w.read && w.sent > op.answered)
            .filter_map(|(_, m)| *m)
            .min()
            .unwrap_or(log.len())
            .min(stamped_before);
        let (e, p) = (op.email.as_deref(), op.phone.as_deref());
        if upper < lower {
            return Err(format!(
                "read {op:?} has no state in its window ({lower} > {upper})"
            ));
        }
        let fits = (lower..=upper).any(|k| {
            k < states.len()
                && states[k].plan(e, p).is_empty()
                && states[k].read(e, p).as_ref() == Some(&op.answer)
        });
        if !fits {
            return Err(format!(
                "read {op:?} is the model's answer at no state from {lower} to {upper}"
            ));
        }
        reads += 1;
    }
    Ok((ops.len() - reads, reads))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identify_on_a_cluster_stays_linearizable_across_a_leader_kill() {
    let mut cluster = Cluster::new(&[]);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let urls = Arc::new((1..=3).map(|id| cluster.url(id)).collect::<Vec<_>>());
    let clients: Vec<_> = (0..12)
        .map(|seed| tokio::spawn(client_run(Arc::clone(&urls), seed, 150)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(leader);
    cluster.leader(Duration::from_secs(10)).await;
    cluster.start(leader);
    let mut ops = Vec::new();
    for task in clients {
        ops.extend(task.await.expect("client"));
    }
    cluster.leader(Duration::from_secs(20)).await;
    cluster.settled(Duration::from_secs(20)).await;
    for id in 1..=3 {
        cluster.stop(id);
    }
    let log = read_log(&cluster.members[0].dir);
    let (writes, reads) = check(&ops, &log).unwrap_or_else(|e| panic!("not linearizable: {e}"));
    assert!(
        writes > 10 && reads > 10,
        "{writes} writes and {reads} reads checked"
    );
}
