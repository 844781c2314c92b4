//! `felhomctl token mint|rotate|revoke --vmid N`: guest bearer tokens for the local API.
//!
//! `mint` and `rotate` print the token alone on one line of standard output (nothing else, so
//! `TOKEN=$(felhomctl token mint --vmid 101)` works); the agent keeps only its hash, so this is
//! the only time it is shown. felhomctl never logs it. `revoke` prints `revoked` or
//! `no token` (exit code 1 in the latter case, like a failed report).

use std::path::Path;

use serde_json::Value;

use super::{CtlError, RequestSource, Session};

/// One `token` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    Mint,
    Rotate,
    Revoke,
}

impl TokenAction {
    /// Every action, for the CLI.
    pub const ALL: [TokenAction; 3] = [TokenAction::Mint, TokenAction::Rotate, TokenAction::Revoke];

    /// Subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            TokenAction::Mint => "mint",
            TokenAction::Rotate => "rotate",
            TokenAction::Revoke => "revoke",
        }
    }

    /// One-line help.
    pub fn about(self) -> &'static str {
        match self {
            TokenAction::Mint => "Mint the guest's local API token and print it (shown once)",
            TokenAction::Rotate => {
                "Replace the guest's token with a new one and print it (shown once)"
            }
            TokenAction::Revoke => "Revoke the guest's token",
        }
    }

    fn method(self) -> &'static str {
        match self {
            TokenAction::Mint => "felhom.agent.v1.Agent/MintGuestToken",
            TokenAction::Rotate => "felhom.agent.v1.Agent/RotateGuestToken",
            TokenAction::Revoke => "felhom.agent.v1.Agent/RevokeGuestToken",
        }
    }

    /// The action called `name`.
    pub fn find(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What a `token` action printed, and whether it counts as success.
pub struct TokenOutput {
    /// The line to print (the token itself for mint and rotate).
    pub line: String,
    pub ok: bool,
}

impl std::fmt::Debug for TokenOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The line may be a bearer token.
        f.debug_struct("TokenOutput")
            .field("line", &"<redacted>")
            .field("ok", &self.ok)
            .finish()
    }
}

/// Runs `action` for guest `vmid` against the agent on `socket`.
pub async fn run(socket: &Path, action: TokenAction, vmid: u32) -> Result<TokenOutput, CtlError> {
    let mut session = Session::connect(socket).await?;
    let request = RequestSource::Inline(serde_json::json!({ "vmid": vmid }).to_string());
    let mut reply = None;
    session
        .call(action.method(), &request, |r| {
            reply = Some(r.clone());
            Ok(())
        })
        .await?;
    let reply = reply.unwrap_or(Value::Null);
    let field = |name: &str| CtlError::ResponseShape {
        method: action.method().to_owned(),
        field: name.to_owned(),
    };
    match action {
        TokenAction::Mint | TokenAction::Rotate => {
            let token = reply
                .get("token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| field("token"))?;
            Ok(TokenOutput {
                line: token.to_owned(),
                ok: true,
            })
        }
        TokenAction::Revoke => {
            let revoked = reply
                .get("revoked")
                .and_then(Value::as_bool)
                .ok_or_else(|| field("revoked"))?;
            Ok(TokenOutput {
                line: if revoked { "revoked" } else { "no token" }.to_owned(),
                ok: revoked,
            })
        }
    }
}
