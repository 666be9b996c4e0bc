//! The memory a running server holds for clients that send requests and read no answer
//! (RELIABILITY.md, "Slow readers").
//!
//! Opens CONNECTIONS connections to a running `idrecon serve`, pipelines REQUESTS requests on
//! each (`GET PATH`, or `POST PATH` with BODY as JSON), reads nothing, and holds them for HOLD
//! seconds. Every second it prints the server's resident memory (`VmRSS` and its peak `VmHWM`
//! from `/proc/PID/status`) and the open connections the server reports
//! (`idrecon_http_connections` from `/metrics`, over a connection of its own; `-` when that
//! fails or the metric does not exist).
//!
//! ```text
//! cargo run --release --example slow_readers -- --pid PID [--addr 127.0.0.1:3000]
//!     [--connections 200] [--requests 100] [--path /healthz] [--body JSON] [--hold 40]
//! ```
//!
//! For a large answer, merge many contacts into one identity first and request it with
//! `--path /identify --body '{"email":"..."}'`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags of the tool (module docs).
#[derive(Debug, Parser)]
struct Args {
    /// The server's address.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The server's process id, whose memory is printed.
    #[arg(long)]
    pid: u32,
    /// Connections to open.
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Requests pipelined on each connection.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// The path requested.
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// A JSON body: the requests become `POST`s with it.
    #[arg(long)]
    body: Option<String>,
    /// Seconds to hold the connections.
    #[arg(long, default_value_t = 40)]
    hold: u64,
}

/// `VmRSS` and `VmHWM` of `pid`, in kB.
fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .with_context(|| format!("{path}: no {name}"))?;
        let kb = line.trim().trim_end_matches("kB").trim();
        Ok(kb.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The server's `idrecon_http_connections`, scraped over a fresh connection.
async fn open_connections(addr: SocketAddr) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("idrecon_http_connections "))?
        .trim()
        .parse()
        .ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let request = match &args.body {
        None => format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", args.path),
        Some(body) => format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            args.path,
            body.len()
        ),
    };
    let pipelined = request.repeat(args.requests).into_bytes();
    let (rss, _) = memory_kb(args.pid)?;
    println!(
        "before: VmRSS {rss} kB; opening {} connections, {} requests of {} bytes each",
        args.connections,
        args.requests,
        request.len()
    );
    let mut held = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let mut stream = TcpStream::connect(args.addr).await.context("connect")?;
        let pipelined = pipelined.clone();
        // A task per connection: the write blocks once the server stops reading.
        held.push(tokio::spawn(async move {
            let _ = stream.write_all(&pipelined).await;
            // Hold the connection, reading nothing, until aborted.
            std::future::pending::<()>().await;
            drop(stream);
        }));
    }
    let started = Instant::now();
    println!("seconds  VmRSS_kB  VmHWM_kB  open_connections");
    while started.elapsed() < Duration::from_secs(args.hold) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, hwm) = memory_kb(args.pid)?;
        let open = open_connections(args.addr)
            .await
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "{:>7}  {rss:>8}  {hwm:>8}  {open:>16}",
            started.elapsed().as_secs()
        );
    }
    for task in held {
        task.abort();
    }
    Ok(())
}
