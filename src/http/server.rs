//! The connection loop: accepts TCP connections and serves a router on each with hyper, with
//! the timeouts a public-facing server needs and a bounded graceful shutdown.
//!
//! axum's own `serve` has no header-read or idle timeout, so a client that opens a connection
//! and never sends a request (or sends its headers a byte a minute) would hold it forever.
//! Here every HTTP/1 connection must deliver a complete request head within `idle_timeout`,
//! counted from the moment the connection is ready for its next request (so it is also the
//! keep-alive idle timeout); the request itself, body included, is bounded by the router's
//! request timeout (see [`super::router`]).
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
use tower::Service;

use super::backend::Backend;
use super::options::HttpOptions;
use crate::store::Store;

/// Timeouts of the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct ServerTimeouts {
    /// Longest time a connection may take to deliver a complete request head, idle keep-alive
    /// time included; the connection is closed after it.
    pub idle_timeout: Duration,
    /// Longest time shutdown waits for in-flight requests before dropping connections.
    pub drain_timeout: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
        }
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
    let timeouts = ServerTimeouts {
        idle_timeout: options.idle_timeout,
        ..ServerTimeouts::default()
    };
    serve_app(listener, super::app(backend, options), timeouts, shutdown).await
}

/// Serves `app` (an axum `Router`, or the router inside its layers: [`super::App`]) on every
/// connection `listener` accepts until `shutdown` resolves; then stops accepting, lets
/// in-flight requests finish (at most `drain_timeout`) and returns.
///
/// Accept errors (for example running out of file descriptors under a connection flood) are
/// logged and retried after a short pause; they never stop the loop.
///
/// # Errors
/// None today; the `Result` leaves room for listener errors that should stop the server.
pub async fn serve_app<S>(
    listener: TcpListener,
    app: S,
    timeouts: ServerTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle_timeout)
        .keep_alive(true);
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
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection error (reset, timeout, malformed request line) ends only that
            // connection.
            let _ = connection.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(timeouts.drain_timeout) => {
            tracing::warn!("drain timeout reached; closing remaining connections");
        }
    }
    Ok(())
}
