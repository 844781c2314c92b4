//! Proxmox VE API tokens, and the [`Pve`] product marker of the shared HTTP core.
//!
//! A token is `<user>@<realm>!<tokenid>=<secret>`; the header is
//! `Authorization: PVEAPIToken=<user>@<realm>!<tokenid>=<secret>`. The token type itself is the
//! shared [`proxmox::ApiToken`]; this module gives it PVE's separator, scheme and error texts.
//! The secret never leaves the token except into that header (marked sensitive so HTTP tooling
//! will not log it); `Debug` and `Display` show only the authid.

use super::error::PveError;
use crate::infra::proxmox::{self, Product, TokenShape};

/// A Proxmox VE API token: public authid plus secret.
pub type ApiToken = proxmox::ApiToken<Pve>;

/// Proxmox VE, as the shared HTTP core sees it.
#[derive(Debug, Clone, Copy)]
pub struct Pve;

impl Product for Pve {
    const TOKEN_TYPE: &'static str = "ApiToken";
    const TOKEN_SCHEME: &'static str = "PVEAPIToken";
    const SECRET_SEPARATOR: char = '=';
    const TOKEN_LABEL: &'static str = "API token";
    const TASK_NOUN: &'static str = "task";
    type TokenError = TokenError;
    type Error = PveError;

    fn is_transient(error: &PveError) -> bool {
        error.is_transient()
    }
}

/// Why a string is not a usable API token. Never includes the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("API token must look like 'user@realm!tokenid=secret'")]
    Shape,
    #[error("API token authid '{0}' is not of the form 'user@realm!tokenid'")]
    AuthId(String),
    #[error("API token secret is empty")]
    EmptySecret,
    #[error("API token contains whitespace or control characters")]
    Characters,
}

impl From<TokenShape> for TokenError {
    fn from(shape: TokenShape) -> Self {
        match shape {
            TokenShape::Shape => TokenError::Shape,
            TokenShape::AuthId(a) => TokenError::AuthId(a),
            TokenShape::EmptySecret => TokenError::EmptySecret,
            TokenShape::Characters => TokenError::Characters,
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const SECRET: &str = "8c7d2f4e-3b1a-4f6e-9d2c-5a7b8c9d0e1f";

    #[test]
    fn parses_a_privsep_token_and_builds_the_header() {
        let t = ApiToken::parse(&format!("felhom-agent@pve!agent={SECRET}\n")).unwrap();
        assert_eq!(t.authid(), "felhom-agent@pve!agent");
        assert_eq!(
            t.header_value().expose_secret(),
            format!("PVEAPIToken=felhom-agent@pve!agent={SECRET}")
        );
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let t = ApiToken::parse(&format!("felhom-agent@pve!agent={SECRET}")).unwrap();
        for shown in [format!("{t:?}"), format!("{t}"), format!("{t:#?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(shown.contains("felhom-agent@pve!agent"), "{shown}");
        }
    }

    #[test]
    fn rejects_malformed_tokens_without_echoing_the_secret() {
        let cases = [
            ("felhom-agent@pve!agent", TokenError::Shape),
            ("felhom-agent@pve!agent=", TokenError::EmptySecret),
            (
                "felhom-agent!agent=s3cr3t",
                TokenError::AuthId("felhom-agent!agent".into()),
            ),
            (
                "felhom-agent@pve=s3cr3t",
                TokenError::AuthId("felhom-agent@pve".into()),
            ),
            ("@pve!agent=s3cr3t", TokenError::AuthId("@pve!agent".into())),
            ("felhom-agent@pve!agent=s3 cr3t", TokenError::Characters),
        ];
        for (text, want) in cases {
            let err = ApiToken::parse(text).unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
            assert_eq!(err, want, "{text}");
        }
    }
}
