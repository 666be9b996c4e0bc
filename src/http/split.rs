//! `POST /identities/{contactId}/split` and `GET /identities/{contactId}/links`
//! (docs/behaviour.md §10): repairing a wrong merge, and the reasons it can be repaired by.
//! Admin routes, behind the admin token when one is configured.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::{AnswerContact, IdentifiedContact, IdentifyAnswer};
use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::params::{consistency, path_id};
use super::state::AppState;
use super::values::{ValuesBody, ValuesList, read_values};
use crate::contact::{ContactId, Timestamp};
use crate::graph::{Link, LinkReason, SplitReport};

/// The answer of a split or of a retroactive block (docs/behaviour.md §10).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"split": true, "removedLinks": 2, "blocked": {"emails": [],
    "phoneNumbers": ["0000000000"]}, "identities": [
    {"primaryContactId": 1, "emails": ["ann@example.com"], "phoneNumbers": ["0000000000"],
        "secondaryContactIds": []},
    {"primaryContactId": 2, "emails": ["bob@example.com"], "phoneNumbers": ["0000000000"],
        "secondaryContactIds": []}]}))]
pub struct SplitAnswer {
    /// Whether an identity became two or more (false: the values are blocked, nothing was
    /// split).
    pub split: bool,
    /// Links removed because their reasons involve a blocked value.
    pub removed_links: usize,
    /// The values this request blocked.
    pub blocked: ValuesList,
    /// The resulting identities in the `/identify` `contact` shape, primaries in age order.
    pub identities: Vec<IdentifiedContact>,
}

/// [`SplitAnswer`] as sent: the identities borrowed, rendered with the configured key.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SplitAnswerRef<'a> {
    split: bool,
    removed_links: usize,
    blocked: ValuesList,
    identities: Vec<AnswerContact<'a>>,
}

impl<'a> SplitAnswerRef<'a> {
    pub(crate) fn new(
        report: &'a SplitReport,
        blocked: ValuesList,
        app: &AppState,
    ) -> SplitAnswerRef<'a> {
        SplitAnswerRef {
            split: report.split,
            removed_links: report.removed_links,
            blocked,
            identities: (report.identities.iter())
                .map(|i| IdentifyAnswer::new(i, app.options.response_key).contact())
                .collect(),
        }
    }
}

/// `POST /identities/{contactId}/split` (docs/behaviour.md §10).
#[utoipa::path(
    post,
    path = "/identities/{contactId}/split",
    tag = "admin",
    operation_id = "splitIdentity",
    summary = "Split an identity by the values that wrongly joined it",
    description = "Blocks the values for matching from now on (in the log: it survives restarts) \
        and re-partitions the identity into the connected components of its links whose \
        reasons involve no blocked value (see `GET /identities/{contactId}/links`). In each \
        part the oldest live contact is primary; only rows whose link changes get a new \
        `updatedAt`. A split that removes no link still blocks the values and answers \
        `\"split\": false`. An admin route.",
    params(("contactId" = u64, Path, description = "Any contact id of the identity.",
        minimum = 1, example = 1)),
    request_body(content = ValuesBody, content_type = "application/json"),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The resulting identities.", body = SplitAnswer),
        (status = 400, description = "A bad id, a body that is not `{\"emails\": [...], \
            \"phoneNumbers\": [...]}`, an invalid value, or no value at all.",
            body = ErrorEnvelope, example = json!({"error": {"code": "missing_values",
                "message": "give at least one value in emails or phoneNumbers"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id (or it was erased).",
            body = ErrorEnvelope, example = json!({"error": {"code": "not_found",
                "message": "contact 99 does not exist"}})),
        (status = 413, description = "The body is larger than `--max-body-bytes`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "payload_too_large", "message": "request body is too large"}})),
        (status = 415, description = "`Content-Type` is not `application/json` in UTF-8.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unsupported_media_type",
                "message": "Content-Type must be application/json in UTF-8"}})),
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
pub(crate) async fn split_identity(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = path_id(id, "contactId")?;
    let values = read_values(&app, req).await?;
    let blocked = ValuesList::from(&values);
    let Some(report) = app.backend.split_identity(id, values).await? else {
        return Err(ApiError::not_found(format!("contact {id} does not exist")));
    };
    Ok(json_response(
        StatusCode::OK,
        &SplitAnswerRef::new(&report, blocked, &app),
    ))
}

/// One link of an identity, with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// `shared_email`, `shared_phone_number`, `request` (a request carried the first
    /// contact's email and the second's phone number) or `imported`.
    pub reason: String,
    /// The two contacts linked.
    #[schema(value_type = Vec<u64>)]
    pub contact_ids: [ContactId; 2],
    /// The email of the reason, if any.
    #[schema(required = true)]
    pub email: Option<String>,
    /// The phone number of the reason, if any.
    #[schema(required = true)]
    pub phone_number: Option<String>,
    /// When the link was made (the later contact's `createdAt`, or the merge's time); null for
    /// an import's.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub at: Option<Timestamp>,
    /// Whether a value of the reason is blocked now: a split of this identity removes the link.
    pub blocked: bool,
}

