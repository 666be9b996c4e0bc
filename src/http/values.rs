//! The body of the routes that block values (`POST /identities/{contactId}/split`,
//! `POST|DELETE /admin/blocked-values`; docs/behaviour.md §10): lists of emails and phone
//! numbers, normalized as `/identify` normalizes its values (§4).

use axum::extract::Request;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::identify::{PhoneNumberInput, read_json_body};
use super::state::AppState;
use crate::contact::ValidationError;
use crate::event::BlockedValues;

/// Emails and phone numbers to block or unblock. Unknown keys are refused (a misspelt key
/// would otherwise block nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"emails": [], "phoneNumbers": ["0000000000"]}))]
pub struct ValuesBody {
    /// Emails, as `/identify` takes them.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Phone numbers, as `/identify` takes them (text or non-negative integers).
    #[serde(default)]
    pub phone_numbers: Vec<PhoneNumberInput>,
}

/// The run-time blocked values as the admin routes answer them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValuesList {
    /// Normalized emails, sorted.
    pub emails: Vec<String>,
    /// Normalized phone numbers, sorted.
    pub phone_numbers: Vec<String>,
}

impl From<&BlockedValues> for ValuesList {
    fn from(values: &BlockedValues) -> Self {
        ValuesList {
            emails: values.emails.iter().map(|e| e.to_string()).collect(),
            phone_numbers: values.phones.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Reads and validates a [`ValuesBody`] from `req` under the body limit.
///
/// # Errors
/// `415 unsupported_media_type` unless the body is declared JSON in UTF-8; `413` past
/// `--max-body-bytes`; `400 invalid_json` for a body that is not such an object (unknown keys
/// included); `400 invalid_email` / `invalid_phone_number` (with `field`) for a value
/// `/identify` would refuse or an empty one; `400 missing_values` when both lists are empty.
pub(crate) async fn read_values(app: &AppState, req: Request) -> Result<BlockedValues, ApiError> {
    let bytes = read_json_body(req, app.options.max_body_bytes).await?;
    let body: ValuesBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "request body must be {{\"emails\": [...], \"phoneNumbers\": [...]}}: {}",
                e
            ),
        )
    })?;
    Ok(normalize(body, app)?)
}

/// The body's values, normalized (docs/behaviour.md §4) and deduplicated.
fn normalize(body: ValuesBody, app: &AppState) -> Result<BlockedValues, ValidationError> {
    let normalizer = app.normalizer();
    let empty = |field: &'static str, code: &'static str| {
        ValidationError::new(
            code,
            format!("{field} must not hold empty values"),
            Some(field),
        )
    };
    let mut values = BlockedValues::default();
    for raw in body.emails {
        let email = normalizer.email(&raw)?;
        values
            .emails
            .push(email.ok_or_else(|| empty("emails", "invalid_email"))?);
    }
    for raw in body.phone_numbers {
        let phone = match raw {
            PhoneNumberInput::Text(text) => normalizer.phone(&text)?,
            PhoneNumberInput::Digits(n) => Some(normalizer.phone_from_u64(n)?),
        };
        values
            .phones
            .push(phone.ok_or_else(|| empty("phoneNumbers", "invalid_phone_number"))?);
    }
    if values.is_empty() {
        return Err(ValidationError::new(
            "missing_values",
            "give at least one value in emails or phoneNumbers",
            None,
        ));
    }
    Ok(values.normalized())
}
