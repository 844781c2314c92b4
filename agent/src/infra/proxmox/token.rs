//! Proxmox API tokens, one type for both products.
//!
//! A token is `<user>@<realm>!<tokenid><sep><secret>` and travels as
//! `Authorization: <scheme>=<user>@<realm>!<tokenid><sep><secret>`, where the product picks the
//! separator and scheme ([`Product::SECRET_SEPARATOR`], [`Product::TOKEN_SCHEME`]): PVE uses `=`
//! and `PVEAPIToken`, PBS `:` and `PBSAPIToken` (confirmed in proxmox-backup's auth code: the
//! value after `PBSAPIToken=` is split once at the first `:`). The secret never leaves this type
//! except into that header (which the HTTP core marks sensitive so HTTP tooling will not log
//! it); `Debug` and `Display` show only the authid.

use std::fmt;
use std::marker::PhantomData;

use secrecy::{ExposeSecret, SecretString};

use super::Product;

/// A Proxmox API token of product `P`: public authid plus secret.
pub struct ApiToken<P> {
    authid: String,
    secret: SecretString,
    // `fn() -> P`: the token neither owns nor shares a `P`, so it is `Send + Sync` regardless.
    product: PhantomData<fn() -> P>,
}

/// What is wrong with a token's text. Product-neutral (and never holding the secret); each
/// product converts it into its own, worded error ([`Product::TokenError`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenShape {
    #[error("no separator between authid and secret")]
    Shape,
    #[error("malformed authid '{0}'")]
    AuthId(String),
    #[error("empty secret")]
    EmptySecret,
    #[error("whitespace or control characters")]
    Characters,
}

impl<P: Product> ApiToken<P> {
    /// Parses `user@realm!tokenid<sep>secret` (surrounding whitespace, as left by `echo` into a
    /// credential file, is trimmed). The authid holds no separator, so the first one ends it.
    pub fn parse(text: &str) -> Result<Self, P::TokenError> {
        let (authid, secret) = split_token(text, P::SECRET_SEPARATOR)?;
        Ok(Self {
            authid,
            secret,
            product: PhantomData,
        })
    }

    /// `user@realm!tokenid`: who the token acts as (on PBS also the owner it records). Not
    /// secret.
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// The value of the `Authorization` header.
    pub(crate) fn header_value(&self) -> SecretString {
        SecretString::from(format!(
            "{}={}{}{}",
            P::TOKEN_SCHEME,
            self.authid,
            P::SECRET_SEPARATOR,
            self.secret.expose_secret()
        ))
    }
}

/// Splits `user@realm!tokenid<sep>secret` (trimmed) into a validated authid and the secret.
fn split_token(text: &str, sep: char) -> Result<(String, SecretString), TokenShape> {
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

// Written out rather than derived: a derive would demand `P: Clone`/`P: Debug` of the marker.
impl<P> Clone for ApiToken<P> {
    fn clone(&self) -> Self {
        Self {
            authid: self.authid.clone(),
            secret: self.secret.clone(),
            product: PhantomData,
        }
    }
}

impl<P: Product> fmt::Debug for ApiToken<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(P::TOKEN_TYPE)
            .field("authid", &self.authid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl<P: Product> fmt::Display for ApiToken<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}<redacted>", self.authid, P::SECRET_SEPARATOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_separator_ends_the_authid() {
        let (authid, secret) = split_token(" a@pve!t:x:y\n", ':').unwrap();
        assert_eq!(authid, "a@pve!t");
        assert_eq!(secret.expose_secret(), "x:y");
    }

    #[test]
    fn shape_errors_never_hold_the_secret() {
        for text in ["a@pve!t=", "a@pve=s3cr3t", "a@pve!t=s3 cr3t", "s3cr3t"] {
            let err = split_token(text, '=').unwrap_err();
            assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
        }
    }
}
