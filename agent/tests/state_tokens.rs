//! Per-guest tokens over a real database file.

use felhom_agent::infra::state::{StateDb, TokensError};
use secrecy::ExposeSecret as _;

#[test]
fn mint_lookup_rotate_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let tokens = db.tokens();

    let first = tokens.mint(9001).unwrap();
    let owner = tokens
        .lookup(first.token.expose_secret())
        .unwrap()
        .expect("minted token is known");
    assert_eq!((owner.vmid, &owner.id), (9001, &first.id));

    let err = tokens.mint(9001).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Guest 9001 already has a token ({}); rotate it instead",
            first.id
        )
    );

    let second = tokens.rotate(9001).unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(
        tokens.lookup(first.token.expose_secret()).unwrap(),
        None,
        "old token is unknown"
    );
    assert_eq!(
        tokens
            .lookup(second.token.expose_secret())
            .unwrap()
            .unwrap()
            .vmid,
        9001
    );

    assert!(tokens.revoke(9001).unwrap());
    assert_eq!(tokens.lookup(second.token.expose_secret()).unwrap(), None);
    assert!(matches!(
        tokens.rotate(9001),
        Err(TokensError::NoToken { vmid: 9001 })
    ));
}

#[test]
fn tokens_of_different_guests_identify_their_own_guest() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let a = db.tokens().mint(9001).unwrap();
    let b = db.tokens().mint(9002).unwrap();
    assert_eq!(
        db.tokens()
            .lookup(a.token.expose_secret())
            .unwrap()
            .unwrap()
            .vmid,
        9001
    );
    assert_eq!(
        db.tokens()
            .lookup(b.token.expose_secret())
            .unwrap()
            .unwrap()
            .vmid,
        9002
    );
    let listed: Vec<u32> = db
        .tokens()
        .list()
        .unwrap()
        .into_iter()
        .map(|t| t.vmid)
        .collect();
    assert_eq!(listed, [9001, 9002]);
}

#[test]
fn token_never_appears_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let minted = db.tokens().mint(9001).unwrap();
    let secret = minted.token.expose_secret().to_owned();
    let debug = format!("{minted:?} {minted:#?}");
    assert!(
        !debug.contains(&secret),
        "Debug output leaks the token: {debug}"
    );
    assert!(
        !debug.contains(&secret[4..20]),
        "Debug output leaks part of the token"
    );
    assert!(
        debug.contains(minted.id.as_str()),
        "Debug output still shows the token id"
    );
}

#[test]
fn token_survives_reopen_and_is_not_stored_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let secret = {
        let db = StateDb::open(dir.path()).unwrap();
        db.tokens()
            .mint(9001)
            .unwrap()
            .token
            .expose_secret()
            .to_owned()
    };
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.tokens().lookup(&secret).unwrap().unwrap().vmid, 9001);
    drop(db);
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        let needle = &secret.as_bytes()[4..];
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "token stored in clear"
        );
    }
}

/// Makes every later audit append fail, as a full disk or a corrupt page would.
fn break_audit_log(db: &StateDb) {
    let conn = rusqlite::Connection::open(db.path()).expect("open the state DB");
    conn.execute_batch(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END;",
    )
    .expect("add the trigger");
}

#[test]
fn a_token_whose_audit_row_cannot_be_written_is_not_minted() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    break_audit_log(&db);

    let err = db.tokens().mint_audited(9001, "operator").unwrap_err();

    assert!(matches!(err, TokensError::Audit(_)), "{err}");
    assert_eq!(
        db.tokens().info(9001).unwrap(),
        None,
        "no token without its audit row"
    );
}

#[test]
fn a_rotation_whose_audit_row_cannot_be_written_keeps_the_old_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let first = db.tokens().mint_audited(9001, "operator").unwrap();
    break_audit_log(&db);

    let err = db.tokens().rotate_audited(9001, "operator").unwrap_err();

    assert!(matches!(err, TokensError::Audit(_)), "{err}");
    let owner = db
        .tokens()
        .lookup(first.token.expose_secret())
        .unwrap()
        .expect("old token still works");
    assert_eq!(owner.id, first.id);
}
