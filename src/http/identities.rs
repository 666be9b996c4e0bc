//! The identity routes: read-only lookup, an identity with its rows, its history and erasure.
//! All are admin routes (they read or change data of arbitrary customers, not of the caller's
//! own checkout): behind the admin token when one is configured. Every error answer is the
//! docs/behaviour.md §4 JSON error body.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::IdentifyAnswer;
use super::answer::{IdentifiedContact, IdentifyResponse};
use super::error::{ApiError, ErrorEnvelope};
use super::json::json_response;
use super::params::{QueryPairs, consistency, path_id, query_pairs};
use super::state::AppState;
use crate::contact::{ContactId, ContactRow, Email, Phone, Timestamp};
use crate::graph::HistoryEntry;
use crate::graph::{IdentifyRequest, Lookup};

/// `GET /identities?email=…&phoneNumber=…` (docs/behaviour.md §6.3).
#[utoipa::path(
    get,
    path = "/identities",
    tag = "admin",
    operation_id = "lookupIdentity",
    summary = "Look an identity up by email and/or phone, without writing",
    description = "Normalizes the values as `/identify` does (docs/behaviour.md §4) and answers the \
        identity they lead to, exactly as `/identify` would, but never writes and never \
        merges. Blocked values never match. An admin route.",
    params(
        ("email" = Option<String>, Query, description = "An email.",
            example = "mcfly@hillvalley.edu"),
        ("phoneNumber" = Option<String>, Query, description = "A phone number.",
            example = "123456")
    ),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The identity.", body = IdentifyResponse),
        (status = 400, description = "Neither value given, a value given twice, or an invalid \
            value.", body = ErrorEnvelope, example = json!({"error": {
                "code": "missing_contact",
                "message": "at least one of email and phoneNumber must be given"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No identity has these values.", body = ErrorEnvelope,
            example = json!({"error": {"code": "not_found",
                "message": "no identity has this email or phone number"}})),
        (status = 409, description = "The email and the phone belong to two identities \
            (a lookup never merges them).", body = ErrorEnvelope,
            example = json!({"error": {"code": "identities_conflict",
                "message": "the email belongs to identity 1 and the phone number to identity 3"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn lookup_identity(
    State(app): State<AppState>,
    uri: Uri,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let (mut email, mut phone): (Option<String>, Option<String>) = (None, None);
    for (key, value) in query_pairs(query)? {
        let slot = match key.as_str() {
            "email" => &mut email,
            "phoneNumber" => &mut phone,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            let field = if key == "email" {
                "email"
            } else {
                "phoneNumber"
            };
            return Err(ApiError::invalid_query(
                field,
                "a query parameter is given twice",
            ));
        }
    }
    // The same normalization as /identify (docs/behaviour.md §4, and --phone-region when set).
    let normalizer = app.normalizer();
    let email = match email {
        Some(raw) => normalizer.email(&raw)?,
        None => None,
    };
    let phone = match phone {
        Some(raw) => normalizer.phone(&raw)?,
        None => None,
    };
    let request = IdentifyRequest::new(email, phone)?;
    match app.backend.lookup(&request, consistency(&uri)).await? {
        Lookup::Found(_, identity) => Ok(json_response(
            StatusCode::OK,
            &IdentifyAnswer::new(&identity, app.options.response_key),
        )),
        Lookup::NotFound => Err(ApiError::not_found(
            "no identity has this email or phone number",
        )),
        Lookup::Conflict {
            email_primary,
            phone_primary,
        } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "identities_conflict",
            format!(
                "the email belongs to identity {email_primary} and the phone number to \
                 identity {phone_primary}"
            ),
        )),
    }
}

/// The body of `GET /identities/{contactId}`: the consolidated identity and every row of it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityWithRows {
    /// The identity as `/identify` answers it.
    pub contact: IdentifiedContact,
    /// Every row of the identity, deleted ones included, in id order.
    pub rows: Vec<ContactRow>,
}

/// `GET /identities/{contactId}` (docs/behaviour.md §6.4).
#[utoipa::path(
    get,
    path = "/identities/{contactId}",
    tag = "admin",
    operation_id = "getIdentity",
    summary = "The identity containing a contact, with its rows",
    description = "The consolidated answer of the identity that contains the contact (deleted \
        or not), plus every row of it in id order. An admin route.",
    params(("contactId" = u64, Path, description = "Any contact id of the identity.",
        minimum = 1, example = 1)),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The identity and its rows.", body = IdentityWithRows),
        (status = 400, description = "`contactId` is not a positive integer.",
            body = ErrorEnvelope, example = json!({"error": {"code": "invalid_path_parameter", "message": "contactId must be a positive integer", "field": "contactId"}})),
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
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn get_identity(
    State(app): State<AppState>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "contactId")?;
    let Some((identity, rows)) = app.backend.identity(id, consistency(&uri)).await? else {
        return Err(ApiError::not_found(format!("contact {id} does not exist")));
    };
    let answer = IdentifyAnswer::new(&identity, app.options.response_key).with_rows(&rows);
    Ok(json_response(StatusCode::OK, &answer))
}

/// One event of an identity's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEvent {
    /// A row was recorded, carrying the request's values.
    #[serde(rename_all = "camelCase")]
    ContactInserted {
        /// When (the row's `createdAt`).
        #[schema(value_type = String, format = DateTime)]
        at: Timestamp,
        /// The new row's id.
        #[schema(value_type = u64)]
        contact_id: ContactId,
        /// The request's email, or null.
        #[schema(value_type = Option<String>, required = true)]
        email: Option<Email>,
        /// The request's phone number, or null.
        #[schema(value_type = Option<String>, required = true)]
        phone_number: Option<Phone>,
    },
    /// Two identities became one: `demotedContactId` became a secondary of `primaryContactId`.
    #[serde(rename_all = "camelCase")]
    Merged {
        /// When (null for a merge made by an import).
        #[schema(value_type = Option<String>, format = DateTime, required = true)]
        at: Option<Timestamp>,
        /// The primary that stayed primary.
        #[schema(value_type = u64)]
        primary_contact_id: ContactId,
        /// The primary that was demoted.
        #[schema(value_type = u64)]
        demoted_contact_id: ContactId,
        /// The email that linked the two identities, or null when not known.
        #[schema(value_type = Option<String>, required = true)]
        email: Option<Email>,
        /// The phone number that linked them, or null when not known.
        #[schema(value_type = Option<String>, required = true)]
        phone_number: Option<Phone>,
    },
    /// A contact was deleted.
    #[serde(rename_all = "camelCase")]
    Deleted {
        /// When.
        #[schema(value_type = String, format = DateTime)]
        at: Timestamp,
        /// The deleted contact.
        #[schema(value_type = u64)]
        contact_id: ContactId,
        /// The contact that became primary because the primary was deleted, or null.
        #[schema(value_type = Option<u64>, required = true)]
        promoted_contact_id: Option<ContactId>,
    },
    /// The identity size cap refused a merge (other primary given) or a new secondary.
    #[serde(rename_all = "camelCase")]
    MergeRefused {
        /// When.
        #[schema(value_type = String, format = DateTime)]
        at: Timestamp,
        /// Primary of the identity the request was answered from.
        #[schema(value_type = u64)]
        primary_contact_id: ContactId,
        /// Primary of the identity it would have merged in, or null for a new secondary.
        #[schema(value_type = Option<u64>, required = true)]
        other_primary_contact_id: Option<ContactId>,
        /// The request's email, or null.
        #[schema(value_type = Option<String>, required = true)]
        email: Option<Email>,
        /// The request's phone number, or null.
        #[schema(value_type = Option<String>, required = true)]
        phone_number: Option<Phone>,
        /// The cap in force, in contacts per identity.
        limit: u32,
    },
    /// A split (docs/behaviour.md §10) made `primaryContactId` the primary of a part of the
    /// identity whose primary was `fromPrimaryContactId`; shown on both sides.
    #[serde(rename_all = "camelCase")]
    Split {
        /// When.
        #[schema(value_type = String, format = DateTime)]
        at: Timestamp,
        /// The identity's primary before the split.
        #[schema(value_type = u64)]
        from_primary_contact_id: ContactId,
        /// The primary of the part split off.
        #[schema(value_type = u64)]
        primary_contact_id: ContactId,
        /// The blocked emails whose links were removed.
        #[schema(value_type = Vec<String>)]
        emails: Vec<Email>,
        /// The blocked phone numbers whose links were removed.
        #[schema(value_type = Vec<String>)]
        phone_numbers: Vec<Phone>,
        /// The same in words, e.g. "identity 4 split from identity 1: phone 0000000000
        /// blocked".
        description: String,
    },
}

impl From<HistoryEntry> for HistoryEvent {
    fn from(entry: HistoryEntry) -> Self {
        match entry {
            HistoryEntry::ContactInserted {
                id,
                email,
                phone,
                at,
            } => HistoryEvent::ContactInserted {
                at,
                contact_id: id,
                email,
                phone_number: phone,
            },
            HistoryEntry::Merged {
                primary,
                demoted,
                at,
                email,
                phone,
            } => HistoryEvent::Merged {
                at,
                primary_contact_id: primary,
                demoted_contact_id: demoted,
                email,
                phone_number: phone,
            },
            HistoryEntry::Deleted { id, at, promoted } => HistoryEvent::Deleted {
                at,
                contact_id: id,
                promoted_contact_id: promoted,
            },
            HistoryEntry::Refused(refusal) => HistoryEvent::MergeRefused {
                at: refusal.at,
                primary_contact_id: refusal.primary,
                other_primary_contact_id: refusal.other,
                email: refusal.email,
                phone_number: refusal.phone,
                limit: refusal.limit,
            },
            HistoryEntry::Split {
                from,
                primary,
                values,
                at,
            } => {
                let blocked: Vec<String> = (values.emails.iter())
                    .map(|e| format!("email {e}"))
                    .chain(values.phones.iter().map(|p| format!("phone {p}")))
                    .collect();
                HistoryEvent::Split {
                    at,
                    from_primary_contact_id: from,
                    primary_contact_id: primary,
                    description: format!(
                        "identity {primary} split from identity {from}: {} blocked",
                        blocked.join(", ")
                    ),
                    emails: values.emails,
                    phone_numbers: values.phones,
                }
            }
        }
    }
}

/// The body of `GET /identities/{contactId}/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"contactId": 2, "events": [
    {"type": "contact_inserted", "at": "2023-04-01T00:00:00.374Z", "contactId": 1,
        "email": "george@hillvalley.edu", "phoneNumber": "919191"},
    {"type": "contact_inserted", "at": "2023-04-20T05:30:00.110Z", "contactId": 2,
        "email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"},
    {"type": "merged", "at": "2023-04-21T05:30:00.110Z", "primaryContactId": 1,
        "demotedContactId": 2, "email": "george@hillvalley.edu", "phoneNumber": "717171"}
]}))]
pub struct IdentityHistory {
    /// The contact asked about.
    #[schema(value_type = u64)]
    pub contact_id: ContactId,
    /// Everything that happened to its identity, oldest first (log order).
    pub events: Vec<HistoryEvent>,
}

