//! Versioned schema of the state database.
//!
//! `PRAGMA user_version` holds the number of migrations applied. [`migrate`] applies each
//! missing migration in order, each inside its own `BEGIN IMMEDIATE` transaction together with
//! the version bump, so a failure leaves the database at the last good version. A database
//! whose version is higher than [`LATEST`] was written by a newer agent and is refused rather
//! than guessed at. Migrations are append-only: never edit a released one, add the next.
//!
//! `PRAGMA application_id` is set to [`APPLICATION_ID`] by the first migration; a database
//! carrying any other non-zero id belongs to some other program and is refused.

use rusqlite::{Connection, TransactionBehavior};

/// `PRAGMA application_id` of a felhom agent state database (ASCII "fhST").
pub const APPLICATION_ID: i32 = 0x6668_5354;

/// Migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: journal, tokens, audit log, idempotency keys, job history.
    r"
    PRAGMA application_id = 1718113108;

    CREATE TABLE operations (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        kind            TEXT    NOT NULL,
        vmid            INTEGER,
        state           TEXT    NOT NULL CHECK (state IN
                            ('running', 'completed', 'compensating', 'compensated', 'failed')),
        idempotency_key TEXT    UNIQUE,
        error           TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        finished_at     INTEGER
    ) STRICT;
    CREATE INDEX operations_unfinished ON operations (state)
        WHERE state IN ('running', 'compensating');

    CREATE TABLE operation_steps (
        operation_id INTEGER NOT NULL REFERENCES operations (id),
        step_index   INTEGER NOT NULL CHECK (step_index >= 0),
        name         TEXT    NOT NULL,
        state        TEXT    NOT NULL CHECK (state IN ('started', 'done', 'failed')),
        upid         TEXT,
        error        TEXT,
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER,
        PRIMARY KEY (operation_id, step_index)
    ) STRICT;

    CREATE TABLE operation_resources (
        operation_id INTEGER NOT NULL,
        step_index   INTEGER NOT NULL,
        resource     TEXT    NOT NULL,
        created_at   INTEGER NOT NULL,
        removed_at   INTEGER,
        PRIMARY KEY (operation_id, resource),
        FOREIGN KEY (operation_id, step_index) REFERENCES operation_steps (operation_id, step_index)
    ) STRICT;
    CREATE INDEX operation_resources_by_resource ON operation_resources (resource);

    CREATE TABLE guest_tokens (
        vmid       INTEGER PRIMARY KEY,
        token_id   TEXT    NOT NULL UNIQUE,
        token_hash TEXT    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE audit_log (
        seq       INTEGER PRIMARY KEY,
        at        INTEGER NOT NULL,
        actor     TEXT    NOT NULL,
        action    TEXT    NOT NULL,
        target    TEXT    NOT NULL,
        detail    TEXT    NOT NULL,
        prev_hash TEXT    NOT NULL,
        hash      TEXT    NOT NULL
    ) STRICT;
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

    CREATE TABLE idempotency_keys (
        scope        TEXT    NOT NULL,
        key          TEXT    NOT NULL,
        fingerprint  TEXT    NOT NULL,
        result       TEXT,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT;
    CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

    CREATE TABLE jobs (
        id          TEXT    PRIMARY KEY,
        vmid        INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        phase       TEXT    NOT NULL CHECK (phase IN ('queued', 'running', 'done', 'failed')),
        error       TEXT,
        result      TEXT,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER
    ) STRICT;
    CREATE INDEX jobs_by_vmid ON jobs (vmid, created_at);
    CREATE INDEX jobs_by_time ON jobs (created_at);
    ",
    // 2: backup, restore-test and verify history (the job phase lives in `jobs`).
    r"
    CREATE TABLE backup_jobs (
        job_id      TEXT    PRIMARY KEY REFERENCES jobs (id),
        vmid        INTEGER NOT NULL,
        trigger     TEXT    NOT NULL CHECK (trigger IN ('controller', 'schedule', 'operator')),
        consistency TEXT    NOT NULL CHECK (consistency IN ('app', 'crash'))
    ) STRICT;

    CREATE TABLE backup_runs (
        job_id         TEXT    NOT NULL REFERENCES backup_jobs (job_id),
        tier           TEXT    NOT NULL,
        storage        TEXT    NOT NULL,
        phase          TEXT    NOT NULL CHECK (phase IN ('running', 'done', 'failed')),
        requested_mode TEXT    NOT NULL,
        actual_mode    TEXT,
        volid          TEXT,
        upid           TEXT,
        error          TEXT,
        started_at     INTEGER NOT NULL,
        finished_at    INTEGER,
        PRIMARY KEY (job_id, tier)
    ) STRICT;
    CREATE INDEX backup_runs_by_volid ON backup_runs (volid);

    CREATE TABLE restore_tests (
        job_id       TEXT    PRIMARY KEY REFERENCES jobs (id),
        vmid         INTEGER NOT NULL,
        result       TEXT    CHECK (result IN ('pass', 'fail')),
        detail       TEXT,
        volid        TEXT,
        tier         TEXT,
        scratch_vmid INTEGER,
        duration_ms  INTEGER,
        started_at   INTEGER NOT NULL,
        finished_at  INTEGER
    ) STRICT;
    CREATE INDEX restore_tests_by_vmid ON restore_tests (vmid, started_at);

    CREATE TABLE verify_runs (
        job_id      TEXT    PRIMARY KEY REFERENCES jobs (id),
        vmid        INTEGER NOT NULL,
        tier        TEXT    NOT NULL,
        snapshot    TEXT,
        state       TEXT    CHECK (state IN ('ok', 'failed', 'none')),
        upid        TEXT,
        error       TEXT,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER
    ) STRICT;
    ",
    // 3: snapshots the agent took for guests (the per-guest snapshot cap and interval).
    r"
    CREATE TABLE agent_snapshots (
        vmid     INTEGER NOT NULL,
        name     TEXT    NOT NULL,
        taken_at INTEGER NOT NULL,
        PRIMARY KEY (vmid, name)
    ) STRICT;
    ",
    // 4: signed-off audit checkpoints; rows before the newest one may be pruned from the front.
    r"
    CREATE TABLE audit_checkpoints (
        seq           INTEGER PRIMARY KEY,
        head_seq      INTEGER NOT NULL,
        head_hash     TEXT    NOT NULL,
        signed_off_by TEXT    NOT NULL,
        at            INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE audit_pruned (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        through_seq  INTEGER NOT NULL,
        through_hash TEXT    NOT NULL
    ) STRICT;
    DROP TRIGGER audit_log_no_delete;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        WHEN OLD.seq > COALESCE((SELECT MAX(head_seq) FROM audit_checkpoints), 0)
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only after its last checkpoint'); END;
    CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
    CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
    ",
];

/// Schema version this code writes and understands.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Why the schema could not be brought to [`LATEST`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "Database schema version {found} is newer than this agent understands (up to {supported}); \
         run a newer agent or restore a backup of the state directory"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("Database belongs to another application (application_id {found:#010x})")]
    ForeignApplication { found: i32 },
    #[error("Could not read the schema version")]
    ReadVersion(#[source] rusqlite::Error),
    #[error("Migration to schema version {version} failed")]
    Migration {
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
}

/// Brings the schema to [`LATEST`], or refuses a newer or foreign database.
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(SchemaError::ReadVersion)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(SchemaError::ForeignApplication { found: app_id });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(index + 1).expect("the migration list is short");
        let fail = |source| SchemaError::Migration { version, source };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Read the version inside the write transaction, so a concurrent opener cannot make
        // us apply a migration twice.
        let current = user_version(&tx).map_err(SchemaError::ReadVersion)?;
        if current > LATEST {
            return Err(SchemaError::TooNew {
                found: current,
                supported: LATEST,
            });
        }
        if current >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    // With every migration already applied the loop never looked; a newer database must still
    // be refused.
    let current = user_version(conn).map_err(SchemaError::ReadVersion)?;
    if current > LATEST {
        return Err(SchemaError::TooNew {
            found: current,
            supported: LATEST,
        });
    }
    Ok(())
}

/// The schema version stored in the database.
pub fn user_version(conn: &Connection) -> Result<u32, rusqlite::Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_id_literal_matches_constant() {
        // The first migration spells the id in decimal; keep the two in step.
        assert!(MIGRATIONS[0].contains(&format!("application_id = {APPLICATION_ID};")));
    }

    #[test]
    fn fresh_database_is_marked_as_ours() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(err, SchemaError::TooNew { found, supported } if found == LATEST + 1 && supported == LATEST)
        );
    }

    #[test]
    fn foreign_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "application_id", 42).unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Database belongs to another application (application_id 0x0000002a)"
        );
    }
}
