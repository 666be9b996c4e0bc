//! Membership changes of a running cluster through the `idrecon cluster` command
//! (docs/behaviour.md §9): a fourth member started with `--cluster-join` is added as a learner
//! through a follower, promoted, and removed; an unknown member is a conflict.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::run_writers;
use crate::common::cluster::{Cluster, client, free_port, get_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_through_the_cluster_command() {
    let mut cluster = Cluster::new(&[]);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    run_writers(&cluster, "members", Duration::from_millis(300)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let follower_url = cluster.url(follower);
    let cli = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::common::idrecon(&args)
    };

    // A fourth member joins: started with --cluster-join, added as a learner through a
    // follower (which forwards to the leader), then promoted.
    let tmp = tempfile::tempdir().expect("tempdir");
    let address = format!("127.0.0.1:{}", free_port());
    let list = format!("{},4={address}", cluster.list);
    let fourth = Command::new(env!("CARGO_BIN_EXE_idrecon"))
        .args([
            "serve",
            "--node-id",
            "4",
            "--cluster",
            &list,
            "--cluster-join",
            "--data-dir",
        ])
        .arg(tmp.path().join("node4"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fourth member starts");
    // Killed when the test ends, whether it passes or panics.
    let _fourth = KillOnDrop(fourth);
    let added = tokio::task::spawn_blocking({
        let (url, address) = (follower_url.clone(), address.clone());
        move || {
            cli(vec![
                "cluster".into(),
                "add".into(),
                "--url".into(),
                url,
                "--id".into(),
                "4".into(),
                "--address".into(),
                address,
                "--voter".into(),
            ])
        }
    })
    .await
    .expect("cli");
    assert!(
        added.status.success(),
        "cluster add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let status: Value = serde_json::from_slice(&added.stdout).expect("status JSON");
    let members = status["members"].as_array().expect("members");
    assert!(
        members.iter().any(|m| m["id"] == 4 && m["voter"] == true),
        "member 4 is a voter: {status}"
    );

    // The new member serves local reads of the replicated graph once it has applied the
    // entries it received (a local read may lag; it catches up within heartbeats).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = get_json(&client(), &format!("http://{address}/contacts?local=true"))
            .await
            .expect("local listing on the new member");
        if rows["contacts"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new member never applied the log: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Removing it again; an unknown member is a 409 the command reports.
    let removed = tokio::task::spawn_blocking({
        let url = follower_url.clone();
        move || {
            cli(vec![
                "cluster".into(),
                "remove".into(),
                "--url".into(),
                url,
                "--id".into(),
                "4".into(),
            ])
        }
    })
    .await
    .expect("cli");
    assert!(
        removed.status.success(),
        "cluster remove: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let status: Value = serde_json::from_slice(&removed.stdout).expect("status JSON");
    assert!(
        status["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["id"] != 4),
        "member 4 is gone: {status}"
    );
    let unknown = tokio::task::spawn_blocking(move || {
        cli(vec![
            "cluster".into(),
            "remove".into(),
            "--url".into(),
            follower_url,
            "--id".into(),
            "9".into(),
        ])
    })
    .await
    .expect("cli");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A single-node service moves into a cluster (docs/CLUSTER.md): its stopped data directory
/// seeds every member's new directory, the members form the cluster, answer the old identities
/// from any member, take new writes on top of them, and export identical rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_directory_moves_into_a_cluster() {
    let single = tempfile::tempdir().expect("tempdir");
    let app = crate::common::TestApp::spawn(single.path()).await;
    for (email, phone) in [
        ("ann@example.com", "5550100"),
        ("bob@example.com", "5550100"),
        ("carl@example.com", "777"),
        ("carl@example.com", "5550100"),
    ] {
        let (status, _) = app
            .identify(&serde_json::json!({"email": email, "phoneNumber": phone}))
            .await;
        assert_eq!(status, 200);
    }
    app.stop().await;
    let single_dir = single.path().to_str().expect("utf-8 path").to_owned();
    let export = |dir: &str| {
        let out = crate::common::idrecon(&["export", "--data-dir", dir]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let before = export(&single_dir);

    let mut cluster = Cluster::new(&[]);
    for member in &cluster.members {
        let dir = member.dir.to_str().expect("utf-8 path");
        let args = ["cluster", "seed", "--from", &single_dir, "--data-dir", dir];
        let seeded = crate::common::idrecon(&args);
        assert!(
            seeded.status.success(),
            "{}",
            String::from_utf8_lossy(&seeded.stderr)
        );
        let report: Value = serde_json::from_slice(&seeded.stdout).expect("JSON report");
        assert_eq!(report["contacts"], 3, "{report}");
        // A member directory is never seeded twice.
        let again = crate::common::idrecon(&args);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    }
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let identity = get_json(
        &client(),
        &format!(
            "{}/identities?email=carl@example.com",
            cluster.url(follower)
        ),
    )
    .await
    .expect("the old identity, read on a follower");
    assert_eq!(identity["contact"]["primaryContactId"], 1, "{identity}");
    let answer: Value = client()
        .post(format!("{}/identify", cluster.url(follower)))
        .json(&serde_json::json!({"email": "dora@example.com", "phoneNumber": "777"}))
        .send()
        .await
        .expect("a write through a follower")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["contact"]["primaryContactId"], 1, "{answer}");
    assert_eq!(
        answer["contact"]["secondaryContactIds"],
        serde_json::json!([2, 3, 4])
    );
    // Killed and restarted, the members come back from the seed and their logs.
    cluster.settled(Duration::from_secs(20)).await;
    for id in 1..=3 {
        cluster.kill(id);
    }
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let identity = get_json(
        &client(),
        &format!("{}/identities?email=dora@example.com", cluster.url(leader)),
    )
    .await
    .expect("the identity after a restart");
    assert_eq!(identity, answer);
    cluster.settled(Duration::from_secs(20)).await;
    for id in 1..=3 {
        cluster.stop(id);
    }
    let exports: Vec<String> = (1..=3).map(|id| cluster.export(id)).collect();
    assert_eq!(exports[0], exports[1]);
    assert_eq!(exports[0], exports[2]);
    assert!(
        exports[0].starts_with(&before),
        "the seeded rows come first, unchanged:\n{before}\n{}",
        exports[0]
    );
    assert_eq!(exports[0].lines().count(), 5, "a header and four rows");
}

/// A member started after the others formed the cluster (same list, empty data directory) joins
/// the leader it finds instead of forming the cluster again, which would depose that leader
/// (docs/behaviour.md §9): the term and the leader stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_late_does_not_depose_the_leader() {
    let mut cluster = Cluster::new(&[]);
    cluster.start(1);
    cluster.start(2);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let client = client();
    let urls: Vec<String> = (1..=3).map(|id| cluster.url(id)).collect();
    let term = |id: u64| {
        let client = client.clone();
        let url = format!("{}/cluster/status", urls[(id - 1) as usize]);
        async move { get_json(&client, &url).await.expect("status")["term"].as_u64() }
    };
    let formed_in = term(leader).await.expect("a term");
    cluster.start(3);
    cluster.settled(Duration::from_secs(20)).await;
    // Past the late member's own wait to form the cluster (two longest election timeouts per
    // member listed before it).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(cluster.leader(Duration::from_secs(20)).await, leader);
    for id in 1..=3 {
        assert_eq!(term(id).await, Some(formed_in), "member {id}");
    }
    for id in 1..=3 {
        cluster.stop(id);
    }
}