/// `GET /identities/{contactId}/history` (docs/behaviour.md §6.5).
#[utoipa::path(
    get,
    path = "/identities/{contactId}/history",
    tag = "admin",
    operation_id = "getIdentityHistory",
    summary = "Everything that happened to an identity",
    description = "Inserts (with the request values), merges (which primary was demoted into \
        which, by which email and phone, when), deletions and refusals of the size cap, in log \
        order. Survives snapshots and restarts. An admin route.",
    params(("contactId" = u64, Path, description = "Any contact id of the identity.",
        minimum = 1, example = 2)),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "The history.", body = IdentityHistory),
        (status = 400, description = "`contactId` is not a positive integer.",
            body = ErrorEnvelope, example = json!({"error": {"code": "invalid_path_parameter", "message": "contactId must be a positive integer", "field": "contactId"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id (or it was erased).",
            body = ErrorEnvelope, example = json!({"error": {"code": "not_found", "message": "contact 99 does not exist"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn identity_history(
    State(app): State<AppState>,
    uri: Uri,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "contactId")?;
    let Some(entries) = app.backend.history(id, consistency(&uri)).await? else {
        return Err(ApiError::not_found(format!("contact {id} does not exist")));
    };
    Ok(json_response(
        StatusCode::OK,
        &IdentityHistory {
            contact_id: id,
            events: entries.into_iter().map(HistoryEvent::from).collect(),
        },
    ))
}

/// The body of a successful erasure.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasedIdentity {
    /// The primary of the erased identity.
    #[schema(value_type = u64)]
    pub primary_contact_id: ContactId,
    /// Every contact removed, in id order.
    #[schema(value_type = Vec<u64>)]
    pub erased_contact_ids: Vec<ContactId>,
}

/// `DELETE /identities/{contactId}?erase=true` (docs/behaviour.md §6.7).
#[utoipa::path(
    delete,
    path = "/identities/{contactId}",
    tag = "admin",
    operation_id = "eraseIdentity",
    summary = "Erase an identity (right to be forgotten)",
    description = "Removes every contact of the identity. When it answers, the values are gone \
        from memory and every index; a compaction starts at once in the background (and can be \
        run with `POST /admin/compact`), after which no byte of the erased values remains in any \
        file of the data directory. `erase=true` is required. An admin route.",
    params(
        ("contactId" = u64, Path, description = "Any contact id of the identity.", minimum = 1,
            example = 1),
        ("erase" = bool, Query, description = "Must be `true`.", example = true)
    ),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "What was erased.", body = ErasedIdentity),
        (status = 400, description = "`contactId` is not a positive integer, or `erase=true` \
            is missing.", body = ErrorEnvelope, example = json!({"error": {
                "code": "invalid_query_parameter",
                "message": "erasure is irreversible: pass erase=true", "field": "erase"}})),
        (status = 401, description = "An admin token is configured and the request did not \
            present it.", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"idrecon\"`")),
            example = json!({"error": {"code": "unauthorized",
                "message": "this route needs the admin token: Authorization: Bearer <token>"}})),
        (status = 404, description = "No contact has this id (or it was already erased).",
            body = ErrorEnvelope, example = json!({"error": {"code": "not_found", "message": "contact 99 does not exist"}})),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}})),
        (status = 500, description = "An internal error (logged).", body = ErrorEnvelope,
            example = json!({"error": {"code": "internal", "message": "internal error"}})),
        (status = 503, description = "The log can no longer acknowledge writes.",
            body = ErrorEnvelope, example = json!({"error": {"code": "unavailable", "message": "the service cannot durably record changes right now"}}))
    )
)]
pub(crate) async fn erase_identity(
    State(app): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let id = path_id(id, "contactId")?;
    let erase = query_pairs(query)?
        .into_iter()
        .any(|(key, value)| key == "erase" && value == "true");
    if !erase {
        return Err(ApiError::invalid_query(
            "erase",
            "erasure is irreversible: pass erase=true",
        ));
    }
    match app.backend.erase_identity(id).await? {
        Some(erasure) => Ok(json_response(
            StatusCode::OK,
            &ErasedIdentity {
                primary_contact_id: erasure.primary_contact_id,
                erased_contact_ids: erasure.contact_ids,
            },
        )),
        None => Err(ApiError::not_found(format!("contact {id} does not exist"))),
    }
}
