//! Hostile input through raw TCP against a real server: malformed and abusive requests each get
//! a 4xx/408/413 answer (JSON whenever the request reached the application) or a closed
//! connection within a bounded time, change nothing, and never stop the server from serving
//! others. Slow clients and idle connections are cut by the request and idle timeouts.

use std::time::{Duration, Instant};

use crate::common::TestApp;
use idrecon::http::HttpOptions;
use idrecon::store::StoreOptions;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back on a raw connection.
#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    body: String,
}

/// Bound on any single exchange: every hostile request must be answered or closed within it.
const BOUND: Duration = Duration::from_secs(5);

async fn exchange(addr: &str, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close before reading everything (413, 400): ignore write errors.
    let _ = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if response_complete(&raw) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer and no close within {BOUND:?} for {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
    );
    parse(&raw)
}

fn response_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        Some(len) => raw.len() >= head_end + 4 + len.trim().parse::<usize>().unwrap_or(0),
        None => true,
    }
}

fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok());
    let body = text
        .find("\r\n\r\n")
        .map_or(String::new(), |i| text[i + 4..].to_owned());
    Reply { status, body }
}

fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
}

/// The hostile requests: (name, bytes). Bodies are `/identify` JSON unless the name says.
fn hostile_requests() -> Vec<(String, Vec<u8>)> {
    let json = "application/json";
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"null",
        b"true",
        b"42",
        b"\"a@b.c\"",
        b"[]",
        b"[{\"email\":\"a@b.c\"}]",
        b"{",
        b"}",
        b"{\"email\":}",
        b"{\"email\":\"a@b.c\",}",
        b"{'email':'a@b.c'}",
        b"{\"email\":\"a@b.c\"}{\"email\":\"d@e.f\"}",
        b"{\"email\":\"a@b.c\",\"email\":\"d@e.f\"}",
        b"{\"phoneNumber\":\"1\",\"phoneNumber\":\"2\"}",
        b"{\"email\":12}",
        b"{\"email\":true}",
        b"{\"email\":{\"x\":1}}",
        b"{\"email\":[\"a@b.c\"]}",
        b"{\"phoneNumber\":1e5}",
        b"{\"phoneNumber\":123456.0}",
        b"{\"phoneNumber\":-123456}",
        b"{\"phoneNumber\":99999999999999999999999999999}",
        b"{\"phoneNumber\":1.7976931348623157e309}",
        b"{\"phoneNumber\":NaN}",
        b"{\"phoneNumber\":Infinity}",
        b"{\"phoneNumber\":false}",
        b"{\"phoneNumber\":\"12;DROP TABLE\"}",
        b"{\"phoneNumber\":\"123456789012345678901234567890123\"}",
        b"{\"email\":\"no-at-sign\"}",
        b"{\"email\":\"two@@signs\"}",
        b"{\"email\":\"a b@c.d\"}",
        b"{\"email\":\"a\\u0000b@c.d\"}",
        b"{\"email\":\"\\ud800@c.d\"}",
        b"{\"email\":\"\xff\xfe@c.d\"}",
        b"\xef\xbb\xbf{\"email\":\"bom@c.d\"}",
        b"{\"email\":null,\"phoneNumber\":null}",
        b"{\"email\":\"   \",\"phoneNumber\":\"\"}",
        b"{}",
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        cases.push((
            format!("body #{i}: {}", String::from_utf8_lossy(body)),
            post("/identify", json, body),
        ));
    }
    let long_email = format!("{{\"email\":\"{}@x.io\"}}", "a".repeat(300));
    cases.push((
        "255-byte email".into(),
        post("/identify", json, long_email.as_bytes()),
    ));
    let nested = format!("{{\"email\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    cases.push((
        "deeply nested value".into(),
        post("/identify", json, nested.as_bytes()),
    ));
    let nested_top = format!("{}{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    cases.push((
        "deeply nested objects".into(),
        post("/identify", json, nested_top.as_bytes()),
    ));
    cases.push((
        "10 MB body".into(),
        post("/identify", json, &vec![b' '; 10 * 1024 * 1024]),
    ));
    cases.push((
        "17 KiB body".into(),
        post("/identify", json, &vec![b' '; 17 * 1024]),
    ));
    let mut chunked = b"POST /identify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    cases.push(("chunked body over the limit".into(), chunked));
    cases.push(("no content type".into(), b"POST /identify HTTP/1.1\r\nhost: x\r\ncontent-length: 17\r\nconnection: close\r\n\r\n{\"email\":\"a@b.c\"}".to_vec()));
    cases.push((
        "text/plain".into(),
        post("/identify", "text/plain", b"{\"email\":\"a@b.c\"}"),
    ));
    cases.push((
        "form encoded".into(),
        post(
            "/identify",
            "application/x-www-form-urlencoded",
            b"email=a@b.c",
        ),
    ));
    cases.push(("content-length lies (short body)".into(), b"POST /identify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{\"email\":\"a@b.c\"}".to_vec()));
    cases.push(("GET /identify".into(), get("/identify")));
    cases.push((
        "DELETE /identify".into(),
        b"DELETE /identify HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
    ));
    cases.push((
        "unknown method".into(),
        b"BREW /identify HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
    ));
    cases.push(("unknown path".into(), get("/admin/../../etc/passwd")));
    cases.push(("unknown path 2".into(), get("/identify/extra")));
    for path in [
        "/contacts/abc",
        "/contacts/0",
        "/contacts/-1",
        "/contacts/1.5",
        "/contacts/99999999999999999999999",
        "/contacts/%FF",
        "/contacts/%00",
    ] {
        cases.push((format!("GET {path}"), get(path)));
    }
    for query in [
        "limit=0",
        "limit=10001",
        "limit=-5",
        "after=abc",
        "limit=1e3",
        "after=%FF%FE",
    ] {
        cases.push((
            format!("GET /contacts?{query}"),
            get(&format!("/contacts?{query}")),
        ));
    }
    cases.push((
        "garbage request line".into(),
        b"\x00\x01\x02 garbage\r\n\r\n".to_vec(),
    ));
    cases.push(("HTTP/0.9 style".into(), b"GET /\r\n\r\n".to_vec()));
    cases.push((
        "huge header".into(),
        format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
    ));
    cases.push(("thousands of headers".into(), {
        let mut r = b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec();
        for i in 0..5000 {
            r.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r
    }));
    cases
}

fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_abusive_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(dir.path()).await;
    app.identify(&json!({"email": "keep@me.io", "phoneNumber": "1"}))
        .await;
    let before = app.all_rows().await;
    let addr = addr(&app);
    let cases = hostile_requests();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    for (name, bytes) in &cases {
        let reply = exchange(&addr, bytes).await;
        match reply.status {
            // Closed without an answer: acceptable for requests hyper cannot even parse.
            None => {}
            Some(status) => {
                assert!(
                    (400..500).contains(&status),
                    "{name}: status {status}, body {}",
                    reply.body
                );
                // Anything that reached the application answers in the JSON error shape;
                // hyper's own refusals (unparsable request, 431) have no body.
                if !reply.body.is_empty() {
                    let body: Value = serde_json::from_str(&reply.body)
                        .unwrap_or_else(|_| panic!("{name}: non-JSON body {:?}", reply.body));
                    assert!(body["error"]["code"].is_string(), "{name}: {body}");
                    assert!(
                        !reply.body.contains("line ") && !reply.body.contains("column"),
                        "{name}: leaks parser internals: {}",
                        reply.body
                    );
                }
            }
        }
        // The server keeps serving others after every one.
        let (status, _) = app.get("/healthz").await;
        assert_eq!(status, 200, "after {name}");
    }
    assert_eq!(
        app.all_rows().await,
        before,
        "no hostile request changed anything"
    );
    app.stop().await;
}

fn short_timeouts() -> HttpOptions {
    HttpOptions {
        request_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        ..HttpOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), short_timeouts()).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(b"POST /identify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\":")
        .await
        .unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut raw)).await;
    let reply = parse(&raw);
    assert_eq!(reply.status, Some(408), "{reply:?}");
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    assert!(started.elapsed() < BOUND);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), short_timeouts()).await;
    let addr = addr(&app);
    // A thousand connections that never send anything, and one that sends half a header.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    // Others are served meanwhile.
    let (status, _) = app.identify(&json!({"email": "busy@x.io"})).await;
    assert_eq!(status, 200);
    // Every one of them is closed by the server within a bound.
    let started = Instant::now();
    for mut stream in idle.into_iter().chain([slow]) {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(BOUND, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }
    assert!(started.elapsed() < BOUND);
    // Still serving, on a new connection: the client's pooled one has been idle for longer
    // than the idle timeout by now, and reusing it races the server closing it (the client
    // then fails with `IncompleteMessage`).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = fresh
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("a new connection is served");
    assert_eq!(response.status().as_u16(), 200);
    app.stop().await;
}

/// A `Content-Length` above `--max-body-bytes` is answered `413 payload_too_large` before any
/// of the body is sent, on every route (matched or not, admin or not); with
/// `Expect: 100-continue` the answer is that `413`, never a `100 Continue` first. The client
/// sends only the head. The request timeout is far above the time these exchanges take, so a
/// server that waited for the body would answer `408` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_body_over_the_limit_is_refused_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        request_timeout: Duration::from_secs(3),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    let addr = addr(&app);
    let over = HttpOptions::default().max_body_bytes + 1;
    for (method, path) in [
        ("POST", "/identify"),
        ("GET", "/healthz"),
        ("GET", "/contacts/1"),
        ("DELETE", "/contacts/1"),
        ("POST", "/admin/compact"),
        ("PUT", "/identify"),
        ("POST", "/no/such/route"),
    ] {
        for expect in ["", "expect: 100-continue\r\n"] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {over}\r\n{expect}\r\n"
            );
            let reply = exchange(&addr, head.as_bytes()).await;
            assert_eq!(
                reply.status,
                Some(413),
                "{method} {path} {expect:?}: {reply:?}"
            );
            let body: Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(
                body["error"]["code"], "payload_too_large",
                "{method} {path}"
            );
        }
    }
    // At the limit the server asks for the body and reads it.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"email":"continue@x.io"}"#;
    let head = format!(
        "POST /identify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(BOUND, stream.read_exact(&mut interim))
        .await
        .expect("an interim answer")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut raw)).await;
    assert_eq!(
        parse(&raw).status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let rows = app.all_rows().await;
    assert_eq!(
        rows.len(),
        1,
        "only the request at the limit wrote: {rows:?}"
    );
    app.stop().await;
}
