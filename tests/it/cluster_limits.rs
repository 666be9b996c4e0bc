//! The contact limit in a cluster (docs/behaviour.md §3.6, §9), with the real binary on
//! loopback: past `--max-contacts` a request that would add a contact is answered `507
//! capacity_exceeded` by the leader and through a follower, and changes nothing; reads and
//! merges that add nothing keep working, and `/healthz` says the cluster is full.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::cluster::{Cluster, client, get_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refuses_new_contacts_past_its_limit() {
    let mut cluster = Cluster::new(&["--max-contacts", "3"]);
    cluster.start_all();
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let client = client();
    let identify = |id: u64, body: Value| {
        let client = client.clone();
        let url = format!("{}/identify", cluster.url(id));
        async move {
            let response = client
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("an answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("a JSON body"))
        }
    };
    // Three contacts: two new customers, then new information for the first.
    for body in [
        json!({"email": "ann@example.com"}),
        json!({"email": "bob@example.com"}),
        json!({"email": "ann@example.com", "phoneNumber": "123456"}),
    ] {
        let (status, answer) = identify(follower, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    // A fourth is refused, on the leader and through a follower.
    for id in [leader, follower] {
        let (status, answer) = identify(id, json!({"email": "cid@example.com"})).await;
        assert_eq!(status, 507, "{answer}");
        assert_eq!(answer["error"]["code"], "capacity_exceeded", "{answer}");
        let (status, answer) =
            identify(id, json!({"email": "bob@example.com", "phoneNumber": "99"})).await;
        assert_eq!(status, 507, "new information adds a contact too: {answer}");
    }
    // A merge adds nothing: both values are known.
    let (status, merged) = identify(
        follower,
        json!({"email": "bob@example.com", "phoneNumber": "123456"}),
    )
    .await;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(
        merged["contact"]["secondaryContactIds"],
        json!([2, 3]),
        "{merged}"
    );
    let (status, read) = identify(leader, json!({"email": "ann@example.com"})).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, merged);
    // Every member says the cluster is full, and holds the three contacts only.
    for id in 1..=3 {
        let health = get_json(&client, &format!("{}/healthz", cluster.url(id)))
            .await
            .expect("healthz");
        assert_eq!(health["max_contacts"], 3, "{health}");
        assert_eq!(health["capacity"], "full", "{health}");
    }
    cluster.settled(Duration::from_secs(20)).await;
    for id in 1..=3 {
        cluster.stop(id);
    }
    let export = cluster.export(leader);
    assert_eq!(
        export.lines().count(),
        4,
        "a header and three rows: {export}"
    );
    assert!(!export.contains("cid@example.com"), "{export}");
    assert_eq!(export, cluster.export(follower));
}

/// `/healthz` on a cluster member whose data directory is short of space (docs/behaviour.md
/// §6.9, §9): `503 disk_full` on every member, with a threshold no file system reaches, while
/// the cluster still acknowledges writes that fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_report_a_full_disk_and_keep_serving() {
    let threshold = u64::MAX.to_string();
    let mut cluster = Cluster::new(&["--disk-full-below-bytes", &threshold]);
    cluster.start_all();
    let client = client();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let health = |id: u64| {
        let client = client.clone();
        let url = format!("{}/healthz", cluster.url(id));
        async move {
            let response = client.get(url).send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.json::<Value>().await.ok()?))
        }
    };
    // A write through member 1, retried while the cluster forms.
    loop {
        let sent = client
            .post(format!("{}/identify", cluster.url(1)))
            .json(&json!({"email": "ann@example.com"}))
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in 1..=3 {
        let (status, body) = health(id).await.expect("member answers");
        assert_eq!(status, 503, "member {id}: {body}");
        assert_eq!(body["error"]["code"], "disk_full", "member {id}: {body}");
    }
    for id in 1..=3 {
        cluster.stop(id);
    }
}
