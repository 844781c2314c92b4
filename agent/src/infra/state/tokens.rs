//! Per-guest bearer tokens for the local API.
//!
//! A token is `fhg_` followed by 32 bytes from the OS CSPRNG in unpadded base64url (47
//! characters). Only its SHA-256 (hex) is stored, with a [`TokenId`]: the first 12 hex digits
//! of that hash, which identifies a token in listings and logs without revealing anything
//! about the secret (it is derived from the hash, not cut from the token). The token value is
//! returned once, inside a [`MintedToken`] whose `SecretString` redacts itself in `Debug`.
//!
//! One token per guest: [`Tokens::mint`] refuses if the guest has one, [`Tokens::rotate`]
//! replaces it (the old token stops working in the same transaction), [`Tokens::revoke`]
//! deletes it. [`Tokens::lookup`] hashes the presented token, finds the row by hash and
//! compares the stored and computed hashes with `subtle`'s constant-time equality. Timing of
//! the indexed lookup can only reveal something about the *hash* of what the caller sent,
//! which gives no purchase on a 256-bit secret.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::audit::{self, AuditError, NewAuditEntry};
use super::{Interrupted, InvalidField, StateDb, Timestamp, check_vmid};

/// Prefix of every guest token; lets secret scanners and humans recognize one.
pub const TOKEN_PREFIX: &str = felhom_proto::guest_token::PREFIX;
const SECRET_BYTES: usize = 32;
/// Length of the base64url (unpadded) encoding of [`SECRET_BYTES`].
const ENCODED_LEN: usize = felhom_proto::guest_token::BODY_LEN;
const ID_HEX_DIGITS: usize = 12;

/// Token store failure.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("Guest {vmid} already has a token ({id}); rotate it instead")]
    AlreadyMinted { vmid: u32, id: TokenId },
    #[error("Guest {vmid} has no token to rotate")]
    NoToken { vmid: u32 },
    #[error("The operating system's random number generator failed")]
    Entropy(#[source] rand::rand_core::OsError),
    #[error("Presented token is malformed (expected {TOKEN_PREFIX} and 43 base64url characters)")]
    Malformed,
    /// The audit row of a mint or rotate could not be written; nothing changed.
    #[error("Cannot record the token in the audit log; no token was issued")]
    Audit(#[from] AuditError),
}

/// Non-secret identifier of a token (first 12 hex digits of its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(String);

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A freshly minted token; the only time its value is available.
#[derive(Debug)]
pub struct MintedToken {
    pub vmid: u32,
    pub id: TokenId,
    /// The bearer token to hand to the guest. Redacted in `Debug`.
    pub token: SecretString,
}

/// Who a presented token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub vmid: u32,
    pub id: TokenId,
}

/// Stored facts about a guest's token (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub vmid: u32,
    pub id: TokenId,
    pub created_at: Timestamp,
}

/// The stored token hashes in memory: what [`Tokens::lookup`] answers, without SQLite.
///
/// A snapshot; whoever changes tokens loads a new one ([`Tokens::index`]).
pub struct TokenIndex {
    by_hash: HashMap<[u8; 32], TokenOwner>,
}

