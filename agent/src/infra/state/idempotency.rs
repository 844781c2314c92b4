//! Idempotency keys: a retried request with the same key gets the first request's recorded
//! result instead of running again.
//!
//! Keys live in a *scope* (the caller's identity, e.g. `localapi:9001` or `hub`), so one
//! guest's key can never replay another guest's result. Each key remembers a *fingerprint* of
//! the request it was first used with (the caller hashes the request's canonical form); reusing
//! a key for a different request is refused rather than silently replaying the wrong result.
//!
//! Protocol: [`Idempotency::claim`] atomically answers [`Claim::Fresh`] (the key is now
//! reserved: do the work, then [`Idempotency::complete`] with the result, or
//! [`Idempotency::release`] if it failed and may be retried), [`Claim::InProgress`] (a request
//! with this key is running right now) or [`Claim::Replay`] with the stored result. Keys expire
//! `ttl` after they were claimed; an expired key is treated as unused, and
//! [`Idempotency::purge_expired`] deletes expired keys in bulk. A claim left pending by a crash
//! stays `InProgress` until it expires.

use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Interrupted, InvalidField, StateDb, Timestamp, check_text};

const MAX_SCOPE: usize = 128;
const MAX_KEY: usize = 255;
const MAX_FINGERPRINT: usize = 128;

/// Idempotency store failure.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("Idempotency key {key:?} was already used for a different request")]
    KeyReused { key: String },
    #[error("Idempotency key {key:?} is not claimed (it expired or was never claimed)")]
    NotClaimed { key: String },
    #[error("Idempotency key {key:?} already has a recorded result")]
    AlreadyCompleted { key: String },
    #[error("Stored result for idempotency key {key:?} is not valid JSON")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Outcome of [`Idempotency::claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First use: the key is reserved for this request; run it.
    Fresh,
    /// A request with this key has been running since `since`.
    InProgress { since: Timestamp },
    /// The key was used before; this is the result recorded then.
    Replay(serde_json::Value),
}

/// Typed access to idempotency keys; get one from [`StateDb::idempotency`].
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'db> {
    db: &'db StateDb,
}

