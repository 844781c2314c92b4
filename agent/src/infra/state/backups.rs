//! Backup, restore-test and verify history.
//!
//! Each backup, restore-test or verify is a job of the per-guest queue (its phase and error
//! live in [`super::jobs`]); these tables add what the job did: for a backup, who asked
//! (controller, schedule, operator), how consistent it is, and one run per tier with the
//! requested and actual vzdump mode, the UPID and the archive's volid; for a restore-test, the
//! archive and tier restored, the scratch guest, the verdict with its detail and timing; for a
//! verify, the PBS snapshot, the verify task and the verification state read back.
//!
//! Rows are history and never deleted. [`Backups::close_unfinished`] closes rows a crashed
//! process left open (their jobs are failed by the queue at start-up).

use rusqlite::{OptionalExtension, Row, params};

use super::{Interrupted, InvalidField, JobId, StateDb, Timestamp, check_vmid, truncate_text};

const MAX_TEXT: usize = 4096;

/// History failure.
#[derive(Debug, thiserror::Error)]
pub enum BackupsError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
}

/// One vzdump of a backup job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRunRow {
    pub job_id: String,
    pub tier: String,
    pub storage: String,
    /// `running` | `done` | `failed`.
    pub phase: String,
    pub requested_mode: String,
    pub actual_mode: Option<String>,
    pub volid: Option<String>,
    pub upid: Option<String>,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A backup job's own facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJobRow {
    pub job_id: String,
    pub vmid: u32,
    pub trigger: String,
    pub consistency: String,
    pub runs: Vec<BackupRunRow>,
}

