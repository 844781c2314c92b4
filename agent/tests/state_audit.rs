//! Audit chain over a real database file, tampered with through a raw SQLite connection.

use felhom_agent::infra::state::{AuditError, DB_FILE_NAME, NewAuditEntry, StateDb};

fn append_rows(db: &StateDb, n: u32) {
    for i in 1..=n {
        let detail = format!("{{\"step\":{i}}}");
        db.audit()
            .append(NewAuditEntry {
                actor: "operator:uid=1000",
                action: "guest.start",
                target: "guest:9001",
                detail: &detail,
            })
            .expect("audit append succeeds");
    }
}

/// A connection that bypasses the agent, with the append-only triggers dropped.
fn raw_without_triggers(dir: &std::path::Path) -> rusqlite::Connection {
    let raw = rusqlite::Connection::open(dir.join(DB_FILE_NAME)).expect("raw connection opens");
    raw.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .expect("the agent created both triggers");
    raw
}

#[test]
fn appended_rows_verify() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 5);
    let summary = db.audit().verify().unwrap();
    assert_eq!(summary.rows, 5);
    assert_eq!(summary.head_hash, db.audit().tail(1).unwrap()[0].hash);
    drop(db);
    assert_eq!(
        StateDb::open(dir.path())
            .unwrap()
            .audit()
            .verify()
            .unwrap()
            .rows,
        5
    );
}

#[test]
fn editing_one_row_is_detected_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 5);
    raw_without_triggers(dir.path())
        .execute(
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3",
            [],
        )
        .unwrap();
    let err = db.audit().verify().unwrap_err();
    assert!(matches!(err, AuditError::Altered { seq: 3 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Audit log row 3 was altered: its hash does not match its contents"
    );
}

#[test]
fn rewriting_a_row_with_a_matching_hash_is_detected_at_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 5);
    // The forger rewrites row 3 and gives it the correct hash for its new contents; row 4
    // still points at the old hash.
    let mut forged = db.audit().tail(3).unwrap().remove(0);
    assert_eq!(forged.seq, 3);
    forged.detail = "nothing happened".into();
    forged.hash = forged.expected_hash();
    raw_without_triggers(dir.path())
        .execute(
            "UPDATE audit_log SET detail = ?1, hash = ?2 WHERE seq = 3",
            [&forged.detail, &forged.hash],
        )
        .unwrap();
    let err = db.audit().verify().unwrap_err();
    assert!(matches!(err, AuditError::BrokenLink { seq: 4 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Audit log row 4 does not link to the row before it (that row was altered or replaced)"
    );
}

#[test]
fn deleting_a_middle_row_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 5);
    raw_without_triggers(dir.path())
        .execute("DELETE FROM audit_log WHERE seq = 3", [])
        .unwrap();
    let err = db.audit().verify().unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Missing {
                expected: 3,
                found: 4
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Audit log row 3 is missing: the next row is 4"
    );
}

#[test]
fn deleting_and_renumbering_is_detected_by_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 5);
    let raw = raw_without_triggers(dir.path());
    raw.execute_batch(
        "DELETE FROM audit_log WHERE seq = 3;
         UPDATE audit_log SET seq = seq - 1 WHERE seq > 3;",
    )
    .unwrap();
    let err = db.audit().verify().unwrap_err();
    // Row 4 became row 3; its contents hash with the old number, so it no longer matches.
    assert!(matches!(err, AuditError::Altered { seq: 3 }), "{err:?}");
}

#[test]
fn the_agent_cannot_update_or_delete_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    append_rows(&db, 1);
    let raw = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let err = raw.execute("DELETE FROM audit_log", []).unwrap_err();
    assert!(
        err.to_string().contains("audit_log is append-only"),
        "{err}"
    );
    assert_eq!(db.audit().verify().unwrap().rows, 1);
}
