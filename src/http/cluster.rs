//! Cluster routes (docs/behaviour.md §9), present only in cluster mode:
//!
//! - internal, between members: `POST /cluster/raft/append`, `/cluster/raft/vote`,
//!   `/cluster/raft/snapshot`, each a bincode-encoded openraft message answered with the bincode
//!   of `Result<response, RaftError>`; with a cluster token, the request must carry
//!   `Authorization: Bearer <token>` (compared in constant time), else `401`;
//! - admin (behind the admin token): `GET /cluster/status` (this member's view),
//!   `POST /cluster/learners` `{"id": 4, "address": "127.0.0.1:4004"}`, `POST /cluster/voters`
//!   `{"id": 4}`, `DELETE /cluster/members/{id}`. Membership changes are the leader's: a
//!   follower forwards them ([`super::forward`]).
//!
//! These routes are not in the OpenAPI document, which describes the identity API that is the
//! same in both modes.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::auth::{AdminToken, bearer_token};
use super::backend::BackendError;
use super::error::ApiError;
use super::json::json_response;
use crate::cluster::network::{APPEND_PATH, BINCODE, MAX_MESSAGE_BYTES, SNAPSHOT_PATH, VOTE_PATH};
use crate::cluster::{ClusterNode, NodeId};

/// The cluster routes for `node`; the membership routes behind `admin_token`.
pub(crate) fn routes(node: Arc<ClusterNode>, admin_token: Option<AdminToken>) -> Router {
    let internal = Router::new()
        .route(APPEND_PATH, post(append))
        .route(VOTE_PATH, post(vote))
        .route(SNAPSHOT_PATH, post(snapshot))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(Arc::clone(&node));
    let admin = Router::new()
        .route("/cluster/status", get(status))
        .route("/cluster/learners", post(add_learner))
        .route("/cluster/voters", post(promote))
        .route("/cluster/members/{id}", delete(remove))
        .layer(axum::middleware::from_fn_with_state(
            admin_token,
            super::auth::require_admin,
        ))
        .with_state(node);
    internal.merge(admin)
}

/// `401` unless `headers` carry the cluster token (when the member has one).
fn check_token(node: &ClusterNode, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &node.options().token else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()));
    match presented {
        Some(presented) if bool::from(token.as_bytes().ct_eq(presented)) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "cluster messages need the cluster token: Authorization: Bearer <token>",
        )),
    }
}

/// Decodes a message, or answers `400`.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    bincode::deserialize(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_raft_message",
            format!("the body is not a Raft message: {e}"),
        )
    })
}

/// The bincode of `answer`, as a `200`.
fn encode<T: serde::Serialize>(answer: &T) -> Response {
    match bincode::serialize(answer) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(BINCODE))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a Raft answer");
            ApiError::internal().into_response()
        }
    }
}

async fn append(
    State(node): State<Arc<ClusterNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_token(&node, &headers)?;
    Ok(encode(&node.raft().append_entries(decode(&body)?).await))
}

async fn vote(
    State(node): State<Arc<ClusterNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_token(&node, &headers)?;
    Ok(encode(&node.raft().vote(decode(&body)?).await))
}

async fn snapshot(
    State(node): State<Arc<ClusterNode>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_token(&node, &headers)?;
    Ok(encode(&node.raft().install_snapshot(decode(&body)?).await))
}

/// `GET /cluster/status`: this member's view ([`crate::cluster::Status`]).
async fn status(State(node): State<Arc<ClusterNode>>) -> Response {
    json_response(StatusCode::OK, &node.status())
}

/// The body of `POST /cluster/learners`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLearner {
    id: NodeId,
    address: String,
}

/// The body of `POST /cluster/voters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Promotion {
    id: NodeId,
}

/// Parses a JSON body, or answers `400 invalid_json`.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not the expected JSON object: {e}"),
        )
    })
}

/// The member's view after a membership change, or the change's error (a refused change is
/// `409 membership_conflict`).
fn membership_answer(
    result: Result<(), crate::cluster::ClusterError>,
    node: &ClusterNode,
) -> Result<Response, ApiError> {
    result.map_err(BackendError::from)?;
    Ok(json_response(StatusCode::OK, &node.status()))
}

/// `POST /cluster/learners`: adds a learner and answers once it has caught up.
async fn add_learner(
    State(node): State<Arc<ClusterNode>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let learner: NewLearner = json_body(&body)?;
    let valid_address = learner
        .address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if learner.id == 0 || !valid_address {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_member",
            "a member needs a positive id and an address HOST:PORT",
        ));
    }
    membership_answer(node.add_learner(learner.id, learner.address).await, &node)
}

/// `POST /cluster/voters`: promotes a learner.
async fn promote(State(node): State<Arc<ClusterNode>>, body: Bytes) -> Result<Response, ApiError> {
    let promotion: Promotion = json_body(&body)?;
    membership_answer(node.promote(promotion.id).await, &node)
}

/// `DELETE /cluster/members/{id}`: removes a member.
async fn remove(
    State(node): State<Arc<ClusterNode>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = super::params::path_id(id, "id")?;
    membership_answer(node.remove(id).await, &node)
}
