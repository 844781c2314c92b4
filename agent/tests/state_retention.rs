//! Retention over a real database file: old finished history goes, what is still needed stays.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::infra::state::jobs::{JobId, JobPhase};
use felhom_agent::infra::state::journal::NewOperation;
use felhom_agent::infra::state::{FakeClock, Retention, StateDb, Timestamp};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Db {
    _dir: tempfile::TempDir,
    db: StateDb,
    clock: Arc<FakeClock>,
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(Timestamp::from_unix_millis(
        1_780_000_000_000,
    )));
    let db = StateDb::open_with_clock(dir.path(), clock.clone()).unwrap();
    Db {
        _dir: dir,
        db,
        clock,
    }
}

const POLICY: Retention = Retention {
    max_age: Duration::from_secs(30 * 24 * 3600),
    keep_per_guest: 2,
    audit_max_age: Duration::from_secs(30 * 24 * 3600),
};

/// A job of `kind` for `vmid`, taken to `phase` now.
fn job(db: &StateDb, vmid: u32, kind: &str, phase: JobPhase) -> JobId {
    let id = JobId::generate().unwrap();
    let jobs = db.jobs();
    jobs.insert_queued(&id, vmid, kind).unwrap();
    match phase {
        JobPhase::Queued => {}
        JobPhase::Running => jobs.mark_running(&id).unwrap(),
        JobPhase::Done => {
            jobs.mark_running(&id).unwrap();
            jobs.mark_done(&id, None).unwrap();
        }
        JobPhase::Failed => {
            jobs.mark_running(&id).unwrap();
            jobs.mark_failed(&id, "boom").unwrap();
        }
    }
    id
}

fn exists(db: &StateDb, id: &JobId) -> bool {
    db.jobs().get(id).unwrap().is_some()
}

#[test]
fn old_finished_jobs_beyond_the_kept_ones_are_pruned() {
    let t = db();
    let oldest = job(&t.db, 101, "snapshot", JobPhase::Failed);
    t.clock.advance(DAY);
    let old = job(&t.db, 101, "snapshot", JobPhase::Failed);
    t.clock.advance(DAY);
    let kept_a = job(&t.db, 101, "snapshot", JobPhase::Failed);
    t.clock.advance(DAY);
    let kept_b = job(&t.db, 101, "snapshot", JobPhase::Failed);
    t.clock.advance(60 * DAY);

    let pruned = t.db.retention().run(POLICY).unwrap();

    assert_eq!(pruned.jobs, 2);
    assert!(!exists(&t.db, &oldest) && !exists(&t.db, &old));
    assert!(exists(&t.db, &kept_a) && exists(&t.db, &kept_b));
}

#[test]
fn recent_jobs_stay_however_many() {
    let t = db();
    let ids: Vec<_> = (0..10)
        .map(|_| job(&t.db, 101, "snapshot", JobPhase::Done))
        .collect();
    t.clock.advance(DAY);

    assert!(t.db.retention().run(POLICY).unwrap().is_empty());
    assert!(ids.iter().all(|id| exists(&t.db, id)));
}

#[test]
fn the_newest_successful_job_of_a_kind_stays_at_any_age() {
    let t = db();
    let last_good = job(&t.db, 101, "backup", JobPhase::Done);
    t.clock.advance(DAY);
    for _ in 0..5 {
        job(&t.db, 101, "backup", JobPhase::Failed);
    }
    t.clock.advance(365 * DAY);

    let pruned = t.db.retention().run(POLICY).unwrap();

    assert_eq!(pruned.jobs, 3, "the 3 oldest failures");
    assert!(exists(&t.db, &last_good));
}

#[test]
fn unfinished_jobs_are_never_pruned() {
    let t = db();
    let queued = job(&t.db, 101, "backup", JobPhase::Queued);
    let running = job(&t.db, 101, "restore-test", JobPhase::Running);
    t.clock.advance(365 * DAY);

    t.db.retention()
        .run(Retention {
            keep_per_guest: 0,
            ..POLICY
        })
        .unwrap();

    assert!(exists(&t.db, &queued) && exists(&t.db, &running));
}

#[test]
fn a_pruned_backup_job_takes_its_runs_along() {
    let t = db();
    let old = job(&t.db, 101, "backup", JobPhase::Failed);
    t.db.backups()
        .record_job(&old, 101, "schedule", "crash")
        .unwrap();
    t.db.backups()
        .start_run(&old, "local", "local", "snapshot")
        .unwrap();
    job(&t.db, 101, "backup", JobPhase::Done);
    t.clock.advance(365 * DAY);

    let pruned =
        t.db.retention()
            .run(Retention {
                keep_per_guest: 0,
                ..POLICY
            })
            .unwrap();

    assert_eq!(pruned.jobs, 1);
    assert!(t.db.backups().job(old.as_str()).unwrap().is_none());
}

#[test]
fn finished_operations_go_but_failed_and_unfinished_ones_stay() {
    let t = db();
    let journal = t.db.journal();
    let op = |kind| {
        journal
            .begin(NewOperation {
                kind,
                vmid: Some(101),
                idempotency_key: None,
            })
            .unwrap()
    };
    let completed = op("provision");
    let step = journal.step_started(completed, "restore", None).unwrap();
    journal.step_done(step).unwrap();
    journal.mark_completed(completed).unwrap();
    let failed = op("provision");
    journal.mark_failed(failed, "compensation failed").unwrap();
    let running = op("provision");
    t.clock.advance(365 * DAY);

    let pruned = t.db.retention().run(POLICY).unwrap();

    assert_eq!(pruned.operations, 1);
    assert!(journal.get(completed).unwrap().is_none());
    assert!(journal.get(failed).unwrap().is_some());
    assert!(journal.get(running).unwrap().is_some());
}

#[test]
fn expired_idempotency_keys_are_pruned() {
    let t = db();
    let keys = t.db.idempotency();
    keys.claim("provision", "k1", "fp", Duration::from_secs(60))
        .unwrap();
    keys.claim("provision", "k2", "fp", Duration::from_secs(3600))
        .unwrap();
    t.clock.advance(Duration::from_secs(120));

    assert_eq!(t.db.retention().run(POLICY).unwrap().idempotency_keys, 1);
}
