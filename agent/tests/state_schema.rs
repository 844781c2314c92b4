//! Opening the state database: migrations, schema version checks, file placement.

use felhom_agent::infra::state::{DB_FILE_NAME, OpenError, StateDb, schema};

#[test]
fn reopening_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.schema_version().unwrap(), schema::LATEST);
        db.tokens().mint(9001).unwrap();
    }
    for _ in 0..2 {
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.schema_version().unwrap(), schema::LATEST);
        assert!(
            db.tokens().info(9001).unwrap().is_some(),
            "data survives reopening"
        );
    }
}

#[test]
fn database_file_lives_in_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.path(), dir.path().join(DB_FILE_NAME));
    assert!(dir.path().join(DB_FILE_NAME).is_file());
}

#[test]
fn schema_newer_than_the_code_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(StateDb::open(dir.path()).unwrap());
    {
        let raw = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        raw.pragma_update(None, "user_version", schema::LATEST + 1)
            .unwrap();
    }
    let err = StateDb::open(dir.path()).unwrap_err();
    let OpenError::Schema { source, .. } = &err else {
        panic!("unexpected error {err:?}")
    };
    assert_eq!(
        source.to_string(),
        format!(
            "Database schema version {} is newer than this agent understands (up to {}); \
             run a newer agent or restore a backup of the state directory",
            schema::LATEST + 1,
            schema::LATEST
        )
    );
    assert_eq!(
        err.to_string(),
        format!(
            "Could not prepare the schema of {}",
            dir.path().join(DB_FILE_NAME).display()
        )
    );
}

#[test]
fn file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE_NAME), vec![0x42_u8; 4096]).unwrap();
    let err = StateDb::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::Configure { .. } | OpenError::Schema { .. }),
        "{err:?}"
    );
}
