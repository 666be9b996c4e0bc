//! `idrecon feed` through the real binary (docs/behaviour.md §7): its summary counts every
//! outcome, and a service that cannot be reached is named with the error.

use crate::common::idrecon;

#[test]
fn feed_without_a_server_names_the_url_and_the_error() {
    // A port nothing listens on: bound, then released.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let refused = std::net::TcpStream::connect(address)
        .expect_err("nothing listens")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"email\":\"a@x.io\"}\n".repeat(3)).unwrap();
    let url = format!("http://{address}");
    let output = idrecon(&["feed", "--url", &url, file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "the URL named: {stderr}");
    assert!(
        stderr.contains(&refused),
        "the error named ({refused}): {stderr}"
    );
}
