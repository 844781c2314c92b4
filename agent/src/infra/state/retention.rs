//! Retention: how long finished history stays in the state database.
//!
//! Pruned, once older than [`Retention::max_age`] (by when they finished):
//! - finished jobs (`done`, `failed`) with their backup, restore-test and verify rows, except
//!   the newest [`Retention::keep_per_guest`] of each guest and kind, and the newest `done` one
//!   of each guest and kind (so "last successful backup" and friends survive any age);
//! - operations that `completed` or were `compensated`, with their steps and resources (a
//!   `failed` operation stays until an operator has looked at it; unfinished ones are never
//!   touched, compensation still needs them);
//! - expired idempotency keys (whatever their age);
//! - audit rows older than [`Retention::audit_max_age`], but only those an operator signed off
//!   ([`super::Audit::checkpoint`]), from the front of the chain ([`super::Audit::prune`]).
//!
//! Never pruned: tokens and the agent-made snapshot list (they describe what exists now). The
//! history prune is one transaction and the audit prune another: each removes all or nothing.

use std::time::Duration;

use rusqlite::{TransactionBehavior, params};

use super::{AuditError, Interrupted, StateDb};

/// Retention failure.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("State database query failed while pruning history")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("Cannot prune the audit log")]
    Audit(#[from] AuditError),
}

/// What is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished history older than this may go.
    pub max_age: Duration,
    /// Newest finished jobs of one guest and kind kept whatever their age.
    pub keep_per_guest: u32,
    /// Signed-off audit rows older than this go.
    pub audit_max_age: Duration,
}

impl Default for Retention {
    /// 90 days, and at least the newest 20 jobs of each guest and kind; signed-off audit rows
    /// after a year.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(90 * 24 * 3600),
            keep_per_guest: 20,
            audit_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Rows one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub operations: u64,
    pub idempotency_keys: u64,
    pub audit_rows: u64,
}

impl Pruned {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The jobs a prune removes (`?1`: cutoff in ms, `?2`: kept per guest and kind).
const DOOMED_JOBS: &str = "
    SELECT id FROM (
        SELECT id, phase, finished_at,
            ROW_NUMBER() OVER (PARTITION BY vmid, kind ORDER BY created_at DESC, id) AS newest,
            ROW_NUMBER() OVER (PARTITION BY vmid, kind, phase ORDER BY created_at DESC, id)
                AS newest_of_phase
        FROM jobs WHERE phase IN ('done', 'failed')
    )
    WHERE finished_at < ?1 AND newest > ?2 AND NOT (phase = 'done' AND newest_of_phase = 1)";

/// The operations a prune removes (`?1`: cutoff in ms).
const DOOMED_OPERATIONS: &str = "
    SELECT id FROM operations
    WHERE state IN ('completed', 'compensated') AND finished_at < ?1";

/// Typed access to retention; get one from [`StateDb::retention`].
#[derive(Debug, Clone, Copy)]
pub struct Prune<'db> {
    db: &'db StateDb,
}

impl<'db> Prune<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Removes what `policy` lets go, as of now.
    pub fn run(&self, policy: Retention) -> Result<Pruned, RetentionError> {
        let now = self.db.now();
        let cutoff = now
            .unix_millis()
            .saturating_sub(i64::try_from(policy.max_age.as_millis()).unwrap_or(i64::MAX));
        let keep = i64::from(policy.keep_per_guest);
        let mut pruned = self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let jobs = format!("({DOOMED_JOBS})");
            let backup_jobs = format!("(SELECT job_id FROM backup_jobs WHERE job_id IN {jobs})");
            tx.execute(
                &format!("DELETE FROM backup_runs WHERE job_id IN {backup_jobs}"),
                params![cutoff, keep],
            )?;
            for table in ["backup_jobs", "restore_tests", "verify_runs"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE job_id IN {jobs}"),
                    params![cutoff, keep],
                )?;
            }
            let jobs_removed = tx.execute(
                &format!("DELETE FROM jobs WHERE id IN {jobs}"),
                params![cutoff, keep],
            )?;

            let operations = format!("({DOOMED_OPERATIONS})");
            for table in ["operation_resources", "operation_steps"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE operation_id IN {operations}"),
                    [cutoff],
                )?;
            }
            let operations_removed = tx.execute(
                &format!("DELETE FROM operations WHERE id IN {operations}"),
                [cutoff],
            )?;
            let keys_removed = tx.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= ?1",
                [now.unix_millis()],
            )?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(Pruned {
                jobs: jobs_removed as u64,
                operations: operations_removed as u64,
                idempotency_keys: keys_removed as u64,
                audit_rows: 0,
            })
        })?;
        pruned.audit_rows = self
            .db
            .audit()
            .prune(now.saturating_sub(policy.audit_max_age))?;
        Ok(pruned)
    }
}
