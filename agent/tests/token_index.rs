//! Guest tokens are answered from memory: a flood of made-up tokens never reaches SQLite, and
//! the memory follows every rotate and revoke.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use felhom_agent::capabilities::access::{AccessError, GuestTokens};
use felhom_agent::capabilities::records::Records;
use felhom_agent::core::Actor;
use felhom_agent::infra::state::StateDb;
use secrecy::ExposeSecret as _;

const OPERATOR: Actor = Actor::Operator { uid: Some(0) };

/// A state database with guest 9001's token minted, the access capability over it, and that
/// token; one authentication has loaded the in-memory index.
struct Fixture {
    _dir: tempfile::TempDir,
    db: StateDb,
    access: GuestTokens,
    token: String,
}

async fn guest_9001() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let token = db
        .tokens()
        .mint(9001)
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    let access = GuestTokens::new(db.clone(), None, Records::new(db.clone()));
    assert_eq!(guest_of(&access, &token).await.unwrap(), 9001);
    Fixture {
        _dir: dir,
        db,
        access,
        token,
    }
}

/// The guest a token belongs to, as the LocalApi service asks.
async fn guest_of(access: &GuestTokens, token: &str) -> Result<u32, AccessError> {
    access.authenticate(token.to_owned()).await.map(|v| v.get())
}

/// A made-up token of the right shape.
fn made_up(n: u32) -> String {
    format!("fhg_{n:0>43}")
}

#[tokio::test]
async fn tokens_are_answered_without_the_database_once_loaded() {
    let f = guest_9001().await;

    // Any query of the token table fails from now on.
    let conn = rusqlite::Connection::open(f.db.path()).unwrap();
    conn.execute_batch("ALTER TABLE guest_tokens RENAME TO guest_tokens_gone")
        .unwrap();

    for n in 0..1000 {
        let err = guest_of(&f.access, &made_up(n)).await.unwrap_err();
        assert!(matches!(err, AccessError::UnknownToken), "{err}");
    }
    assert_eq!(guest_of(&f.access, &f.token).await.unwrap(), 9001);
}

#[tokio::test]
async fn a_rotated_token_replaces_the_old_one_at_once() {
    let f = guest_9001().await;

    let second = f.access.rotate(OPERATOR, 9001).await.unwrap();

    let old = guest_of(&f.access, &f.token).await.unwrap_err();
    assert!(matches!(old, AccessError::UnknownToken), "{old}");
    let new = guest_of(&f.access, second.token.expose_secret()).await;
    assert_eq!(new.unwrap(), 9001);
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let f = guest_9001().await;

    assert!(f.access.revoke(OPERATOR, 9001).await.unwrap());

    let err = guest_of(&f.access, &f.token).await.unwrap_err();
    assert!(matches!(err, AccessError::UnknownToken), "{err}");
}

#[tokio::test]
async fn a_token_of_the_wrong_shape_is_unknown() {
    let f = guest_9001().await;
    let err = guest_of(&f.access, "not-a-token").await.unwrap_err();
    assert!(matches!(err, AccessError::UnknownToken), "{err}");
}
