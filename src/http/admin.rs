//! `POST /admin/compact` (an admin route, behind the admin token when one is configured):
//! compaction on demand, so that no value erased before the call remains in any file.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::backend::Backend;
use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::state::AppState;
use crate::store::Compaction;
use std::sync::Arc;

/// The body of `POST /admin/compact`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionReport {
    /// LSN of the snapshot written.
    pub lsn: u64,
    /// Its size in bytes.
    pub snapshot_bytes: u64,
    /// Other files removed from the snapshot directory.
    pub snapshots_removed: usize,
    /// Log segments removed.
    pub segments_removed: usize,
}

/// `POST /admin/compact` (docs/behaviour.md §6.8).
#[utoipa::path(
    post,
    path = "/admin/compact",
    tag = "admin",
    operation_id = "compact",
    summary = "Compact the data directory now",
    description = "Rolls the log, writes a snapshot, then removes every other snapshot and every \
        log segment the snapshot covers, so no value erased before the call remains in any file. \
        Blocks until done (about as long as a snapshot). An admin route.",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "What the compaction did.", body = CompactionReport),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn compact(State(app): State<AppState>) -> Result<Response, ApiError> {
    let Backend::Single(store) = &app.backend else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_in_cluster_mode",
            "cluster members compact by themselves, after every snapshot (--snapshot-every) and \
             every erasure",
        ));
    };
    let store = Arc::clone(store);
    let result = tokio::task::spawn_blocking(move || store.compact_blocking())
        .await
        .map_err(|_| ApiError::internal())?;
    let Compaction {
        lsn,
        snapshot_bytes,
        snapshots_removed,
        segments_removed,
    } = result?;
    Ok(json_response(
        StatusCode::OK,
        &CompactionReport {
            lsn,
            snapshot_bytes,
            snapshots_removed,
            segments_removed,
        },
    ))
}