impl TokenIndex {
    /// The guest a presented token belongs to, or `None` for an unknown one; a token that
    /// cannot be one of ours is [`TokensError::Malformed`].
    ///
    /// The map is keyed by SHA-256 of the token, so its (variable-time) probing compares
    /// digests of the caller's guess, which reveal nothing about a stored token.
    pub fn lookup(&self, presented: &str) -> Result<Option<&TokenOwner>, TokensError> {
        if !is_well_formed(presented) {
            return Err(TokensError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        Ok(self.by_hash.get(&digest))
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

impl fmt::Debug for TokenIndex {
    /// Owners only; the hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIndex")
            .field("tokens", &self.by_hash.len())
            .finish()
    }
}

/// Typed access to guest tokens; get one from [`StateDb::tokens`].
#[derive(Debug, Clone, Copy)]
pub struct Tokens<'db> {
    db: &'db StateDb,
}

impl<'db> Tokens<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Mints the first token for `vmid`; refuses if the guest already has one.
    pub fn mint(&self, vmid: u32) -> Result<MintedToken, TokensError> {
        self.issue(vmid, false, None)
    }

    /// Replaces the token of `vmid`; the previous token stops working immediately.
    pub fn rotate(&self, vmid: u32) -> Result<MintedToken, TokensError> {
        self.issue(vmid, true, None)
    }

    /// [`Self::mint`] with its `token.mint` audit row by `actor` in the same transaction: when
    /// the row cannot be written, no token exists (a credential must never go unrecorded).
    pub fn mint_audited(&self, vmid: u32, actor: &str) -> Result<MintedToken, TokensError> {
        self.issue(vmid, false, Some(actor))
    }

    /// [`Self::rotate`] with its `token.rotate` audit row, failing closed like
    /// [`Self::mint_audited`] (the old token then keeps working).
    pub fn rotate_audited(&self, vmid: u32, actor: &str) -> Result<MintedToken, TokensError> {
        self.issue(vmid, true, Some(actor))
    }

    /// Deletes the token of `vmid`. Returns whether there was one.
    pub fn revoke(&self, vmid: u32) -> Result<bool, TokensError> {
        check_vmid(vmid)?;
        let deleted = self
            .db
            .with_conn(|conn| conn.execute("DELETE FROM guest_tokens WHERE vmid = ?1", [vmid]))?;
        Ok(deleted > 0)
    }

    /// The guest a presented bearer token belongs to, or `None` for an unknown token.
    /// A token that cannot be one of ours is [`TokensError::Malformed`]; a gateway answers both
    /// with 401.
    pub fn lookup(&self, presented: &str) -> Result<Option<TokenOwner>, TokensError> {
        if !is_well_formed(presented) {
            return Err(TokensError::Malformed);
        }
        let digest = Sha256::digest(presented.as_bytes());
        let hash = hex::encode(digest);
        let row: Option<(u32, String, String)> = self.db.with_conn(|conn| {
            conn.query_row(
                "SELECT vmid, token_id, token_hash FROM guest_tokens WHERE token_hash = ?1",
                [&hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
        })?;
        let Some((vmid, id, stored)) = row else {
            return Ok(None);
        };
        // Defence in depth: the equality the index lookup relied on, again in constant time,
        // so correctness never rests on SQLite's (variable-time) text comparison alone.
        let stored = hex::decode(&stored).unwrap_or_default();
        if bool::from(stored.as_slice().ct_eq(digest.as_slice())) {
            Ok(Some(TokenOwner {
                vmid,
                id: TokenId(id),
            }))
        } else {
            Ok(None)
        }
    }

    /// Every stored token hash with its owner, for answering presented tokens from memory
    /// ([`TokenIndex`]).
    pub fn index(&self) -> Result<TokenIndex, TokensError> {
        let rows: Vec<(u32, String, String)> = self.db.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT vmid, token_id, token_hash FROM guest_tokens")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, u32>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        let mut by_hash = HashMap::with_capacity(rows.len());
        for (vmid, id, hash) in rows {
            let digest: [u8; 32] = hex::decode(&hash)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| InvalidField {
                    field: "token_hash",
                    reason: format!("stored hash of guest {vmid} is not 64 hex digits"),
                })?;
            by_hash.insert(
                digest,
                TokenOwner {
                    vmid,
                    id: TokenId(id),
                },
            );
        }
        Ok(TokenIndex { by_hash })
    }

    /// Facts about the token of `vmid`, if it has one.
    pub fn info(&self, vmid: u32) -> Result<Option<TokenInfo>, TokensError> {
        check_vmid(vmid)?;
        let info = self.db.with_conn(|conn| {
            conn.query_row(
                "SELECT vmid, token_id, created_at FROM guest_tokens WHERE vmid = ?1",
                [vmid],
                |row| {
                    Ok(TokenInfo {
                        vmid: row.get(0)?,
                        id: TokenId(row.get(1)?),
                        created_at: row.get(2)?,
                    })
                },
            )
            .optional()
        })?;
        Ok(info)
    }

    /// Every guest that has a token, by vmid.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokensError> {
        let infos = self.db.with_conn(|conn| {
            let mut stmt =
                conn.prepare("SELECT vmid, token_id, created_at FROM guest_tokens ORDER BY vmid")?;
            let rows = stmt.query_map([], |row| {
                Ok(TokenInfo {
                    vmid: row.get(0)?,
                    id: TokenId(row.get(1)?),
                    created_at: row.get(2)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        Ok(infos)
    }

    fn issue(
        &self,
        vmid: u32,
        replace: bool,
        audit_actor: Option<&str>,
    ) -> Result<MintedToken, TokensError> {
        check_vmid(vmid)?;
        let token = generate()?;
        let hash = hex::encode(Sha256::digest(token.expose_secret().as_bytes()));
        let id = TokenId(hash[..ID_HEX_DIGITS].to_owned());
        let now = self.db.now();
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT token_id FROM guest_tokens WHERE vmid = ?1",
                    [vmid],
                    |row| row.get(0),
                )
                .optional()?;
            match (existing, replace) {
                (Some(existing), false) => {
                    return Err(TokensError::AlreadyMinted {
                        vmid,
                        id: TokenId(existing),
                    });
                }
                (None, true) => return Err(TokensError::NoToken { vmid }),
                (Some(_), true) | (None, false) => {}
            }
            tx.execute(
                "INSERT INTO guest_tokens (vmid, token_id, token_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (vmid) DO UPDATE SET
                     token_id = excluded.token_id,
                     token_hash = excluded.token_hash,
                     created_at = excluded.created_at",
                params![vmid, id.as_str(), hash, now],
            )?;
            if let Some(actor) = audit_actor {
                audit::append_in(
                    &tx,
                    now,
                    NewAuditEntry {
                        actor,
                        action: if replace {
                            "token.rotate"
                        } else {
                            "token.mint"
                        },
                        target: &format!("guest:{vmid}"),
                        detail: &format!("token id {id}"),
                    },
                )?;
            }
            tx.commit()?;
            Ok(())
        })?;
        Ok(MintedToken { vmid, id, token })
    }
}

/// A new token from the OS CSPRNG. The raw bytes are wiped once encoded.
fn generate() -> Result<SecretString, TokensError> {
    let mut bytes = secrecy::zeroize::Zeroizing::new([0_u8; SECRET_BYTES]);
    OsRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(TokensError::Entropy)?;
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + ENCODED_LEN);
    token.push_str(TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes.as_ref(), &mut token);
    Ok(SecretString::from(token))
}

fn is_well_formed(presented: &str) -> bool {
    felhom_proto::guest_token::is_well_formed(presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        (dir, db)
    }

    #[test]
    fn minted_token_has_the_documented_shape() {
        let (_dir, db) = db();
        let minted = db.tokens().mint(9001).unwrap();
        let token = minted.token.expose_secret();
        assert!(token.starts_with("fhg_"), "prefix");
        assert_eq!(token.len(), 47);
        assert!(is_well_formed(token));
        assert_eq!(minted.id.as_str().len(), 12);
    }

    #[test]
    fn tokens_are_stored_only_as_hashes() {
        let (_dir, db) = db();
        let minted = db.tokens().mint(9001).unwrap();
        let stored: String = db.with_conn(|conn| {
            conn.query_row(
                "SELECT token_hash FROM guest_tokens WHERE vmid = 9001",
                [],
                |r| r.get(0),
            )
            .unwrap()
        });
        assert_eq!(
            stored,
            hex::encode(Sha256::digest(minted.token.expose_secret().as_bytes()))
        );
        let dump: String = db.with_conn(|conn| {
            conn.query_row(
                "SELECT vmid || token_id || token_hash FROM guest_tokens",
                [],
                |r| r.get(0),
            )
            .unwrap()
        });
        assert!(!dump.contains(&minted.token.expose_secret()[4..]));
    }

    #[test]
    fn two_mints_differ() {
        let (_dir, db) = db();
        let a = db.tokens().mint(9001).unwrap();
        let b = db.tokens().mint(9002).unwrap();
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        let (_dir, db) = db();
        for bad in [
            "",
            "fhg_",
            "Bearer x",
            "fhg_short",
            &format!("fhg_{}", "!".repeat(43)),
        ] {
            let err = db.tokens().lookup(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Presented token is malformed (expected fhg_ and 43 base64url characters)"
            );
        }
    }

    #[test]
    fn well_formed_unknown_token_is_none() {
        let (_dir, db) = db();
        db.tokens().mint(9001).unwrap();
        let unknown = generate().unwrap();
        assert_eq!(db.tokens().lookup(unknown.expose_secret()).unwrap(), None);
    }

    #[test]
    fn revoke_reports_whether_a_token_existed() {
        let (_dir, db) = db();
        assert!(!db.tokens().revoke(9001).unwrap());
        db.tokens().mint(9001).unwrap();
        assert!(db.tokens().revoke(9001).unwrap());
        assert_eq!(db.tokens().info(9001).unwrap(), None);
    }

    #[test]
    fn rotate_without_a_token_is_refused() {
        let (_dir, db) = db();
        let err = db.tokens().rotate(9001).unwrap_err();
        assert_eq!(err.to_string(), "Guest 9001 has no token to rotate");
    }

    #[test]
    fn vmid_outside_proxmox_range_is_refused() {
        let (_dir, db) = db();
        let err = db.tokens().mint(7).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid vmid: 7 is outside Proxmox's range 100..=999999999"
        );
    }
}
