//! The Contact row routes: `GET /contacts/{id}` (docs/behaviour.md §6.1), the `GET /contacts`
//! listing (§6.2) and `DELETE /contacts/{id}` (§6.6). All three are admin routes, behind the
//! admin token when one is configured (§6.12): ids are sequential, so an open single-row read
//! would hand out every customer's email and phone number to a loop.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::params::{QueryPairs, consistency, path_id, query_pairs};
use super::state::AppState;
use crate::contact::{ContactId, ContactRow};
use crate::store::Deletion;

/// `GET /contacts/{id}` (docs/behaviour.md §6.1). An admin route: behind the admin token when
/// one is configured (§6.12).
#[utoipa::path(
    get,
    path = "/contacts/{id}",
    tag = "admin",
    operation_id = "getContact",
    summary = "One Contact row",
    description = "All eight columns of the row, deleted rows included (docs/behaviour.md §6.1). \
        An admin route: when the server has an admin token (`--admin-token`), it needs \
        `Authorization: Bearer <token>`.",
    params(("id" = u64, Path, description = "Contact id, a positive integer.", minimum = 1,
        example = 4)),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The row.", body = ContactRow),
        (status = 400, description = "`id` is not a positive integer.", body = ErrorEnvelope,
            example = json!({"error": {"code": "invalid_path_parameter",
                "message": "id must be a positive integer", "field": "id"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id.", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found",
                "message": "contact 99 does not exist"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn get_contact(
    State(app): State<AppState>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "id")?;
    match app.backend.contact(id, consistency(&uri)).await? {
        Some(row) => Ok(json_response(StatusCode::OK, &row)),
        None => Err(ApiError::not_found(format!("contact {id} does not exist"))),
    }
}

/// Largest `limit` of the listing, in rows (docs/behaviour.md §6.2).
pub const MAX_PAGE: usize = 10_000;
/// Default `limit` of the listing, in rows (docs/behaviour.md §6.2).
pub const DEFAULT_PAGE: usize = 1_000;

/// One page of `GET /contacts` (docs/behaviour.md §6.2): rows in id order after the `after` id, and the
/// `after` value of the next page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"contacts": [{
    "id": 3, "phoneNumber": "919191", "email": "george@hillvalley.edu", "linkedId": null,
    "linkPrecedence": "primary", "createdAt": "2023-04-11T00:00:00.374Z",
    "updatedAt": "2023-04-11T00:00:00.374Z", "deletedAt": null
}], "next": 3}))]
pub struct ContactPage {
    /// Up to `limit` rows (deleted rows included), in id order.
    pub contacts: Vec<ContactRow>,
    /// The id to pass as `after` for the next page; null when this page reached the end.
    #[schema(value_type = Option<u64>, required = true, minimum = 1)]
    pub next: Option<ContactId>,
}

/// `GET /contacts?after={id}&limit={n}` (docs/behaviour.md §6.2). An admin route: behind the admin token
/// when one is configured.
#[utoipa::path(
    get,
    path = "/contacts",
    tag = "admin",
    operation_id = "listContacts",
    summary = "Every Contact row, page by page",
    description = "Rows in id order, deleted rows included (docs/behaviour.md §6.2). An admin route: when \
        the server has an admin token (`--admin-token`), it needs \
        `Authorization: Bearer <token>`.",
    params(
        ("after" = Option<u64>, Query, description = "Answer rows with an id greater than this \
            (default 0: from the start).", minimum = 0, example = 2),
        ("limit" = Option<usize>, Query, description = "Rows per page, 1–10 000 (default 1 000).",
            minimum = 1, maximum = 10000, example = 1)
    ),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "One page of rows.", body = ContactPage),
        (status = 400, description = "`after` or `limit` is not a valid number.",
            body = ErrorEnvelope, example = json!({"error": {"code": "invalid_query_parameter",
                "message": "limit must be an integer from 1 to 10000", "field": "limit"}})),
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
            body = ErrorEnvelope, example = json!({"error": {
                "code": "unavailable",
                "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn list_contacts(
    State(app): State<AppState>,
    uri: Uri,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let (mut after, mut limit) = (0u64, DEFAULT_PAGE);
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "after" => {
                after = value.parse().map_err(|_| {
                    ApiError::invalid_query("after", "after must be a non-negative integer")
                })?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid_query("limit", "limit must be an integer from 1 to 10000")
                    })?;
            }
            _ => {}
        }
    }
    let mut rows = app
        .backend
        .contacts_after(after, limit + 1, consistency(&uri))
        .await?;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &ContactPage {
            contacts: rows,
            next,
        },
    ))
}

/// The body of a successful `DELETE /contacts/{id}`: the row as it is now.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedContact {
    /// The deleted row (`deletedAt` set).
    pub contact: ContactRow,
}

/// `DELETE /contacts/{id}` (docs/behaviour.md §6.6).
#[utoipa::path(
    delete,
    path = "/contacts/{id}",
    tag = "admin",
    operation_id = "deleteContact",
    summary = "Delete one contact",
    description = "Sets `deletedAt` and `updatedAt`. The contact stops matching and leaves every \
        answer; if it was the primary, the oldest live contact of the identity is promoted. The \
        identity's links stay. An admin route.",
    params(("id" = u64, Path, description = "Contact id.", minimum = 1, example = 4)),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The deleted row.", body = DeletedContact),
        (status = 400, description = "`id` is not a positive integer.", body = ErrorEnvelope, example = json!({"error": {"code": "invalid_path_parameter", "message": "id must be a positive integer", "field": "id"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id (or it was erased).",
            body = ErrorEnvelope, example = json!({"error": {"code": "not_found", "message": "contact 99 does not exist"}})),
        (status = 409, description = "The contact is already deleted.", body = ErrorEnvelope,
            example = json!({"error": {"code": "already_deleted",
                "message": "contact 4 was already deleted at 2023-04-21T05:30:00.110Z"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn delete_contact(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "id")?;
    match app.backend.delete_contact(id).await? {
        Deletion::Deleted(contact) => {
            Ok(json_response(StatusCode::OK, &DeletedContact { contact }))
        }
        Deletion::NotFound => Err(ApiError::not_found(format!("contact {id} does not exist"))),
        Deletion::AlreadyDeleted(row) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_deleted",
            match row.deleted_at {
                Some(at) => format!("contact {id} was already deleted at {at}"),
                None => format!("contact {id} was already deleted"),
            },
        )),
    }
}