impl From<Link> for LinkView {
    fn from(link: Link) -> Self {
        let (reason, email, phone_number) = match link.reason {
            LinkReason::SharedEmail(e) => ("shared_email", Some(e.to_string()), None),
            LinkReason::SharedPhone(p) => ("shared_phone_number", None, Some(p.to_string())),
            LinkReason::Request { email, phone } => {
                ("request", Some(email.to_string()), Some(phone.to_string()))
            }
            LinkReason::Imported => ("imported", None, None),
        };
        LinkView {
            reason: reason.to_owned(),
            contact_ids: [link.contacts.0, link.contacts.1],
            email,
            phone_number,
            at: link.at,
            blocked: link.blocked,
        }
    }
}

/// The body of `GET /identities/{contactId}/links`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"contactId": 2, "links": [
    {"reason": "shared_phone_number", "contactIds": [1, 2], "email": null,
        "phoneNumber": "0000000000", "at": "2023-04-20T05:30:00.110Z", "blocked": false}]}))]
pub struct IdentityLinks {
    /// The contact asked about.
    #[schema(value_type = u64)]
    pub contact_id: ContactId,
    /// Every link of its identity: shared values, then requests, then an import's links.
    pub links: Vec<LinkView>,
}

/// `GET /identities/{contactId}/links` (docs/behaviour.md §10).
#[utoipa::path(
    get,
    path = "/identities/{contactId}/links",
    tag = "admin",
    operation_id = "getIdentityLinks",
    summary = "Every link of an identity, with its reason",
    description = "Two contacts that carry the same email or phone number are linked by it (a \
        value shared by k contacts: k - 1 links from its first carrier); a request that \
        carried one identity's email and another's phone number linked the two contacts by \
        both; contacts an import joined without a shared value are linked as `imported`. A \
        split removes the links whose `blocked` is true. An admin route.",
    params(("contactId" = u64, Path, description = "Any contact id of the identity.",
        minimum = 1, example = 2)),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The links.", body = IdentityLinks),
        (status = 400, description = "`contactId` is not a positive integer.",
            body = ErrorEnvelope, example = json!({"error": {"code": "invalid_path_parameter",
                "message": "contactId must be a positive integer", "field": "contactId"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id (or it was erased).",
            body = ErrorEnvelope, example = json!({"error": {"code": "not_found",
                "message": "contact 99 does not exist"}})),
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
pub(crate) async fn identity_links(
    State(app): State<AppState>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "contactId")?;
    let Some(links) = app.backend.links(id, consistency(&uri)).await? else {
        return Err(ApiError::not_found(format!("contact {id} does not exist")));
    };
    Ok(json_response(
        StatusCode::OK,
        &IdentityLinks {
            contact_id: id,
            links: links.into_iter().map(LinkView::from).collect(),
        },
    ))
}
