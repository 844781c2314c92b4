//! Append-only, hash-chained audit log.
//!
//! Each row stores `prev_hash` (the previous row's hash; 64 zeros for the first row) and its
//! own `hash`: SHA-256 over a canonical encoding of `(seq, at, actor, action, target, detail,
//! prev_hash)` — a version tag, then `seq` and `at` as 8-byte big-endian integers, then each
//! text field as an 8-byte big-endian length followed by its UTF-8 bytes, so no two different
//! rows encode alike. Rows are numbered 1, 2, 3, … without gaps.
//!
//! Two barriers: triggers make SQLite refuse `UPDATE` and `DELETE` on the table, and
//! [`Audit::verify`] re-walks the chain, so an edit made by someone who dropped the triggers is
//! still found: it names the first row whose contents no longer match its hash, whose link to
//! the previous row is broken, or that is missing from the numbering.
//!
//! Pruning: an operator signs off the chain as it stands ([`Audit::checkpoint`], naming the head
//! hash they verified); that appends an `audit.checkpoint` row and records the checkpoint. Only
//! rows up to the newest checkpoint's head may then be removed, from the front
//! ([`Audit::prune`]; the trigger refuses anything later), and the hash of the last removed row
//! is kept, so [`Audit::verify`] starts from it and still checks every remaining link and every
//! checkpoint whose head is still present.
//!
//! Limits: the chain proves the rows are consistent with each other, not that nobody rewrote
//! the whole tail from some row on, and it cannot notice rows cut off the end. Comparing the
//! [`ChainSummary::head_hash`] with a value recorded elsewhere (a log line, the hub) closes
//! that gap. Never put secrets in any field: the log is meant to be read by operators.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use sha2::{Digest as _, Sha256};

use super::{Interrupted, InvalidField, StateDb, Timestamp, check_text};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Version tag at the start of every hashed encoding.
const ENCODING_TAG: &[u8] = b"felhom-audit-v1\0";
const MAX_LABEL: usize = 256;
const MAX_DETAIL: usize = 16 * 1024;

/// Audit log failure.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("Audit log row {seq} was altered: its hash does not match its contents")]
    Altered { seq: u64 },
    #[error(
        "Audit log row {seq} does not link to the row before it (that row was altered or replaced)"
    )]
    BrokenLink { seq: u64 },
    #[error("Audit log row {expected} is missing: the next row is {found}")]
    Missing { expected: u64, found: u64 },
    #[error("Audit log rows through {through} were removed, but no checkpoint signs off that far")]
    PrunedUnsigned { through: u64 },
    #[error("Audit checkpoint {seq} signed off a head hash that row {head_seq} does not carry")]
    CheckpointMismatch { seq: u64, head_seq: u64 },
    #[error(
        "The audit log's head is {found} (row {rows}), not the {expected} being signed off; \
         verify again and sign off what you saw"
    )]
    HeadMismatch {
        expected: String,
        found: String,
        rows: u64,
    },
    #[error("Head hash to sign off must be 64 lowercase hex digits, got {0:?}")]
    MalformedHead(String),
}

/// What a caller appends.
#[derive(Debug, Clone, Copy)]
pub struct NewAuditEntry<'a> {
    /// Who acted: `operator:uid=1000`, `guest:9001`, `hub`, `agent`.
    pub actor: &'a str,
    /// What was done: `guest.start`, `token.rotate`.
    pub action: &'a str,
    /// What it was done to: `guest:9001`.
    pub target: &'a str,
    /// Free text or JSON with particulars (may be empty; never secrets).
    pub detail: &'a str,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// The hash this row must carry given its contents and `prev_hash`: hex SHA-256 over the
    /// canonical encoding described in the module docs. Lets an outside verifier re-check rows.
    pub fn expected_hash(&self) -> String {
        row_hash(self)
    }
}

/// Result of a successful [`Audit::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Number of rows checked.
    pub rows: u64,
    /// Rows up to this one were pruned behind a checkpoint (0: none).
    pub pruned_through: u64,
    /// Hash of the last row ([`GENESIS_HASH`] for an empty log); record it elsewhere to detect
    /// a rewritten or truncated tail later.
    pub head_hash: String,
}

/// Typed access to the audit log; get one from [`StateDb::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Audit<'db> {
    db: &'db StateDb,
}

