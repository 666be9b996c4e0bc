//! Logs of the real binary (`idrecon serve` on 127.0.0.1:0, `RUST_LOG=debug`): emails and phone
//! numbers appear only with `--log-pii` (flag or `IDRECON_LOG_PII`), `--log-format json` writes
//! one JSON object per line, the request span carries the client's `x-request-id`, a clean start,
//! request and stop log no WARN or ERROR, and a refusal of the identity size cap is a WARN line
//! without personal data.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const EMAIL: &str = "pii.canary.7731@example.org";
const PHONE: &str = "+1 555 0199 7731";
const REQUEST_ID: &str = "req-canary-42";

/// A running `idrecon serve` whose stderr is collected line by line.
struct Server {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
    reader: JoinHandle<()>,
    seen: Vec<String>,
}

impl Server {
    /// Starts the binary with `args` (the listen and data-dir flags are added) and `env`, and
    /// waits for its `serving` line.
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_idrecon"));
        command
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "debug")
            .env_remove("IDRECON_LOG_PII")
            .env_remove("IDRECON_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            address: String::new(),
            lines,
            reader,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.address.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match server.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = server.child.kill();
                    panic!(
                        "no serving line; stderr so far:\n{}",
                        server.seen.join("\n")
                    );
                }
            };
            if line.contains("serving") {
                let at = line
                    .find("127.0.0.1:")
                    .expect("address in the serving line");
                server.address = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
            }
            server.seen.push(line);
        }
        server
    }

    /// Sends SIGTERM, waits for a clean exit and returns every stderr line.
    fn stop(mut self) -> Vec<String> {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.reader.join().expect("stderr reader");
        self.seen.extend(self.lines.try_iter());
        assert!(status.success(), "exit {status}:\n{}", self.seen.join("\n"));
        self.seen
    }
}

/// Posts the canary request (with `x-request-id`) and checks it created a contact.
async fn send_canary(address: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{address}/identify"))
        .header("x-request-id", REQUEST_ID)
        .json(&serde_json::json!({"email": EMAIL, "phoneNumber": PHONE}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("x-request-id").unwrap(), REQUEST_ID);
    assert_eq!(
        response.headers().get("x-idrecon-outcome").unwrap(),
        "new-primary"
    );
}

fn mentions_pii(lines: &[String]) -> (bool, bool) {
    let text = lines.join("\n");
    (text.contains(EMAIL), text.contains(PHONE))
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_no_pii_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["serve", "--log-format", "json"], &[]);
    send_canary(&server.address).await;
    let lines = server.stop();

    assert_eq!(mentions_pii(&lines), (false, false), "{}", lines.join("\n"));
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let in_request = |message: &str| {
        events
            .iter()
            .find(|e| e["fields"]["message"] == message && e["span"]["request_id"] == REQUEST_ID)
            .unwrap_or_else(|| panic!("no {message:?} line in the request span: {lines:#?}"))
    };
    let decision = in_request("identify decision");
    assert_eq!(decision["level"], "DEBUG");
    assert_eq!(decision["fields"]["outcome"], "new-primary");
    assert_eq!(decision["fields"]["primary_id"], 1);
    assert_eq!(decision["span"]["route"], "/identify");
    assert_eq!(decision["span"]["method"], "POST");
    let finished = in_request("request finished");
    assert_eq!(finished["fields"]["status"], 200);
    assert!(finished["fields"]["latency_us"].is_u64());
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "recovery finished")
    );
    // A clean start, one request and a clean stop warn about nothing (a route template given
    // twice to the route table, such as `/metrics`, would log a WARN at every start).
    let alarms: Vec<&Value> = events
        .iter()
        .filter(|e| e["level"] == "WARN" || e["level"] == "ERROR")
        .collect();
    assert!(alarms.is_empty(), "{alarms:#?}");
}

#[tokio::test]
async fn pii_is_logged_only_with_log_pii() {
    // The flag after the subcommand, text format.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["serve", "--log-pii"], &[]);
    send_canary(&server.address).await;
    let lines = server.stop();
    assert_eq!(mentions_pii(&lines), (true, true), "{}", lines.join("\n"));
    let decision = lines
        .iter()
        .find(|l| l.contains("identify decision"))
        .expect("decision line");
    assert!(decision.contains(REQUEST_ID), "{decision}");

    // The environment variable, with the global format flag before the subcommand.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--log-format", "json", "serve"],
        &[("IDRECON_LOG_PII", "true")],
    );
    send_canary(&server.address).await;
    let lines = server.stop();
    assert_eq!(mentions_pii(&lines), (true, true), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );

    // Text format without the flag: still nothing.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["serve"], &[]);
    send_canary(&server.address).await;
    let lines = server.stop();
    assert_eq!(mentions_pii(&lines), (false, false), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("identify decision")));
}

/// A refusal by the identity size cap (docs/behaviour.md §3.6) is logged (WARN, both primaries and
/// the cap, no personal data), with the guards' start-up line.
#[tokio::test]
async fn size_cap_refusals_are_logged_without_pii() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["serve", "--log-format", "json", "--max-identity-size", "1"],
        &[],
    );
    send_canary(&server.address).await; // contact 1: EMAIL + PHONE
    let response = reqwest::Client::new()
        .post(format!("http://{}/identify", server.address))
        .json(&serde_json::json!({"email": "other.7731@example.org", "phoneNumber": PHONE}))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.headers()["x-idrecon-outcome"], "refused");
    let lines = server.stop();
    assert_eq!(mentions_pii(&lines), (false, false), "{}", lines.join("\n"));
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let refusal = events
        .iter()
        .find(|e| e["fields"]["message"] == "identity size cap refused a merge or new secondary")
        .unwrap_or_else(|| panic!("no refusal line: {lines:#?}"));
    assert_eq!(refusal["level"], "WARN");
    assert_eq!(refusal["fields"]["primary"], 1);
    assert_eq!(refusal["fields"]["limit"], 1);
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "over-merge guards on"
                && e["fields"]["max_identity_size"] == "Some(1)")
    );
}