impl<'db> Idempotency<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Claims `key` in `scope` for a request with `fingerprint`, valid for `ttl`.
    pub fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, IdempotencyError> {
        check_text("idempotency scope", scope, MAX_SCOPE)?;
        check_text("idempotency key", key, MAX_KEY)?;
        check_text("request fingerprint", fingerprint, MAX_FINGERPRINT)?;
        let now = self.db.now();
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // An expired key counts as never used.
            tx.execute(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND expires_at <= ?3",
                params![scope, key, now],
            )?;
            let existing: Option<(String, Option<String>, Timestamp)> = tx
                .query_row(
                    "SELECT fingerprint, result, created_at FROM idempotency_keys
                     WHERE scope = ?1 AND key = ?2",
                    params![scope, key],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let claim = match existing {
                Some((stored, _, _)) if stored != fingerprint => {
                    return Err(IdempotencyError::KeyReused { key: key.to_owned() });
                }
                Some((_, Some(result), _)) => Claim::Replay(
                    serde_json::from_str(&result)
                        .map_err(|source| IdempotencyError::Corrupt { key: key.to_owned(), source })?,
                ),
                Some((_, None, since)) => Claim::InProgress { since },
                None => {
                    tx.execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![scope, key, fingerprint, now, now.saturating_add(ttl)],
                    )?;
                    Claim::Fresh
                }
            };
            tx.commit()?;
            Ok(claim)
        })
    }

    /// Records the result of the request that claimed `key`; later claims replay it.
    pub fn complete(
        &self,
        scope: &str,
        key: &str,
        result: &serde_json::Value,
    ) -> Result<(), IdempotencyError> {
        let now = self.db.now();
        let encoded = result.to_string();
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<Option<String>> = tx
                .query_row(
                    "SELECT result FROM idempotency_keys
                     WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
                    params![scope, key, now],
                    |row| row.get(0),
                )
                .optional()?;
            match existing {
                None => {
                    return Err(IdempotencyError::NotClaimed {
                        key: key.to_owned(),
                    });
                }
                Some(Some(_)) => {
                    return Err(IdempotencyError::AlreadyCompleted {
                        key: key.to_owned(),
                    });
                }
                Some(None) => {}
            }
            tx.execute(
                "UPDATE idempotency_keys SET result = ?3 WHERE scope = ?1 AND key = ?2",
                params![scope, key, encoded],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Drops a pending claim (the request failed and may be retried). Returns whether one was
    /// pending; a completed key is left alone.
    pub fn release(&self, scope: &str, key: &str) -> Result<bool, IdempotencyError> {
        let deleted = self.db.with_conn(|conn| {
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND result IS NULL",
                params![scope, key],
            )
        })?;
        Ok(deleted > 0)
    }

    /// Deletes every expired key; returns how many.
    pub fn purge_expired(&self) -> Result<u64, IdempotencyError> {
        let now = self.db.now();
        let deleted = self.db.with_conn(|conn| {
            conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?1", [now])
        })?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::infra::state::FakeClock;

    const TTL: Duration = Duration::from_secs(3600);

    fn db() -> (tempfile::TempDir, StateDb, FakeClock) {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new(Timestamp::from_unix_millis(1_000_000));
        let db = StateDb::open_with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
        (dir, db, clock)
    }

    #[test]
    fn second_claim_while_running_is_in_progress() {
        let (_dir, db, _clock) = db();
        let keys = db.idempotency();
        assert_eq!(keys.claim("hub", "k", "fp", TTL).unwrap(), Claim::Fresh);
        assert_eq!(
            keys.claim("hub", "k", "fp", TTL).unwrap(),
            Claim::InProgress {
                since: Timestamp::from_unix_millis(1_000_000)
            }
        );
    }

    #[test]
    fn released_key_can_be_claimed_again() {
        let (_dir, db, _clock) = db();
        let keys = db.idempotency();
        keys.claim("hub", "k", "fp", TTL).unwrap();
        assert!(keys.release("hub", "k").unwrap());
        assert_eq!(keys.claim("hub", "k", "fp", TTL).unwrap(), Claim::Fresh);
    }

    #[test]
    fn same_key_in_another_scope_is_independent() {
        let (_dir, db, _clock) = db();
        let keys = db.idempotency();
        keys.claim("localapi:9001", "k", "fp", TTL).unwrap();
        keys.complete("localapi:9001", "k", &json!({"ok": 1}))
            .unwrap();
        assert_eq!(
            keys.claim("localapi:9002", "k", "fp", TTL).unwrap(),
            Claim::Fresh
        );
    }

    #[test]
    fn key_reused_for_a_different_request_is_refused() {
        let (_dir, db, _clock) = db();
        let keys = db.idempotency();
        keys.claim("hub", "k", "fp-a", TTL).unwrap();
        let err = keys.claim("hub", "k", "fp-b", TTL).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Idempotency key \"k\" was already used for a different request"
        );
    }

    #[test]
    fn completing_an_unclaimed_key_is_refused() {
        let (_dir, db, _clock) = db();
        let err = db
            .idempotency()
            .complete("hub", "k", &json!(null))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Idempotency key \"k\" is not claimed (it expired or was never claimed)"
        );
    }

    #[test]
    fn completing_twice_is_refused() {
        let (_dir, db, _clock) = db();
        let keys = db.idempotency();
        keys.claim("hub", "k", "fp", TTL).unwrap();
        keys.complete("hub", "k", &json!(1)).unwrap();
        let err = keys.complete("hub", "k", &json!(2)).unwrap_err();
        assert!(
            matches!(err, IdempotencyError::AlreadyCompleted { .. }),
            "{err}"
        );
    }
}
