//! Access: the guests' local-API tokens. Minting (only for a guest that exists), rotating,
//! revoking and listing them, audited; and turning a presented bearer token into the one guest
//! it belongs to — the only way a LocalApi caller is identified.
//!
//! Presented tokens are answered from memory ([`TokenIndex`], loaded on first use and reloaded
//! after every mint, rotate and revoke), so a flood of made-up tokens never reaches SQLite.
//! This process is the only writer of the token table (the state directory is the agent's
//! own), which is what keeps the index true.

use std::sync::Arc;

use tokio::sync::RwLock;

use crate::capabilities::records::Records;
use crate::core::{Actor, InvalidValue, Vmid};
use crate::infra::pve::{PveClient, PveError};
use crate::infra::state::{MintedToken, StateDb, TokenIndex, TokenInfo, TokensError};

/// Why a token call failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("Proxmox VE is not configured ([proxmox] endpoint)")]
    NoPve,
    #[error("vmid: {0}")]
    Invalid(InvalidValue),
    /// The guest a token was asked for cannot be confirmed to exist.
    #[error("Proxmox VE call failed")]
    Pve(#[source] PveError),
    #[error(transparent)]
    Tokens(TokensError),
    /// Unknown, revoked or malformed: all look alike to the caller.
    #[error("unknown or revoked token")]
    UnknownToken,
    /// A stored token names a vmid that is not valid (a corrupt row).
    #[error("token belongs to an invalid vmid")]
    CorruptOwner(#[source] InvalidValue),
}

/// How a guest token is issued.
#[derive(Debug, Clone, Copy)]
enum Issue {
    /// First token of a guest (fails if it has one).
    Mint,
    /// Replaces the guest's token; the old one stops working.
    Rotate,
}

/// The access capability.
#[derive(Debug, Clone)]
pub struct GuestTokens {
    db: StateDb,
    pve: Option<PveClient>,
    records: Records,
    /// The token hashes in memory; `None` until first needed and after a change.
    index: Arc<RwLock<Option<Arc<TokenIndex>>>>,
}

impl GuestTokens {
    pub fn new(db: StateDb, pve: Option<PveClient>, records: Records) -> Self {
        Self {
            db,
            pve,
            records,
            index: Arc::default(),
        }
    }

    /// The guest `token` belongs to, answered from memory.
    pub async fn authenticate(&self, token: String) -> Result<Vmid, AccessError> {
        let index = self.index().await.map_err(AccessError::Tokens)?;
        let owner = match index.lookup(&token) {
            Ok(Some(owner)) => owner,
            Ok(None) | Err(TokensError::Malformed) => return Err(AccessError::UnknownToken),
            Err(
                e @ (TokensError::Sqlite(_)
                | TokensError::Interrupted(_)
                | TokensError::InvalidField(_)
                | TokensError::AlreadyMinted { .. }
                | TokensError::NoToken { .. }
                | TokensError::Entropy(_)
                | TokensError::Audit(_)),
            ) => return Err(AccessError::Tokens(e)),
        };
        Vmid::new(owner.vmid).map_err(AccessError::CorruptOwner)
    }

    /// The current index, loading it when there is none (one load however many callers wait).
    async fn index(&self) -> Result<Arc<TokenIndex>, TokensError> {
        if let Some(index) = self.index.read().await.as_ref() {
            return Ok(index.clone());
        }
        let mut slot = self.index.write().await;
        if let Some(index) = slot.as_ref() {
            return Ok(index.clone());
        }
        let index = Arc::new(self.db.run(|db| db.tokens().index()).await?);
        *slot = Some(index.clone());
        Ok(index)
    }

    /// Drops the index after a change; the next caller loads the new table.
    async fn invalidate(&self) {
        *self.index.write().await = None;
    }

    /// Mints a guest's first token; the guest must exist (a token for a guest that does not
    /// would be a dangling credential).
    pub async fn mint(&self, actor: Actor, vmid: u32) -> Result<MintedToken, AccessError> {
        let vmid = Vmid::new(vmid).map_err(AccessError::Invalid)?;
        let pve = self.pve.as_ref().ok_or(AccessError::NoPve)?;
        pve.lxc_status(vmid).await.map_err(AccessError::Pve)?;
        self.issue(actor, vmid, Issue::Mint).await
    }

    /// Replaces a guest's token.
    pub async fn rotate(&self, actor: Actor, vmid: u32) -> Result<MintedToken, AccessError> {
        let vmid = Vmid::new(vmid).map_err(AccessError::Invalid)?;
        self.issue(actor, vmid, Issue::Rotate).await
    }

    /// Revokes a guest's token; `false` when it had none.
    pub async fn revoke(&self, actor: Actor, vmid: u32) -> Result<bool, AccessError> {
        let vmid = Vmid::new(vmid).map_err(AccessError::Invalid)?;
        let revoked = self
            .db
            .run(move |db| db.tokens().revoke(vmid.get()))
            .await
            .map_err(AccessError::Tokens)?;
        self.invalidate().await;
        if revoked {
            self.records
                .audit(
                    actor,
                    "token.revoke",
                    format!("guest:{vmid}"),
                    String::new(),
                )
                .await;
        }
        Ok(revoked)
    }

    /// Every guest's token id (never the token).
    pub async fn list(&self) -> Result<Vec<TokenInfo>, AccessError> {
        self.db
            .run(|db| db.tokens().list())
            .await
            .map_err(AccessError::Tokens)
    }

    async fn issue(
        &self,
        actor: Actor,
        vmid: Vmid,
        how: Issue,
    ) -> Result<MintedToken, AccessError> {
        // The audit row is written in the token's own transaction: no row, no token.
        let actor = actor.to_string();
        let issued = self
            .db
            .run(move |db| match how {
                Issue::Mint => db.tokens().mint_audited(vmid.get(), &actor),
                Issue::Rotate => db.tokens().rotate_audited(vmid.get(), &actor),
            })
            .await
            .map_err(AccessError::Tokens);
        // Also after a failure: whatever the table holds now is what the next caller sees.
        self.invalidate().await;
        issued
    }
}
