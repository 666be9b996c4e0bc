//! Clients that hold connections (docs/behaviour.md §6, §7): a client that pipelines requests
//! and reads none of the answers is disconnected after the idle timeout, and connections
//! beyond `--max-connections` are closed at once while the others are served, with both
//! visible in `/metrics`. Raw TCP clients, so nothing reads on the client's behalf.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{Binary, TestApp};
use idrecon::http::HttpOptions;
use idrecon::store::StoreOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn address(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("server address")
}

/// A client pipelining `GET /openapi.json` (tens of kB per answer) without reading is
/// disconnected once the server's writes have stalled for the idle timeout; the server keeps
/// serving others. Before the write-stall timeout the connection stayed open for as long as
/// the client kept it.
#[tokio::test]
async fn a_client_that_reads_nothing_is_disconnected_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpOptions {
        idle_timeout: Duration::from_millis(300),
        ..HttpOptions::default()
    };
    let app = TestApp::spawn_with(dir.path(), StoreOptions::default(), http).await;
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive window, so the server's writes stall after little data.
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address(&app.url)).await.unwrap();
    let requests = b"GET /openapi.json HTTP/1.1\r\nhost: t\r\n\r\n".repeat(32);
    // Keep pipelining whole requests (a partial write is continued, never restarted, so the
    // server never sees a malformed request) until the connection fails.
    let mut at = 0;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Err(error) = stream.writable().await {
                return error;
            }
            match stream.try_write(&requests[at..]) {
                Ok(written) => at = (at + written) % requests.len(),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return error,
            }
        }
    })
    .await;
    let error = closed.expect("the server closes a connection whose client reads nothing");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{error}"
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// One `GET` on a kept-alive raw connection: the status and the body (`Content-Length`
/// framed, as every answer of this server is).
async fn get(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the answer's head");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|value| value.trim().parse().unwrap())
        .expect("content-length");
    while received.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed inside the answer's body");
        received.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned();
    (status, body)
}

/// The value of the unlabelled sample `name` in a scrape.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .parse()
        .unwrap()
}

/// With `--max-connections 3`, three kept-alive connections are served, the fourth is closed
/// without an answer, the three still answer, `/metrics` shows 3 open, the limit 3 and one
/// refusal, and a slot given back admits a new connection.
#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path(), &["--max-connections", "3"]);
    let addr = address(&server.url);
    let bounded = Duration::from_secs(10);
    let test = async {
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut first, "/healthz").await.0, 200);
        assert_eq!(get(&mut second, "/healthz").await.0, 200);
        let (status, scrape) = get(&mut third, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(sample(&scrape, "idrecon_http_connections"), 3.0);
        assert_eq!(sample(&scrape, "idrecon_http_connections_max"), 3.0);
        assert_eq!(
            sample(&scrape, "idrecon_http_connections_refused_total"),
            0.0
        );

        // The fourth is accepted by the kernel, then closed by the server unanswered.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        let _ = fourth
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        match fourth.read(&mut buf).await {
            Ok(n) => assert_eq!(n, 0, "the fourth connection was answered"),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
        }

        assert_eq!(get(&mut first, "/healthz").await.0, 200);
        assert_eq!(get(&mut second, "/healthz").await.0, 200);
        let (_, scrape) = get(&mut third, "/metrics").await;
        assert_eq!(sample(&scrape, "idrecon_http_connections"), 3.0);
        assert_eq!(
            sample(&scrape, "idrecon_http_connections_refused_total"),
            1.0
        );

        // A closed connection gives its slot back (once the server has seen it close).
        drop(first);
        loop {
            let mut next = TcpStream::connect(addr).await.unwrap();
            if next
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                .await
                .is_ok()
                && matches!(next.read(&mut buf).await, Ok(n) if n > 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(bounded, test)
        .await
        .expect("every step finishes in time");
}
