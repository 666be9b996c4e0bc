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
