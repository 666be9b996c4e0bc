//! The HTTP ceiling: the same axum / tokio / hyper / serde stack as `idrecon serve`, the same
//! request and response shapes, and no storage and no logic. Every HTTP figure of
//! `benches/http.sh` is divided by this server's figure measured in the same run.
//!
//! It parses and validates the `/identify` body exactly as the service does (the same
//! `parse_identify_body`), then answers a fixed consolidated identity.
//!
//! Run: `cargo run --release --example ceiling -- 127.0.0.1:3001`

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use idrecon::phone_region::Normalizer;
use idrecon::request::parse_identify_body;

const FIXED_ANSWER: &str = r#"{"contact":{"primaryContactId":1,"emails":["lorraine@hillvalley.edu","mcfly@hillvalley.edu"],"phoneNumbers":["123456"],"secondaryContactIds":[23]}}"#;

async fn identify(body: Bytes) -> Response {
    match parse_identify_body(&body, &Normalizer::default()) {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            FIXED_ANSWER,
        )
            .into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error.message).into_response(),
    }
}

fn main() -> std::io::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(address).await?;
        eprintln!("ceiling serving on {}", listener.local_addr()?);
        let app = Router::new()
            .route("/identify", post(identify))
            .route("/healthz", get(|| async { r#"{"status":"ok"}"# }));
        idrecon::server::serve(
            listener,
            app,
            idrecon::server::ServerTimeouts::default(),
            idrecon::cli::shutdown_signal(),
        )
        .await
    })
}
