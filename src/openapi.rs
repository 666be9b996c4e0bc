//! The OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! The document is generated, not written: [`crate::http`] registers every route through
//! `utoipa_axum`'s `OpenApiRouter` from handlers annotated with `#[utoipa::path]`, so the paths
//! of the document are the paths of the router. This module holds what the router does not
//! know: the document's header ([`ApiDoc`]: info, tags, the admin bearer security scheme), the
//! documentation shapes of `/identify` (whose real request parsing and answer rendering are
//! hand-tuned for speed, see `request.rs` and [`crate::http::IdentifyAnswer`]), `GET /metrics`,
//! and [`document`], which adapts the generated document to one server's configuration.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::admin::SECURITY_SCHEME;
use crate::contact::ContactId;
use crate::http::ResponseKey;

/// The document's fixed parts; the paths come from the router (`http::api_routes`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "idrecon",
        description = "Identity reconciliation: links every email and phone number of a \
            customer into one identity and answers, per checkout, who this is (SPEC.md). \
            Every error answer is `{\"error\": {\"code\", \"message\", \"field\"?}}`; an unknown \
            route is 404 `not_found` and a known route with another method is 405 \
            `method_not_allowed`.",
    ),
    paths(metrics_doc),
    components(schemas(IdentifyRequestBody, IdentifyResponse, IdentifiedContact)),
    modifiers(&AdminSecurity),
    tags(
        (name = "identity", description = "Identifying checkouts and reading contacts."),
        (name = "admin", description = "Bulk routes: behind the admin token when one is set."),
        (name = "operations", description = "Health, metrics and this document."),
    )
)]
pub struct ApiDoc;

/// Adds the `admin_token` bearer scheme to `components.securitySchemes`.
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Cargo.toml names no licence; an empty one would be noise.
        openapi.info.license = None;
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token of `--admin-token` / `IDRECON_ADMIN_TOKEN`, sent as \
                         `Authorization: Bearer <token>`. Needed by admin routes only when the \
                         server has one configured.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /metrics`: Prometheus text exposition of the service's counters, histograms and gauges.
/// Documentation only: the handler lives with the metrics code.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Counters, histograms and gauges in the Prometheus text exposition format \
        (requests, identify outcomes, request latency, fsync time, group-commit batch size, \
        snapshots, contacts/identities/largest identity). See docs/OPERATIONS.md.",
    responses(
        (status = 200, description = "The metrics, as text.", body = String,
            content_type = "text/plain",
            example = json!("# TYPE idrecon_http_requests_total counter\n\
                idrecon_http_requests_total{route=\"/identify\",status=\"200\"} 1027\n")),
        (status = 408, description = "The request took longer than `--request-timeout-ms`.",
            body = crate::http::ErrorEnvelope, example = json!({"error": {
                "code": "request_timeout", "message": "request took too long"}}))
    )
)]
#[allow(dead_code)]
fn metrics_doc() {}

/// The body of `POST /identify` (SPEC.md §3, §4). Documentation shape: the service parses bodies
/// with its own strict parser (`request::parse_identify_body`), which also refuses duplicated
/// keys. At least one of the two values must be given and non-empty after trimming.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}))]
pub struct IdentifyRequestBody {
    /// An email: trimmed, lowercased; exactly one `@` with text on both sides, no whitespace
    /// or control characters, at most 254 bytes of UTF-8. Null, absent or empty: not given.
    #[serde(default)]
    #[schema(nullable, example = "mcfly@hillvalley.edu")]
    pub email: Option<String>,
    /// A phone number: a string of 1–32 digits, ASCII letters, spaces and `+ - ( ) .`, or a
    /// non-negative integer that fits in 64 bits (`123456` ≡ `"123456"`). Null, absent or
    /// empty: not given. On a server started with `--phone-region`, it must also be a valid
    /// number (read as a number of that region when it has no `+` country code) and is matched
    /// and stored in E.164 form (`+919876543210`).
    #[serde(default)]
    #[schema(nullable)]
    pub phone_number: Option<PhoneNumberInput>,
}

/// `phoneNumber` in a request: text, or a non-negative integer written without fraction or
/// exponent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PhoneNumberInput {
    /// The number as text, e.g. `"+1 (555) 010-0199"`.
    #[schema(example = "123456")]
    Text(String),
    /// The number as a JSON integer, stored as its decimal digits.
    #[schema(example = 123456)]
    Digits(u64),
}

/// The `200` answer of `POST /identify` (SPEC.md §3 step 5): `{"contact": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"contact": {
    "primaryContactId": 1,
    "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
    "phoneNumbers": ["123456"],
    "secondaryContactIds": [23]
}}))]
pub struct IdentifyResponse {
    /// The consolidated identity.
    pub contact: IdentifiedContact,
}

