//! Settings of the HTTP layer: [`HttpOptions`] and the answer key spelling [`ResponseKey`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::auth::AdminToken;
use crate::phone_region::Normalizer;

/// The key under which `/identify` names the primary id (docs/behaviour.md §3: clients in the
/// wild use both spellings). Written and parsed ([`FromStr`], [`fmt::Display`]) as `primaryContactId`,
/// `primaryContatctId` or `both`, the values of `--response-key`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseKey {
    /// `primaryContactId` (the default).
    #[default]
    PrimaryContactId,
    /// `primaryContatctId`, the original task statement's spelling.
    PrimaryContatctId,
    /// Both keys, same value.
    Both,
}

impl ResponseKey {
    /// Every spelling, the default first.
    pub const ALL: [ResponseKey; 3] = [
        ResponseKey::PrimaryContactId,
        ResponseKey::PrimaryContatctId,
        ResponseKey::Both,
    ];

    /// `primaryContactId`, `primaryContatctId` or `both`: the name of this setting.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKey::PrimaryContactId => "primaryContactId",
            ResponseKey::PrimaryContatctId => "primaryContatctId",
            ResponseKey::Both => "both",
        }
    }
}

impl fmt::Display for ResponseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no [`ResponseKey`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown response key {0:?}: expected primaryContactId, primaryContatctId or both")]
pub struct UnknownResponseKey(pub String);

impl FromStr for ResponseKey {
    type Err = UnknownResponseKey;

    /// The key named exactly (case-sensitive) `primaryContactId`, `primaryContatctId` or
    /// `both`.
    ///
    /// # Errors
    /// [`UnknownResponseKey`] for any other text.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ResponseKey::ALL
            .into_iter()
            .find(|key| key.as_str() == text)
            .ok_or_else(|| UnknownResponseKey(text.to_owned()))
    }
}

/// Settings of the HTTP layer.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Spelling of the primary id key in `/identify` answers.
    pub response_key: ResponseKey,
    /// Largest accepted request body, in bytes (docs/behaviour.md §4: 16 KiB default → `413`
    /// above).
    pub max_body_bytes: usize,
    /// Time a request may take, body reading included, before it is answered `408`.
    pub request_timeout: Duration,
    /// Time a connection may take to deliver a complete request head, idle keep-alive time
    /// included, or leave a pending answer unread, before it is closed (see [`super::server`]).
    pub idle_timeout: Duration,
    /// Most connections open at once; one accepted beyond them is closed at once
    /// (`--max-connections`, docs/behaviour.md §7; see [`super::server`]).
    pub max_connections: usize,
    /// Whether the debug-level `/identify decision` log line may include the request's email
    /// and phone number (`--log-pii`); without it they never appear in logs.
    pub log_pii: bool,
    /// When set, admin routes (every route reading or changing rows or identities,
    /// docs/behaviour.md §6.12) need `Authorization: Bearer <token>`; when unset they are open
    /// (see [`super::auth`]).
    pub admin_token: Option<AdminToken>,
    /// How `/identify` values (and those of any other handler that takes an email or phone
    /// number) are normalized: docs/behaviour.md §4 by default, E.164 phones with `--phone-region`.
    pub normalizer: Normalizer,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            response_key: ResponseKey::PrimaryContactId,
            max_body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            log_pii: false,
            admin_token: None,
            normalizer: Normalizer::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_keys_parse_their_own_names_only() {
        for key in ResponseKey::ALL {
            assert_eq!(key.to_string().parse::<ResponseKey>(), Ok(key));
        }
        assert_eq!(ResponseKey::ALL[0], ResponseKey::default());
        for other in ["", "Both", "primarycontactid", "primaryContactId "] {
            assert!(other.parse::<ResponseKey>().is_err(), "{other:?}");
        }
    }
}
