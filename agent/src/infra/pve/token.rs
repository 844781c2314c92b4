//! Proxmox VE API tokens.
//!
//! A token is `<user>@<realm>!<tokenid>=<secret>`; the header is
//! `Authorization: PVEAPIToken=<user>@<realm>!<tokenid>=<secret>`. The secret never leaves this
//! type except into that header (marked sensitive so HTTP tooling will not log it); `Debug` and
//! `Display` show only the authid.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A Proxmox VE API token: public authid plus secret.
#[derive(Clone)]
pub struct ApiToken {
    authid: String,
    secret: SecretString,
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

impl ApiToken {
    /// Parses `user@realm!tokenid=secret` (surrounding whitespace, as left by `echo` into a
    /// credential file, is trimmed).
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let (authid, secret) = split_token(text, '=').map_err(|e| match e {
            TokenShape::Shape => TokenError::Shape,
            TokenShape::AuthId(a) => TokenError::AuthId(a),
            TokenShape::EmptySecret => TokenError::EmptySecret,
            TokenShape::Characters => TokenError::Characters,
        })?;
        Ok(Self { authid, secret })
    }

    /// `user@realm!tokenid`: who the token acts as. Not secret.
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// The value of the `Authorization` header for PVE.
    pub(crate) fn header_value(&self) -> SecretString {
        SecretString::from(format!(
            "PVEAPIToken={}={}",
            self.authid,
            self.secret.expose_secret()
        ))
    }
}

/// What is wrong with a token's text (PVE and PBS tokens share the shape but not the separator;
/// each token type words its own error).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenShape {
    Shape,
    AuthId(String),
    EmptySecret,
    Characters,
}

/// Splits `user@realm!tokenid<sep>secret` (trimmed) into a validated authid and the secret.
pub(crate) fn split_token(text: &str, sep: char) -> Result<(String, SecretString), TokenShape> {
    let text = text.trim();
    let (authid, secret) = text.split_once(sep).ok_or(TokenShape::Shape)?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenShape::Characters);
    }
    let bad = || TokenShape::AuthId(authid.to_owned());
    let (user_realm, tokenid) = authid.split_once('!').ok_or_else(bad)?;
    let (user, realm) = user_realm.split_once('@').ok_or_else(bad)?;
    if user.is_empty()
        || realm.is_empty()
        || realm.contains('@')
        || tokenid.is_empty()
        || tokenid.contains('!')
    {
        return Err(bad());
    }
    if secret.is_empty() {
        return Err(TokenShape::EmptySecret);
    }
    Ok((authid.to_owned(), SecretString::from(secret.to_owned())))
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("authid", &self.authid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<redacted>", self.authid)
    }
}

#[cfg(test)]
mod tests {
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
