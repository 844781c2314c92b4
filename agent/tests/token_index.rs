//! Guest tokens are answered from memory: a flood of made-up tokens never reaches SQLite, and
//! the memory follows every rotate and revoke.

use felhom_agent::capabilities::access::{AccessError, GuestTokens};
use felhom_agent::capabilities::records::Records;
use felhom_agent::core::Actor;
use felhom_agent::infra::state::StateDb;
use secrecy::ExposeSecret as _;

const OPERATOR: Actor = Actor::Operator { uid: Some(0) };

fn tokens(db: &StateDb) -> GuestTokens {
    GuestTokens::new(db.clone(), None, Records::new(db.clone()))
}

/// A made-up token of the right shape.
fn made_up(n: u32) -> String {
    format!("fhg_{n:0>43}")
}

#[tokio::test]
async fn tokens_are_answered_without_the_database_once_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let minted = db.tokens().mint(9001).unwrap();
    let access = tokens(&db);
    assert_eq!(
        access
            .authenticate(minted.token.expose_secret().to_owned())
            .await
            .unwrap()
            .get(),
        9001
    );

    // Any query of the token table fails from now on.
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    conn.execute_batch("ALTER TABLE guest_tokens RENAME TO guest_tokens_gone")
        .unwrap();

    for n in 0..1000 {
        let err = access.authenticate(made_up(n)).await.unwrap_err();
        assert!(matches!(err, AccessError::UnknownToken), "{err}");
    }
    let owner = access
        .authenticate(minted.token.expose_secret().to_owned())
        .await
        .unwrap();
    assert_eq!(owner.get(), 9001);
}

#[tokio::test]
async fn a_rotated_token_replaces_the_old_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let first = db.tokens().mint(9001).unwrap();
    let access = tokens(&db);
    access
        .authenticate(first.token.expose_secret().to_owned())
        .await
        .unwrap();

    let second = access.rotate(OPERATOR, 9001).await.unwrap();

    let old = access
        .authenticate(first.token.expose_secret().to_owned())
        .await
        .unwrap_err();
    assert!(matches!(old, AccessError::UnknownToken), "{old}");
    let new = access
        .authenticate(second.token.expose_secret().to_owned())
        .await
        .unwrap();
    assert_eq!(new.get(), 9001);
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let minted = db.tokens().mint(9001).unwrap();
    let access = tokens(&db);
    access
        .authenticate(minted.token.expose_secret().to_owned())
        .await
        .unwrap();

    assert!(access.revoke(OPERATOR, 9001).await.unwrap());

    let err = access
        .authenticate(minted.token.expose_secret().to_owned())
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::UnknownToken), "{err}");
}

#[tokio::test]
async fn a_token_of_the_wrong_shape_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let err = tokens(&db)
        .authenticate("not-a-token".to_owned())
        .await
        .unwrap_err();
    assert!(matches!(err, AccessError::UnknownToken), "{err}");
}
