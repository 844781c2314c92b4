//! Idempotency keys over a real database file, with a fake clock for expiry.

use std::sync::Arc;
use std::time::Duration;

use felhom_agent::infra::state::{Claim, FakeClock, StateDb, Timestamp};
use serde_json::json;

const TTL: Duration = Duration::from_secs(24 * 3600);

fn open(dir: &std::path::Path) -> (StateDb, FakeClock) {
    let clock = FakeClock::new(Timestamp::from_unix_millis(1_795_000_000_000));
    let db = StateDb::open_with_clock(dir, Arc::new(clock.clone()))
        .expect("state database opens in a temp dir");
    (db, clock)
}

#[test]
fn second_use_of_a_key_replays_the_recorded_result() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _clock) = open(dir.path());
    let keys = db.idempotency();
    let mut runs = 0;
    let mut request = || -> serde_json::Value {
        match keys
            .claim("localapi:9001", "backup-42", "sha256:abc", TTL)
            .unwrap()
        {
            Claim::Fresh => {
                runs += 1;
                let result = json!({"job": "f0e1", "run": runs});
                keys.complete("localapi:9001", "backup-42", &result)
                    .unwrap();
                result
            }
            Claim::Replay(result) => result,
            Claim::InProgress { .. } => panic!("nothing is in progress"),
        }
    };
    let first = request();
    let second = request();
    assert_eq!(runs, 1, "the work ran once");
    assert_eq!(second, first);
}

#[test]
fn replay_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, _clock) = open(dir.path());
        db.idempotency().claim("hub", "job-7", "fp", TTL).unwrap();
        db.idempotency()
            .complete("hub", "job-7", &json!({"ok": true}))
            .unwrap();
    }
    let (db, _clock) = open(dir.path());
    assert_eq!(
        db.idempotency().claim("hub", "job-7", "fp", TTL).unwrap(),
        Claim::Replay(json!({"ok": true}))
    );
}

#[test]
fn expired_key_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let (db, clock) = open(dir.path());
    let keys = db.idempotency();
    keys.claim("hub", "job-7", "fp", TTL).unwrap();
    keys.complete("hub", "job-7", &json!(1)).unwrap();
    clock.advance(TTL - Duration::from_millis(1));
    assert_eq!(
        keys.claim("hub", "job-7", "fp", TTL).unwrap(),
        Claim::Replay(json!(1))
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(keys.claim("hub", "job-7", "fp", TTL).unwrap(), Claim::Fresh);
}

#[test]
fn purge_deletes_only_expired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (db, clock) = open(dir.path());
    let keys = db.idempotency();
    keys.claim("hub", "old", "fp", Duration::from_secs(60))
        .unwrap();
    keys.complete("hub", "old", &json!("old")).unwrap();
    keys.claim("hub", "new", "fp", TTL).unwrap();
    keys.complete("hub", "new", &json!("new")).unwrap();
    clock.advance(Duration::from_secs(61));
    assert_eq!(keys.purge_expired().unwrap(), 1);
    assert_eq!(keys.purge_expired().unwrap(), 0);
    assert_eq!(
        keys.claim("hub", "new", "fp", TTL).unwrap(),
        Claim::Replay(json!("new"))
    );
}
