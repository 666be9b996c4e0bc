//! The connection loop: accepts TCP connections and serves a router on each with hyper, with
//! the timeouts and bounds a public-facing server needs and a bounded graceful shutdown
//! (docs/behaviour.md §6, §7).
//!
//! axum's own `serve` has no header-read or idle timeout, so a client that opens a connection
//! and never sends a request (or sends its headers a byte a minute) would hold it forever.
//! Here every HTTP/1 connection must deliver a complete request head within `idle_timeout`,
//! counted from the moment the connection is ready for its next request (so it is also the
//! keep-alive idle timeout); the request itself, body included, is bounded by the router's
//! request timeout (see [`super::router`]).
//!
//! A client may also stop reading. Then:
//! - a write that makes no progress for `idle_timeout` fails and the connection is dropped
//!   with its buffers ([`super::write_stall`]);
//! - pipelined requests are not read ahead without bound: hyper's read buffer holds at most
//!   `max_buf_size` bytes ([`read_buffer_bytes`]), after which it stops reading the socket and
//!   TCP flow control holds the client back;
//! - at most `max_connections` connections are open; one accepted beyond them is closed at
//!   once, and counted.
//!
//! The server speaks HTTP/1.1 (keep-alive, pipelining). hyper-util's protocol-sniffing
//! builder was tried and rejected: it waits for the HTTP/2 preface with no timeout, so idle
//! connections were never closed (`tests/it/hostile_input.rs` catches that).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Service;

use super::backend::Backend;
use super::options::HttpOptions;
use super::write_stall::WriteStallTimeout;
use crate::metrics::{HTTP_CONNECTIONS, HTTP_CONNECTIONS_MAX, HTTP_CONNECTIONS_REFUSED};
use crate::store::Store;

/// Room for a request head in [`read_buffer_bytes`], in bytes: 16 KiB, Node.js's default
/// `--max-http-header-size` and twice nginx's default header buffer. hyper answers `431` to a
/// head that does not fit in the whole buffer.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// hyper's `max_buf_size` for a server whose bodies are at most `max_body_bytes`: the largest
/// request head plus the largest body ([`MAX_HEAD_BYTES`] + `max_body_bytes`, at least hyper's
/// minimum of 8 KiB), in bytes.
///
/// It bounds the bytes hyper reads ahead from one connection, pipelined requests included, and
/// queues to write. One complete request of the largest allowed size still fits, so a client
/// that sends a whole request in one write is read in one go; a client that pipelines more
/// than that waits for the answers to be read. With the defaults (16 KiB bodies) it is 32 KiB,
/// against hyper's default of about 400 KiB.
pub fn read_buffer_bytes(max_body_bytes: usize) -> usize {
    MAX_HEAD_BYTES.saturating_add(max_body_bytes).max(8 * 1024)
}

/// Timeouts and bounds of the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Longest time a connection may take to deliver a complete request head, idle keep-alive
    /// time included, and longest time a write may wait for the peer to read; the connection
    /// is closed after it.
    pub idle_timeout: Duration,
    /// Longest time shutdown waits for in-flight requests before dropping connections.
    pub drain_timeout: Duration,
    /// Most connections open at once (at least 1); a connection accepted beyond them is closed
    /// at once.
    pub max_connections: usize,
    /// Most bytes hyper buffers per connection, read and write side each (at least 8 192: see
    /// [`read_buffer_bytes`]).
    pub max_buf_size: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
            max_connections: 10_000,
            max_buf_size: read_buffer_bytes(16 * 1024),
        }
    }
}

/// An open connection's slot: counted in [`HTTP_CONNECTIONS`] while it lives, given back
/// when the connection ends.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionSlot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(HTTP_CONNECTIONS).increment(1.0);
        ConnectionSlot { _permit: permit }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_CONNECTIONS).decrement(1.0);
    }
}

/// Serves the API of `store` ([`super::router`] with `options`) on `listener` until `shutdown`
/// resolves, then drains in-flight requests (see [`serve_app`]). Takes an already-bound
/// listener, so tests bind `127.0.0.1:0` and start a real server in one line.
///
/// # Errors
/// As [`serve_app`]: none today.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_backend(listener, Backend::Single(store), options, shutdown).await
}

/// [`serve`] over any [`Backend`]: the single-node store or a cluster member
/// (docs/behaviour.md §9), with [`super::app`].
///
/// # Errors
/// As [`serve_app`]: none today.
pub async fn serve_backend(
    listener: TcpListener,
    backend: Backend,
    options: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = ServerLimits {
        idle_timeout: options.idle_timeout,
        max_connections: options.max_connections,
        max_buf_size: read_buffer_bytes(options.max_body_bytes),
        ..ServerLimits::default()
    };
    serve_app(listener, super::app(backend, options), limits, shutdown).await
}

/// Serves `app` (an axum `Router`, or the router inside its layers: [`super::App`]) on every
/// connection `listener` accepts until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish (at most `drain_timeout`) and returns. Each connection is held to
/// `limits` (module docs); `/metrics` shows the open connections ([`HTTP_CONNECTIONS`]), the
/// limit ([`HTTP_CONNECTIONS_MAX`]) and the connections refused ([`HTTP_CONNECTIONS_REFUSED`]).
///
/// Accept errors (for example running out of file descriptors under a connection flood) are
/// logged and retried after a short pause; they never stop the loop.
///
/// # Errors
/// None today; the `Result` leaves room for listener errors that should stop the server.
pub async fn serve_app<S>(
    listener: TcpListener,
    app: S,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_buf_size.max(8 * 1024))
        .keep_alive(true);
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max_connections));
    metrics::gauge!(HTTP_CONNECTIONS_MAX).set(max_connections as f64);
    // Registered now, so a scrape shows 0 rather than nothing before the first refusal.
    metrics::counter!(HTTP_CONNECTIONS_REFUSED).increment(0);
    metrics::gauge!(HTTP_CONNECTIONS).increment(0.0);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // Dropping the stream closes it before anything is read or allocated for it.
            metrics::counter!(HTTP_CONNECTIONS_REFUSED).increment(1);
            tracing::debug!(
                max_connections,
                "connection limit reached; connection closed"
            );
            continue;
        };
        let slot = ConnectionSlot::new(permit);
        let _ = stream.set_nodelay(true);
        let stream = WriteStallTimeout::new(stream, limits.idle_timeout);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection error (reset, timeout, stalled write, malformed request line) ends
            // only that connection; its slot is given back with it.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
    }
    Ok(())
}
