//! Cluster mode with the real binary on loopback (docs/behaviour.md §9): three members formed
//! from one list, requests on any member, a leader killed under concurrent writers, a follower
//! killed and restarted, a follower brought back through snapshot install, every member killed
//! at once, a leader stopped with SIGSTOP, and a split sent to a follower. Membership changes are
//! in `cluster_membership.rs`. Every acknowledged answer must survive, and the
//! members' exports must be byte-identical once they have applied the same log.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::cluster::{Cluster, client, get_json};

/// An acknowledged `/identify`: what was sent and what came back.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    body: Value,
    answer: Value,
}

/// `writers` clients sending `/identify` to every running member in turn until `stop`; each
/// acknowledged answer is recorded. Errors (503 while there is no leader, refused connections
/// to a killed member) are retried on the next member.
fn spawn_writers(
    urls: Vec<String>,
    writers: usize,
    tag: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let urls = urls.clone();
            let stop = Arc::clone(&stop);
            let acks = Arc::clone(&acks);
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let client = client();
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let body = json!({
                        "email": format!("{tag}-w{w}-{i}@example.com"),
                        "phoneNumber": format!("9{w}{:06}", i / 3),
                    });
                    let url = &urls[(i + w) % urls.len()];
                    i += 1;
                    let sent = client
                        .post(format!("{url}/identify"))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && response.status() == 200
                        && let Ok(answer) = response.json::<Value>().await
                    {
                        acks.lock().expect("acks").push(Ack { body, answer });
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged answer is present on `url`: each contact id answered exists, and the
/// identity of the answer's primary holds the request's email and phone.
async fn verify_acks(url: &str, acks: &[Ack]) {
    let client = client();
    for ack in acks {
        let primary = ack.answer["contact"]["primaryContactId"]
            .as_u64()
            .expect("primary");
        let identity = get_json(&client, &format!("{url}/identities/{primary}"))
            .await
            .unwrap_or_else(|e| panic!("acknowledged primary {primary} is gone: {e}"));
        let text = identity.to_string();
        for value in [&ack.body["email"], &ack.body["phoneNumber"]] {
            let value = value.as_str().expect("string");
            assert!(
                text.contains(value),
                "acknowledged {value} missing from identity {primary}"
            );
        }
        for id in ack.answer["contact"]["secondaryContactIds"]
            .as_array()
            .expect("ids")
        {
            let id = id.as_u64().expect("id");
            get_json(&client, &format!("{url}/contacts/{id}"))
                .await
                .unwrap_or_else(|e| panic!("acknowledged contact {id} is gone: {e}"));
        }
    }
}

pub(crate) async fn run_writers(cluster: &Cluster, tag: &str, for_: Duration) -> Vec<Ack> {
    let urls: Vec<String> = cluster
        .running()
        .iter()
        .map(|&id| cluster.url(id))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_writers(urls, 8, tag, Arc::clone(&stop), Arc::clone(&acks));
    tokio::time::sleep(for_).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    Arc::try_unwrap(acks)
        .expect("writers done")
        .into_inner()
        .expect("acks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_elect_forward_and_lose_nothing_when_killed() {
    let mut cluster = Cluster::new(&[]);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let client = client();

    // Requests on any member: a follower forwards to the leader and relays its answer.
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let first = client
        .post(format!("{}/identify", cluster.url(follower)))
        .json(&json!({"email": "first@example.com", "phoneNumber": "123456"}))
        .send()
        .await
        .expect("forwarded");
    assert_eq!(first.status(), 200);
    let health = get_json(&client, &format!("{}/healthz", cluster.url(follower)))
        .await
        .expect("health");
    assert_eq!(health["role"], "follower");
    assert_eq!(health["writable"], true);

    // kill -9 the leader under 8 concurrent writers.
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_writers(urls, 8, "kill", Arc::clone(&stop), Arc::clone(&acks));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before_kill = acks.lock().expect("acks").len();
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.leader(Duration::from_secs(10)).await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // The new leader serves once a write is acknowledged after its election (the writers retry
    // every 10 ms); docs/behaviour.md §9 promises both within 2 s of the kill.
    let acked_at_election = acks.lock().expect("acks").len();
    while acks.lock().expect("acks").len() <= acked_at_election {
        assert!(
            killed_at.elapsed() < Duration::from_secs(2),
            "no write acknowledged 2 s after the kill (elected after {elected_in:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served_in = killed_at.elapsed();
    assert!(
        served_in < Duration::from_secs(2),
        "the new leader served after {served_in:?} (elected after {elected_in:?})"
    );
    eprintln!("leader killed: elected after {elected_in:?}, serving after {served_in:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    let mut acks = Arc::try_unwrap(acks)
        .expect("done")
        .into_inner()
        .expect("acks");
    assert!(before_kill > 0, "writes were acknowledged before the kill");
    verify_acks(&cluster.url(new_leader), &acks).await;

    // The killed member comes back and catches up from the log.
    cluster.start(leader);
    cluster.settled(Duration::from_secs(20)).await;

    // kill -9 a follower and restart it: it catches up from the log.
    let follower = (1..=3).find(|&id| id != new_leader).expect("a follower");
    cluster.kill(follower);
    acks.extend(run_writers(&cluster, "follower", Duration::from_millis(500)).await);
    cluster.start(follower);
    cluster.settled(Duration::from_secs(20)).await;
    verify_acks(&cluster.url(follower), &acks).await;

    // All three killed together and restarted: the same state.
    for id in 1..=3 {
        cluster.kill(id);
    }
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    verify_acks(&cluster.url(leader), &acks).await;
    // A blank entry of the new term commits everything before it; then all settle.
    run_writers(&cluster, "after-restart", Duration::from_millis(200)).await;
    cluster.settled(Duration::from_secs(20)).await;

    // Byte-identical exports once every member applied the same log.
    for id in 1..=3 {
        cluster.stop(id);
    }
    let exports: Vec<String> = (1..=3).map(|id| cluster.export(id)).collect();
    assert!(
        exports[0].lines().count() > acks.len() / 3,
        "the export holds the rows"
    );
    assert_eq!(
        exports[0], exports[1],
        "members 1 and 2 export the same rows"
    );
    assert_eq!(
        exports[0], exports[2],
        "members 1 and 3 export the same rows"
    );
    for id in 1..=3 {
        let log = cluster.member_log(id);
        assert!(!log.contains("panicked"), "member {id} panicked:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_a_purged_log_comes_back_through_a_snapshot() {
    let mut cluster = Cluster::new(&["--cluster-snapshot-every", "20"]);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    cluster.kill(follower);
    let acks = run_writers(&cluster, "purge", Duration::from_millis(1500)).await;
    assert!(
        acks.len() > 100,
        "enough writes to pass several snapshots: {}",
        acks.len()
    );
    cluster.start(follower);
    cluster.settled(Duration::from_secs(30)).await;
    verify_acks(&cluster.url(follower), &acks).await;
    let metrics = client()
        .get(format!("{}/metrics", cluster.url(follower)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let installs: f64 = metrics
        .lines()
        .find(|l| l.starts_with("idrecon_raft_snapshot_installs_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        installs >= 1.0,
        "the follower installed a snapshot:\n{metrics}"
    );
    // Every cluster metric docs/behaviour.md §9 names is exported by a member (the
    // single-node documents check leaves §9 out).
    let behaviour = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/behaviour.md"),
    )
    .expect("behaviour.md");
    let named =
        crate::docs_drift::metric_mentions(&crate::docs_drift::section(&behaviour, "## §9 "));
    let raft: Vec<&String> = named
        .iter()
        .filter(|m| m.starts_with("idrecon_raft_"))
        .collect();
    assert!(raft.len() >= 8, "{raft:?}");
    // The replication lag is the leader's; the rest every member exports.
    let leader_metrics = client()
        .get(format!("{}/metrics", cluster.url(leader)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for metric in raft {
        assert!(
            metrics.contains(metric.as_str()) || leader_metrics.contains(metric.as_str()),
            "{metric} is named in §9 but not exported"
        );
    }
    // Local reads on the follower answer from its own replica.
    let primary = acks[0].answer["contact"]["primaryContactId"]
        .as_u64()
        .expect("primary");
    let local = get_json(
        &client(),
        &format!("{}/identities/{primary}?local=true", cluster.url(follower)),
    )
    .await
    .expect("local read");
    assert!(
        local
            .to_string()
            .contains(acks[0].body["email"].as_str().expect("email"))
    );

    // A split sent to a follower is executed by the leader and replicated; a member that
    // comes back through a snapshot taken after it holds the same split identities and blocks
    // (docs/behaviour.md §9, §10).
    let merged = acks
        .iter()
        .rev()
        .find(|a| {
            a.answer["contact"]["secondaryContactIds"]
                .as_array()
                .is_some_and(|s| s.len() >= 2)
        })
        .expect("an identity of three contacts");
    let primary = merged.answer["contact"]["primaryContactId"]
        .as_u64()
        .expect("primary");
    let phone = merged.body["phoneNumber"]
        .as_str()
        .expect("phone")
        .to_owned();
    let split: Value = client()
        .post(format!(
            "{}/identities/{primary}/split",
            cluster.url(follower)
        ))
        .json(&json!({"phoneNumbers": [phone]}))
        .send()
        .await
        .expect("split forwarded")
        .json()
        .await
        .expect("json");
    assert_eq!(split["split"], true, "{split}");
    assert_eq!(
        split["identities"].as_array().map(Vec::len),
        Some(3),
        "{split}"
    );
    let other = (1..=3)
        .find(|&id| id != leader && id != follower)
        .expect("a third member");
    cluster.kill(other);
    run_writers(&cluster, "after-split", Duration::from_millis(1500)).await;
    cluster.start(other);
    cluster.settled(Duration::from_secs(30)).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    for id in 1..=3 {
        let url = cluster.url(id);
        let blocked = get_json(&client(), &format!("{url}/admin/blocked-values?local=true"))
            .await
            .expect("blocked values");
        assert_eq!(
            blocked["runTime"]["phoneNumbers"],
            json!([phone]),
            "member {id}"
        );
        for part in split["identities"].as_array().expect("parts") {
            let part_primary = part["primaryContactId"].as_u64().expect("primary");
            let local = get_json(
                &client(),
                &format!("{url}/identities/{part_primary}?local=true"),
            )
            .await
            .expect("local read");
            // The leader's linearizable answer, which later writes may have grown.
            let settled = get_json(
                &client(),
                &format!("{}/identities/{part_primary}", cluster.url(leader)),
            )
            .await
            .expect("leader read");
            assert_eq!(local, settled, "member {id}");
            assert_eq!(
                local["contact"]["primaryContactId"], part["primaryContactId"],
                "member {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopped_with_sigstop_steps_down_and_acknowledges_nothing_uncommitted() {
    let mut cluster = Cluster::new(&["--cluster-forward", "false"]);
    cluster.start_all();
    let old = cluster.leader(Duration::from_secs(20)).await;
    let client = client();

    // Forwarding off: a follower names the leader with 421.
    let follower = (1..=3).find(|&id| id != old).expect("a follower");
    let misdirected = client
        .post(format!("{}/identify", cluster.url(follower)))
        .json(&json!({"email": "x@example.com"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(misdirected.status(), 421);
    assert_eq!(
        misdirected.headers()["x-idrecon-leader"]
            .to_str()
            .expect("ascii"),
        cluster.members[(old - 1) as usize].address
    );

    let pid = cluster.pid(old).to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // A request the stopped leader receives while it is stopped.
    let stuck_url = cluster.url(old);
    let stuck = tokio::spawn(async move {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client")
            .post(format!("{stuck_url}/identify"))
            .json(&json!({"email": "stuck@example.com", "phoneNumber": "555000"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // The others elect a new leader and serve writes.
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        let mut leaders = Vec::new();
        for &id in &others {
            if let Ok(h) = get_json(&client, &format!("{}/healthz", cluster.url(id))).await {
                leaders.push(h["leader"].as_u64());
            }
        }
        if let Some(Some(l)) = leaders.first().copied()
            && l != old
            && leaders.iter().all(|x| *x == Some(l))
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while the old one is stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let written = client
        .post(format!("{}/identify", cluster.url(new_leader)))
        .json(&json!({"email": "during-stop@example.com"}))
        .send()
        .await
        .expect("new leader answers");
    assert_eq!(written.status(), 200);

    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let stuck = stuck.await.expect("task");
    // The old leader either relays a committed answer or refuses; if it answered 200, the
    // write is in the new leader's state.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = get_json(&client, &format!("{}/healthz", cluster.url(old))).await;
        if let Ok(h) = h
            && h["role"] == "follower"
            && h["leader"].as_u64() == Some(new_leader)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader did not step down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lookup = client
        .get(format!(
            "{}/identities?email=stuck@example.com",
            cluster.url(new_leader)
        ))
        .send()
        .await
        .expect("lookup");
    match stuck {
        Ok(200) => assert_eq!(lookup.status(), 200, "an acknowledged write is committed"),
        Ok(status) => assert!(
            matches!(status, 421 | 503),
            "the old leader refused with {status}"
        ),
        Err(_) => {}
    }
}

/// The longer run (docs/CLUSTER.md, RELIABILITY.md): `IDRECON_CLUSTER_KILLS` leader kills
/// (default 50) under eight writers, each killed leader restarted before the next kill; at the
/// end every acknowledged answer is present on every member and the exports are identical.
/// `cargo test --release --test it cluster::many_leader_kills -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a longer run: about two seconds per kill"]
async fn many_leader_kills_lose_no_acknowledged_answer() {
    let kills: usize = std::env::var("IDRECON_CLUSTER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut cluster = Cluster::new(&["--cluster-snapshot-every", "500"]);
    cluster.start_all();
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let tasks = spawn_writers(urls, 8, "many", Arc::clone(&stop), Arc::clone(&acks));
    let mut slowest = Duration::ZERO;
    for kill in 0..kills {
        let leader = cluster.leader(Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(leader);
        let killed_at = Instant::now();
        cluster.leader(Duration::from_secs(20)).await;
        slowest = slowest.max(killed_at.elapsed());
        cluster.start(leader);
        eprintln!(
            "kill {}/{kills}: leader {leader}, new leader after {:?}, {} answers acknowledged",
            kill + 1,
            killed_at.elapsed(),
            acks.lock().expect("acks").len()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    let acks = Arc::try_unwrap(acks)
        .expect("done")
        .into_inner()
        .expect("acks");
    let leader = cluster.leader(Duration::from_secs(20)).await;
    run_writers(&cluster, "settle", Duration::from_millis(200)).await;
    cluster.settled(Duration::from_secs(30)).await;
    for id in 1..=3 {
        verify_acks(&cluster.url(id), &acks).await;
    }
    eprintln!(
        "{kills} leader kills, {} acknowledged answers, 0 lost; slowest election {slowest:?}; \
         last leader {leader}",
        acks.len()
    );
    for id in 1..=3 {
        cluster.stop(id);
    }
    let exports: Vec<String> = (1..=3).map(|id| cluster.export(id)).collect();
    assert_eq!(exports[0], exports[1]);
    assert_eq!(exports[0], exports[2]);
}
