//! The caller's bearer token, as far as the gateway is concerned: its shape only.
//!
//! The gateway holds no tokens and decides no authorization; the agent maps the token to a
//! guest. What is checked here is that an `Authorization: Bearer <token>` header exists and
//! that the token has the shape the agent mints (`felhom_proto::guest_token`), so an obviously
//! unauthenticated request is answered 401 without a gRPC call; a token of another shape gets
//! the same answer as an unknown one. The token never appears in Debug output, logs or errors; the rate limiter keys
//! on its SHA-256 ([`BearerToken::fingerprint`]).

use http::HeaderMap;
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataValue;

/// Longest token accepted; the agent mints 256-bit tokens (43–64 characters in any encoding),
/// so this leaves generous room without letting a header carry arbitrary payloads upstream.
pub const MAX_TOKEN_LEN: usize = 512;

/// A syntactically valid bearer token (RFC 6750 `b64token`).
#[derive(Clone)]
pub struct BearerToken(String);

/// Why a request carries no usable token; the text is what the caller sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing Authorization header")]
    Missing,
    #[error("malformed Authorization header: expected 'Bearer <token>'")]
    Malformed,
    /// A well-formed header whose token cannot be one the agent minted; worded as the agent
    /// words an unknown token, so the two are indistinguishable.
    #[error("unknown or revoked token")]
    UnknownToken,
}

impl BearerToken {
    /// Extracts the token from the request's headers. Exactly one `Authorization` header, scheme
    /// `Bearer` (case-insensitive, RFC 7235), one space, then 1–512 `b64token` characters
    /// ([`AuthError::Malformed`] otherwise), of a guest token's shape
    /// ([`AuthError::UnknownToken`] otherwise).
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AuthError> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let text = value.to_str().map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || !is_b64token(token) {
            return Err(AuthError::Malformed);
        }
        if !felhom_proto::guest_token::is_well_formed(token) {
            return Err(AuthError::UnknownToken);
        }
        Ok(Self(token.to_owned()))
    }

    /// SHA-256 of the token: a stable key that reveals nothing about it.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The gRPC `authorization` metadata value, `Bearer <token>`.
    pub(crate) fn metadata_value(&self) -> MetadataValue<tonic::metadata::Ascii> {
        // b64token characters are visible ASCII, which is always valid metadata.
        MetadataValue::try_from(format!("Bearer {}", self.0))
            .expect("b64token characters are valid ASCII metadata")
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// RFC 6750: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(value: &str) -> Result<BearerToken, AuthError> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        BearerToken::from_headers(&h)
    }

    const TOKEN: &str = "fhg_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";

    #[test]
    fn bearer_token_is_accepted_in_any_scheme_case() {
        assert_eq!(parse(&format!("Bearer {TOKEN}")).unwrap().0, TOKEN);
        assert_eq!(parse(&format!("bEaReR {TOKEN}")).unwrap().0, TOKEN);
    }

    #[test]
    fn a_token_not_of_the_minted_shape_is_unknown() {
        for other in [
            "abc-DEF_1.2~3+4/5==",
            "xyz",
            &TOKEN[..TOKEN.len() - 1],
            &format!("{TOKEN}0"),
            &TOKEN.replace("fhg_", "fhx_"),
            &TOKEN.replace('a', "."),
        ] {
            assert_eq!(
                parse(&format!("Bearer {other}")).unwrap_err(),
                AuthError::UnknownToken,
                "{other}"
            );
        }
    }

    #[test]
    fn missing_header_is_missing() {
        assert_eq!(
            BearerToken::from_headers(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
    }

    #[test]
    fn malformed_headers_are_malformed() {
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer  two-spaces",
            "Bearer a b",
            "Bearer ===",
            "Bearer tok\"en",
            "garbage",
        ] {
            assert_eq!(parse(bad).unwrap_err(), AuthError::Malformed, "{bad}");
        }
        assert_eq!(
            parse(&format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1))).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn two_authorization_headers_are_malformed() {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(
            BearerToken::from_headers(&h).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let t = parse(&format!("Bearer {TOKEN}")).unwrap();
        assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");
    }
}
