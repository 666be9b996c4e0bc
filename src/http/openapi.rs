//! The OpenAPI 3.1 document served at `GET /openapi.json` (docs/behaviour.md §6.11).
//!
//! The document is generated, not written: the router ([`super::router`]) registers every route
//! through `utoipa_axum`'s `OpenApiRouter` from handlers annotated with `#[utoipa::path]`, so
//! the paths of the document are the paths of the router, and the schemas those annotations
//! name are collected with them. This module holds what the router does not know: the
//! document's header ([`ApiDoc`]: info, tags, the admin bearer security scheme) and
//! [`document`], which adapts the generated document to one server's configuration.

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::SECURITY_SCHEME;
use super::options::ResponseKey;

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "idrecon",
        description = "Identity reconciliation: links every email and phone number of a \
            customer into one identity and answers, per checkout, who this is \
            (docs/behaviour.md). Every error answer is \
            `{\"error\": {\"code\", \"message\", \"field\"?}}`; an unknown \
            route is 404 `not_found` and a known route with another method is 405 \
            `method_not_allowed`.",
    ),
    modifiers(&AdminSecurity),
    tags(
        (name = "identity", description = "Identifying checkouts."),
        (name = "admin", description = "Routes that read or change any customer's rows or \
            identities: behind the admin token when one is set."),
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

/// The schema name of [`super::answer::IdentifiedContact`] in `components.schemas`.
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