impl<'db> Audit<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Appends one entry and returns it as stored.
    pub fn append(&self, entry: NewAuditEntry<'_>) -> Result<AuditEntry, AuditError> {
        let at = self.db.now();
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = append_in(&tx, at, entry)?;
            tx.commit()?;
            Ok(row)
        })
    }

    /// The last `n` entries, oldest first.
    pub fn tail(&self, n: u32) -> Result<Vec<AuditEntry>, AuditError> {
        let mut rows = self.db.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, at, actor, action, target, detail, prev_hash, hash
                 FROM audit_log ORDER BY seq DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([n], read_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        rows.reverse();
        Ok(rows)
    }

    /// Re-walks the whole chain; names the first row that does not check out.
    pub fn verify(&self) -> Result<ChainSummary, AuditError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction()?;
            verify_in(&tx)
        })
    }

    /// Signs off the chain as `signed_off_by`, who verified it and saw `head_hash`: checks the
    /// chain and its head again, then appends an `audit.checkpoint` row and records the
    /// checkpoint, all in one transaction. Rows up to that head may be pruned from then on.
    pub fn checkpoint(
        &self,
        signed_off_by: &str,
        head_hash: &str,
    ) -> Result<Checkpoint, AuditError> {
        if head_hash.len() != 64
            || !head_hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(AuditError::MalformedHead(head_hash.to_owned()));
        }
        let at = self.db.now();
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let chain = verify_in(&tx)?;
            if chain.head_hash != head_hash {
                return Err(AuditError::HeadMismatch {
                    expected: head_hash.to_owned(),
                    found: chain.head_hash,
                    rows: chain.rows,
                });
            }
            let head_seq: u64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_log", [], |row| {
                    row.get(0)
                })?;
            let detail = format!("head_seq={head_seq} head_hash={head_hash}");
            let row = append_in(
                &tx,
                at,
                NewAuditEntry {
                    actor: signed_off_by,
                    action: "audit.checkpoint",
                    target: "audit",
                    detail: &detail,
                },
            )?;
            tx.execute(
                "INSERT INTO audit_checkpoints (seq, head_seq, head_hash, signed_off_by, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.seq, head_seq, head_hash, signed_off_by, at],
            )?;
            tx.commit()?;
            Ok(Checkpoint {
                seq: row.seq,
                head_seq,
                head_hash: head_hash.to_owned(),
            })
        })
    }

    /// Removes rows older than `before` from the front of the log, never past the newest
    /// checkpoint's head; keeps the last removed row's hash for [`Audit::verify`]. Returns how
    /// many rows went.
    pub fn prune(&self, before: Timestamp) -> Result<u64, AuditError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last: Option<(u64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit_log
                     WHERE seq <= (SELECT COALESCE(MAX(head_seq), 0) FROM audit_checkpoints)
                       AND at < ?1
                     ORDER BY seq DESC LIMIT 1",
                    [before],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((through, hash)) = last else {
                return Ok(0);
            };
            let removed = tx.execute("DELETE FROM audit_log WHERE seq <= ?1", [through])?;
            tx.execute(
                "INSERT INTO audit_pruned (id, through_seq, through_hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET through_seq = ?1, through_hash = ?2",
                params![through, hash],
            )?;
            tx.commit()?;
            Ok(removed as u64)
        })
    }
}

/// A signed-off checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The `audit.checkpoint` row.
    pub seq: u64,
    /// The last row it signs off, and that row's hash.
    pub head_seq: u64,
    pub head_hash: String,
}

/// [`Audit::verify`] inside the caller's transaction.
fn verify_in(tx: &rusqlite::Transaction<'_>) -> Result<ChainSummary, AuditError> {
    let pruned: Option<(u64, String)> = tx
        .query_row(
            "SELECT through_seq, through_hash FROM audit_pruned WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let mut checkpoints = std::collections::BTreeMap::new();
    {
        let mut stmt = tx.prepare("SELECT seq, head_seq, head_hash FROM audit_checkpoints")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, u64>(1)?,
                (row.get::<_, u64>(0)?, row.get::<_, String>(2)?),
            ))
        })?;
        for row in rows {
            let (head_seq, checkpoint) = row?;
            checkpoints.insert(head_seq, checkpoint);
        }
    }
    let (pruned_through, mut prev) = pruned.unwrap_or((0, GENESIS_HASH.to_owned()));
    if pruned_through > 0 {
        let signed = checkpoints.keys().next_back().copied().unwrap_or(0);
        if pruned_through > signed {
            return Err(AuditError::PrunedUnsigned {
                through: pruned_through,
            });
        }
    }
    let check_checkpoint = |head_seq: u64, hash: &str| match checkpoints.get(&head_seq) {
        Some((seq, signed)) if signed != hash => Err(AuditError::CheckpointMismatch {
            seq: *seq,
            head_seq,
        }),
        _ => Ok(()),
    };
    check_checkpoint(pruned_through, &prev)?;
    let mut stmt = tx.prepare(
        "SELECT seq, at, actor, action, target, detail, prev_hash, hash
         FROM audit_log ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut expected = pruned_through + 1;
    while let Some(row) = rows.next()? {
        let row = read_row(row)?;
        if row.seq != expected {
            return Err(AuditError::Missing {
                expected,
                found: row.seq,
            });
        }
        if row.hash != row_hash(&row) {
            return Err(AuditError::Altered { seq: row.seq });
        }
        if row.prev_hash != prev {
            return Err(AuditError::BrokenLink { seq: row.seq });
        }
        check_checkpoint(row.seq, &row.hash)?;
        prev = row.hash;
        expected += 1;
    }
    Ok(ChainSummary {
        rows: expected - 1 - pruned_through,
        pruned_through,
        head_hash: prev,
    })
}

