//! The HTTP ceiling: the same axum / tokio / hyper / serde stack as `idrecon serve`, the same
//! request and response shapes, and no storage and no logic. Every HTTP figure of
//! `benches/http.sh` is divided by this server's figure measured in the same run.
//!
//! It parses and validates the `/identify` body exactly as the service does (the same
//! `parse_identify_body`), then answers a fixed consolidated identity.
//!
//! With `--durable DATA_DIR [WRITE_PERCENT]` it is the **durability floor** instead: the same
//! server plus the least a durable write can cost, which splits the ratio of a workload with writes
//! into what durability takes on one shared core and what the identity graph and the service's
//! features take. A share of the requests (`WRITE_PERCENT`, default 30: `checkout-mix`'s 20 % new
//! customers, 8 % new details and 2 % links) is treated as a write: the body is appended to
//! idrecon's own write-ahead log (`idrecon::wal::Wal` with its default options: the group commit,
//! commit delay and `fdatasync` of `idrecon serve --fsync batch`) and the answer waits until that
//! record is durable. Which requests write is decided by a hash of the body, so the same requests
//! write in every run. The log goes to `DATA_DIR/wal` and starts empty: a previous run's log there
//! is removed, and any other file in `DATA_DIR` is refused.
//!
//! It runs the service's allocator (`idrecon::alloc`).
//!
//! Run: `cargo run --release --example ceiling -- 127.0.0.1:3001 [--durable DATA_DIR [PERCENT]]`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use idrecon::http::identify::parse_identify_body;
use idrecon::phone_region::Normalizer;
use idrecon::wal::{Wal, WalOptions};

const FIXED_ANSWER: &str = r#"{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[23]}}"#;

/// The allocator of `idrecon serve` (`idrecon::alloc`), so the ceiling differs from the
/// service only in the work it leaves out.
#[global_allocator]
static GLOBAL: idrecon::alloc::SplitAllocator = idrecon::alloc::SplitAllocator;

fn fixed_answer() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        FIXED_ANSWER,
    )
        .into_response()
}

/// Parses and validates the body as `/identify` does; `Some` is the `400` to answer.
fn refusal(body: &[u8]) -> Option<Response> {
    parse_identify_body(body, &Normalizer::default())
        .err()
        .map(|error| (StatusCode::BAD_REQUEST, error.message).into_response())
}

/// The ceiling's `/identify`: parse, validate, answer the fixed identity.
async fn identify(body: Bytes) -> Response {
    refusal(&body).unwrap_or_else(fixed_answer)
}

async fn healthz() -> &'static str {
    r#"{"status":"ok"}"#
}

/// The durability floor's log and the share of requests that write to it.
struct Floor {
    wal: Wal,
    write_percent: u64,
}

/// FNV-1a of the body: which requests write, the same in every run.
fn body_hash(body: &[u8]) -> u64 {
    body.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The durability floor's `/identify`: the ceiling's, plus a durable append of the body for
/// `write_percent` % of the requests.
async fn identify_durably(State(floor): State<Arc<Floor>>, body: Bytes) -> Response {
    if let Some(refusal) = refusal(&body) {
        return refusal;
    }
    if body_hash(&body) % 100 < floor.write_percent {
        let durable = match floor.wal.append(&body) {
            Ok(lsn) => floor.wal.durable(lsn).await,
            Err(error) => Err(error),
        };
        if durable.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    fixed_answer()
}

/// Opens an empty log in `dir/wal` (module docs).
fn open_floor_log(dir: &Path) -> anyhow::Result<Wal> {
    let wal_dir = dir.join("wal");
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            anyhow::ensure!(
                name == "wal",
                "{} holds {name:?}: give an empty or new directory",
                dir.display()
            );
        }
        if wal_dir.exists() {
            std::fs::remove_dir_all(&wal_dir)?;
        }
    }
    let (wal, _) = Wal::open(&wal_dir, WalOptions::default(), 0, |_, _| {
        Ok::<(), String>(())
    })?;
    Ok(wal)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address: SocketAddr = args
        .first()
        .map_or("127.0.0.1:3001", String::as_str)
        .parse()
        .context("ADDRESS")?;
    let floor = match args.get(1).map(String::as_str) {
        None => None,
        Some("--durable") => {
            let dir = PathBuf::from(args.get(2).context("--durable needs DATA_DIR")?);
            let write_percent: u64 = args
                .get(3)
                .map_or(Ok(30), |p| p.parse())
                .context("WRITE_PERCENT")?;
            Some(Arc::new(Floor {
                wal: open_floor_log(&dir)?,
                write_percent,
            }))
        }
        Some(other) => anyhow::bail!("unknown argument {other:?}"),
    };
    let (name, app) = match &floor {
        None => (
            "ceiling",
            Router::new()
                .route("/identify", post(identify))
                .route("/healthz", get(healthz)),
        ),
        Some(floor) => (
            "durability floor",
            Router::new()
                .route("/identify", post(identify_durably))
                .route("/healthz", get(healthz))
                .with_state(Arc::clone(floor)),
        ),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        eprintln!("{name} serving on {}", listener.local_addr()?);
        idrecon::http::server::serve_app(
            listener,
            app,
            idrecon::http::server::ServerLimits::default(),
            idrecon::cli::shutdown_signal(),
        )
        .await
    })?;
    if let Some(floor) = floor {
        floor.wal.close()?;
    }
    Ok(())
}