/// A consolidated identity (SPEC.md §3 step 5).
///
/// The primary id's key is configurable (`--response-key`): `primaryContactId` by default,
/// `primaryContatctId` (the original task statement's spelling), or both with the same value.
/// The document served by a server marks its configured spelling(s) as required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentifiedContact {
    /// Id of the identity's primary (its oldest live contact). The default spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false, minimum = 1, example = 1)]
    pub primary_contact_id: Option<ContactId>,
    /// The same id under the original task statement's spelling; sent only with
    /// `--response-key primaryContatctId` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, required = false, minimum = 1, example = 1)]
    pub primary_contatct_id: Option<ContactId>,
    /// Distinct emails of the identity's live contacts: the primary's first, then in the age
    /// order of the contact that first carried them. Never null entries.
    #[schema(example = json!(["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"]))]
    pub emails: Vec<String>,
    /// Distinct phone numbers, ordered like `emails`.
    #[schema(example = json!(["123456"]))]
    pub phone_numbers: Vec<String>,
    /// Every live secondary of the identity, in age order.
    #[schema(value_type = Vec<u64>, example = json!([23]))]
    pub secondary_contact_ids: Vec<ContactId>,
}

/// The schema name of [`IdentifiedContact`] in `components.schemas`.
const IDENTIFIED_CONTACT: &str = "IdentifiedContact";
const PRIMARY_KEY: &str = "primaryContactId";
const PRIMARY_KEY_ORIGINAL: &str = "primaryContatctId";

/// Renders `openapi` as JSON adapted to one server's configuration:
/// - the configured primary-id spelling(s) of `key` become required in `IdentifiedContact`, and
///   every example of an identify answer uses them;
/// - with `admin_token_set`, admin operations need the bearer token (anonymous access is
///   dropped from their `security` alternatives).
pub fn document(
    openapi: &utoipa::openapi::OpenApi,
    key: ResponseKey,
    admin_token_set: bool,
) -> Value {
    let mut doc = serde_json::to_value(openapi).unwrap_or_else(|_| json!({}));
    let keys: &[&str] = match key {
        ResponseKey::PrimaryContactId => &[PRIMARY_KEY],
        ResponseKey::PrimaryContatctId => &[PRIMARY_KEY_ORIGINAL],
        ResponseKey::Both => &[PRIMARY_KEY, PRIMARY_KEY_ORIGINAL],
    };
    if let Some(schema) = doc
        .pointer_mut(&format!("/components/schemas/{IDENTIFIED_CONTACT}"))
        .and_then(Value::as_object_mut)
    {
        let required = schema
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(required) = required.as_array_mut() {
            for k in keys.iter().rev() {
                required.insert(0, Value::from(*k));
            }
        }
    }
    respell_examples(&mut doc, keys, false);
    if admin_token_set && let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operation in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in operation.values_mut() {
                if let Some(security) = operation.get_mut("security").and_then(Value::as_array_mut)
                {
                    security.retain(|s| s.as_object().is_none_or(|o| !o.is_empty()));
                }
            }
        }
    }
    doc
}

/// Inside every `example`/`examples` subtree of `value`, rewrites each identify-answer object
/// (one with `primaryContactId` and `secondaryContactIds`) to carry the primary id under `keys`.
fn respell_examples(value: &mut Value, keys: &[&str], in_example: bool) {
    match value {
        Value::Object(map) => {
            if in_example
                && map.contains_key("secondaryContactIds")
                && let Some(id) = map.remove(PRIMARY_KEY)
            {
                for k in keys {
                    map.insert((*k).to_owned(), id.clone());
                }
            }
            for (name, child) in map.iter_mut() {
                let example = in_example || name == "example" || name == "examples";
                respell_examples(child, keys, example);
            }
        }
        Value::Array(items) => {
            for item in items {
                respell_examples(item, keys, in_example);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Phone};
    use crate::graph::Identity;
    use crate::http::IdentifyAnswer;

    #[test]
    fn rendered_answers_fit_the_documentation_shape() {
        let identity = Identity {
            primary_contact_id: 1,
            emails: vec![Email::parse("a@b.c").unwrap().unwrap()],
            phone_numbers: vec![Phone::parse("1").unwrap().unwrap()],
            secondary_contact_ids: vec![2],
        };
        for key in [
            ResponseKey::PrimaryContactId,
            ResponseKey::PrimaryContatctId,
            ResponseKey::Both,
        ] {
            let text = IdentifyAnswer {
                identity: &identity,
                key,
                rows: None,
            }
            .to_json()
            .unwrap();
            let parsed: IdentifyResponse = serde_json::from_slice(&text).unwrap();
            let id = Some(1);
            let (default, original) = match key {
                ResponseKey::PrimaryContactId => (id, None),
                ResponseKey::PrimaryContatctId => (None, id),
                ResponseKey::Both => (id, id),
            };
            assert_eq!(parsed.contact.primary_contact_id, default);
            assert_eq!(parsed.contact.primary_contatct_id, original);
            assert_eq!(parsed.contact.secondary_contact_ids, vec![2]);
        }
    }

    #[test]
    fn examples_are_respelled_for_the_configured_key() {
        let mut doc = json!({
            "properties": {"primaryContactId": {}, "secondaryContactIds": {}},
            "example": {"contact": {"primaryContactId": 7, "secondaryContactIds": []}}
        });
        respell_examples(&mut doc, &[PRIMARY_KEY, PRIMARY_KEY_ORIGINAL], false);
        assert_eq!(
            doc["example"]["contact"],
            json!({"primaryContactId": 7, "primaryContatctId": 7, "secondaryContactIds": []})
        );
        assert!(doc["properties"].get(PRIMARY_KEY_ORIGINAL).is_none());
    }
}