/// Appends `entry` inside the caller's (immediate) transaction `tx`: a change and its audit row
/// then commit together or not at all.
pub(super) fn append_in(
    tx: &rusqlite::Transaction<'_>,
    at: Timestamp,
    entry: NewAuditEntry<'_>,
) -> Result<AuditEntry, AuditError> {
    check_text("audit actor", entry.actor, MAX_LABEL)?;
    check_text("audit action", entry.action, MAX_LABEL)?;
    check_text("audit target", entry.target, MAX_LABEL)?;
    if entry.detail.len() > MAX_DETAIL {
        return Err(InvalidField {
            field: "audit detail",
            reason: format!(
                "is {} bytes long; at most {MAX_DETAIL} are allowed",
                entry.detail.len()
            ),
        }
        .into());
    }
    let last: Option<(u64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let mut row = AuditEntry {
        seq,
        at,
        actor: entry.actor.to_owned(),
        action: entry.action.to_owned(),
        target: entry.target.to_owned(),
        detail: entry.detail.to_owned(),
        prev_hash,
        hash: String::new(),
    };
    row.hash = row_hash(&row);
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.seq,
            row.at,
            row.actor,
            row.action,
            row.target,
            row.detail,
            row.prev_hash,
            row.hash
        ],
    )?;
    Ok(row)
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.get(0)?,
        at: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        target: row.get(4)?,
        detail: row.get(5)?,
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
    })
}

/// Hex SHA-256 over the canonical encoding of a row (its `hash` field excluded).
fn row_hash(row: &AuditEntry) -> String {
    let mut hasher = Sha256::new();
    hasher.update(ENCODING_TAG);
    hasher.update(row.seq.to_be_bytes());
    hasher.update(row.at.unix_millis().to_be_bytes());
    for field in [
        &row.actor,
        &row.action,
        &row.target,
        &row.detail,
        &row.prev_hash,
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> NewAuditEntry<'_> {
        NewAuditEntry {
            actor: "operator:uid=1000",
            action,
            target: "guest:9001",
            detail: "",
        }
    }

    fn db() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        (dir, db)
    }

    #[test]
    fn rows_chain_to_each_other() {
        let (_dir, db) = db();
        let first = db.audit().append(entry("guest.start")).unwrap();
        let second = db.audit().append(entry("guest.stop")).unwrap();
        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.prev_hash, GENESIS_HASH);
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(
            db.audit().verify().unwrap(),
            ChainSummary {
                rows: 2,
                pruned_through: 0,
                head_hash: second.hash
            }
        );
    }

    #[test]
    fn empty_log_verifies_with_genesis_head() {
        let (_dir, db) = db();
        assert_eq!(
            db.audit().verify().unwrap(),
            ChainSummary {
                rows: 0,
                pruned_through: 0,
                head_hash: GENESIS_HASH.to_owned()
            }
        );
    }

    #[test]
    fn field_boundaries_are_part_of_the_hash() {
        // Moving a character from one field to the next must change the hash.
        let mut a = AuditEntry {
            seq: 1,
            at: Timestamp::from_unix_millis(0),
            actor: "ab".into(),
            action: "c".into(),
            target: "t".into(),
            detail: String::new(),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        };
        let before = row_hash(&a);
        a.actor = "a".into();
        a.action = "bc".into();
        assert_ne!(before, row_hash(&a));
    }

    #[test]
    fn triggers_refuse_update_and_delete() {
        let (_dir, db) = db();
        db.audit().append(entry("guest.start")).unwrap();
        db.with_conn(|conn| {
            let err = conn
                .execute("UPDATE audit_log SET actor = 'x'", [])
                .unwrap_err();
            assert!(
                err.to_string().contains("audit_log is append-only"),
                "{err}"
            );
            let err = conn.execute("DELETE FROM audit_log", []).unwrap_err();
            assert!(
                err.to_string().contains("audit_log is append-only"),
                "{err}"
            );
        });
    }

    #[test]
    fn tail_returns_the_newest_rows_oldest_first() {
        let (_dir, db) = db();
        for action in ["a.one", "a.two", "a.three"] {
            db.audit().append(entry(action)).unwrap();
        }
        let tail: Vec<String> = db
            .audit()
            .tail(2)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(tail, ["a.two", "a.three"]);
    }

    #[test]
    fn oversized_detail_is_refused() {
        let (_dir, db) = db();
        let detail = "x".repeat(MAX_DETAIL + 1);
        let err = db
            .audit()
            .append(NewAuditEntry {
                detail: &detail,
                ..entry("guest.start")
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid audit detail: is 16385 bytes long; at most 16384 are allowed"
        );
    }
}
