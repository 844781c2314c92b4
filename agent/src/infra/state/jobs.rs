//! Job history of the per-guest work queue.
//!
//! A job is one queued mutation of one guest. Its row moves `queued → running → done | failed`
//! (or `queued → failed` when it never got to run); `failed` keeps the error text, `done` an
//! optional JSON result. Rows are kept as history; [`Jobs::fail_unfinished`] closes rows a
//! previous agent process left `queued` or `running` when it died, since nothing will ever
//! finish them.
//!
//! Job ids are random UUIDs (version 4 layout, 122 random bits from the OS CSPRNG), so they
//! can be handed to callers without revealing how many jobs ran.

use std::fmt;
use std::str::FromStr;

use rand::TryRngCore as _;
use rand::rngs::OsRng;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Interrupted, InvalidField, StateDb, Timestamp, check_text, check_vmid, truncate_text};

const MAX_KIND: usize = 64;
const MAX_ERROR: usize = 4096;

/// Job history failure.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("The operating system's random number generator failed")]
    Entropy(#[source] rand::rand_core::OsError),
    #[error("Job {0} does not exist")]
    UnknownJob(JobId),
    #[error("Job {id} is {phase}; cannot {action}")]
    WrongPhase {
        id: JobId,
        phase: JobPhase,
        action: &'static str,
    },
    #[error("Job history holds an unreadable {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

/// Identifier of a job: a random UUID in its canonical lowercase text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A fresh random id.
    pub fn generate() -> Result<Self, JobsError> {
        let mut bytes = [0_u8; 16];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(JobsError::Entropy)?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex = hex::encode(bytes);
        Ok(Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = InvalidField;

    /// Accepts the canonical lowercase form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shaped = s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            });
        if shaped {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidField {
                field: "job id",
                reason: format!("{:?} is not a lowercase UUID", truncate_text(s, 64)),
            })
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobPhase {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Whether the job has finished (successfully or not).
    pub const fn is_final(self) -> bool {
        match self {
            Self::Done | Self::Failed => true,
            Self::Queued | Self::Running => false,
        }
    }

    fn parse(value: &str) -> Result<Self, JobsError> {
        match value {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            other => Err(JobsError::Corrupt {
                what: "job phase",
                value: other.into(),
            }),
        }
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's history row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub vmid: u32,
    pub kind: String,
    pub phase: JobPhase,
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// Typed access to the job history; get one from [`StateDb::jobs`].
#[derive(Debug, Clone, Copy)]
pub struct Jobs<'db> {
    db: &'db StateDb,
}

impl<'db> Jobs<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Records a new job in phase `queued`.
    pub fn insert_queued(&self, id: &JobId, vmid: u32, kind: &str) -> Result<(), JobsError> {
        check_vmid(vmid)?;
        check_text("job kind", kind, MAX_KIND)?;
        let now = self.db.now();
        self.db.with_conn(|conn| {
            conn.execute(
                "INSERT INTO jobs (id, vmid, kind, phase, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
                params![id.as_str(), vmid, kind, now],
            )
        })?;
        Ok(())
    }

    /// `queued → running`.
    pub fn mark_running(&self, id: &JobId) -> Result<(), JobsError> {
        let now = self.db.now();
        self.advance(id, &[JobPhase::Queued], "start", |conn| {
            conn.execute(
                "UPDATE jobs SET phase = 'running', started_at = ?2 WHERE id = ?1",
                params![id.as_str(), now],
            )
        })
    }

    /// `running → done`, keeping `result`.
    pub fn mark_done(
        &self,
        id: &JobId,
        result: Option<&serde_json::Value>,
    ) -> Result<(), JobsError> {
        let now = self.db.now();
        let result = result.map(ToString::to_string);
        self.advance(id, &[JobPhase::Running], "finish", |conn| {
            conn.execute(
                "UPDATE jobs SET phase = 'done', result = ?2, finished_at = ?3 WHERE id = ?1",
                params![id.as_str(), result, now],
            )
        })
    }

    /// `queued | running → failed`, keeping `error` (shortened if very long).
    pub fn mark_failed(&self, id: &JobId, error: &str) -> Result<(), JobsError> {
        let now = self.db.now();
        let error = truncate_text(error, MAX_ERROR);
        self.advance(id, &[JobPhase::Queued, JobPhase::Running], "fail", |conn| {
            conn.execute(
                "UPDATE jobs SET phase = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1",
                params![id.as_str(), error, now],
            )
        })
    }

    /// Marks every `queued` or `running` job failed with `error`; returns their ids. Called at
    /// start-up for jobs a previous process left behind.
    pub fn fail_unfinished(&self, error: &str) -> Result<Vec<JobId>, JobsError> {
        let now = self.db.now();
        let error = truncate_text(error, MAX_ERROR);
        let ids = self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids = {
                let mut stmt = tx.prepare(
                    "UPDATE jobs SET phase = 'failed', error = ?1, finished_at = ?2
                     WHERE phase IN ('queued', 'running') RETURNING id",
                )?;
                let rows = stmt.query_map(params![error, now], |row| row.get::<_, String>(0))?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok::<_, rusqlite::Error>(ids)
        })?;
        let mut ids: Vec<JobId> = ids.into_iter().map(JobId).collect();
        ids.sort();
        Ok(ids)
    }

    /// One job's record.
    pub fn get(&self, id: &JobId) -> Result<Option<JobRecord>, JobsError> {
        let row = self.db.with_conn(|conn| {
            conn.query_row(&select("WHERE id = ?1"), [id.as_str()], read_row)
                .optional()
        })?;
        row.map(into_record).transpose()
    }

    /// The `limit` most recent jobs of `vmid`, newest first.
    pub fn list_for_vmid(&self, vmid: u32, limit: u32) -> Result<Vec<JobRecord>, JobsError> {
        check_vmid(vmid)?;
        self.list(
            &select("WHERE vmid = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2"),
            params![vmid, limit],
        )
    }

    /// The `limit` most recent jobs of all guests, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<JobRecord>, JobsError> {
        self.list(
            &select("ORDER BY created_at DESC, rowid DESC LIMIT ?1"),
            params![limit],
        )
    }

    fn list(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<JobRecord>, JobsError> {
        let rows = self.db.with_conn(|conn| {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(args, read_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        rows.into_iter().map(into_record).collect()
    }

    /// Checks the job's phase is one of `from`, then runs `update`, in one transaction.
    fn advance(
        &self,
        id: &JobId,
        from: &[JobPhase],
        action: &'static str,
        update: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<(), JobsError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let phase: Option<String> = tx
                .query_row(
                    "SELECT phase FROM jobs WHERE id = ?1",
                    [id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            let phase = JobPhase::parse(&phase.ok_or_else(|| JobsError::UnknownJob(id.clone()))?)?;
            if !from.contains(&phase) {
                return Err(JobsError::WrongPhase {
                    id: id.clone(),
                    phase,
                    action,
                });
            }
            update(&tx)?;
            tx.commit()?;
            Ok(())
        })
    }
}

type RawRow = (
    String,
    u32,
    String,
    String,
    Option<String>,
    Option<String>,
    Timestamp,
    Option<Timestamp>,
    Option<Timestamp>,
);

fn select(tail: &str) -> String {
    format!(
        "SELECT id, vmid, kind, phase, error, result, created_at, started_at, finished_at FROM jobs {tail}"
    )
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn into_record(raw: RawRow) -> Result<JobRecord, JobsError> {
    let (id, vmid, kind, phase, error, result, created_at, started_at, finished_at) = raw;
    let result = result
        .map(|text| {
            serde_json::from_str(&text).map_err(|_| JobsError::Corrupt {
                what: "job result",
                value: text,
            })
        })
        .transpose()?;
    Ok(JobRecord {
        id: JobId(id),
        vmid,
        kind,
        phase: JobPhase::parse(&phase)?,
        error,
        result,
        created_at,
        started_at,
        finished_at,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::infra::state::FakeClock;

    fn db() -> (tempfile::TempDir, StateDb, FakeClock) {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new(Timestamp::from_unix_millis(1_000_000));
        let db = StateDb::open_with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
        (dir, db, clock)
    }

    #[test]
    fn generated_ids_are_v4_uuids_and_parse_back() {
        let id = JobId::generate().unwrap();
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(&id.as_str()[14..15], "4");
        assert!(matches!(&id.as_str()[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(id.as_str().parse::<JobId>().unwrap(), id);
        assert_ne!(JobId::generate().unwrap(), id);
    }

    #[test]
    fn malformed_job_id_is_refused() {
        let err = "../etc".parse::<JobId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid job id: \"../etc\" is not a lowercase UUID"
        );
    }

    #[test]
    fn job_moves_through_its_phases_with_timestamps() {
        let (_dir, db, clock) = db();
        let jobs = db.jobs();
        let id = JobId::generate().unwrap();
        jobs.insert_queued(&id, 9001, "start").unwrap();
        clock.advance(Duration::from_secs(1));
        jobs.mark_running(&id).unwrap();
        clock.advance(Duration::from_secs(1));
        jobs.mark_done(&id, Some(&json!({"upid": "UPID:x:"})))
            .unwrap();
        let record = jobs.get(&id).unwrap().unwrap();
        assert_eq!(record.phase, JobPhase::Done);
        assert_eq!(record.result, Some(json!({"upid": "UPID:x:"})));
        assert_eq!(record.created_at.unix_millis(), 1_000_000);
        assert_eq!(
            record.started_at.map(Timestamp::unix_millis),
            Some(1_001_000)
        );
        assert_eq!(
            record.finished_at.map(Timestamp::unix_millis),
            Some(1_002_000)
        );
    }

    #[test]
    fn finished_job_cannot_be_restarted() {
        let (_dir, db, _clock) = db();
        let id = JobId::generate().unwrap();
        db.jobs().insert_queued(&id, 9001, "start").unwrap();
        db.jobs().mark_failed(&id, "boom").unwrap();
        let err = db.jobs().mark_running(&id).unwrap_err();
        assert_eq!(err.to_string(), format!("Job {id} is failed; cannot start"));
    }

    #[test]
    fn listing_by_vmid_is_newest_first_and_only_that_guest() {
        let (_dir, db, clock) = db();
        let mut ids = Vec::new();
        for vmid in [9001, 9002, 9001] {
            let id = JobId::generate().unwrap();
            db.jobs().insert_queued(&id, vmid, "start").unwrap();
            ids.push(id);
            clock.advance(Duration::from_secs(1));
        }
        let listed: Vec<JobId> = db
            .jobs()
            .list_for_vmid(9001, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, [ids[2].clone(), ids[0].clone()]);
        assert_eq!(db.jobs().recent(1).unwrap()[0].id, ids[2]);
    }

    #[test]
    fn unfinished_jobs_of_a_dead_process_are_failed() {
        let (_dir, db, _clock) = db();
        let queued = JobId::generate().unwrap();
        let running = JobId::generate().unwrap();
        let done = JobId::generate().unwrap();
        for id in [&queued, &running, &done] {
            db.jobs().insert_queued(id, 9001, "start").unwrap();
        }
        db.jobs().mark_running(&running).unwrap();
        db.jobs().mark_running(&done).unwrap();
        db.jobs().mark_done(&done, None).unwrap();
        let mut expected = vec![queued.clone(), running.clone()];
        expected.sort();
        assert_eq!(
            db.jobs().fail_unfinished("agent restarted").unwrap(),
            expected
        );
        let record = db.jobs().get(&running).unwrap().unwrap();
        assert_eq!(
            (record.phase, record.error.as_deref()),
            (JobPhase::Failed, Some("agent restarted"))
        );
        assert_eq!(db.jobs().get(&done).unwrap().unwrap().phase, JobPhase::Done);
    }
}
