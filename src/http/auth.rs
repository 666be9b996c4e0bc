//! The admin guard (docs/behaviour.md §6.12): routes that reveal or change rows or identities by
//! id or in bulk (a single row, the `GET /contacts` listing, lookup, identities and their
//! history, deletion, erasure, compaction) live on an "admin" sub-router, and [`guard`] wraps that sub-router in a layer
//! that demands `Authorization: Bearer <token>` whenever an admin token is configured
//! (`--admin-token`, `IDRECON_ADMIN_TOKEN`).
//!
//! A missing or wrong token gets `401` with `WWW-Authenticate: Bearer realm="idrecon"` (RFC 6750
//! §3) and the usual JSON error body with code `unauthorized`. Tokens are compared in constant
//! time (`subtle`), so the time of a refusal does not tell how many leading bytes were right.
//! Without a configured token the guard lets every request through; `serve` refuses that on a
//! non-loopback address unless `--insecure-admin` is given (see `src/cli/serve.rs`).

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;

/// The name of the admin security scheme in the OpenAPI document (`components.securitySchemes`).
pub const SECURITY_SCHEME: &str = "admin_token";

/// A configured admin bearer token. Its `Debug` output is redacted, so the token never reaches a
/// log line through `{:?}` of the options that hold it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

/// Why a text is not an acceptable admin token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    /// Empty or only whitespace: it would protect nothing.
    #[error("the admin token must not be empty")]
    Empty,
    /// Contains a character that cannot appear in an `Authorization` header value (a control
    /// character, a space, or non-ASCII), so no client could ever present it.
    #[error("the admin token must be printable ASCII without spaces (RFC 6750 b64token)")]
    NotSendable,
}

impl AdminToken {
    /// Accepts `text` as an admin token.
    ///
    /// # Errors
    /// [`AdminTokenError::Empty`] for an empty or blank text, [`AdminTokenError::NotSendable`]
    /// for one with spaces, control characters or non-ASCII characters.
    pub fn new(text: &str) -> Result<AdminToken, AdminTokenError> {
        if text.trim().is_empty() {
            return Err(AdminTokenError::Empty);
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminTokenError::NotSendable);
        }
        Ok(AdminToken(Arc::from(text)))
    }

    /// Whether `presented` equals this token. The comparison takes the same time whatever the
    /// content of `presented`; only a difference in length returns early (the length of a token
    /// is not a secret worth protecting, its bytes are).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The token's text, for a client that presents it (a cluster member to the others);
    /// never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl std::str::FromStr for AdminToken {
    type Err = AdminTokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AdminToken::new(text)
    }
}

/// Wraps every route of `router` in the admin guard: with `token` set, a request must carry
/// `Authorization: Bearer <token>` (scheme name case-insensitive) or is answered `401`
/// `unauthorized` without reaching the handler; with `token` unset, requests pass unchanged.
///
/// Apply it to a sub-router holding only admin routes, then merge that into the main router; the
/// layer covers exactly the routes present when it is applied.
pub fn guard<S>(router: OpenApiRouter<S>, token: Option<AdminToken>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(middleware::from_fn_with_state(token, require_admin))
}

pub(crate) async fn require_admin(
    State(token): State<Option<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| bearer_token(value.as_bytes()));
    match presented {
        Some(Some(presented)) if token.matches(presented) => next.run(request).await,
        Some(_) => unauthorized(
            "the admin token is wrong",
            r#"Bearer realm="idrecon", error="invalid_token""#,
        ),
        None => unauthorized(
            "this route needs the admin token: Authorization: Bearer <token>",
            r#"Bearer realm="idrecon""#,
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` value, or `None` for another scheme.
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

fn unauthorized(message: &'static str, challenge: &'static str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_compared() {
        assert_eq!(AdminToken::new(""), Err(AdminTokenError::Empty));
        assert_eq!(AdminToken::new("  "), Err(AdminTokenError::Empty));
        assert_eq!(AdminToken::new("a b"), Err(AdminTokenError::NotSendable));
        assert_eq!(AdminToken::new("tök"), Err(AdminTokenError::NotSendable));
        let token = AdminToken::new("s3cret-token").unwrap();
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn bearer_values_are_parsed() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }
}
