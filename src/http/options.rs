//! Settings of the HTTP layer: [`HttpOptions`] and the answer key spelling [`ResponseKey`].

use std::time::Duration;

use super::auth::AdminToken;
use crate::phone_region::Normalizer;

/// The key under which `/identify` names the primary id (SPEC.md §3: clients in the wild use
/// both spellings).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
pub enum ResponseKey {
    /// `primaryContactId` (the default).
    #[default]
    #[value(name = "primaryContactId")]
    #[serde(rename = "primaryContactId")]
    PrimaryContactId,
    /// `primaryContatctId`, the original task statement's spelling.
    #[value(name = "primaryContatctId")]
    #[serde(rename = "primaryContatctId")]
    PrimaryContatctId,
    /// Both keys, same value.
    #[value(name = "both")]
    #[serde(rename = "both")]
    Both,
}

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Spelling of the primary id key in `/identify` answers.
    pub response_key: ResponseKey,
    /// Largest accepted request body, in bytes (SPEC.md §4: 16 KiB default → `413` above).
    pub max_body_bytes: usize,
    /// Time a request may take, body reading included, before it is answered `408`.
    pub request_timeout: Duration,
    /// Time a connection may take to deliver a complete request head, idle keep-alive time
    /// included, before it is closed (see [`super::server`]).
    pub idle_timeout: Duration,
    /// Whether the debug-level `/identify decision` log line may include the request's email
    /// and phone number (`--log-pii`); without it they never appear in logs.
    pub log_pii: bool,
    /// When set, admin routes (`GET /contacts`) need `Authorization: Bearer <token>`; when
    /// unset they are open (see [`super::auth`]).
    pub admin_token: Option<AdminToken>,
    /// How `/identify` values (and those of any other handler that takes an email or phone
    /// number) are normalized: SPEC.md §4 by default, E.164 phones with `--phone-region`.
    pub normalizer: Normalizer,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            response_key: ResponseKey::PrimaryContactId,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            log_pii: false,
            admin_token: None,
            normalizer: Normalizer::default(),
        }
    }
}
