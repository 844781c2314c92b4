//! Audit rows go only behind a signed-off checkpoint, from the front, and the chain that is
//! left still verifies; over a real database file, tampered with through raw SQLite.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::infra::state::{
    AuditError, DB_FILE_NAME, FakeClock, NewAuditEntry, StateDb, Timestamp,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Log {
    dir: tempfile::TempDir,
    db: StateDb,
    clock: Arc<FakeClock>,
}

fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(Timestamp::from_unix_millis(
        1_780_000_000_000,
    )));
    let db = StateDb::open_with_clock(dir.path(), clock.clone()).unwrap();
    Log { dir, db, clock }
}

fn append(db: &StateDb, n: u32) {
    for i in 0..n {
        db.audit()
            .append(NewAuditEntry {
                actor: "guest:101",
                action: "guest.snapshot",
                target: "guest:101",
                detail: &format!("snapshot s{i} taken"),
            })
            .unwrap();
    }
}

fn raw(t: &Log) -> rusqlite::Connection {
    rusqlite::Connection::open(t.dir.path().join(DB_FILE_NAME)).unwrap()
}

fn sign_off(t: &Log) -> u64 {
    let head = t.db.audit().verify().unwrap().head_hash;
    t.db.audit()
        .checkpoint("operator:uid=0", &head)
        .unwrap()
        .head_seq
}

#[test]
fn nothing_is_pruned_without_a_checkpoint() {
    let t = log();
    append(&t.db, 5);
    t.clock.advance(400 * DAY);

    assert_eq!(t.db.audit().prune(t.clock_now()).unwrap(), 0);
    let err = raw(&t)
        .execute("DELETE FROM audit_log WHERE seq = 1", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(t.db.audit().verify().unwrap().rows, 5);
}

#[test]
fn old_rows_behind_a_checkpoint_go_and_the_rest_still_verifies() {
    let t = log();
    append(&t.db, 5);
    assert_eq!(sign_off(&t), 5);
    t.clock.advance(400 * DAY);
    append(&t.db, 2);

    let removed =
        t.db.audit()
            .prune(Timestamp::from_unix_millis(
                t.clock_now().unix_millis() - 1000,
            ))
            .unwrap();

    assert_eq!(removed, 5);
    let chain = t.db.audit().verify().unwrap();
    assert_eq!((chain.pruned_through, chain.rows), (5, 3));
    let first = &t.db.audit().tail(3).unwrap()[0];
    assert_eq!(first.action, "audit.checkpoint");
}

#[test]
fn rows_after_the_checkpoint_cannot_be_deleted() {
    let t = log();
    append(&t.db, 3);
    sign_off(&t);
    append(&t.db, 1);

    let err = raw(&t)
        .execute("DELETE FROM audit_log WHERE seq > 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[test]
fn a_checkpoint_needs_the_head_the_operator_verified() {
    let t = log();
    append(&t.db, 2);
    let seen = t.db.audit().verify().unwrap().head_hash;
    append(&t.db, 1);

    let err =
        t.db.audit()
            .checkpoint("operator:uid=0", &seen)
            .unwrap_err();
    assert!(
        matches!(err, AuditError::HeadMismatch { rows: 3, .. }),
        "{err}"
    );
    let err =
        t.db.audit()
            .checkpoint("operator:uid=0", "abc")
            .unwrap_err();
    assert!(matches!(err, AuditError::MalformedHead(_)), "{err}");
}

#[test]
fn a_broken_chain_cannot_be_signed_off() {
    let t = log();
    append(&t.db, 3);
    let head = t.db.audit().verify().unwrap().head_hash;
    let raw = raw(&t);
    raw.execute_batch(
        "DROP TRIGGER audit_log_no_update;
         UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 2;",
    )
    .unwrap();

    let err =
        t.db.audit()
            .checkpoint("operator:uid=0", &head)
            .unwrap_err();
    assert!(matches!(err, AuditError::Altered { seq: 2 }), "{err}");
}

#[test]
fn a_prune_marker_moved_past_the_checkpoint_is_found() {
    let t = log();
    append(&t.db, 3);
    sign_off(&t);
    t.clock.advance(400 * DAY);
    append(&t.db, 2);
    t.db.audit().prune(t.clock_now()).unwrap();

    // Cut one more row than was signed off, and say so in the marker.
    let raw = raw(&t);
    raw.execute_batch(
        "DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE seq = 4;
         UPDATE audit_pruned SET through_seq = 4,
             through_hash = (SELECT prev_hash FROM audit_log WHERE seq = 5);",
    )
    .unwrap();

    let err = t.db.audit().verify().unwrap_err();
    assert!(
        matches!(err, AuditError::PrunedUnsigned { through: 4 }),
        "{err}"
    );
}

#[test]
fn a_prune_marker_with_another_hash_is_found() {
    let t = log();
    append(&t.db, 3);
    sign_off(&t);
    t.clock.advance(400 * DAY);
    t.db.audit().prune(t.clock_now()).unwrap();

    raw(&t)
        .execute(
            "UPDATE audit_pruned SET through_hash = ?1",
            [&"f".repeat(64)],
        )
        .unwrap();

    let err = t.db.audit().verify().unwrap_err();
    assert!(
        matches!(err, AuditError::CheckpointMismatch { head_seq: 3, .. }),
        "{err}"
    );
}

impl Log {
    fn clock_now(&self) -> Timestamp {
        use felhom_agent::infra::state::Clock as _;
        self.clock.now()
    }
}
