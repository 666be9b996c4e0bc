//! `GET|POST|DELETE /admin/blocked-values` (docs/behaviour.md §10): values blocked for matching
//! at run time, as data in the log, beside the configured list (`--blocked-values`). Admin
//! routes, behind the admin token when one is configured.

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::params::{QueryPairs, consistency, query_pairs};
use super::split::{SplitAnswer, SplitAnswerRef};
use super::state::AppState;
use super::values::{ValuesBody, ValuesList, read_values};

/// The body of `GET /admin/blocked-values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"runTime": {"emails": [], "phoneNumbers": ["0000000000"]},
    "configured": ["recommended"]}))]
pub struct BlockedValuesList {
    /// Values blocked by splits and by `POST /admin/blocked-values`.
    pub run_time: ValuesList,
    /// The configured list's sources (`--blocked-values`: exact values, patterns or files),
    /// which block too and cannot be lifted at run time.
    pub configured: Vec<String>,
}

/// `GET /admin/blocked-values` (docs/behaviour.md §10).
#[utoipa::path(
    get,
    path = "/admin/blocked-values",
    tag = "admin",
    operation_id = "listBlockedValues",
    summary = "The values blocked for matching",
    description = "The run-time blocks (from splits and `POST /admin/blocked-values`) and the \
        configured list's sources. A value either blocks is stored on its row but never \
        matches. An admin route.",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The blocked values.", body = BlockedValuesList),
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
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn list_blocked_values(
    State(app): State<AppState>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let values = app.backend.blocked_values(consistency(&uri)).await?;
    let configured = app
        .backend
        .with_graph(|g| g.options().blocked.entries().to_vec());
    Ok(json_response(
        StatusCode::OK,
        &BlockedValuesList {
            run_time: ValuesList::from(&values),
            configured,
        },
    ))
}

/// `POST /admin/blocked-values[?retroactive=true]` (docs/behaviour.md §10).
#[utoipa::path(
    post,
    path = "/admin/blocked-values",
    tag = "admin",
    operation_id = "blockValues",
    summary = "Block values for matching",
    description = "From now on the values never match (they are still stored on new rows). \
        Without `retroactive`, links already made stay. With `retroactive=true`, every \
        identity holding a contact that carries one of the values is split as by \
        `POST /identities/{contactId}/split`, in the same logged event. An admin route.",
    params(("retroactive" = Option<bool>, Query,
        description = "`true` to split the identities the values already joined.")),
    request_body(content = ValuesBody, content_type = "application/json"),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "What the block split (nothing without `retroactive`).",
            body = SplitAnswer),
        (status = 400, description = "A body that is not `{\"emails\": [...], \
            \"phoneNumbers\": [...]}`, an invalid value, no value at all, or `retroactive` \
            neither `true` nor `false`.", body = ErrorEnvelope,
            example = json!({"error": {"code": "missing_values",
                "message": "give at least one value in emails or phoneNumbers"}})),
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
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn block_values(
    State(app): State<AppState>,
    query: QueryPairs,
    req: Request,
) -> Result<Response, ApiError> {
    let mut retroactive = false;
    for (key, value) in query_pairs(query)? {
        if key == "retroactive" {
            retroactive = match value.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::invalid_query(
                        "retroactive",
                        "retroactive must be true or false",
                    ));
                }
            };
        }
    }
    let values = read_values(&app, req).await?;
    let blocked = ValuesList::from(&values);
    let report = app.backend.block_values(values, retroactive).await?;
    Ok(json_response(
        StatusCode::OK,
        &SplitAnswerRef::new(&report, blocked, &app),
    ))
}

/// The body of `DELETE /admin/blocked-values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unblocked {
    /// The values of the request whose run-time blocks were lifted; values that were not
    /// blocked at run time are left out (a value the configured list blocks stays blocked).
    pub unblocked: ValuesList,
}

/// `DELETE /admin/blocked-values` (docs/behaviour.md §10).
#[utoipa::path(
    delete,
    path = "/admin/blocked-values",
    tag = "admin",
    operation_id = "unblockValues",
    summary = "Lift run-time blocks",
    description = "The values match again from now on (at their oldest live carrier), unless \
        the configured list blocks them. Nothing is merged by this alone: identities a split \
        separated stay apart until a request brings them together (docs/behaviour.md §3). The \
        body lists the values, as for `POST`. An admin route.",
    request_body(content = ValuesBody, content_type = "application/json"),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The values unblocked.", body = Unblocked),
        (status = 400, description = "A body that is not `{\"emails\": [...], \
            \"phoneNumbers\": [...]}`, an invalid value, or no value at all.",
            body = ErrorEnvelope, example = json!({"error": {"code": "missing_values",
                "message": "give at least one value in emails or phoneNumbers"}})),
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
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn unblock_values(
    State(app): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let values = read_values(&app, req).await?;
    let lifted = app.backend.unblock_values(values).await?;
    Ok(json_response(
        StatusCode::OK,
        &Unblocked {
            unblocked: ValuesList::from(&lifted),
        },
    ))
}
