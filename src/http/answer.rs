//! The JSON of a consolidated identity: `/identify`'s answer (docs/behaviour.md §3 step 5), also
//! served by
//! `GET /identities` and, with the identity's rows, `GET /identities/{contactId}`.
//!
//! [`IdentifyAnswer`] is what the handlers serialize: borrowed from the store's owned
//! [`Identity`], so it is rendered after the store's locks are released. [`IdentifyResponse`]
//! and [`IdentifiedContact`] are the same shape, owned, for the OpenAPI document and for
//! clients that parse answers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::options::ResponseKey;
use crate::contact::{ContactId, ContactRow, Email, Phone};
use crate::graph::Identity;

/// An identity answer, ready for serde: `{"contact": {"primaryContactId", "emails",
/// "phoneNumbers", "secondaryContactIds"}}` in that key order, the primary id's key spelled as
/// the [`ResponseKey`] says (`primaryContatctId` instead of `primaryContactId`, or both, the
/// default spelling first), and with [`IdentifyAnswer::with_rows`] a `"rows"` member after
/// `"contact"`. Serializing it cannot fail (every part is a string, a number or a row).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IdentifyAnswer<'a> {
    contact: AnswerContact<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<&'a [ContactRow]>,
}

/// The `contact` member of an [`IdentifyAnswer`]: alone, an identity of a split's answer.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerContact<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_contact_id: Option<ContactId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_contatct_id: Option<ContactId>,
    emails: &'a [Email],
    phone_numbers: &'a [Phone],
    secondary_contact_ids: &'a [ContactId],
}

impl<'a> IdentifyAnswer<'a> {
    /// The answer of `identity` (docs/behaviour.md §3 step 5) with the primary id under `key`.
    pub fn new(identity: &'a Identity, key: ResponseKey) -> IdentifyAnswer<'a> {
        let id = identity.primary_contact_id;
        let (default, original) = match key {
            ResponseKey::PrimaryContactId => (Some(id), None),
            ResponseKey::PrimaryContatctId => (None, Some(id)),
            ResponseKey::Both => (Some(id), Some(id)),
        };
        IdentifyAnswer {
            contact: AnswerContact {
                primary_contact_id: default,
                primary_contatct_id: original,
                emails: &identity.emails,
                phone_numbers: &identity.phone_numbers,
                secondary_contact_ids: &identity.secondary_contact_ids,
            },
            rows: None,
        }
    }

    /// The `contact` member alone (docs/behaviour.md §10: a split answers its identities in
    /// this shape).
    pub fn contact(self) -> AnswerContact<'a> {
        self.contact
    }

    /// The same answer followed by `"rows": [...]`, every row of the identity
    /// (`GET /identities/{contactId}`).
    pub fn with_rows(self, rows: &'a [ContactRow]) -> IdentifyAnswer<'a> {
        IdentifyAnswer {
            rows: Some(rows),
            ..self
        }
    }
}

/// The `200` answer of `POST /identify` (docs/behaviour.md §3 step 5): `{"contact": {...}}`.
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

/// A consolidated identity (docs/behaviour.md §3 step 5).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{LinkPrecedence, Timestamp};

    const KEYS: [ResponseKey; 3] = [
        ResponseKey::PrimaryContactId,
        ResponseKey::PrimaryContatctId,
        ResponseKey::Both,
    ];

    /// An identity whose values are taken as stored, unchecked.
    fn owned(emails: &[&str], phones: &[&str], secondaries: &[ContactId]) -> Identity {
        Identity {
            primary_contact_id: 1,
            emails: emails.iter().map(|e| Email::from_stored(e)).collect(),
            phone_numbers: phones.iter().map(|p| Phone::from_stored(p)).collect(),
            secondary_contact_ids: secondaries.to_vec(),
        }
    }

    /// The exact bytes: keys in the documented order, the configured spelling(s), values
    /// escaped as JSON strings, `rows` last.
    #[test]
    fn answers_have_the_documented_bytes_for_every_key_spelling() {
        let identity = owned(
            &["lorraine@hillvalley.edu", "a\"b\\c\u{1}é"],
            &["123456"],
            &[23, 24],
        );
        let rest = r#""emails":["lorraine@hillvalley.edu","a\"b\\c\u0001é"],"phoneNumbers":["123456"],"secondaryContactIds":[23,24]}"#;
        let keys = [
            r#""primaryContactId":1,"#,
            r#""primaryContatctId":1,"#,
            r#""primaryContactId":1,"primaryContatctId":1,"#,
        ];
        for (key, spelled) in KEYS.into_iter().zip(keys) {
            let answer = IdentifyAnswer::new(&identity, key);
            let json = serde_json::to_string(&answer).unwrap();
            assert_eq!(json, format!(r#"{{"contact":{{{spelled}{rest}}}"#));
        }
        let row = ContactRow {
            id: 23,
            phone_number: None,
            email: Some(Email::from_stored("x@y.z")),
            linked_id: Some(1),
            link_precedence: LinkPrecedence::Secondary,
            created_at: Timestamp(5),
            updated_at: Timestamp(6),
            deleted_at: None,
        };
        let rows = std::slice::from_ref(&row);
        let answer = IdentifyAnswer::new(&identity, ResponseKey::PrimaryContactId).with_rows(rows);
        let json = serde_json::to_string(&answer).unwrap();
        let rows = serde_json::to_string(rows).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"contact":{{{}{rest},"rows":{rows}}}"#, keys[0])
        );
        let mut empty = owned(&[], &[], &[]);
        empty.primary_contact_id = 7;
        assert_eq!(
            serde_json::to_string(&IdentifyAnswer::new(&empty, ResponseKey::PrimaryContactId))
                .unwrap(),
            r#"{"contact":{"primaryContactId":7,"emails":[],"phoneNumbers":[],"secondaryContactIds":[]}}"#
        );
    }

    #[test]
    fn rendered_answers_fit_the_documentation_shape() {
        let identity = owned(&["a@b.c"], &["1"], &[2]);
        for key in KEYS {
            let text = serde_json::to_vec(&IdentifyAnswer::new(&identity, key)).unwrap();
            let parsed: IdentifyResponse = serde_json::from_slice(&text).unwrap();
            let id = Some(1);
            let (default, original) = match key {
                ResponseKey::PrimaryContactId => (id, None),
                ResponseKey::PrimaryContatctId => (None, id),
                ResponseKey::Both => (id, id),
            };
            assert_eq!(parsed.contact.primary_contact_id, default);
            assert_eq!(parsed.contact.primary_contatct_id, original);
            assert_eq!(parsed.contact.emails, ["a@b.c"]);
            assert_eq!(parsed.contact.phone_numbers, ["1"]);
            assert_eq!(parsed.contact.secondary_contact_ids, vec![2]);
        }
    }
}
