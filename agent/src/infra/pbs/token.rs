//! Proxmox Backup Server API tokens, and the [`Pbs`] product marker of the shared HTTP core.
//!
//! A PBS token is `<user>@<realm>!<tokenname>:<secret>` — a colon before the secret, where PVE
//! uses `=`. The header is `Authorization: PBSAPIToken=<user>@<realm>!<tokenname>:<secret>`
//! (confirmed in proxmox-backup's auth code: the header value after `PBSAPIToken=` is split once
//! at the first `:` into token id and secret, the secret percent-decoded). The token type is the
//! shared [`proxmox::ApiToken`]; this module gives it PBS's separator, scheme and error texts.
//! The secret never leaves the token except into that header, which the client marks
//! sensitive; `Debug` and `Display` show only the authid.

use super::error::PbsError;
use crate::infra::proxmox::{self, Product, TokenShape};

/// A PBS API token: public authid plus secret.
pub type PbsToken = proxmox::ApiToken<Pbs>;

/// Proxmox Backup Server, as the shared HTTP core sees it.
#[derive(Debug, Clone, Copy)]
pub struct Pbs;

impl Product for Pbs {
    const TOKEN_TYPE: &'static str = "PbsToken";
    const TOKEN_SCHEME: &'static str = "PBSAPIToken";
    const SECRET_SEPARATOR: char = ':';
    const TOKEN_LABEL: &'static str = "PBS token";
    const TASK_NOUN: &'static str = "PBS task";
    type TokenError = PbsTokenError;
    type Error = PbsError;

    fn is_transient(error: &PbsError) -> bool {
        error.is_transient()
    }
}

/// Why a string is not a usable PBS token. Never includes the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PbsTokenError {
    #[error("PBS token must look like 'user@realm!tokenname:secret'")]
    Shape,
    #[error("PBS token authid '{0}' is not of the form 'user@realm!tokenname'")]
    AuthId(String),
    #[error("PBS token secret is empty")]
    EmptySecret,
    #[error("PBS token contains whitespace or control characters")]
    Characters,
}

impl From<TokenShape> for PbsTokenError {
    fn from(shape: TokenShape) -> Self {
        match shape {
            TokenShape::Shape => PbsTokenError::Shape,
            TokenShape::AuthId(a) => PbsTokenError::AuthId(a),
            TokenShape::EmptySecret => PbsTokenError::EmptySecret,
            TokenShape::Characters => PbsTokenError::Characters,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const SECRET: &str = "0f2d7c1e-6b5a-4e3d-8c2b-1a0f9e8d7c6b";

    #[test]
    fn parses_a_token_and_builds_the_pbs_header() {
        let t = PbsToken::parse(&format!("felhom@pbs!agent:{SECRET}\n")).unwrap();
        assert_eq!(t.authid(), "felhom@pbs!agent");
        assert_eq!(
            t.header_value().expose_secret(),
            format!("PBSAPIToken=felhom@pbs!agent:{SECRET}")
        );
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = PbsToken::parse(&format!("felhom@pbs!agent:{SECRET}")).unwrap();
        for shown in [format!("{t:?}"), format!("{t}"), format!("{t:#?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("felhom@pbs!agent"), "{shown}");
        }
    }

    #[test]
    fn a_pve_style_token_is_refused_without_echoing_the_secret() {
        let err = PbsToken::parse("felhom@pbs!agent=s3cr3t").unwrap_err();
        assert_eq!(err, PbsTokenError::Shape);
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn rejects_malformed_tokens_naming_the_problem() {
        let cases = [
            ("felhom@pbs!agent:", PbsTokenError::EmptySecret),
            (
                "felhom@pbs:s3cr3t",
                PbsTokenError::AuthId("felhom@pbs".into()),
            ),
            (
                "felhom!agent:s3cr3t",
                PbsTokenError::AuthId("felhom!agent".into()),
            ),
            (
                "@pbs!agent:s3cr3t",
                PbsTokenError::AuthId("@pbs!agent".into()),
            ),
            ("felhom@pbs!agent:s3 cr3t", PbsTokenError::Characters),
        ];
        for (text, want) in cases {
            let err = PbsToken::parse(text).unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
            assert_eq!(err, want, "{text}");
        }
    }
}