/// A restore-test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTestRow {
    pub job_id: String,
    pub vmid: u32,
    /// `None` while running.
    pub result: Option<String>,
    pub detail: Option<String>,
    pub volid: Option<String>,
    pub tier: Option<String>,
    pub scratch_vmid: Option<u32>,
    pub duration_ms: Option<u64>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A verify of one PBS snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRow {
    pub job_id: String,
    pub vmid: u32,
    pub tier: String,
    pub snapshot: Option<String>,
    /// `ok` | `failed` | `none` once read back.
    pub state: Option<String>,
    pub upid: Option<String>,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// Typed access to the history; get one from [`StateDb::backups`].
#[derive(Debug, Clone, Copy)]
pub struct Backups<'db> {
    db: &'db StateDb,
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<BackupRunRow> {
    Ok(BackupRunRow {
        job_id: row.get(0)?,
        tier: row.get(1)?,
        storage: row.get(2)?,
        phase: row.get(3)?,
        requested_mode: row.get(4)?,
        actual_mode: row.get(5)?,
        volid: row.get(6)?,
        upid: row.get(7)?,
        error: row.get(8)?,
        started_at: row.get(9)?,
        finished_at: row.get(10)?,
    })
}

const RUN_COLUMNS: &str = "job_id, tier, storage, phase, requested_mode, actual_mode, volid, upid, error, started_at, finished_at";

fn restore_row(row: &Row<'_>) -> rusqlite::Result<RestoreTestRow> {
    Ok(RestoreTestRow {
        job_id: row.get(0)?,
        vmid: row.get(1)?,
        result: row.get(2)?,
        detail: row.get(3)?,
        volid: row.get(4)?,
        tier: row.get(5)?,
        scratch_vmid: row.get(6)?,
        duration_ms: row
            .get::<_, Option<i64>>(7)?
            .map(|d| u64::try_from(d).unwrap_or(0)),
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

const RESTORE_COLUMNS: &str =
    "job_id, vmid, result, detail, volid, tier, scratch_vmid, duration_ms, started_at, finished_at";

fn verify_row(row: &Row<'_>) -> rusqlite::Result<VerifyRow> {
    Ok(VerifyRow {
        job_id: row.get(0)?,
        vmid: row.get(1)?,
        tier: row.get(2)?,
        snapshot: row.get(3)?,
        state: row.get(4)?,
        upid: row.get(5)?,
        error: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
    })
}

const VERIFY_COLUMNS: &str =
    "job_id, vmid, tier, snapshot, state, upid, error, started_at, finished_at";

impl<'db> Backups<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<(), BackupsError> {
        self.db.with_conn(|conn| conn.execute(sql, p))?;
        Ok(())
    }

    /// Records who asked for backup job `job` (already in the job history) and how consistent
    /// it will be.
    pub fn record_job(
        &self,
        job: &JobId,
        vmid: u32,
        trigger: &str,
        consistency: &str,
    ) -> Result<(), BackupsError> {
        check_vmid(vmid)?;
        self.exec(
            "INSERT INTO backup_jobs (job_id, vmid, trigger, consistency) VALUES (?1, ?2, ?3, ?4)",
            params![job.as_str(), vmid, trigger, consistency],
        )
    }

    /// A vzdump to `tier` begins.
    pub fn start_run(
        &self,
        job: &JobId,
        tier: &str,
        storage: &str,
        requested_mode: &str,
    ) -> Result<(), BackupsError> {
        let now = self.db.now();
        self.exec(
            "INSERT INTO backup_runs (job_id, tier, storage, phase, requested_mode, started_at)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
            params![job.as_str(), tier, storage, requested_mode, now],
        )
    }

    pub fn run_upid(&self, job: &JobId, tier: &str, upid: &str) -> Result<(), BackupsError> {
        self.exec(
            "UPDATE backup_runs SET upid = ?3 WHERE job_id = ?1 AND tier = ?2",
            params![job.as_str(), tier, upid],
        )
    }

    /// The vzdump to `tier` ended: `Ok((actual mode, volid))` or the error.
    pub fn finish_run(
        &self,
        job: &JobId,
        tier: &str,
        actual_mode: Option<&str>,
        outcome: Result<&str, &str>,
    ) -> Result<(), BackupsError> {
        let now = self.db.now();
        let (phase, volid, error) = match outcome {
            Ok(volid) => ("done", Some(volid.to_owned()), None),
            Err(e) => ("failed", None, Some(truncate_text(e, MAX_TEXT))),
        };
        self.exec(
            "UPDATE backup_runs SET phase = ?3, actual_mode = ?4, volid = ?5, error = ?6, finished_at = ?7
             WHERE job_id = ?1 AND tier = ?2",
            params![job.as_str(), tier, phase, actual_mode, volid, error, now],
        )
    }

    /// A backup job with its runs.
    pub fn job(&self, job: &str) -> Result<Option<BackupJobRow>, BackupsError> {
        let head = self.db.with_conn(|conn| {
            conn.query_row(
                "SELECT job_id, vmid, trigger, consistency FROM backup_jobs WHERE job_id = ?1",
                [job],
                |r| {
                    Ok(BackupJobRow {
                        job_id: r.get(0)?,
                        vmid: r.get(1)?,
                        trigger: r.get(2)?,
                        consistency: r.get(3)?,
                        runs: Vec::new(),
                    })
                },
            )
            .optional()
        })?;
        let Some(mut head) = head else {
            return Ok(None);
        };
        head.runs = self.db.with_conn(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM backup_runs WHERE job_id = ?1 ORDER BY started_at, tier"
            ))?;
            let rows = stmt.query_map([job], run_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Some(head))
    }

    /// The newest job of `kind` for `vmid` (by creation), if any: its id.
    pub fn latest_job_id(&self, vmid: u32, kind: &str) -> Result<Option<String>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            conn.query_row(
                "SELECT id FROM jobs WHERE vmid = ?1 AND kind = ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![vmid, kind],
                |r| r.get(0),
            )
            .optional()
        })?)
    }

    /// For every guest whose latest job of `kind` is still queued or running: that job's id
    /// (one query for all guests, where [`Self::latest_job_id`] is one per guest).
    pub fn unfinished_latest_jobs(
        &self,
        kind: &str,
    ) -> Result<std::collections::HashMap<u32, String>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT j.vmid, j.id FROM jobs j
                 WHERE j.kind = ?1 AND j.phase IN ('queued', 'running')
                   AND j.id = (SELECT k.id FROM jobs k WHERE k.vmid = j.vmid AND k.kind = ?1
                               ORDER BY k.created_at DESC, k.rowid DESC LIMIT 1)",
            )?;
            let rows = stmt.query_map([kind], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
            })?;
            rows.collect::<Result<std::collections::HashMap<_, _>, _>>()
        })?)
    }

    /// Every finished successful run of `vmid` that produced an archive, with its job's facts:
    /// (run, trigger, consistency).
    pub fn archives_of(
        &self,
        vmid: u32,
    ) -> Result<Vec<(BackupRunRow, String, String)>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT r.job_id, r.tier, r.storage, r.phase, r.requested_mode, r.actual_mode, r.volid,
                        r.upid, r.error, r.started_at, r.finished_at, j.trigger, j.consistency
                 FROM backup_runs r JOIN backup_jobs j ON j.job_id = r.job_id
                 WHERE j.vmid = ?1 AND r.volid IS NOT NULL",
            )?;
            let rows = stmt.query_map([vmid], |r| Ok((run_row(r)?, r.get(11)?, r.get(12)?)))?;
            rows.collect::<Result<Vec<_>, _>>()
        })?)
    }

    /// When the newest backup job of `vmid` was created (any trigger, any outcome).
    pub fn last_backup_attempt(&self, vmid: u32) -> Result<Option<Timestamp>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            conn.query_row(
                "SELECT MAX(j.created_at) FROM jobs j JOIN backup_jobs b ON b.job_id = j.id
                 WHERE b.vmid = ?1",
                [vmid],
                |r| r.get(0),
            )
        })?)
    }

    // ---- restore-tests ----

    pub fn start_restore_test(&self, job: &JobId, vmid: u32) -> Result<(), BackupsError> {
        check_vmid(vmid)?;
        let now = self.db.now();
        self.exec(
            "INSERT INTO restore_tests (job_id, vmid, started_at) VALUES (?1, ?2, ?3)",
            params![job.as_str(), vmid, now],
        )
    }

    /// What the test restores, from where, into which scratch guest.
    pub fn restore_test_source(
        &self,
        job: &JobId,
        volid: &str,
        tier: &str,
        scratch_vmid: Option<u32>,
    ) -> Result<(), BackupsError> {
        self.exec(
            "UPDATE restore_tests SET volid = ?2, tier = ?3, scratch_vmid = ?4 WHERE job_id = ?1",
            params![job.as_str(), volid, tier, scratch_vmid],
        )
    }

    pub fn finish_restore_test(
        &self,
        job: &JobId,
        pass: bool,
        detail: &str,
        duration_ms: u64,
    ) -> Result<(), BackupsError> {
        let now = self.db.now();
        self.exec(
            "UPDATE restore_tests SET result = ?2, detail = ?3, duration_ms = ?4, finished_at = ?5
             WHERE job_id = ?1",
            params![
                job.as_str(),
                if pass { "pass" } else { "fail" },
                truncate_text(detail, MAX_TEXT),
                i64::try_from(duration_ms).unwrap_or(i64::MAX),
                now
            ],
        )
    }

    /// The newest restore-test of `vmid` (running or finished).
    pub fn latest_restore_test(&self, vmid: u32) -> Result<Option<RestoreTestRow>, BackupsError> {
        self.one_restore_test("WHERE vmid = ?1 ORDER BY started_at DESC, rowid DESC", vmid)
    }

    /// The newest finished restore-test of `vmid`.
    pub fn latest_finished_restore_test(
        &self,
        vmid: u32,
    ) -> Result<Option<RestoreTestRow>, BackupsError> {
        self.one_restore_test(
            "WHERE vmid = ?1 AND finished_at IS NOT NULL ORDER BY started_at DESC, rowid DESC",
            vmid,
        )
    }

    /// The newest restore-test of `vmid` that reached a verdict (one an agent restart
    /// interrupted is closed without a duration).
    pub fn latest_completed_restore_test(
        &self,
        vmid: u32,
    ) -> Result<Option<RestoreTestRow>, BackupsError> {
        self.one_restore_test(
            "WHERE vmid = ?1 AND duration_ms IS NOT NULL ORDER BY started_at DESC, rowid DESC",
            vmid,
        )
    }

    fn one_restore_test(
        &self,
        tail: &str,
        vmid: u32,
    ) -> Result<Option<RestoreTestRow>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            conn.query_row(
                &format!("SELECT {RESTORE_COLUMNS} FROM restore_tests {tail} LIMIT 1"),
                [vmid],
                restore_row,
            )
            .optional()
        })?)
    }

    // ---- verify ----

    pub fn start_verify(&self, job: &JobId, vmid: u32, tier: &str) -> Result<(), BackupsError> {
        check_vmid(vmid)?;
        let now = self.db.now();
        self.exec(
            "INSERT INTO verify_runs (job_id, vmid, tier, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![job.as_str(), vmid, tier, now],
        )
    }

    pub fn verify_target(
        &self,
        job: &JobId,
        snapshot: &str,
        upid: Option<&str>,
    ) -> Result<(), BackupsError> {
        self.exec(
            "UPDATE verify_runs SET snapshot = ?2, upid = ?3 WHERE job_id = ?1",
            params![job.as_str(), snapshot, upid],
        )
    }

    /// The verify ended: `Ok(state read back)` or why it could not run.
    pub fn finish_verify(
        &self,
        job: &JobId,
        outcome: Result<&str, &str>,
    ) -> Result<(), BackupsError> {
        let now = self.db.now();
        let (state, error) = match outcome {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(truncate_text(e, MAX_TEXT))),
        };
        self.exec(
            "UPDATE verify_runs SET state = ?2, error = ?3, finished_at = ?4 WHERE job_id = ?1",
            params![job.as_str(), state, error, now],
        )
    }

    pub fn latest_verify(&self, vmid: u32) -> Result<Option<VerifyRow>, BackupsError> {
        Ok(self.db.with_conn(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {VERIFY_COLUMNS} FROM verify_runs WHERE vmid = ?1
                     ORDER BY started_at DESC, rowid DESC LIMIT 1"
                ),
                [vmid],
                verify_row,
            )
            .optional()
        })?)
    }

    /// Closes every run, test and verify a previous process left open, with `why`. Returns how
    /// many rows were closed.
    pub fn close_unfinished(&self, why: &str) -> Result<usize, BackupsError> {
        let now = self.db.now();
        let why = truncate_text(why, MAX_TEXT);
        Ok(self.db.with_conn(|conn| {
            let a = conn.execute(
                "UPDATE backup_runs SET phase = 'failed', error = ?1, finished_at = ?2
                 WHERE phase = 'running'",
                params![why, now],
            )?;
            let b = conn.execute(
                "UPDATE restore_tests SET result = 'fail', detail = ?1, finished_at = ?2
                 WHERE finished_at IS NULL",
                params![why, now],
            )?;
            let c = conn.execute(
                "UPDATE verify_runs SET error = ?1, finished_at = ?2 WHERE finished_at IS NULL",
                params![why, now],
            )?;
            Ok::<_, rusqlite::Error>(a + b + c)
        })?)
    }
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
    fn unfinished_latest_jobs_name_each_guest_whose_latest_job_still_runs() {
        let (_d, db) = db();
        let jobs = db.jobs();
        let done = JobId::generate().unwrap();
        jobs.insert_queued(&done, 101, "backup").unwrap();
        jobs.mark_running(&done).unwrap();
        jobs.mark_done(&done, None).unwrap();
        let running = JobId::generate().unwrap();
        jobs.insert_queued(&running, 102, "backup").unwrap();
        jobs.mark_running(&running).unwrap();
        let queued = JobId::generate().unwrap();
        jobs.insert_queued(&queued, 103, "backup").unwrap();
        let other_kind = JobId::generate().unwrap();
        jobs.insert_queued(&other_kind, 104, "verify").unwrap();

        let active = db.backups().unfinished_latest_jobs("backup").unwrap();

        let expected: std::collections::HashMap<u32, String> = [
            (102, running.as_str().to_owned()),
            (103, queued.as_str().to_owned()),
        ]
        .into();
        assert_eq!(active, expected);
    }

    #[test]
    fn a_backup_job_keeps_its_runs_and_their_outcomes() {
        let (_d, db) = db();
        let id = JobId::generate().unwrap();
        db.jobs().insert_queued(&id, 101, "backup").unwrap();
        let b = db.backups();
        b.record_job(&id, 101, "controller", "app").unwrap();
        b.start_run(&id, "local", "local", "snapshot").unwrap();
        b.run_upid(&id, "local", "UPID:pve1:1:2:3:vzdump:101:x@pve!y:")
            .unwrap();
        b.finish_run(
            &id,
            "local",
            Some("stop"),
            Ok("local:backup/vzdump-lxc-101-x.tar.zst"),
        )
        .unwrap();
        b.start_run(&id, "offsite", "felhom-pbs", "snapshot")
            .unwrap();
        b.finish_run(&id, "offsite", None, Err("job errors"))
            .unwrap();
        let job = b.job(id.as_str()).unwrap().unwrap();
        assert_eq!(job.trigger, "controller");
        assert_eq!(job.runs.len(), 2);
        let local = job.runs.iter().find(|r| r.tier == "local").unwrap();
        assert_eq!(local.phase, "done");
        assert_eq!(local.actual_mode.as_deref(), Some("stop"));
        let off = job.runs.iter().find(|r| r.tier == "offsite").unwrap();
        assert_eq!(off.phase, "failed");
        assert_eq!(off.error.as_deref(), Some("job errors"));
        assert_eq!(
            b.latest_job_id(101, "backup").unwrap().as_deref(),
            Some(id.as_str())
        );
        assert_eq!(b.archives_of(101).unwrap().len(), 1);
    }

    #[test]
    fn unfinished_rows_are_closed_with_the_reason() {
        let (_d, db) = db();
        let id = JobId::generate().unwrap();
        db.jobs().insert_queued(&id, 101, "restore-test").unwrap();
        let b = db.backups();
        b.start_restore_test(&id, 101).unwrap();
        assert_eq!(b.close_unfinished("agent restarted").unwrap(), 1);
        let t = b.latest_restore_test(101).unwrap().unwrap();
        assert_eq!(t.result.as_deref(), Some("fail"));
        assert_eq!(t.detail.as_deref(), Some("agent restarted"));
        assert_eq!(
            b.latest_finished_restore_test(101).unwrap().unwrap().job_id,
            id.as_str()
        );
    }

    #[test]
    fn an_interrupted_restore_test_is_not_a_completed_one() {
        let (_d, db) = db();
        let b = db.backups();
        let done = JobId::generate().unwrap();
        db.jobs().insert_queued(&done, 101, "restore-test").unwrap();
        b.start_restore_test(&done, 101).unwrap();
        b.finish_restore_test(&done, true, "restored", 1200)
            .unwrap();
        let cut = JobId::generate().unwrap();
        db.jobs().insert_queued(&cut, 101, "restore-test").unwrap();
        b.start_restore_test(&cut, 101).unwrap();
        b.close_unfinished("interrupted by an agent restart")
            .unwrap();
        assert_eq!(
            b.latest_finished_restore_test(101).unwrap().unwrap().job_id,
            cut.as_str()
        );
        assert_eq!(
            b.latest_completed_restore_test(101)
                .unwrap()
                .unwrap()
                .job_id,
            done.as_str()
        );
    }
}
