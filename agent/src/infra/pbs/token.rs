//! Proxmox Backup Server API tokens.
//!
//! A PBS token is `<user>@<realm>!<tokenname>:<secret>` — a colon before the secret, where PVE
//! uses `=`. The header is `Authorization: PBSAPIToken=<user>@<realm>!<tokenname>:<secret>`
//! (confirmed in proxmox-backup's auth code: the header value after `PBSAPIToken=` is split once
//! at the first `:` into token id and secret, the secret percent-decoded). The secret never
//! leaves this type except into that header, which the client marks sensitive; `Debug` and
//! `Display` show only the authid.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::infra::pve::token::{TokenShape, split_token};

/// A PBS API token: public authid plus secret.
#[derive(Clone)]
pub struct PbsToken {
    authid: String,
    secret: SecretString,
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

impl PbsToken {
    /// Parses `user@realm!tokenname:secret` (surrounding whitespace, as left by `echo` into a
    /// credential file, is trimmed). The authid holds no `:`, so the first colon ends it.
    pub fn parse(text: &str) -> Result<Self, PbsTokenError> {
        let (authid, secret) = split_token(text, ':').map_err(|e| match e {
            TokenShape::Shape => PbsTokenError::Shape,
            TokenShape::AuthId(a) => PbsTokenError::AuthId(a),
            TokenShape::EmptySecret => PbsTokenError::EmptySecret,
            TokenShape::Characters => PbsTokenError::Characters,
        })?;
        Ok(Self { authid, secret })
    }

    /// `user@realm!tokenname`: who the token acts as (and the owner PBS records). Not secret.
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// The value of the `Authorization` header for PBS.
    pub(crate) fn header_value(&self) -> SecretString {
        SecretString::from(format!(
            "PBSAPIToken={}:{}",
            self.authid,
            self.secret.expose_secret()
        ))
    }
}

impl fmt::Debug for PbsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PbsToken")
            .field("authid", &self.authid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for PbsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:<redacted>", self.authid)
    }
}

#[cfg(test)]
mod tests {
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
