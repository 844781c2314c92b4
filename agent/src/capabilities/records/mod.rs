//! Records: the audit log (append, tail, verify the hash chain), the job history and the
//! operation journal as operators read them.
//!
//! A guest's audit entries pass through its [`guest_ledger`]: repeated identical entries are
//! coalesced into a summary row, and a guest that caused too many rows within the last hour has
//! its changes refused ([`Records::admit_guest`]) until it is back under budget. Operators'
//! entries are always appended as they come. What the ledger still holds (repeat counts,
//! refusal counts) is written by [`Records::flush_coalesced`], which a graceful stop calls once
//! the guests' calls have finished; after a crash those counts are lost, never the first
//! occurrence of an entry.

mod checkpoint;
pub mod guest_ledger;

use std::sync::Arc;

use guest_ledger::{GuestAuditPolicy, GuestBudgetError, GuestLedger, GuestRow};

use crate::core::{Actor, InvalidValue, Vmid};
use crate::infra::state::{
    AuditEntry, AuditError, ChainSummary, JobRecord, JobsError, JournalError, NewAuditEntry,
    Operation, StateDb,
};

/// Default and maximum row counts of list calls.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// Rows a list call returns: `0` asks for the default, anything above the maximum is capped.
pub fn row_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("vmid: {0}")]
    Invalid(InvalidValue),
    #[error("Cannot read the job history")]
    Jobs(#[source] JobsError),
    #[error("Cannot read the operation journal")]
    Journal(#[source] JournalError),
    #[error("Cannot read the audit log")]
    Audit(#[source] AuditError),
}

/// The audit chain as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    Intact(ChainSummary),
    /// A row was altered, unlinked or removed; the text names it.
    Broken(String),
}

/// The records capability; clones share the guests' ledger.
#[derive(Debug, Clone)]
pub struct Records {
    db: StateDb,
    /// Held while a guest's rows are decided and written, so they land in the order decided.
    guests: Arc<tokio::sync::Mutex<GuestLedger>>,
}

impl Records {
    /// Records with the default [`GuestAuditPolicy`].
    pub fn new(db: StateDb) -> Self {
        Self::with_policy(db, GuestAuditPolicy::default())
    }

    pub fn with_policy(db: StateDb, policy: GuestAuditPolicy) -> Self {
        Self {
            db,
            guests: Arc::new(tokio::sync::Mutex::new(GuestLedger::new(policy))),
        }
    }

    /// Appends an audit row; a guest's repeat of its previous entry is coalesced (see the
    /// module docs). A failed append is logged, not returned: the change it records has
    /// already happened.
    pub async fn audit(&self, actor: Actor, action: &'static str, target: String, detail: String) {
        let row = GuestRow {
            action,
            target,
            detail,
        };
        match actor {
            Actor::Operator { .. } => self.append(vec![(actor, row)]).await,
            Actor::Guest(vmid) => {
                let mut ledger = self.guests.lock().await;
                let rows = ledger.entry(vmid, self.db.clock().now(), row);
                self.append(rows.into_iter().map(|r| (actor, r)).collect())
                    .await;
            }
        }
    }

    /// Whether guest `vmid` may start a change now: refused while it is over its budget of
    /// rows. Call it before doing anything; a refusal is counted, not audited.
    pub async fn admit_guest(&self, vmid: Vmid) -> Result<(), GuestBudgetError> {
        let mut ledger = self.guests.lock().await;
        if let Some(row) = ledger.admit(vmid, self.db.clock().now())? {
            self.append(vec![(Actor::Guest(vmid), row)]).await;
        }
        Ok(())
    }

    /// Charges a guest `actor` for a job row its call queued (an operator's are free).
    pub async fn job_queued(&self, actor: Actor) {
        match actor {
            Actor::Guest(vmid) => {
                let now = self.db.clock().now();
                self.guests.lock().await.job_queued(vmid, now);
            }
            Actor::Operator { .. } => {}
        }
    }

    /// Writes every summary the guests' ledger still holds: coalesced repeats and counted
    /// over-budget refusals. Call it when the guests' calls have finished (a graceful stop);
    /// calling it at any other time only ends the current runs early.
    pub async fn flush_coalesced(&self) {
        let mut ledger = self.guests.lock().await;
        let rows = ledger.drain();
        self.append(
            rows.into_iter()
                .map(|(vmid, r)| (Actor::Guest(vmid), r))
                .collect(),
        )
        .await;
    }

    /// Appends `rows` in order, in one blocking call.
    async fn append(&self, rows: Vec<(Actor, GuestRow)>) {
        let Some((_, first)) = rows.first() else {
            return;
        };
        let action = first.action;
        let result = self
            .db
            .run(move |db| {
                for (actor, row) in &rows {
                    db.audit().append(NewAuditEntry {
                        actor: &actor.to_string(),
                        action: row.action,
                        target: &row.target,
                        detail: &row.detail,
                    })?;
                }
                Ok::<_, AuditError>(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(action, error = %crate::core::error_chain(&e), "cannot append to the audit log");
        }
    }

    /// Newest jobs, of one guest or all.
    /// (`vmid` `0`: every guest's.)
    pub async fn jobs(&self, vmid: u32, limit: u32) -> Result<Vec<JobRecord>, RecordsError> {
        let guest = match vmid {
            0 => None,
            v => Some(Vmid::new(v).map_err(RecordsError::Invalid)?),
        };
        let n = row_limit(limit);
        self.db
            .run(move |db| match guest {
                Some(v) => db.jobs().list_for_vmid(v.get(), n),
                None => db.jobs().recent(n),
            })
            .await
            .map_err(RecordsError::Jobs)
    }

    /// Journaled operations: the unfinished ones, or the newest.
    pub async fn operations(
        &self,
        unfinished_only: bool,
        limit: u32,
    ) -> Result<Vec<Operation>, RecordsError> {
        let n = row_limit(limit);
        self.db
            .run(move |db| {
                if unfinished_only {
                    db.journal().unfinished()
                } else {
                    db.journal().recent(n)
                }
            })
            .await
            .map_err(RecordsError::Journal)
    }

    /// Records that the local API's certificate was replaced (the gateway, a front end, does
    /// the rotation itself).
    pub async fn certificate_rotated(&self, actor: Actor, leaf_sha256_hex: &str) {
        self.audit(
            actor,
            "local_api.rotate_certificate",
            "local-api".to_owned(),
            format!("new leaf sha256 {leaf_sha256_hex}"),
        )
        .await;
    }

    /// Newest audit rows.
    pub async fn audit_tail(&self, limit: u32) -> Result<Vec<AuditEntry>, RecordsError> {
        let n = row_limit(limit);
        self.db
            .run(move |db| db.audit().tail(n))
            .await
            .map_err(RecordsError::Audit)
    }

    /// Walks the whole hash chain.
    pub async fn audit_verify(&self) -> Result<ChainCheck, RecordsError> {
        match self.db.run(|db| db.audit().verify()).await {
            Ok(summary) => Ok(ChainCheck::Intact(summary)),
            Err(
                e @ (AuditError::Altered { .. }
                | AuditError::BrokenLink { .. }
                | AuditError::Missing { .. }
                | AuditError::PrunedUnsigned { .. }
                | AuditError::CheckpointMismatch { .. }),
            ) => Ok(ChainCheck::Broken(e.to_string())),
            Err(
                e @ (AuditError::Sqlite(_)
                | AuditError::Interrupted(_)
                | AuditError::InvalidField(_)
                | AuditError::HeadMismatch { .. }
                | AuditError::MalformedHead(_)),
            ) => Err(RecordsError::Audit(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::infra::state::{FakeClock, Timestamp};

    const T0: i64 = 1_795_424_512_000; // 2026-11-23T09:01:52.000Z

    struct Fixture {
        _dir: tempfile::TempDir,
        clock: FakeClock,
        records: Records,
    }

    fn fixture(budget_per_hour: u32) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = FakeClock::new(Timestamp::from_unix_millis(T0));
        let db = StateDb::open_with_clock(dir.path(), Arc::new(clock.clone())).expect("state db");
        let records = Records::with_policy(
            db,
            GuestAuditPolicy {
                budget_per_hour,
                ..GuestAuditPolicy::default()
            },
        );
        Fixture {
            _dir: dir,
            clock,
            records,
        }
    }

    fn guest() -> Actor {
        Actor::Guest(Vmid::new(101).expect("valid vmid"))
    }

    impl Fixture {
        async fn refuse(&self, actor: Actor, detail: &str) {
            self.records
                .audit(actor, "guest.backup", actor.to_string(), detail.to_owned())
                .await;
        }

        async fn details(&self) -> Vec<String> {
            let rows = self
                .records
                .audit_tail(MAX_LIMIT)
                .await
                .expect("audit tail");
            rows.into_iter().map(|r| r.detail).collect()
        }

        fn tick(&self) {
            self.clock.advance(Duration::from_secs(1));
        }
    }

    #[tokio::test]
    async fn identical_repeated_guest_refusals_are_one_row_and_one_summary_with_the_count() {
        let f = fixture(240);
        for _ in 0..50 {
            f.refuse(guest(), "backup refused: no policy").await;
            f.tick();
        }
        assert_eq!(f.details().await, ["backup refused: no policy"]);
        f.refuse(guest(), "backup queued (job j1)").await;
        assert_eq!(
            f.details().await,
            [
                "backup refused: no policy",
                "backup refused: no policy (repeated 49 more times between 2026-11-23T09:01:53.000Z and 2026-11-23T09:02:41.000Z)",
                "backup queued (job j1)",
            ]
        );
        let rows = f.records.audit_tail(10).await.expect("audit tail");
        assert!(
            rows.iter()
                .all(|r| r.actor == "guest:101" && r.action == "guest.backup")
        );
        assert!(matches!(
            f.records.audit_verify().await,
            Ok(ChainCheck::Intact(_))
        ));
    }

    #[tokio::test]
    async fn different_details_are_each_recorded() {
        let f = fixture(240);
        for d in ["a", "b", "a", "b"] {
            f.refuse(guest(), d).await;
        }
        assert_eq!(f.details().await, ["a", "b", "a", "b"]);
    }

    #[tokio::test]
    async fn operator_rows_are_never_coalesced() {
        let f = fixture(240);
        let operator = Actor::Operator { uid: Some(1000) };
        for _ in 0..3 {
            f.refuse(operator, "backup refused: no policy").await;
        }
        assert_eq!(f.details().await, ["backup refused: no policy"; 3]);
        // Nor do they break a guest's run.
        f.refuse(guest(), "x").await;
        f.refuse(operator, "y").await;
        f.refuse(guest(), "x").await;
        assert_eq!(f.details().await.len(), 5);
    }

    #[tokio::test]
    async fn a_repeat_after_the_window_writes_the_summary_and_is_recorded_again() {
        let f = fixture(240);
        f.refuse(guest(), "x").await;
        f.tick();
        f.refuse(guest(), "x").await;
        f.clock.advance(Duration::from_secs(10 * 60));
        f.refuse(guest(), "x").await;
        assert_eq!(
            f.details().await,
            [
                "x",
                "x (repeated 1 more time between 2026-11-23T09:01:53.000Z and 2026-11-23T09:01:53.000Z)",
                "x",
            ]
        );
        // Past the window with nothing coalesced: just the entry.
        f.clock.advance(Duration::from_secs(10 * 60));
        f.refuse(guest(), "x").await;
        assert_eq!(f.details().await.len(), 4);
    }

    #[tokio::test]
    async fn flush_writes_what_is_pending_and_nothing_twice() {
        let f = fixture(240);
        f.refuse(guest(), "x").await;
        f.refuse(guest(), "x").await;
        f.records.flush_coalesced().await;
        f.records.flush_coalesced().await;
        let details = f.details().await;
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(
            details[1].starts_with("x (repeated 1 more time"),
            "{details:?}"
        );
    }

    #[tokio::test]
    async fn a_guest_over_budget_is_refused_and_one_row_counts_the_refusals_when_it_is_back() {
        let f = fixture(2);
        let vmid = Vmid::new(101).expect("valid vmid");
        for d in ["a", "b"] {
            f.records.admit_guest(vmid).await.expect("under budget");
            f.refuse(guest(), d).await;
        }
        for _ in 0..5 {
            assert_eq!(
                f.records.admit_guest(vmid).await,
                Err(GuestBudgetError::OverBudget { vmid, budget: 2 })
            );
        }
        // Another guest has its own budget; operators have none.
        f.records
            .admit_guest(Vmid::new(102).expect("valid vmid"))
            .await
            .expect("guest 102 is under budget");
        assert_eq!(f.details().await, ["a", "b"]);
        f.clock.advance(Duration::from_secs(60 * 60));
        f.records
            .admit_guest(vmid)
            .await
            .expect("back under budget");
        let rows = f.records.audit_tail(MAX_LIMIT).await.expect("audit tail");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].action, guest_ledger::OVER_BUDGET_ACTION);
        assert_eq!(rows[2].actor, "guest:101");
        assert_eq!(
            rows[2].detail,
            "refused 5 calls over the budget of 2 rows per hour between 2026-11-23T09:01:52.000Z and 2026-11-23T09:01:52.000Z"
        );
    }

    #[tokio::test]
    async fn clones_share_the_ledger() {
        let f = fixture(240);
        let other = f.records.clone();
        f.refuse(guest(), "x").await;
        other
            .audit(guest(), "guest.backup", guest().to_string(), "x".to_owned())
            .await;
        assert_eq!(f.details().await, ["x"]);
    }
}
